//! `sgbd-edge bench capture`: crops per second (unchanged vs changed crops, against a decode-only
//! baseline in the same run) and the end-to-end time from a shelf picture appearing in a watched
//! folder to its crops stored in the database.
use crate::capture::pipeline::{CameraThreads, Capturer};
use crate::capture::{planogram, CaptureError, Frame, Result};
use crate::config::{CameraConfig, CameraKind, Config, SlotConfig};
use crate::demo::assets as demo;
use crate::store::Store;
use crate::telemetry::{Histogram, Metrics};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct CaptureBenchArgs {
    /// Demo assets folder (catalog.csv, images/, shelf/planogram.toml).
    #[arg(long, default_value = "assets/demo")]
    pub assets: PathBuf,
    /// Frames per throughput measurement.
    #[arg(long, default_value_t = 40)]
    pub frames: usize,
    /// Shelf pictures dropped into the folder for the end-to-end measurement.
    #[arg(long, default_value_t = 20)]
    pub drops: usize,
    /// Folder source settle time (ms) for the end-to-end run (the daemon default is 300).
    #[arg(long, default_value_t = 50)]
    pub settle_ms: u64,
    /// Folder source poll interval (ms) for the end-to-end run (the daemon default is 500).
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    pub case: String,
    pub frames: usize,
    pub crops: usize,
    pub ms_per_frame: f64,
    pub crops_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureBenchReport {
    pub shelf: String,
    pub slots: usize,
    pub throughput: Vec<ThroughputRow>,
    pub e2e_drops: usize,
    pub e2e_settle_ms: u64,
    pub e2e_poll_ms: u64,
    pub e2e_p50_ms: f64,
    pub e2e_p90_ms: f64,
    pub e2e_max_ms: f64,
    pub e2e_mean_processing_ms: f64,
}

fn err(msg: impl std::fmt::Display) -> CaptureError {
    CaptureError::Config(msg.to_string())
}

/// The demo shelf and a variant with every product moved one slot on (all 12 crops change).
fn shelf_variants(assets: &Path, slots: &[SlotConfig]) -> Result<(Vec<u8>, Vec<u8>)> {
    let shelf_path = assets.join("shelf/shelf-a.jpg");
    let shelf = std::fs::read(&shelf_path).map_err(|e| err(format!("{}: {e}", shelf_path.display())))?;
    let mut photos = Vec::new();
    for s in slots {
        let p = assets.join("images").join(format!("{}.jpg", crate::capture::path_component(&s.sku)));
        let bytes = std::fs::read(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
        photos.push(planogram::decode(&bytes, &s.sku, planogram::DecodeLimits::default())?);
    }
    photos.rotate_left(1);
    let (img, _) = demo::compose_shelf(&photos, demo::ShelfLayout::default())?;
    Ok((shelf, planogram::encode_jpeg(&img, 88)?))
}

pub fn run(a: &CaptureBenchArgs) -> Result<CaptureBenchReport> {
    let text = std::fs::read_to_string(a.assets.join("shelf/planogram.toml"))
        .map_err(|e| err(format!("{}/shelf/planogram.toml: {e}", a.assets.display())))?;
    let parsed = crate::config::validate_str(&format!("[capture]\n{text}"))
        .map_err(|i| err(format!("demo planogram: {i:?}")))?;
    let slots = parsed.capture.cameras.first().map(|c| c.slots.clone()).unwrap_or_default();
    let (shelf, rotated) = shelf_variants(&a.assets, &slots)?;
    let tmp = tempfile_dir()?;
    let incoming = tmp.join("incoming");
    std::fs::create_dir_all(&incoming).map_err(err)?;
    let mut cfg = Config::default();
    cfg.node.data_dir = tmp.join("var");
    cfg.capture.settle_ms = a.settle_ms;
    cfg.capture.poll_ms = a.poll_ms.max(1);
    cfg.capture.cameras = vec![CameraConfig {
        id: "shelf-a".into(),
        source: CameraKind::Folder { dir: incoming.clone(), done_dir: "done".into() },
        slots: slots.clone(),
    }];
    let mut store = crate::store::open_config(&cfg).map_err(err)?;
    crate::store::import_catalog_csv(&mut store, &a.assets.join("catalog.csv")).map_err(err)?;
    let frames = a.frames.max(2);
    let mut rows = Vec::new();
    let fr = |bytes: &[u8], i: usize| Frame {
        camera_id: "shelf-a".into(),
        captured_ms: 1_000 + i as i64,
        jpeg_bytes: bytes.to_vec(),
        origin: "bench".into(),
    };

    // Baseline: decoding only.
    let t = Instant::now();
    for _ in 0..frames {
        planogram::decode(&shelf, "bench", planogram::DecodeLimits::default())?;
    }
    rows.push(row("baseline: decode only", frames, 0, t.elapsed()));

    // Unchanged crops: decode, cut, hash, compare.
    let mut cap = Capturer::new(&cfg, Arc::new(Metrics::default()));
    cap.process_frame(&store, &fr(&shelf, 0))?;
    let t = Instant::now();
    let mut crops = 0;
    for i in 0..frames {
        let r = cap.process_frame(&store, &fr(&shelf, i + 1))?;
        crops += r.crops.iter().filter(|c| !c.changed).count();
    }
    rows.push(row("unchanged crops (skipped)", frames, crops, t.elapsed()));

    // Changed crops: every slot changes each frame, so every crop is encoded, written and stored.
    let t = Instant::now();
    let mut crops = 0;
    for i in 0..frames {
        let bytes = if i % 2 == 0 { &rotated } else { &shelf };
        let r = cap.process_frame(&store, &fr(bytes, 10_000 + i))?;
        crops += r.changed().count();
    }
    rows.push(row("changed crops (stored)", frames, crops, t.elapsed()));

    // The same with an in-memory database: what the per-crop durable commit (fsync) costs.
    let mut mem = Store::open_in_memory().map_err(err)?;
    crate::store::import_catalog_csv(&mut mem, &a.assets.join("catalog.csv")).map_err(err)?;
    let mut cfg_mem = cfg.clone();
    cfg_mem.capture.crops_dir = tmp.join("crops-mem");
    let mut cap = Capturer::new(&cfg_mem, Arc::new(Metrics::default()));
    let t = Instant::now();
    let mut crops = 0;
    for i in 0..frames {
        let bytes = if i % 2 == 0 { &rotated } else { &shelf };
        let r = cap.process_frame(&mem, &fr(bytes, 20_000 + i))?;
        crops += r.changed().count();
    }
    rows.push(row("changed, in-memory database", frames, crops, t.elapsed()));

    // End to end: a file appears in the watched folder -> crops stored.
    let metrics = Arc::new(Metrics::default());
    let mut cap = Capturer::new(&cfg, metrics.clone());
    let threads = CameraThreads::spawn(&cfg.capture, cap.status(), metrics).map_err(err)?;
    let mut hist = Histogram::default();
    let mut processing = 0.0;
    let drops = a.drops.max(1);
    for i in 0..drops {
        let bytes = if i % 2 == 0 { &rotated } else { &shelf };
        let name = incoming.join(format!("drop-{i}.jpg"));
        let t0 = Instant::now();
        std::fs::write(&name, bytes).map_err(|e| err(format!("{}: {e}", name.display())))?;
        let f = threads.frames.recv_timeout(Duration::from_secs(30)).map_err(|e| err(format!("no frame: {e}")))?;
        let r = cap.process_frame(&store, &f)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        hist.record(ms);
        processing += r.process_ms;
        if r.changed().count() != slots.len() {
            return Err(err(format!("drop {i}: {} of {} crops changed", r.changed().count(), slots.len())));
        }
    }
    threads.stop();
    let s = hist.summary();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(CaptureBenchReport {
        shelf: a.assets.join("shelf/shelf-a.jpg").display().to_string(),
        slots: slots.len(),
        throughput: rows,
        e2e_drops: drops,
        e2e_settle_ms: a.settle_ms,
        e2e_poll_ms: a.poll_ms,
        e2e_p50_ms: s.p50_ms,
        e2e_p90_ms: s.p90_ms,
        e2e_max_ms: s.max_ms,
        e2e_mean_processing_ms: processing / drops as f64,
    })
}

fn row(case: &str, frames: usize, crops: usize, d: Duration) -> ThroughputRow {
    let s = d.as_secs_f64().max(1e-9);
    ThroughputRow {
        case: case.into(),
        frames,
        crops,
        ms_per_frame: s * 1e3 / frames as f64,
        crops_per_s: crops as f64 / s,
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("sgbd-bench-capture-{}-{}", std::process::id(), crate::sys::now_ms()));
    std::fs::create_dir_all(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    Ok(p)
}

/// The report as a table.
impl std::fmt::Display for CaptureBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bench capture: {} ({} slots)", self.shelf, self.slots)?;
        writeln!(f, "{:<28} {:>7} {:>7} {:>13} {:>11}", "case", "frames", "crops", "ms/frame", "crops/s")?;
        for t in &self.throughput {
            writeln!(
                f,
                "{:<28} {:>7} {:>7} {:>13.2} {:>11.1}",
                t.case, t.frames, t.crops, t.ms_per_frame, t.crops_per_s
            )?;
        }
        writeln!(
            f,
            "end to end (file appears -> {} crops stored), {} drops, settle {} ms, poll {} ms: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (processing {:.1} ms of it on average)",
            self.slots,
            self.e2e_drops,
            self.e2e_settle_ms,
            self.e2e_poll_ms,
            self.e2e_p50_ms,
            self.e2e_p90_ms,
            self.e2e_max_ms,
            self.e2e_mean_processing_ms
        )
    }
}

impl super::Report for CaptureBenchReport {}
