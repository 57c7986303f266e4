//! Shelf capture: camera sources behind one [`Source`] trait, planogram crops, change detection.
//!
//! - [`folder::FolderSource`]: new image files appearing in a directory,
//! - [`vc0706::SerialCamera`]: a TTL serial JPEG camera (VC0706 command set), with a pty
//!   simulator in [`vc0706::sim`] for tests,
//! - [`planogram`]: decoding with limits, cutting a frame into slot crops, dHash,
//! - [`pipeline::Capturer`]: stores crops and image rows, skips unchanged crops, records unknown SKUs,
//! - [`status`]: per-camera health (`Ok` / `Degraded(reason)`).
//!
//! The bundled demo shelf composed from `assets/demo` is in [`crate::demo::assets`].
//!
//! Byte layouts and file handling are documented in `docs/capture.md`.

pub mod folder;
pub mod pipeline;
pub mod planogram;
pub mod status;
pub mod vc0706;

use std::time::Duration;

/// Errors of the capture concern.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("i/o error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot decode image from {origin}: {msg}")]
    Decode { origin: String, msg: String },
    #[error("image from {origin} is empty (0x0)")]
    EmptyImage { origin: String },
    #[error("{origin} is {bytes} bytes, more than the limit of {limit}")]
    TooLarge { origin: String, bytes: u64, limit: u64 },
    #[error("slot {slot} ({sku}) rect {rect:?} does not fit a {width}x{height} frame")]
    BadSlot { slot: usize, sku: String, rect: [f32; 4], width: u32, height: u32 },
    #[error("serial port {port}: {msg}")]
    Serial { port: String, msg: String },
    #[error("camera protocol error on {port}: {msg}")]
    Protocol { port: String, msg: String },
    #[error("camera on {port} did not answer within {ms} ms ({what})")]
    Timeout { port: String, ms: u64, what: String },
    #[error("store error: {0}")]
    Store(String),
    #[error("cannot encode crop: {0}")]
    Encode(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, CaptureError>;

pub(crate) fn io_err(path: impl std::fmt::Display, source: std::io::Error) -> CaptureError {
    CaptureError::Io { path: path.to_string(), source }
}

/// One picture from a camera: the encoded image as the camera delivered it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub camera_id: String,
    /// Wall-clock time of the capture (ms since the Unix epoch).
    pub captured_ms: i64,
    /// Encoded image (JPEG from cameras; a folder may also hold PNG).
    pub jpeg_bytes: Vec<u8>,
    /// Where it came from (file path or serial port), for log lines.
    pub origin: String,
}

/// A camera. `next_frame` blocks up to `timeout` and returns `Ok(None)` when no new picture is
/// ready yet; an `Err` is a camera fault (the caller marks the camera degraded and keeps going).
pub trait Source: Send {
    fn camera_id(&self) -> &str;
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>>;
}

/// Builds the configured source of one camera.
pub fn open_source(cam: &crate::config::CameraConfig, cfg: &crate::config::CaptureConfig) -> Box<dyn Source> {
    use crate::config::CameraKind;
    match &cam.source {
        CameraKind::Folder { dir, done_dir } => {
            Box::new(folder::FolderSource::new(&cam.id, dir, done_dir, cfg.settle_ms, cfg.poll_ms, cfg.max_file_bytes))
        }
        CameraKind::Serial { port, baud, resolution, interval_ms, timeout_ms, retries, chunk_bytes } => {
            Box::new(vc0706::SerialCamera::new(
                &cam.id,
                vc0706::SerialSettings {
                    port: port.clone(),
                    baud: *baud,
                    resolution: *resolution,
                    interval: Duration::from_millis(*interval_ms),
                    timeout: Duration::from_millis(*timeout_ms),
                    retries: *retries,
                    chunk_bytes: *chunk_bytes,
                    max_frame_bytes: cfg.max_file_bytes,
                },
            ))
        }
    }
}

/// Makes a string safe as one path component (camera ids and SKUs come from config and catalogues).
pub fn path_component(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .take(64)
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        out
    }
}
