//! A VC0706 camera simulator on a pseudo-terminal pair (test support).
//!
//! [`Simulator::start`] opens a pty ([`crate::sys::open_raw_pty`]), and answers the VC0706 commands that
//! [`super::Vc0706`] sends on the master side; clients open [`Simulator::port_path`] (the slave)
//! with `serialport` like a real `/dev/ttyUSB0`. Faults can be injected while it runs: dropped
//! bytes in frame-buffer chunks, a wrong frame length, a stalled device, an unplugged port.
use super::*;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Faults to inject; counters are used up one reply at a time.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The next N READ_FBUF replies lose one data byte.
    pub drop_chunk_bytes: u32,
    /// The next N GET_FBUF_LEN replies report a length 100 bytes short (the JPEG loses its EOI).
    pub short_length: u32,
    /// While set, commands are read and ignored (no reply).
    pub stall: bool,
}

#[derive(Debug, Default)]
struct State {
    jpeg: Vec<u8>,
    faults: Faults,
    frozen: bool,
    image_size: u8,
    /// Commands received, by command byte.
    counts: std::collections::BTreeMap<u8, u64>,
    /// Length of every READ_FBUF request, in order.
    read_lens: Vec<u32>,
}

pub struct Simulator {
    path: String,
    state: Arc<Mutex<State>>,
    unplug: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    slave: Option<File>,
    thread: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Opens a pty pair and starts answering on its master; `jpeg` is the picture the camera sees.
    pub fn start(jpeg: Vec<u8>) -> std::io::Result<Simulator> {
        // Raw mode on the line (no echo, no CR/LF translation) until a client sets its own.
        let crate::sys::Pty { controller: master, device: slave, path } = crate::sys::open_raw_pty()?;
        let state = Arc::new(Mutex::new(State { jpeg, ..State::default() }));
        let unplug = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, un, sp) = (state.clone(), unplug.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("vc0706-sim".into()).spawn(move || serve(master, st, un, sp))?;
        Ok(Simulator { path, state, unplug, stop, slave: Some(slave), thread: Some(thread) })
    }

    /// The slave device path, e.g. `/dev/pts/7`.
    pub fn port_path(&self) -> &str {
        &self.path
    }

    /// Changes the picture the camera sees.
    pub fn set_jpeg(&self, jpeg: Vec<u8>) {
        if let Ok(mut s) = self.state.lock() {
            s.jpeg = jpeg;
        }
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut s) = self.state.lock() {
            s.faults = f;
        }
    }

    /// How many commands with this command byte were received.
    pub fn count(&self, cmd: u8) -> u64 {
        self.state.lock().map(|s| s.counts.get(&cmd).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// The length of every READ_FBUF request so far.
    pub fn read_lengths(&self) -> Vec<u32> {
        self.state.lock().map(|s| s.read_lens.clone()).unwrap_or_default()
    }

    /// The image size register value.
    pub fn image_size(&self) -> u8 {
        self.state.lock().map(|s| s.image_size).unwrap_or(0)
    }

    /// Unplugs the camera: the master side is closed, the device node goes away.
    pub fn unplug(&mut self) {
        self.unplug.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.slave = None;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut master: File, state: Arc<Mutex<State>>, unplug: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let mut inbuf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && !unplug.load(Ordering::SeqCst) {
        match crate::sys::wait_readable(&master, 20) {
            Ok(crate::sys::Readiness::Readable) => {}
            // POLLHUP with no client: wait instead of spinning.
            Ok(crate::sys::Readiness::HungUp) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Ok(crate::sys::Readiness::Idle) | Err(_) => continue,
        }
        let n = match master.read(&mut tmp) {
            Ok(n) => n,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        inbuf.extend_from_slice(&tmp[..n]);
        while let Some(reply) = next_reply(&mut inbuf, &state) {
            if !reply.is_empty() && master.write_all(&reply).is_err() {
                break;
            }
        }
    }
    // Dropping `master` closes it: the slave side sees a hang-up.
}

/// Parses one complete command from the front of `inbuf` and builds the reply; `None` when more
/// bytes are needed. Bytes before a command prefix are skipped.
fn next_reply(inbuf: &mut Vec<u8>, state: &Mutex<State>) -> Option<Vec<u8>> {
    let start = inbuf.iter().position(|b| *b == CMD_PREFIX)?;
    inbuf.drain(..start);
    if inbuf.len() < 4 {
        return None;
    }
    let n = inbuf[3] as usize;
    if inbuf.len() < 4 + n {
        return None;
    }
    let frame: Vec<u8> = inbuf.drain(..4 + n).collect();
    let (cmd, args) = (frame[2], &frame[4..]);
    let mut st = state.lock().ok()?;
    *st.counts.entry(cmd).or_default() += 1;
    if st.faults.stall {
        return Some(Vec::new());
    }
    let ok = |data: &[u8]| {
        let mut v = vec![REPLY_PREFIX, SERIAL_NUM, cmd, 0x00, data.len() as u8];
        v.extend_from_slice(data);
        v
    };
    let reply = match cmd {
        RESET => {
            st.frozen = false;
            let mut v = ok(&[]);
            v.extend_from_slice(b"VC0703 1.00\r\nCtrl infr exist\r\nUser-defined sensor\r\n525\r\n");
            v.extend_from_slice(INIT_END);
            v
        }
        GEN_VERSION => ok(b"VC0703 1.00"),
        READ_DATA if args == IMAGE_SIZE_REG => ok(&[st.image_size]),
        WRITE_DATA if args.len() == 5 && args[..4] == IMAGE_SIZE_REG => {
            st.image_size = args[4];
            ok(&[])
        }
        FBUF_CTRL if args.len() == 1 => {
            st.frozen = args[0] == FBUF_STOP_CURRENT;
            ok(&[])
        }
        GET_FBUF_LEN => {
            let mut len = st.jpeg.len() as u32;
            if st.faults.short_length > 0 {
                st.faults.short_length -= 1;
                len = len.saturating_sub(100);
            }
            ok(&len.to_be_bytes())
        }
        READ_FBUF if args.len() == 12 => {
            let addr = u32::from_be_bytes([args[2], args[3], args[4], args[5]]) as usize;
            let len = u32::from_be_bytes([args[6], args[7], args[8], args[9]]) as usize;
            st.read_lens.push(len as u32);
            let mut data: Vec<u8> = st.jpeg.iter().copied().skip(addr).take(len).collect();
            data.resize(len, 0); // past the end the buffer reads as zeros
            if st.faults.drop_chunk_bytes > 0 && !data.is_empty() {
                st.faults.drop_chunk_bytes -= 1;
                data.remove(data.len() / 2);
            }
            let mut v = ack(READ_FBUF).to_vec();
            v.extend_from_slice(&data);
            v.extend_from_slice(&ack(READ_FBUF));
            v
        }
        _ => vec![REPLY_PREFIX, SERIAL_NUM, cmd, 0x03, 0x00], // status 3: command not supported
    };
    Some(reply)
}
