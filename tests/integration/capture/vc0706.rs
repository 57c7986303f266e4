//! The VC0706 serial camera client against the pty simulator, with injected faults.

use sgbd_edge::capture::vc0706::{self, sim, Resolution, SerialCamera, SerialSettings};
use sgbd_edge::capture::{planogram, CaptureError, Source};
use std::time::{Duration, Instant};

fn test_jpeg(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(160, 120, |x, y| image::Rgb([(x as u8).wrapping_mul(seed), y as u8, seed]));
    planogram::encode_jpeg(&img, 85).unwrap()
}

fn settings(path: &str) -> SerialSettings {
    SerialSettings {
        baud: 115_200,
        resolution: Resolution::R320x240,
        interval: Duration::ZERO,
        timeout: Duration::from_millis(150),
        retries: 2,
        chunk_bytes: 256,
        ..SerialSettings::new(path)
    }
}

fn frame(cam: &mut SerialCamera) -> Result<Vec<u8>, CaptureError> {
    cam.next_frame(Duration::from_secs(1)).map(|f| f.expect("serial camera returns a frame when due").jpeg_bytes)
}

#[test]
fn takes_a_picture_and_sets_the_image_size() {
    // Serial timeouts of 150 ms: the exact command counts and time bounds need a quiet machine.
    let _turn = crate::harness::exclusive();
    let jpeg = test_jpeg(3);
    let s = sim::Simulator::start(jpeg.clone()).unwrap();
    let mut cam = SerialCamera::new("cam", settings(s.port_path()));
    assert_eq!(frame(&mut cam).unwrap(), jpeg);
    assert_eq!(s.image_size(), Resolution::R320x240.code());
    assert_eq!(s.count(vc0706::RESET), 2, "a size change needs a second reset");
    let chunks = jpeg.len().div_ceil(256) as u64;
    assert_eq!(s.count(vc0706::READ_FBUF), chunks);
    assert_eq!(s.count(vc0706::FBUF_CTRL), 2, "stop + resume");
    let lens = s.read_lengths();
    assert!(lens.iter().all(|l| l % 8 == 0 && *l <= 256), "{lens:?}");
    assert_eq!(lens.iter().map(|l| *l as usize).sum::<usize>(), jpeg.len().next_multiple_of(8));
    // The next picture sees a new scene, on the same connection (no new reset).
    let other = test_jpeg(7);
    s.set_jpeg(other.clone());
    assert_eq!(frame(&mut cam).unwrap(), other);
    assert_eq!(s.count(vc0706::RESET), 2);
}

#[test]
fn dropped_bytes_are_detected_and_the_chunk_retried() {
    // Serial timeouts of 150 ms: the exact command counts and time bounds need a quiet machine.
    let _turn = crate::harness::exclusive();
    let jpeg = test_jpeg(5);
    let s = sim::Simulator::start(jpeg.clone()).unwrap();
    let mut cam = SerialCamera::new("cam", settings(s.port_path()));
    frame(&mut cam).unwrap();
    let before = s.count(vc0706::READ_FBUF);
    s.set_faults(sim::Faults { drop_chunk_bytes: 2, ..Default::default() });
    assert_eq!(frame(&mut cam).unwrap(), jpeg, "the frame is intact after retries");
    let chunks = jpeg.len().div_ceil(256) as u64;
    assert_eq!(s.count(vc0706::READ_FBUF) - before, chunks + 2, "two chunks were read twice");
    assert_eq!(cam.retried(), 2);
}

#[test]
fn a_wrong_frame_length_is_caught_by_the_jpeg_markers() {
    // Serial timeouts of 150 ms: the exact command counts and time bounds need a quiet machine.
    let _turn = crate::harness::exclusive();
    let jpeg = test_jpeg(9);
    let s = sim::Simulator::start(jpeg.clone()).unwrap();
    let mut cam = SerialCamera::new("cam", settings(s.port_path()));
    s.set_faults(sim::Faults { short_length: 1, ..Default::default() });
    assert_eq!(frame(&mut cam).unwrap(), jpeg, "one short length: re-read");
    assert_eq!(s.count(vc0706::GET_FBUF_LEN), 2);
    s.set_faults(sim::Faults { short_length: 100, ..Default::default() });
    match frame(&mut cam) {
        Err(CaptureError::Protocol { msg, .. }) => assert!(msg.contains("EOI"), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn a_stalled_camera_times_out_and_recovers() {
    // Serial timeouts of 150 ms: the exact command counts and time bounds need a quiet machine.
    let _turn = crate::harness::exclusive();
    let jpeg = test_jpeg(11);
    let s = sim::Simulator::start(jpeg.clone()).unwrap();
    let mut cam = SerialCamera::new("cam", settings(s.port_path()));
    frame(&mut cam).unwrap();
    s.set_faults(sim::Faults { stall: true, ..Default::default() });
    let t = Instant::now();
    assert!(matches!(frame(&mut cam), Err(CaptureError::Timeout { .. })));
    // FBUF_CTRL stop: 3 attempts of 150 ms each, then the port is dropped.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    s.set_faults(sim::Faults::default());
    assert_eq!(frame(&mut cam).unwrap(), jpeg, "reconnects (reset) and works again");
}

#[test]
fn an_unplugged_camera_gives_errors_not_panics() {
    // Serial timeouts of 150 ms: the exact command counts and time bounds need a quiet machine.
    let _turn = crate::harness::exclusive();
    let jpeg = test_jpeg(13);
    let mut s = sim::Simulator::start(jpeg.clone()).unwrap();
    let path = s.port_path().to_string();
    let mut cam = SerialCamera::new("cam", settings(&path));
    frame(&mut cam).unwrap();
    s.unplug();
    let e = frame(&mut cam).unwrap_err();
    assert!(matches!(e, CaptureError::Serial { .. } | CaptureError::Timeout { .. }), "{e:?}");
    // The device node is gone: reopening fails with a port error, quickly.
    let t = Instant::now();
    let e = frame(&mut cam).unwrap_err();
    assert!(matches!(e, CaptureError::Serial { .. }), "{e:?}");
    assert!(e.to_string().contains(&path), "{e}");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_missing_port_is_a_clear_error() {
    let _turn = crate::harness::shared();
    let mut cam = SerialCamera::new("cam", settings("/dev/does-not-exist-vc0706"));
    let e = frame(&mut cam).unwrap_err();
    assert!(matches!(e, CaptureError::Serial { .. }), "{e:?}");
}

#[test]
fn command_bytes_match_the_datasheet() {
    let _turn = crate::harness::shared();
    assert_eq!(vc0706::command(vc0706::RESET, &[]), [0x56, 0x00, 0x26, 0x00]);
    assert_eq!(vc0706::command(vc0706::FBUF_CTRL, &[0x00]), [0x56, 0x00, 0x36, 0x01, 0x00]);
    assert_eq!(vc0706::command(vc0706::GET_FBUF_LEN, &[0x00]), [0x56, 0x00, 0x34, 0x01, 0x00]);
    assert_eq!(
        vc0706::command(vc0706::READ_FBUF, &vc0706::read_fbuf_args(0x1234, 0x20)),
        [0x56, 0x00, 0x32, 0x0C, 0x00, 0x0A, 0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x20, 0x00, 0x0A]
    );
    let mut w = vc0706::IMAGE_SIZE_REG.to_vec();
    w.push(Resolution::R160x120.code());
    assert_eq!(vc0706::command(vc0706::WRITE_DATA, &w), [0x56, 0x00, 0x31, 0x05, 0x04, 0x01, 0x00, 0x19, 0x22]);
}
