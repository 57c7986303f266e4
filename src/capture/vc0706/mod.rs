//! VC0706 TTL serial JPEG camera (the Adafruit / LinkSprite command set).
use super::{CaptureError, Frame, Result, Source};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// UART speeds the VC0706 supports.
pub const BAUD_RATES: [u32; 5] = [9600, 19200, 38400, 57600, 115200];

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

#[derive(Debug, Clone)]
pub struct SerialSettings {
    pub port: String,
    pub baud: u32,
    pub resolution: Resolution,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub chunk_bytes: u32,
    pub max_frame_bytes: u64,
}

pub struct SerialCamera {
    id: String,
    s: SerialSettings,
}

impl SerialCamera {
    pub fn new(id: &str, s: SerialSettings) -> Self {
        Self { id: id.to_string(), s }
    }
}

impl Source for SerialCamera {
    fn camera_id(&self) -> &str {
        &self.id
    }
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>> {
        Err(CaptureError::Serial { port: self.s.port.clone(), msg: "not built yet".into() })
    }
}
