use super::{Issues, Validate};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CameraKind {
    /// New image files appearing in a directory.
    Folder { dir: PathBuf },
    /// A TTL serial JPEG camera speaking the VC0706 protocol.
    Serial { port: String, baud: u32 },
}

/// One planogram slot: a normalised box [x, y, w, h] in 0..1 of the frame, and its SKU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    pub sku: String,
    pub rect: [f32; 4],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    pub source: CameraKind,
    #[serde(default)]
    pub slots: Vec<SlotConfig>,
}

/// Shelf cameras and their planograms (the capture concern extends this section).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    pub cameras: Vec<CameraConfig>,
}

impl Validate for CaptureConfig {
    fn validate(&self, issues: &mut Issues) {
        for (i, cam) in self.cameras.iter().enumerate() {
            for (j, s) in cam.slots.iter().enumerate() {
                let [x, y, w, h] = s.rect;
                issues.check(
                    x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 1.0 + 1e-6 && y + h <= 1.0 + 1e-6,
                    &format!("capture.cameras[{i}].slots[{j}].rect"),
                    "must be a normalised box [x, y, w, h] inside 0..1",
                );
            }
        }
    }
}
