//! VC0706 TTL serial JPEG camera (the command set of Adafruit's / LinkSprite's "TTL Serial JPEG
//! Camera"), over `serialport`. Byte layouts: `docs/capture.md`.
//!
//! A command is `56 00 <cmd> <n> <n argument bytes>`; the reply is `76 00 <cmd> <status> <n>
//! <n data bytes>` (status 0 = ok). A picture is taken by freezing the frame buffer
//! (`FBUF_CTRL 0`), asking its length (`GET_FBUF_LEN`), reading it in chunks (`READ_FBUF`, each
//! chunk framed by `76 00 32 00 00` before and after the data) and resuming (`FBUF_CTRL 3`).
//! The protocol has no checksum: each reply's framing, the declared length and the JPEG SOI/EOI
//! markers are checked; a bad chunk or command is retried (input flushed first), a dead port is
//! closed and reopened (with a reset) on the next call.
pub mod sim;

use super::{planogram::jpeg_has_eoi, CaptureError, Frame, Result, Source};
use crate::sys::now_ms;
use serde::{Deserialize, Serialize};
use serialport::{ClearBuffer, SerialPort};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// UART speeds the VC0706 supports.
pub const BAUD_RATES: [u32; 5] = [9600, 19200, 38400, 57600, 115200];

pub const CMD_PREFIX: u8 = 0x56;
pub const REPLY_PREFIX: u8 = 0x76;
/// Camera serial number (address) used in every frame; 0 on single-camera links.
pub const SERIAL_NUM: u8 = 0x00;
pub const GEN_VERSION: u8 = 0x11;
pub const RESET: u8 = 0x26;
pub const READ_DATA: u8 = 0x30;
pub const WRITE_DATA: u8 = 0x31;
pub const READ_FBUF: u8 = 0x32;
pub const GET_FBUF_LEN: u8 = 0x34;
pub const FBUF_CTRL: u8 = 0x36;
/// FBUF_CTRL arguments.
pub const FBUF_STOP_CURRENT: u8 = 0x00;
pub const FBUF_RESUME: u8 = 0x03;
/// READ_FBUF control mode: transfer by UART (MCU mode).
pub const FBUF_MCU_MODE: u8 = 0x0A;
/// READ_FBUF delay between header and data, in units of 0.01 ms.
pub const FBUF_DELAY: u16 = 0x000A;
/// Image size register: READ_DATA/WRITE_DATA `04 01 00 19` (EEPROM-backed register 0x0019, 1 byte).
pub const IMAGE_SIZE_REG: [u8; 4] = [0x04, 0x01, 0x00, 0x19];
/// Text the camera prints after a reset.
pub const INIT_END: &[u8] = b"Init end\r\n";

/// Image size register values (WRITE_DATA to 0x0019).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Resolution {
    #[default]
    #[serde(rename = "640x480")]
    R640x480,
    #[serde(rename = "320x240")]
    R320x240,
    #[serde(rename = "160x120")]
    R160x120,
}

impl Resolution {
    pub fn code(self) -> u8 {
        match self {
            Resolution::R640x480 => 0x00,
            Resolution::R320x240 => 0x11,
            Resolution::R160x120 => 0x22,
        }
    }
}

/// Encodes a command frame: `56 00 <cmd> <len> <args>`.
pub fn command(cmd: u8, args: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + args.len());
    v.extend_from_slice(&[CMD_PREFIX, SERIAL_NUM, cmd, args.len() as u8]);
    v.extend_from_slice(args);
    v
}

/// READ_FBUF arguments: current frame, MCU mode, 4-byte address, 4-byte length, 2-byte delay (big endian).
pub fn read_fbuf_args(addr: u32, len: u32) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[0] = FBUF_STOP_CURRENT; // frame type: the current (frozen) frame
    a[1] = FBUF_MCU_MODE;
    a[2..6].copy_from_slice(&addr.to_be_bytes());
    a[6..10].copy_from_slice(&len.to_be_bytes());
    a[10..12].copy_from_slice(&FBUF_DELAY.to_be_bytes());
    a
}

/// The 5-byte header of an ok reply without data, also the framing around READ_FBUF data.
pub fn ack(cmd: u8) -> [u8; 5] {
    [REPLY_PREFIX, SERIAL_NUM, cmd, 0x00, 0x00]
}

#[derive(Debug, Clone)]
pub struct SerialSettings {
    pub port: String,
    pub baud: u32,
    pub resolution: Resolution,
    /// Time between two pictures.
    pub interval: Duration,
    /// Per-command reply timeout.
    pub timeout: Duration,
    pub retries: u32,
    pub chunk_bytes: u32,
    pub max_frame_bytes: u64,
}

impl SerialSettings {
    /// Settings with the config defaults for `port`.
    pub fn new(port: &str) -> Self {
        Self {
            port: port.to_string(),
            baud: 38_400,
            resolution: Resolution::default(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            retries: 3,
            chunk_bytes: 1024,
            max_frame_bytes: 20 * 1024 * 1024,
        }
    }
}

/// A connected camera: the protocol over one open port.
pub struct Vc0706 {
    port: Box<dyn SerialPort>,
    s: SerialSettings,
    /// Chunks or commands that needed a retry (for tests and metrics).
    pub retried: u64,
}

impl Vc0706 {
    /// Opens the port, resets the camera, checks its version and sets the image size.
    pub fn connect(s: &SerialSettings) -> Result<Self> {
        let port = serialport::new(&s.port, s.baud)
            .timeout(s.timeout)
            .open()
            .map_err(|e| CaptureError::Serial { port: s.port.clone(), msg: e.to_string() })?;
        Self::on_port(port, s)
    }

    /// [`Vc0706::connect`] on a port that is already open (a serial bridge, a test double): resets
    /// the camera, checks its version and sets the image size. `s.port` only names the camera in
    /// errors and logs.
    pub fn on_port(port: Box<dyn SerialPort>, s: &SerialSettings) -> Result<Self> {
        let mut cam = Self { port, s: s.clone(), retried: 0 };
        cam.reset()?;
        let version = cam.retry("GEN_VERSION", |c| c.transact(GEN_VERSION, &[]))?;
        if !version.windows(4).any(|w| w == b"VC07") {
            return Err(cam.protocol(format!("unexpected version reply {:?}", String::from_utf8_lossy(&version))));
        }
        let size = cam.retry("READ_DATA", |c| c.transact(READ_DATA, &IMAGE_SIZE_REG))?;
        let want = s.resolution.code();
        if size.first() != Some(&want) {
            let mut args = IMAGE_SIZE_REG.to_vec();
            args.push(want);
            cam.retry("WRITE_DATA", |c| c.transact(WRITE_DATA, &args))?;
            cam.reset()?; // the image size takes effect after a reset
        }
        tracing::info!(port = %s.port, version = %String::from_utf8_lossy(&version).trim(), "vc0706 camera ready");
        Ok(cam)
    }

    fn protocol(&self, msg: String) -> CaptureError {
        CaptureError::Protocol { port: self.s.port.clone(), msg }
    }

    fn timeout_err(&self, what: &str) -> CaptureError {
        CaptureError::Timeout { port: self.s.port.clone(), ms: self.s.timeout.as_millis() as u64, what: what.into() }
    }

    fn io(&self, e: std::io::Error) -> CaptureError {
        if e.kind() == std::io::ErrorKind::TimedOut {
            self.timeout_err("read")
        } else {
            CaptureError::Serial { port: self.s.port.clone(), msg: e.to_string() }
        }
    }

    /// Reads exactly `buf.len()` bytes before the per-command deadline.
    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant, what: &str) -> Result<()> {
        let mut n = 0;
        while n < buf.len() {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout_err(what));
            }
            let _ = self.port.set_timeout(deadline - now);
            match self.port.read(&mut buf[n..]) {
                Ok(0) => return Err(CaptureError::Serial { port: self.s.port.clone(), msg: "port closed".into() }),
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(self.timeout_err(what)),
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    fn send(&mut self, cmd: u8, args: &[u8]) -> Result<()> {
        let frame = command(cmd, args);
        self.port.write_all(&frame).map_err(|e| self.io(e))?;
        self.port.flush().map_err(|e| self.io(e))
    }

    /// Reads a reply header for `cmd` and checks it; returns the data length.
    fn read_header(&mut self, cmd: u8, deadline: Instant, what: &str) -> Result<u8> {
        let mut h = [0u8; 5];
        self.read_exact_by(&mut h, deadline, what)?;
        if h[0] != REPLY_PREFIX || h[1] != SERIAL_NUM || h[2] != cmd {
            return Err(self.protocol(format!("{what}: bad reply header {h:02x?}")));
        }
        if h[3] != 0 {
            return Err(self.protocol(format!("{what}: camera status {:#04x}", h[3])));
        }
        Ok(h[4])
    }

    /// Sends one command and reads its reply data.
    pub fn transact(&mut self, cmd: u8, args: &[u8]) -> Result<Vec<u8>> {
        self.send(cmd, args)?;
        let deadline = Instant::now() + self.s.timeout;
        let what = format!("command {cmd:#04x}");
        let n = self.read_header(cmd, deadline, &what)?;
        let mut data = vec![0u8; n as usize];
        self.read_exact_by(&mut data, deadline, &what)?;
        Ok(data)
    }

    /// Runs `op` up to 1 + retries times; timeouts and protocol errors are retried after the
    /// input buffer was flushed, port errors are not.
    fn retry<T>(&mut self, what: &str, mut op: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
                Err(e @ (CaptureError::Timeout { .. } | CaptureError::Protocol { .. })) if attempt < self.s.retries => {
                    attempt += 1;
                    self.retried += 1;
                    tracing::debug!(port = %self.s.port, what, attempt, error = %e, "vc0706 retry");
                    self.drain();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops whatever late bytes are still arriving, so the next reply starts clean.
    fn drain(&mut self) {
        let _ = self.port.set_timeout(Duration::from_millis(20));
        let mut sink = [0u8; 256];
        for _ in 0..64 {
            match self.port.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let _ = self.port.clear(ClearBuffer::Input);
    }

    /// `RESET`, then waits for the boot text ending in "Init end\r\n" (if the firmware prints it).
    pub fn reset(&mut self) -> Result<()> {
        self.retry("RESET", |c| c.transact(RESET, &[]).map(|_| ()))?;
        let deadline = Instant::now() + self.s.timeout.max(Duration::from_millis(200)) * 2;
        let mut seen = Vec::new();
        let mut b = [0u8; 64];
        while Instant::now() < deadline && !seen.windows(INIT_END.len()).any(|w| w == INIT_END) {
            let _ =
                self.port.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
            match self.port.read(&mut b) {
                Ok(n) if n > 0 => seen.extend_from_slice(&b[..n]),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    fn read_chunk(&mut self, addr: u32, len: u32) -> Result<Vec<u8>> {
        self.send(READ_FBUF, &read_fbuf_args(addr, len))?;
        // The camera needs about 10 bits per byte on the wire: allow for it on top of the timeout.
        let wire = Duration::from_micros(len as u64 * 10 * 1_000_000 / self.s.baud.max(1) as u64);
        let deadline = Instant::now() + self.s.timeout + wire;
        let what = format!("READ_FBUF at {addr}");
        let n = self.read_header(READ_FBUF, deadline, &what)?;
        if n != 0 {
            return Err(self.protocol(format!("{what}: header with data length {n}")));
        }
        let mut data = vec![0u8; len as usize];
        self.read_exact_by(&mut data, deadline, &what)?;
        let mut foot = [0u8; 5];
        self.read_exact_by(&mut foot, deadline, &what)?;
        if foot != ack(READ_FBUF) {
            return Err(self.protocol(format!("{what}: bad footer {foot:02x?} (bytes lost or added)")));
        }
        Ok(data)
    }

    /// Freezes the frame buffer, reads the JPEG and resumes the video.
    pub fn take_picture(&mut self) -> Result<Vec<u8>> {
        self.retry("FBUF_CTRL stop", |c| c.transact(FBUF_CTRL, &[FBUF_STOP_CURRENT]).map(|_| ()))?;
        let res = self.retry("frame", |c| c.read_frame());
        // Resume even when the read failed; a failure here only matters if the read worked.
        let resumed = self.retry("FBUF_CTRL resume", |c| c.transact(FBUF_CTRL, &[FBUF_RESUME]).map(|_| ()));
        let jpeg = res?;
        resumed?;
        Ok(jpeg)
    }

    /// GET_FBUF_LEN, then every chunk (each retried on its own), then the JPEG checks.
    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let len = self.transact(GET_FBUF_LEN, &[FBUF_STOP_CURRENT])?;
        let len: [u8; 4] = len
            .as_slice()
            .try_into()
            .map_err(|_| self.protocol(format!("GET_FBUF_LEN: {} data bytes, expected 4", len.len())))?;
        let len = u32::from_be_bytes(len);
        if len < 4 || u64::from(len) > self.s.max_frame_bytes {
            return Err(self.protocol(format!("frame length {len} outside 4..={}", self.s.max_frame_bytes)));
        }
        let mut jpeg = Vec::with_capacity(len as usize);
        let chunk = self.s.chunk_bytes.max(8);
        let mut addr = 0u32;
        while addr < len {
            let n = chunk.min(len - addr);
            // Requests are whole multiples of 8 bytes (the camera's transfer unit); bytes past the
            // declared length are dropped.
            let data = self.retry("READ_FBUF", |c| c.read_chunk(addr, n.next_multiple_of(8)))?;
            jpeg.extend_from_slice(&data[..n as usize]);
            addr += n;
        }
        if !jpeg.starts_with(&[0xFF, 0xD8]) {
            return Err(self.protocol(format!("frame of {len} bytes does not start with the JPEG SOI marker")));
        }
        if !jpeg_has_eoi(&jpeg) {
            return Err(
                self.protocol(format!("frame of {len} bytes does not end with the JPEG EOI marker (wrong length?)"))
            );
        }
        Ok(jpeg)
    }
}

/// A VC0706 camera as a [`Source`]: one picture every `interval`; reconnects after faults.
pub struct SerialCamera {
    id: String,
    s: SerialSettings,
    cam: Option<Vc0706>,
    last_shot: Option<Instant>,
}

impl SerialCamera {
    pub fn new(id: &str, s: SerialSettings) -> Self {
        Self { id: id.to_string(), s, cam: None, last_shot: None }
    }

    /// Retries done on the current connection.
    pub fn retried(&self) -> u64 {
        self.cam.as_ref().map_or(0, |c| c.retried)
    }
}

impl Source for SerialCamera {
    fn camera_id(&self) -> &str {
        &self.id
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>> {
        if let Some(last) = self.last_shot {
            let due = last + self.s.interval;
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(timeout));
                if Instant::now() < due {
                    return Ok(None);
                }
            }
        }
        self.last_shot = Some(Instant::now());
        let cam = match self.cam.as_mut() {
            Some(c) => c,
            None => self.cam.insert(Vc0706::connect(&self.s)?),
        };
        let captured_ms = now_ms();
        match cam.take_picture() {
            Ok(jpeg) => Ok(Some(Frame {
                camera_id: self.id.clone(),
                captured_ms,
                jpeg_bytes: jpeg,
                origin: self.s.port.clone(),
            })),
            Err(e) => {
                // Start from a fresh port and a reset next time.
                self.cam = None;
                Err(e)
            }
        }
    }
}
