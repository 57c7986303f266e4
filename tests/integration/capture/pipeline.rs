//! Capture end to end: demo shelf in a folder -> crops -> store; change detection, unknown SKUs,
//! bad input, several cameras at once.

use crate::harness::demo_assets;
use sgbd_edge::capture::folder::FolderSource;
use sgbd_edge::capture::pipeline::{CameraThreads, Capturer, CropOutcome};
use sgbd_edge::capture::status::CameraState;
use sgbd_edge::capture::{planogram, vc0706, CaptureError, Frame, Source};
use sgbd_edge::config::{CameraConfig, CameraKind, Config, SlotConfig};
use sgbd_edge::demo::assets as demo;
use sgbd_edge::store::Store;
use sgbd_edge::telemetry::Metrics;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn demo_slots() -> Vec<SlotConfig> {
    let text = std::fs::read_to_string(demo_assets().join("shelf/planogram.toml")).unwrap();
    let cfg = sgbd_edge::config::validate_str(&format!("[capture]\n{text}")).unwrap();
    cfg.capture.cameras[0].slots.clone()
}

fn config(data: &Path, cams: Vec<CameraConfig>) -> Config {
    let mut cfg = Config::default();
    cfg.node.data_dir = data.to_path_buf();
    cfg.capture.settle_ms = 50;
    cfg.capture.poll_ms = 10;
    cfg.capture.cameras = cams;
    cfg
}

fn folder_cam(id: &str, dir: &Path, slots: Vec<SlotConfig>) -> CameraConfig {
    std::fs::create_dir_all(dir).unwrap();
    CameraConfig { id: id.into(), source: CameraKind::Folder { dir: dir.into(), done_dir: "done".into() }, slots }
}

fn store_with_catalog() -> Store {
    let mut store = Store::open_in_memory().unwrap();
    let s = sgbd_edge::store::import_catalog_csv(&mut store, &demo_assets().join("catalog.csv")).unwrap();
    assert_eq!(s.inserted, 36);
    store
}

fn shelf_bytes() -> Vec<u8> {
    std::fs::read(demo_assets().join("shelf/shelf-a.jpg")).unwrap()
}

/// The demo shelf with the products of slots `a` and `b` swapped.
fn swapped_shelf(a: usize, b: usize) -> Vec<u8> {
    let slots = demo_slots();
    let mut photos: Vec<_> = slots
        .iter()
        .map(|s| {
            let bytes = std::fs::read(demo_assets().join("images").join(format!("{}.jpg", s.sku))).unwrap();
            planogram::decode(&bytes, &s.sku, planogram::DecodeLimits::default()).unwrap()
        })
        .collect();
    photos.swap(a, b);
    let (img, _) = demo::compose_shelf(&photos, demo::ShelfLayout::default()).unwrap();
    planogram::encode_jpeg(&img, 88).unwrap()
}

fn frame(cam: &str, bytes: Vec<u8>, ms: i64) -> Frame {
    Frame { camera_id: cam.into(), captured_ms: ms, jpeg_bytes: bytes, origin: format!("test-{ms}") }
}

#[test]
fn demo_shelf_from_a_folder_is_cut_into_stored_crops_and_unchanged_ones_are_skipped() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let incoming = tmp.path().join("incoming");
    let cfg = config(&tmp.path().join("var"), vec![folder_cam("shelf-a", &incoming, demo_slots())]);
    let store = store_with_catalog();
    let metrics = Arc::new(Metrics::default());
    let mut cap = Capturer::new(&cfg, metrics.clone());
    let sent: Arc<Mutex<Vec<CropOutcome>>> = Arc::default();
    let s2 = sent.clone();
    cap.set_sink(move |o| s2.lock().unwrap().push(o.clone()));

    std::fs::write(incoming.join("shot1.jpg"), shelf_bytes()).unwrap();
    let mut src = FolderSource::new("shelf-a", &incoming, Path::new("done"), 50, 10, 1 << 24);
    let f = src.next_frame(Duration::from_secs(3)).unwrap().expect("the shelf file is picked up");
    assert!(incoming.join("done/shot1.jpg").exists(), "consumed file moved to done/");
    assert!(!incoming.join("shot1.jpg").exists());
    let r = cap.process_frame(&store, &f).unwrap();
    assert_eq!(r.crops.len(), 12);
    assert!(r.slot_errors.is_empty());
    assert!(r.crops.iter().all(|c| c.changed && c.distance.is_none() && !c.new_item));
    for c in &r.crops {
        let p = c.path.as_ref().unwrap();
        assert!(p.starts_with(tmp.path().join("var/crops/shelf-a")), "{p:?}");
        let crop = planogram::decode(&std::fs::read(p).unwrap(), "crop", Default::default()).unwrap();
        assert_eq!(crop.dimensions(), (224, 224));
        let imgs = store.item_images(&c.sku).unwrap();
        let row = imgs.iter().find(|i| i.source == format!("shelf-a/{}", c.slot)).expect("image row");
        assert_eq!((row.phash, row.captured_ms), (Some(c.phash), f.captured_ms));
    }
    assert_eq!(sent.lock().unwrap().len(), 12, "changed crops go to the denoiser sink");

    // The same shelf again (recompressed JPEG): nothing is re-processed.
    let again =
        planogram::encode_jpeg(&planogram::decode(&shelf_bytes(), "s", Default::default()).unwrap(), 75).unwrap();
    let r2 = cap.process_frame(&store, &frame("shelf-a", again, f.captured_ms + 1000)).unwrap();
    assert!(r2.crops.iter().all(|c| !c.changed && c.path.is_none()), "{:?}", r2.crops);
    assert_eq!(sent.lock().unwrap().len(), 12);

    // Two products swapped: exactly those two slots change.
    let r3 = cap.process_frame(&store, &frame("shelf-a", swapped_shelf(0, 5), f.captured_ms + 2000)).unwrap();
    let changed: Vec<usize> = r3.changed().map(|c| c.slot).collect();
    assert_eq!(changed, vec![0, 5]);
    assert_eq!(metrics.get("capture.crops_changed"), 14);
    assert_eq!(metrics.get("capture.crops_unchanged"), 22);

    // After a restart the last stored hashes come back from the images table.
    let mut cap2 = Capturer::new(&cfg, Arc::new(Metrics::default()));
    let r4 = cap2.process_frame(&store, &frame("shelf-a", swapped_shelf(0, 5), f.captured_ms + 3000)).unwrap();
    assert_eq!(r4.changed().count(), 0);
}

#[test]
fn an_unknown_sku_becomes_a_new_item_once() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let mut slots = demo_slots();
    slots[3].sku = "NEW-SKU-1".into();
    let cfg = config(tmp.path(), vec![folder_cam("shelf-a", &tmp.path().join("in"), slots)]);
    let store = store_with_catalog();
    let metrics = Arc::new(Metrics::default());
    let mut cap = Capturer::new(&cfg, metrics.clone());
    let r = cap.process_frame(&store, &frame("shelf-a", shelf_bytes(), 1)).unwrap();
    let news: Vec<_> = r.crops.iter().filter(|c| c.new_item).map(|c| c.sku.as_str()).collect();
    assert_eq!(news, ["NEW-SKU-1"]);
    let item = store.item_by_sku("NEW-SKU-1").unwrap().expect("new item stored");
    assert_eq!((item.title.as_str(), item.description.as_str()), ("", ""));
    assert_eq!(item.image_path.as_deref(), r.crops[3].path.as_ref().map(|p| p.to_str().unwrap()));
    assert_eq!(store.item_images("NEW-SKU-1").unwrap().len(), 1);
    assert_eq!(metrics.get("capture.new_items"), 1);
    // A changed picture of the same slot: another image, not another item.
    cap.process_frame(&store, &frame("shelf-a", swapped_shelf(3, 4), 2)).unwrap();
    assert_eq!(store.items().unwrap().len(), 37);
    assert_eq!(store.item_images("NEW-SKU-1").unwrap().len(), 2);
}

#[test]
fn bad_pictures_and_bad_slots_are_counted_and_the_rest_keeps_running() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let mut slots = demo_slots();
    // A slot outside the frame (as a planogram edited without `validate` could hold).
    slots[1].rect = [0.9, 0.9, 0.5, 0.5];
    let cfg = config(tmp.path(), vec![folder_cam("shelf-a", &tmp.path().join("in"), slots)]);
    let store = store_with_catalog();
    let metrics = Arc::new(Metrics::default());
    let mut cap = Capturer::new(&cfg, metrics.clone());
    let good = shelf_bytes();

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"\xFF\xD8\xFF\xE0 this is not really a jpeg \xFF\xD9".to_vec()),
        ("png header only", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\0\0\0\0\0\x08\x02\0\0\0".to_vec()),
    ];
    for (i, (what, bytes)) in bad.into_iter().enumerate() {
        let e = cap.process_frame(&store, &frame("shelf-a", bytes, i as i64)).unwrap_err();
        assert!(matches!(e, CaptureError::Decode { .. } | CaptureError::EmptyImage { .. }), "{what}: {e:?}");
        assert!(matches!(cap.status().get("shelf-a").unwrap().state, CameraState::Degraded(_)), "{what}");
    }
    assert_eq!(metrics.get("capture.decode_errors"), 4);
    assert_eq!(store.counts().unwrap().images, 0, "nothing stored from bad pictures");

    let r = cap.process_frame(&store, &frame("shelf-a", good, 10)).unwrap();
    assert_eq!(r.crops.len(), 11);
    assert_eq!(r.slot_errors.len(), 1);
    assert!(r.slot_errors[0].contains("slot 1"), "{:?}", r.slot_errors);
    assert_eq!(metrics.get("capture.slot_errors"), 1);
    let st = cap.status().get("shelf-a").unwrap();
    assert_eq!((st.state, st.frames, st.errors, st.last_frame_ms), (CameraState::Ok, 1, 4, Some(10)));
}

#[test]
fn a_decompression_bomb_is_refused_before_decoding() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), vec![folder_cam("c", &tmp.path().join("in"), demo_slots())]);
    cfg.capture.max_image_width = 512;
    let store = Store::open_in_memory().unwrap();
    let mut cap = Capturer::new(&cfg, Arc::new(Metrics::default()));
    let e = cap.process_frame(&store, &frame("c", shelf_bytes(), 1)).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("limit"), "{e}");
}

#[test]
fn folder_source_waits_for_files_to_settle_and_ignores_others() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = shelf_bytes();
    let mut src = FolderSource::new("c", &dir, Path::new("done"), 1000, 10, 1 << 24);
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.join(".upload.jpg"), b"partial").unwrap();
    assert!(src.next_frame(Duration::from_millis(100)).unwrap().is_none(), "no picture yet");
    // A half-written upload: the first part now, the rest 150 ms later (settle time 1 s).
    std::fs::write(dir.join("a.jpg"), &bytes[..1000]).unwrap();
    assert!(src.next_frame(Duration::from_millis(150)).unwrap().is_none(), "not settled yet");
    std::fs::write(dir.join("a.jpg"), &bytes).unwrap();
    let f = src.next_frame(Duration::from_secs(3)).unwrap().expect("settled file read");
    assert_eq!(f.jpeg_bytes, bytes, "the whole file, not the half-written one");
    assert!(dir.join("done/a.jpg").exists());
    assert!(src.next_frame(Duration::from_millis(50)).unwrap().is_none(), "not read twice");
    // A missing directory is an error, not a panic.
    let mut gone = FolderSource::new("g", &tmp.path().join("nope"), Path::new("done"), 10, 10, 1 << 24);
    assert!(matches!(gone.next_frame(Duration::from_millis(10)), Err(CaptureError::Io { .. })));
}

#[test]
fn several_cameras_at_once_and_a_stalled_one_is_degraded() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let sim = vc0706::sim::Simulator::start(shelf_bytes()).unwrap();
    sim.set_faults(vc0706::sim::Faults { stall: true, ..Default::default() });
    let serial = CameraConfig {
        id: "serial".into(),
        source: CameraKind::Serial {
            port: sim.port_path().into(),
            baud: 115_200,
            resolution: Default::default(),
            interval_ms: 100,
            timeout_ms: 50,
            retries: 1,
            chunk_bytes: 4096,
        },
        slots: demo_slots(),
    };
    let cfg = config(tmp.path(), vec![folder_cam("a", &a, demo_slots()), folder_cam("b", &b, demo_slots()), serial]);
    let store = store_with_catalog();
    let metrics = Arc::new(Metrics::default());
    let mut cap = Capturer::new(&cfg, metrics.clone());
    let threads = CameraThreads::spawn(&cfg.capture, cap.status(), metrics.clone()).unwrap();
    std::fs::write(a.join("1.jpg"), shelf_bytes()).unwrap();
    std::fs::write(b.join("1.jpg"), swapped_shelf(2, 3)).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let f = threads.frames.recv_timeout(Duration::from_secs(5)).expect("folder frames arrive");
        let r = cap.process_frame(&store, &f).unwrap();
        assert_eq!(r.crops.len(), 12);
        seen.insert(f.camera_id);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    // The stalled serial camera is degraded meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cap.status().get("serial").unwrap().errors == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = cap.status().get("serial").unwrap();
    assert!(matches!(st.state, CameraState::Degraded(ref r) if r.contains("did not answer")), "{st:?}");
    assert!(metrics.get("capture.camera_timeouts") >= 1);
    // Un-stalled, it delivers again (after its backoff).
    sim.set_faults(Default::default());
    let f = threads.frames.recv_timeout(Duration::from_secs(5)).expect("serial frame after recovery");
    assert_eq!(f.camera_id, "serial");
    assert_eq!(f.jpeg_bytes, shelf_bytes());
    cap.process_frame(&store, &f).unwrap();
    assert_eq!(cap.status().get("serial").unwrap().state, CameraState::Ok);
    threads.stop();
}

#[test]
fn a_similar_product_swap_is_caught_by_the_thumbnail_when_dhash_misses_it() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), vec![folder_cam("shelf-a", &tmp.path().join("in"), demo_slots())]);
    let store = store_with_catalog();
    let mut cap = Capturer::new(&cfg, Arc::new(Metrics::default()));
    cap.process_frame(&store, &frame("shelf-a", shelf_bytes(), 1)).unwrap();
    // Slots 2 and 3 hold a casual and a sports shoe: their dHashes are only a few bits apart.
    let r = cap.process_frame(&store, &frame("shelf-a", swapped_shelf(2, 3), 2)).unwrap();
    let changed: Vec<_> = r.changed().collect();
    assert_eq!(changed.iter().map(|c| c.slot).collect::<Vec<_>>(), [2, 3]);
    assert!(changed.iter().any(|c| c.distance.unwrap() <= cfg.capture.change_threshold), "{changed:?}");
    assert!(changed.iter().all(|c| c.pixel_distance.unwrap() > cfg.capture.change_pixel_threshold));
    // A deleted crop file after a restart: the slot is re-processed rather than guessed unchanged.
    std::fs::remove_file(changed[0].path.as_ref().unwrap()).unwrap();
    let mut cap2 = Capturer::new(&cfg, Arc::new(Metrics::default()));
    let r2 = cap2.process_frame(&store, &frame("shelf-a", swapped_shelf(2, 3), 3)).unwrap();
    assert_eq!(r2.changed().map(|c| c.slot).collect::<Vec<_>>(), [2]);
}
