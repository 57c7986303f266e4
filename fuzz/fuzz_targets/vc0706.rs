//! The VC0706 serial camera protocol (`Vc0706::on_port`, then `take_picture`) against a camera
//! that answers with fuzzer bytes. The input is a script: two setting bytes (chunk size, retries),
//! then one reply per command the driver sends, each as a little-endian u16 length and that many
//! bytes. A reply is released into the read buffer when the driver writes its next command, as a
//! real camera answers after the command; an empty buffer reads as a timeout. Bad framing,
//! lengths and JPEG markers must come back as errors, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};
use sgbd_edge::capture::vc0706::{SerialSettings, Vc0706};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::time::Duration;

struct Script {
    /// Replies not yet released, in order.
    replies: VecDeque<Vec<u8>>,
    /// What the driver can read now.
    buf: VecDeque<u8>,
}

struct FakePort(RefCell<Script>);

fn script(mut data: &[u8]) -> VecDeque<Vec<u8>> {
    let mut out = VecDeque::new();
    while data.len() >= 2 {
        let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        out.push_back(data[2..2 + n].to_vec());
        data = &data[2 + n..];
    }
    out
}

impl io::Read for FakePort {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let s = self.0.get_mut();
        if s.buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply"));
        }
        let n = out.len().min(s.buf.len());
        for (o, b) in out.iter_mut().zip(s.buf.drain(..n)) {
            *o = b;
        }
        Ok(n)
    }
}

impl io::Write for FakePort {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let s = self.0.get_mut();
        if let Some(r) = s.replies.pop_front() {
            s.buf.extend(r);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SerialPort for FakePort {
    fn name(&self) -> Option<String> {
        Some("fuzz".into())
    }
    fn baud_rate(&self) -> serialport::Result<u32> {
        Ok(115_200)
    }
    fn data_bits(&self) -> serialport::Result<DataBits> {
        Ok(DataBits::Eight)
    }
    fn flow_control(&self) -> serialport::Result<FlowControl> {
        Ok(FlowControl::None)
    }
    fn parity(&self) -> serialport::Result<Parity> {
        Ok(Parity::None)
    }
    fn stop_bits(&self) -> serialport::Result<StopBits> {
        Ok(StopBits::One)
    }
    fn timeout(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn set_baud_rate(&mut self, _: u32) -> serialport::Result<()> {
        Ok(())
    }
    fn set_data_bits(&mut self, _: DataBits) -> serialport::Result<()> {
        Ok(())
    }
    fn set_flow_control(&mut self, _: FlowControl) -> serialport::Result<()> {
        Ok(())
    }
    fn set_parity(&mut self, _: Parity) -> serialport::Result<()> {
        Ok(())
    }
    fn set_stop_bits(&mut self, _: StopBits) -> serialport::Result<()> {
        Ok(())
    }
    fn set_timeout(&mut self, _: Duration) -> serialport::Result<()> {
        Ok(())
    }
    fn write_request_to_send(&mut self, _: bool) -> serialport::Result<()> {
        Ok(())
    }
    fn write_data_terminal_ready(&mut self, _: bool) -> serialport::Result<()> {
        Ok(())
    }
    fn read_clear_to_send(&mut self) -> serialport::Result<bool> {
        Ok(true)
    }
    fn read_data_set_ready(&mut self) -> serialport::Result<bool> {
        Ok(true)
    }
    fn read_ring_indicator(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_carrier_detect(&mut self) -> serialport::Result<bool> {
        Ok(true)
    }
    fn bytes_to_read(&self) -> serialport::Result<u32> {
        Ok(self.0.borrow().buf.len() as u32)
    }
    fn bytes_to_write(&self) -> serialport::Result<u32> {
        Ok(0)
    }
    fn clear(&self, which: ClearBuffer) -> serialport::Result<()> {
        if matches!(which, ClearBuffer::Input | ClearBuffer::All) {
            self.0.borrow_mut().buf.clear();
        }
        Ok(())
    }
    fn try_clone(&self) -> serialport::Result<Box<dyn SerialPort>> {
        Err(serialport::Error::new(serialport::ErrorKind::Unknown, "not cloneable"))
    }
    fn set_break(&self) -> serialport::Result<()> {
        Ok(())
    }
    fn clear_break(&self) -> serialport::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mut s = SerialSettings::new("fuzz");
    // Small chunks and frames keep one run short; the arithmetic is the same as with 1 KiB chunks.
    s.chunk_bytes = u32::from(data[0]);
    s.retries = u32::from(data[1] % 4);
    s.max_frame_bytes = 1 << 16;
    s.timeout = Duration::from_millis(50);
    let port = FakePort(RefCell::new(Script { replies: script(&data[2..]), buf: VecDeque::new() }));
    if let Ok(mut cam) = Vc0706::on_port(Box::new(port), &s) {
        if let Ok(jpeg) = cam.take_picture() {
            assert!(jpeg.starts_with(&[0xFF, 0xD8]), "picture without SOI");
        }
    }
});
