//! The bundled demo shelf: product photos from `assets/demo` laid out on a grid with margins and
//! shelf boards, and the planogram (`[[capture.cameras]]` TOML) that maps each cell to its SKU.
use crate::capture::{io_err, planogram, CaptureError, Result};
use crate::config::SlotConfig;
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Grid geometry of a composed shelf, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShelfLayout {
    pub cols: u32,
    pub rows: u32,
    /// Each product photo is scaled to `cell` x `cell`.
    pub cell: u32,
    pub margin: u32,
}

impl Default for ShelfLayout {
    fn default() -> Self {
        Self { cols: 4, rows: 3, cell: 224, margin: 24 }
    }
}

impl ShelfLayout {
    pub fn size(&self) -> (u32, u32) {
        (self.cols * self.cell + (self.cols + 1) * self.margin, self.rows * self.cell + (self.rows + 1) * self.margin)
    }

    /// Normalised [x, y, w, h] of cell `i` (row-major).
    pub fn rect(&self, i: u32) -> [f32; 4] {
        let (w, h) = self.size();
        let (c, r) = (i % self.cols, i / self.cols);
        let x = self.margin + c * (self.cell + self.margin);
        let y = self.margin + r * (self.cell + self.margin);
        [x as f32 / w as f32, y as f32 / h as f32, self.cell as f32 / w as f32, self.cell as f32 / h as f32]
    }
}

const WALL: Rgb<u8> = Rgb([236, 232, 222]);
const BOARD: Rgb<u8> = Rgb([121, 85, 58]);

/// Lays `photos` (row-major, at most cols*rows) out on a shelf; returns the image and each photo's
/// normalised rect.
pub fn compose_shelf(photos: &[RgbImage], layout: ShelfLayout) -> Result<(RgbImage, Vec<[f32; 4]>)> {
    if photos.is_empty() || photos.len() as u32 > layout.cols * layout.rows || layout.cell == 0 {
        return Err(CaptureError::Config(format!(
            "compose_shelf: {} photos for a {}x{} grid",
            photos.len(),
            layout.cols,
            layout.rows
        )));
    }
    let (w, h) = layout.size();
    let mut shelf = RgbImage::from_pixel(w, h, WALL);
    // A board under each row, in the margin below it.
    let board = (layout.margin / 2).max(1);
    for r in 0..layout.rows {
        let y0 = layout.margin + r * (layout.cell + layout.margin) + layout.cell + (layout.margin - board) / 2;
        for y in y0..(y0 + board).min(h) {
            for x in 0..w {
                shelf.put_pixel(x, y, BOARD);
            }
        }
    }
    let mut rects = Vec::with_capacity(photos.len());
    for (i, p) in photos.iter().enumerate() {
        let i = i as u32;
        let p = if p.dimensions() == (layout.cell, layout.cell) {
            p.clone()
        } else {
            image::imageops::resize(p, layout.cell, layout.cell, image::imageops::FilterType::Triangle)
        };
        let x = layout.margin + (i % layout.cols) * (layout.cell + layout.margin);
        let y = layout.margin + (i / layout.cols) * (layout.cell + layout.margin);
        image::imageops::replace(&mut shelf, &p, x as i64, y as i64);
        rects.push(layout.rect(i));
    }
    Ok((shelf, rects))
}

/// One row of the demo catalogue (Myntra styles.csv layout).
#[derive(Debug, Clone)]
pub struct DemoProduct {
    pub sku: String,
    pub article_type: String,
    pub title: String,
}

/// Reads `catalog.csv` (Myntra styles.csv header) of a demo assets folder.
pub fn read_catalog(assets_dir: &Path) -> Result<Vec<DemoProduct>> {
    let path = assets_dir.join("catalog.csv");
    let mut rd = csv::Reader::from_path(&path)
        .map_err(|e| CaptureError::Config(format!("cannot read {}: {e}", path.display())))?;
    let headers = rd.headers().map_err(|e| CaptureError::Config(format!("{}: {e}", path.display())))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| CaptureError::Config(format!("{}: no column {name}", path.display())))
    };
    let (id, ty, title) = (col("id")?, col("articleType")?, col("productDisplayName")?);
    let mut out = Vec::new();
    for (n, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| CaptureError::Config(format!("{} row {}: {e}", path.display(), n + 2)))?;
        let get = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
        out.push(DemoProduct { sku: get(id), article_type: get(ty), title: get(title) });
    }
    Ok(out)
}

/// The demo shelf's products: the first product of each article type, in catalogue order, up
/// to `n`.
pub fn pick_shelf_products(catalog: &[DemoProduct], n: usize) -> Vec<DemoProduct> {
    let mut seen = std::collections::HashSet::new();
    catalog.iter().filter(|p| seen.insert(p.article_type.clone())).take(n).cloned().collect()
}

/// The `[[capture.cameras]]` TOML block of one folder camera with its slots.
pub fn camera_toml(camera_id: &str, dir: &str, slots: &[SlotConfig]) -> String {
    let mut s = format!(
        "[[capture.cameras]]\nid = {}\nsource = {{ kind = \"folder\", dir = {} }}\nslots = [\n",
        toml_str(camera_id),
        toml_str(dir)
    );
    for sl in slots {
        let [x, y, w, h] = sl.rect;
        s.push_str(&format!("  {{ sku = {}, rect = [{x:.6}, {y:.6}, {w:.6}, {h:.6}] }},\n", toml_str(&sl.sku)));
    }
    s.push_str("]\n");
    s
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// What [`compose_demo`] wrote.
#[derive(Debug, Clone)]
pub struct DemoShelf {
    pub image_path: PathBuf,
    pub planogram_path: PathBuf,
    pub slots: Vec<SlotConfig>,
}

/// Composes `shelf-a.jpg` and `planogram.toml` in `out_dir` from the photos in
/// `<assets_dir>/images/<sku>.jpg` (12 products, 4x3 grid). `incoming_dir` is the folder the
/// planogram's camera watches.
pub fn compose_demo(assets_dir: &Path, out_dir: &Path, incoming_dir: &str) -> Result<DemoShelf> {
    let layout = ShelfLayout::default();
    let products = pick_shelf_products(&read_catalog(assets_dir)?, (layout.cols * layout.rows) as usize);
    let mut photos = Vec::with_capacity(products.len());
    for p in &products {
        let path = assets_dir.join("images").join(format!("{}.jpg", crate::capture::path_component(&p.sku)));
        let bytes = std::fs::read(&path).map_err(|e| io_err(path.display(), e))?;
        photos.push(planogram::decode(&bytes, &path.display().to_string(), planogram::DecodeLimits::default())?);
    }
    let (shelf, rects) = compose_shelf(&photos, layout)?;
    std::fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir.display(), e))?;
    let image_path = out_dir.join("shelf-a.jpg");
    let jpeg = planogram::encode_jpeg(&shelf, 88)?;
    std::fs::write(&image_path, jpeg).map_err(|e| io_err(image_path.display(), e))?;
    let slots: Vec<SlotConfig> =
        products.iter().zip(rects).map(|(p, rect)| SlotConfig { sku: p.sku.clone(), rect }).collect();
    let mut text = String::from(
        "# Demo shelf planogram: generated by `sgbd-edge capture compose-demo`; paste into a config file.\n\
         # Slots (row-major): ",
    );
    text.push_str(&products.iter().map(|p| format!("{} {}", p.sku, p.article_type)).collect::<Vec<_>>().join(", "));
    text.push('\n');
    text.push_str(&camera_toml("shelf-a", incoming_dir, &slots));
    let planogram_path = out_dir.join("planogram.toml");
    std::fs::write(&planogram_path, text).map_err(|e| io_err(planogram_path.display(), e))?;
    Ok(DemoShelf { image_path, planogram_path, slots })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_rects_cover_cells_exactly() {
        let l = ShelfLayout::default();
        assert_eq!(l.size(), (1016, 768));
        let photos: Vec<RgbImage> =
            (0..12).map(|i| RgbImage::from_pixel(224, 224, Rgb([i * 20, 255 - i * 20, 7]))).collect();
        let (shelf, rects) = compose_shelf(&photos, l).unwrap();
        for (i, r) in rects.iter().enumerate() {
            let s = SlotConfig { sku: i.to_string(), rect: *r };
            let c = planogram::crop(&shelf, i, &s).unwrap();
            assert_eq!(c.dimensions(), (224, 224));
            assert!(c.pixels().all(|p| *p == Rgb([i as u8 * 20, 255 - i as u8 * 20, 7])), "cell {i}");
        }
        assert!(compose_shelf(&photos[..0], l).is_err());
    }

    #[test]
    fn camera_toml_parses_back() {
        let slots = vec![SlotConfig { sku: "a\"b".into(), rect: [0.1, 0.2, 0.3, 0.4] }];
        let text = format!("[capture]\n{}", camera_toml("cam-1", "./in", &slots));
        let cfg = crate::config::validate_str(&text).unwrap();
        assert_eq!(cfg.capture.cameras[0].slots, slots);
    }
}
