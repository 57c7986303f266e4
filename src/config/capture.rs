use super::{Issues, Validate};
use crate::capture::vc0706::Resolution;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CameraKind {
    /// New image files appearing in a directory (see docs/capture.md: settle time, `done/`).
    Folder {
        dir: PathBuf,
        /// Where consumed files are moved; relative to `dir`. Default `done`.
        #[serde(default = "default_done_dir")]
        done_dir: PathBuf,
    },
    /// A TTL serial JPEG camera speaking the VC0706 protocol.
    Serial {
        port: String,
        /// Must match the camera's current UART speed (VC0706 factory default 38400).
        #[serde(default = "default_baud")]
        baud: u32,
        /// Image size set at start-up: "640x480", "320x240" or "160x120".
        #[serde(default)]
        resolution: Resolution,
        /// Time between two pictures.
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
        /// Per-command reply timeout.
        #[serde(default = "default_serial_timeout_ms")]
        timeout_ms: u64,
        /// Retries per command or frame-buffer chunk before the frame is given up.
        #[serde(default = "default_retries")]
        retries: u32,
        /// Bytes per READ_FBUF request (a multiple of 8).
        #[serde(default = "default_chunk_bytes")]
        chunk_bytes: u32,
    },
}

fn default_done_dir() -> PathBuf {
    PathBuf::from("done")
}
fn default_baud() -> u32 {
    38_400
}
fn default_interval_ms() -> u64 {
    10_000
}
fn default_serial_timeout_ms() -> u64 {
    1_000
}
fn default_retries() -> u32 {
    3
}
fn default_chunk_bytes() -> u32 {
    1024
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

/// Shelf cameras and their planograms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Crops are written under this directory; relative paths are under `node.data_dir`.
    pub crops_dir: PathBuf,
    /// A crop whose 64-bit dHash differs from the slot's previous crop in at most this many bits
    /// counts as unchanged and is not re-processed.
    pub change_threshold: u32,
    /// A crop also counts as changed when its 16x16 grey thumbnail (normalised for brightness and
    /// contrast) differs from the previous one by more than this many hundredths of a standard
    /// deviation on average. dHash alone misses a product swapped for a similar one.
    pub change_pixel_threshold: f32,
    /// Folder sources: how often the directory is listed.
    pub poll_ms: u64,
    /// Folder sources: a file is read only once its size and mtime have not changed for this long.
    pub settle_ms: u64,
    /// Largest image file or serial frame accepted, in bytes.
    pub max_file_bytes: u64,
    /// Decoder limits against decompression bombs.
    pub max_image_width: u32,
    pub max_image_height: u32,
    /// Largest decoder allocation, in bytes.
    pub max_decode_alloc_bytes: u64,
    /// File format of the stored crops: "png" (lossless, fast) or "jpeg".
    pub crop_format: crate::capture::planogram::CropFormat,
    /// JPEG quality of the stored crops when `crop_format = "jpeg"` (1..=100).
    pub crop_jpeg_quality: u8,
    pub cameras: Vec<CameraConfig>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            crops_dir: PathBuf::from("crops"),
            change_threshold: 10,
            change_pixel_threshold: 4.0,
            poll_ms: 500,
            settle_ms: 300,
            max_file_bytes: 20 * 1024 * 1024,
            max_image_width: 8192,
            max_image_height: 8192,
            max_decode_alloc_bytes: 256 * 1024 * 1024,
            crop_format: crate::capture::planogram::CropFormat::Png,
            crop_jpeg_quality: 90,
            cameras: Vec::new(),
        }
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s != "."
        && s != ".."
}

impl Validate for CaptureConfig {
    fn validate(&self, issues: &mut Issues) {
        issues.check(self.change_threshold <= 64, "capture.change_threshold", "must be 0..=64 (bits of a 64-bit hash)");
        issues.check(
            self.change_pixel_threshold.is_finite() && self.change_pixel_threshold > 0.0,
            "capture.change_pixel_threshold",
            "must be a positive number",
        );
        issues.check(self.poll_ms >= 10, "capture.poll_ms", "must be at least 10");
        issues.check(self.max_file_bytes >= 1024, "capture.max_file_bytes", "must be at least 1024");
        issues.check(self.max_image_width >= 16, "capture.max_image_width", "must be at least 16");
        issues.check(self.max_image_height >= 16, "capture.max_image_height", "must be at least 16");
        issues.check(
            self.max_decode_alloc_bytes >= 1024 * 1024,
            "capture.max_decode_alloc_bytes",
            "must be at least 1 MiB",
        );
        issues.check((1..=100).contains(&self.crop_jpeg_quality), "capture.crop_jpeg_quality", "must be 1..=100");
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            issues.check(
                valid_id(&cam.id),
                &format!("capture.cameras[{i}].id"),
                "must be 1-64 characters of A-Z a-z 0-9 - _ .",
            );
            issues.check(seen.insert(cam.id.clone()), &format!("capture.cameras[{i}].id"), "duplicate camera id");
            if let CameraKind::Serial { baud, interval_ms, timeout_ms, chunk_bytes, .. } = &cam.source {
                issues.check(
                    crate::capture::vc0706::BAUD_RATES.contains(baud),
                    &format!("capture.cameras[{i}].baud"),
                    "must be one of 9600, 19200, 38400, 57600, 115200",
                );
                issues.check(*interval_ms >= 100, &format!("capture.cameras[{i}].interval_ms"), "must be at least 100");
                issues.check(*timeout_ms >= 10, &format!("capture.cameras[{i}].timeout_ms"), "must be at least 10");
                issues.check(
                    *chunk_bytes >= 8 && *chunk_bytes <= 65528 && chunk_bytes % 8 == 0,
                    &format!("capture.cameras[{i}].chunk_bytes"),
                    "must be a multiple of 8 in 8..=65528",
                );
            }
            for (j, s) in cam.slots.iter().enumerate() {
                let [x, y, w, h] = s.rect;
                issues.check(
                    x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 1.0 + 1e-6 && y + h <= 1.0 + 1e-6,
                    &format!("capture.cameras[{i}].slots[{j}].rect"),
                    "must be a normalised box [x, y, w, h] inside 0..1",
                );
                issues.check(
                    !s.sku.trim().is_empty(),
                    &format!("capture.cameras[{i}].slots[{j}].sku"),
                    "must not be empty",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate_str;

    #[test]
    fn camera_defaults_and_bad_keys() {
        let ok =
            "[capture]\n[[capture.cameras]]\nid = \"a\"\nsource = { kind = \"serial\", port = \"/dev/ttyUSB0\" }\n\
                  slots = [ { sku = \"1\", rect = [0.0, 0.0, 0.5, 0.5] } ]\n";
        let cfg = validate_str(ok).unwrap();
        match &cfg.capture.cameras[0].source {
            crate::config::CameraKind::Serial { baud, retries, chunk_bytes, .. } => {
                assert_eq!((*baud, *retries, *chunk_bytes), (38_400, 3, 1024));
            }
            other => panic!("{other:?}"),
        }
        let bad = "[capture]\nchange_threshold = 65\n[[capture.cameras]]\nid = \"a/b\"\n\
                   source = { kind = \"serial\", port = \"p\", baud = 1234, chunk_bytes = 7 }\n\
                   slots = [ { sku = \"\", rect = [0.9, 0.0, 0.5, 0.5] } ]\n";
        let issues = validate_str(bad).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        for k in [
            "capture.change_threshold",
            "capture.cameras[0].id",
            "capture.cameras[0].baud",
            "capture.cameras[0].chunk_bytes",
            "capture.cameras[0].slots[0].rect",
            "capture.cameras[0].slots[0].sku",
        ] {
            assert!(keys.contains(&k), "{k} missing in {keys:?}");
        }
    }

    #[test]
    fn a_config_with_cameras_serialises_and_parses_back() {
        let src = "[capture]\ncrop_format = \"jpeg\"\n[[capture.cameras]]\nid = \"a\"\n\
                   source = { kind = \"folder\", dir = \"/in\" }\n\
                   [[capture.cameras]]\nid = \"b\"\n\
                   source = { kind = \"serial\", port = \"/dev/ttyS1\", resolution = \"160x120\" }\n\
                   slots = [ { sku = \"x\", rect = [0.5, 0.5, 0.5, 0.5] } ]\n";
        let cfg = validate_str(src).unwrap();
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(validate_str(&text).unwrap(), cfg, "{text}");
    }
}
