//! Decoding with limits, cutting a frame into planogram crops, and the 64-bit dHash.
use super::{CaptureError, Result};
use crate::config::{CaptureConfig, SlotConfig};
use image::{DynamicImage, GenericImageView, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Decoder limits taken from the `[capture]` section.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_alloc: u64,
    pub max_bytes: u64,
}

impl DecodeLimits {
    pub fn from_config(c: &CaptureConfig) -> Self {
        Self {
            max_width: c.max_image_width,
            max_height: c.max_image_height,
            max_alloc: c.max_decode_alloc_bytes,
            max_bytes: c.max_file_bytes,
        }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::from_config(&CaptureConfig::default())
    }
}

/// Decodes an encoded image (format guessed from its bytes) to RGB, refusing images larger than
/// the limits before their pixels are allocated (decompression bombs), empty and corrupt images.
pub fn decode(bytes: &[u8], origin: &str, lim: DecodeLimits) -> Result<RgbImage> {
    if bytes.len() as u64 > lim.max_bytes {
        return Err(CaptureError::TooLarge { origin: origin.into(), bytes: bytes.len() as u64, limit: lim.max_bytes });
    }
    if bytes.is_empty() {
        return Err(CaptureError::EmptyImage { origin: origin.into() });
    }
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_has_eoi(bytes) {
        return Err(CaptureError::Decode { origin: origin.into(), msg: "truncated JPEG (no EOI marker)".into() });
    }
    let dec_err = |e: &dyn std::fmt::Display| CaptureError::Decode { origin: origin.into(), msg: e.to_string() };
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| dec_err(&e))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(lim.max_width);
    limits.max_image_height = Some(lim.max_height);
    limits.max_alloc = Some(lim.max_alloc);
    reader.limits(limits);
    let img: DynamicImage = reader.decode().map_err(|e| dec_err(&e))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(CaptureError::EmptyImage { origin: origin.into() });
    }
    Ok(img.to_rgb8())
}

/// True when a JPEG ends with its EOI marker (FF D9), allowing zero padding after it (some
/// cameras round the frame length up).
pub fn jpeg_has_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    end >= 4 && bytes[end - 2..end] == [0xFF, 0xD9]
}

/// Pixel box (x, y, w, h) of a normalised slot rect in a `width` x `height` frame; an error when
/// the rect leaves the frame or covers no pixel.
pub fn slot_box(slot_idx: usize, slot: &SlotConfig, width: u32, height: u32) -> Result<(u32, u32, u32, u32)> {
    let [x, y, w, h] = slot.rect;
    let bad = || CaptureError::BadSlot { slot: slot_idx, sku: slot.sku.clone(), rect: slot.rect, width, height };
    let finite = slot.rect.iter().all(|v| v.is_finite());
    if !finite || x < 0.0 || y < 0.0 || w <= 0.0 || h <= 0.0 || x + w > 1.0 + 1e-4 || y + h > 1.0 + 1e-4 {
        return Err(bad());
    }
    let px = |v: f32, full: u32| ((v as f64) * full as f64).round().clamp(0.0, full as f64) as u32;
    let (x0, y0) = (px(x, width), px(y, height));
    let (x1, y1) = (px(x + w, width), px(y + h, height));
    if x1 <= x0 || y1 <= y0 {
        return Err(bad());
    }
    Ok((x0, y0, x1 - x0, y1 - y0))
}

/// Cuts one slot out of a decoded frame.
pub fn crop(frame: &RgbImage, slot_idx: usize, slot: &SlotConfig) -> Result<RgbImage> {
    let (x, y, w, h) = slot_box(slot_idx, slot, frame.width(), frame.height())?;
    Ok(frame.view(x, y, w, h).to_image())
}

/// 64-bit difference hash: the image shrunk to 9x8 grey pixels, one bit per horizontal neighbour
/// pair (bit set when the left pixel is brighter). Robust to JPEG noise and small brightness changes.
pub fn dhash(img: &RgbImage) -> u64 {
    dhash_grey(&image::imageops::grayscale(img))
}

fn dhash_grey(grey: &image::GrayImage) -> u64 {
    let small = image::imageops::resize(grey, 9, 8, image::imageops::FilterType::Triangle);
    let mut h = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            let l = small.get_pixel(x, y)[0];
            let r = small.get_pixel(x + 1, y)[0];
            h = (h << 1) | u64::from(l > r);
        }
    }
    h
}

/// Side of the grey thumbnail compared by [`thumb_distance`].
pub const THUMB_SIDE: u32 = 16;

/// A 16x16 grey thumbnail, normalised to zero mean and unit standard deviation (so a change of
/// lighting, brightness or contrast does not count as a change of the picture).
#[derive(Debug, Clone, PartialEq)]
pub struct Thumb(pub Vec<f32>);

pub fn thumb(img: &RgbImage) -> Thumb {
    thumb_grey(&image::imageops::grayscale(img))
}

/// dHash and thumbnail of a crop, from one grey conversion.
pub fn fingerprint(img: &RgbImage) -> (u64, Thumb) {
    let grey = image::imageops::grayscale(img);
    (dhash_grey(&grey), thumb_grey(&grey))
}

fn thumb_grey(grey: &image::GrayImage) -> Thumb {
    let small = image::imageops::resize(grey, THUMB_SIDE, THUMB_SIDE, image::imageops::FilterType::Triangle);
    let v: Vec<f32> = small.pixels().map(|p| f32::from(p[0])).collect();
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt().max(1.0);
    Thumb(v.iter().map(|x| (x - mean) / sd).collect())
}

/// Mean absolute difference of two thumbnails, in hundredths of a standard deviation. JPEG
/// recompression and lighting changes stay below ~2; two different products of the demo
/// catalogue are at least ~7 apart (measured, see docs/capture.md).
pub fn thumb_distance(a: &Thumb, b: &Thumb) -> f32 {
    if a.0.len() != b.0.len() || a.0.is_empty() {
        return f32::INFINITY;
    }
    100.0 * a.0.iter().zip(&b.0).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.0.len() as f32
}

/// Number of differing bits between two hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// File format of stored crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropFormat {
    /// Lossless, fast to write (~0.2 ms per 224x224 crop), ~25 kB.
    #[default]
    Png,
    /// Smaller (~5-15 kB) but ~15x slower to encode with the pure-Rust encoder.
    Jpeg,
}

impl CropFormat {
    pub fn extension(self) -> &'static str {
        match self {
            CropFormat::Png => "png",
            CropFormat::Jpeg => "jpg",
        }
    }
}

/// Encodes a crop in the configured format.
pub fn encode_crop(img: &RgbImage, format: CropFormat, jpeg_quality: u8) -> Result<Vec<u8>> {
    match format {
        CropFormat::Jpeg => encode_jpeg(img, jpeg_quality),
        CropFormat::Png => {
            use image::codecs::png::{CompressionType, FilterType, PngEncoder};
            let mut out = Vec::new();
            let enc = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
            img.write_with_encoder(enc).map_err(|e| CaptureError::Encode(e.to_string()))?;
            Ok(out)
        }
    }
}

/// Encodes an RGB image as JPEG.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
    img.write_with_encoder(enc).map_err(|e| CaptureError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32, flip: bool) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = ((x * 255) / w.max(1)) as u8;
            let v = if flip { 255 - v } else { v };
            image::Rgb([v, (y % 256) as u8, 128])
        })
    }

    #[test]
    fn slot_box_maps_and_rejects() {
        let s = SlotConfig { sku: "a".into(), rect: [0.25, 0.5, 0.5, 0.5] };
        assert_eq!(slot_box(0, &s, 200, 100).unwrap(), (50, 50, 100, 50));
        let out = SlotConfig { sku: "a".into(), rect: [0.8, 0.0, 0.5, 0.5] };
        assert!(matches!(slot_box(1, &out, 200, 100), Err(CaptureError::BadSlot { slot: 1, .. })));
        let tiny = SlotConfig { sku: "a".into(), rect: [0.0, 0.0, 0.001, 0.5] };
        assert!(slot_box(2, &tiny, 100, 100).is_err());
        let nan = SlotConfig { sku: "a".into(), rect: [f32::NAN, 0.0, 0.1, 0.5] };
        assert!(slot_box(3, &nan, 100, 100).is_err());
    }

    #[test]
    fn dhash_survives_jpeg_but_sees_a_different_picture() {
        let a = gradient(120, 90, false);
        let a_jpeg = decode(&encode_jpeg(&a, 70).unwrap(), "t", DecodeLimits::default()).unwrap();
        let b = gradient(120, 90, true);
        assert!(hamming(dhash(&a), dhash(&a_jpeg)) <= 4);
        assert!(hamming(dhash(&a), dhash(&b)) >= 32, "{:x} {:x}", dhash(&a), dhash(&b));
    }

    #[test]
    fn thumb_ignores_lighting_but_not_content() {
        let a = gradient(120, 90, false);
        let mut dim = a.clone();
        for p in dim.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (f32::from(*c) * 0.8 + 12.0) as u8;
            }
        }
        let b = gradient(120, 90, true);
        assert!(thumb_distance(&thumb(&a), &thumb(&dim)) < 2.0);
        assert!(thumb_distance(&thumb(&a), &thumb(&b)) > 50.0);
    }

    #[test]
    fn decode_refuses_bombs_corrupt_and_empty() {
        let img = gradient(300, 200, false);
        let jpeg = encode_jpeg(&img, 80).unwrap();
        let lim = DecodeLimits { max_width: 256, max_height: 256, ..DecodeLimits::default() };
        assert!(matches!(decode(&jpeg, "big", lim), Err(CaptureError::Decode { .. })));
        let lim = DecodeLimits { max_bytes: 100, ..DecodeLimits::default() };
        assert!(matches!(decode(&jpeg, "big", lim), Err(CaptureError::TooLarge { .. })));
        assert!(matches!(decode(&[], "e", DecodeLimits::default()), Err(CaptureError::EmptyImage { .. })));
        assert!(matches!(
            decode(&jpeg[..jpeg.len() / 3], "t", DecodeLimits::default()),
            Err(CaptureError::Decode { .. })
        ));
        assert!(matches!(
            decode(b"not an image at all", "x", DecodeLimits::default()),
            Err(CaptureError::Decode { .. })
        ));
        assert_eq!(decode(&jpeg, "ok", DecodeLimits::default()).unwrap().dimensions(), (300, 200));
    }
}
