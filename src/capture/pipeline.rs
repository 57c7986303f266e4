//! From frames to stored crops: decode (with limits), cut the planogram slots, skip unchanged
//! crops (dHash), store changed ones (file + `images` row), record unknown SKUs as new items,
//! and hand changed crops to the denoiser through a sink.
//!
//! Change detection compares each crop with the last *stored* crop of the same camera slot
//! (kept in memory, and read back from the `images` table after a restart), so a slow drift
//! eventually counts as a change. Image rows carry `source = "<camera>/<slot index>"`.
use super::status::StatusBoard;
use super::{io_err, path_component, planogram, CaptureError, Frame, Result, Source};
use crate::config::{CaptureConfig, Config};
use crate::store::{NewItem, Store};
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happened to one slot of one frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CropOutcome {
    pub camera_id: String,
    pub slot: usize,
    pub sku: String,
    pub captured_ms: i64,
    pub phash: u64,
    /// Hamming distance to the previous stored crop of this slot (`None`: first crop).
    pub distance: Option<u32>,
    /// `true`: stored and sent on for denoising; `false`: same as before, not re-processed.
    pub changed: bool,
    /// The stored crop file (changed crops only).
    pub path: Option<PathBuf>,
    /// The `images` row (changed crops only).
    pub image_id: Option<i64>,
    /// The SKU was not in the catalogue and was recorded as a new item.
    pub new_item: bool,
}

/// Result of one frame.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameReport {
    pub camera_id: String,
    pub origin: String,
    pub captured_ms: i64,
    pub crops: Vec<CropOutcome>,
    /// Slots that could not be cut or stored (the others are in `crops`).
    pub slot_errors: Vec<String>,
    /// Wall time from the frame's arrival to its last stored crop, in ms.
    pub process_ms: f64,
}

impl FrameReport {
    pub fn changed(&self) -> impl Iterator<Item = &CropOutcome> {
        self.crops.iter().filter(|c| c.changed)
    }
}

type Sink = Box<dyn FnMut(&CropOutcome) + Send>;

/// Processes frames of all configured cameras. Owns no database connection: the caller passes
/// its `Store` (one per thread).
pub struct Capturer {
    cfg: CaptureConfig,
    crops_root: PathBuf,
    limits: planogram::DecodeLimits,
    metrics: Arc<Metrics>,
    status: StatusBoard,
    /// Last stored hash per (camera, slot); `None` once looked up and absent.
    last: HashMap<(String, usize), Option<u64>>,
    sink: Option<Sink>,
}

impl Capturer {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let c = &cfg.capture;
        let crops_root = if c.crops_dir.is_absolute() { c.crops_dir.clone() } else { cfg.data_dir().join(&c.crops_dir) };
        let status = StatusBoard::default();
        for cam in &c.cameras {
            status.register(&cam.id);
        }
        Self {
            cfg: c.clone(),
            crops_root,
            limits: planogram::DecodeLimits::from_config(c),
            metrics,
            status,
            last: HashMap::new(),
            sink: None,
        }
    }

    /// Every changed crop is passed to `sink` after it was stored (the daemon forwards it to
    /// the denoiser, e.g. with a channel's `send`).
    pub fn set_sink(&mut self, sink: impl FnMut(&CropOutcome) + Send + 'static) {
        self.sink = Some(Box::new(sink));
    }

    /// Camera health, shared with camera threads and status reports.
    pub fn status(&self) -> StatusBoard {
        self.status.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn crops_root(&self) -> &Path {
        &self.crops_root
    }

    /// Records a camera fault: a log line, `capture.camera_errors`, the camera degraded.
    pub fn source_error(&self, camera_id: &str, e: &CaptureError) {
        record_source_error(&self.status, &self.metrics, camera_id, e);
    }

    /// Decodes a frame, cuts its slots and stores the changed crops. A frame that cannot be
    /// decoded is an error (counted in `capture.decode_errors`, camera degraded); a bad slot is
    /// listed in `slot_errors` and the other slots go on.
    pub fn process_frame(&mut self, store: &Store, frame: &Frame) -> Result<FrameReport> {
        let t0 = Instant::now();
        let Some(cam) = self.cfg.cameras.iter().find(|c| c.id == frame.camera_id).cloned() else {
            return Err(CaptureError::Config(format!("frame from unknown camera {:?}", frame.camera_id)));
        };
        let img = match planogram::decode(&frame.jpeg_bytes, &frame.origin, self.limits) {
            Ok(i) => i,
            Err(e) => {
                self.metrics.incr("capture.decode_errors");
                self.status.error(&cam.id, &e.to_string());
                tracing::warn!(camera = %cam.id, origin = %frame.origin, error = %e, "capture: bad picture skipped");
                return Err(e);
            }
        };
        self.status.frame_ok(&cam.id, frame.captured_ms);
        self.metrics.incr("capture.frames");
        let mut report = FrameReport {
            camera_id: cam.id.clone(),
            origin: frame.origin.clone(),
            captured_ms: frame.captured_ms,
            crops: Vec::with_capacity(cam.slots.len()),
            slot_errors: Vec::new(),
            process_ms: 0.0,
        };
        for (i, slot) in cam.slots.iter().enumerate() {
            match self.process_slot(store, &cam.id, i, slot, &img, frame.captured_ms) {
                Ok(o) => {
                    if o.changed {
                        self.metrics.incr("capture.crops_changed");
                        if let Some(sink) = self.sink.as_mut() {
                            sink(&o);
                        }
                    } else {
                        self.metrics.incr("capture.crops_unchanged");
                    }
                    report.crops.push(o);
                }
                Err(e) => {
                    let counter = match e {
                        CaptureError::Store(_) => "capture.store_errors",
                        _ => "capture.slot_errors",
                    };
                    self.metrics.incr(counter);
                    tracing::warn!(camera = %cam.id, slot = i, sku = %slot.sku, error = %e, "capture: slot skipped");
                    report.slot_errors.push(e.to_string());
                }
            }
        }
        report.process_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.metrics.observe_ms("capture.frame_ms", report.process_ms);
        tracing::info!(
            camera = %cam.id,
            changed = report.changed().count(),
            unchanged = report.crops.len() - report.changed().count(),
            errors = report.slot_errors.len(),
            ms = report.process_ms,
            "capture: frame processed"
        );
        Ok(report)
    }

    fn previous_hash(&mut self, store: &Store, camera: &str, slot: usize, sku: &str) -> Option<u64> {
        let key = (camera.to_string(), slot);
        if let Some(h) = self.last.get(&key) {
            return *h;
        }
        let source = format!("{camera}/{slot}");
        let h = store
            .item_images(sku)
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.source == source).and_then(|r| r.phash));
        self.last.insert(key, h);
        h
    }

    fn process_slot(
        &mut self,
        store: &Store,
        camera: &str,
        slot_idx: usize,
        slot: &crate::config::SlotConfig,
        img: &image::RgbImage,
        captured_ms: i64,
    ) -> Result<CropOutcome> {
        let sku = slot.sku.trim().to_string();
        let crop = planogram::crop(img, slot_idx, slot)?;
        let phash = planogram::dhash(&crop);
        let prev = self.previous_hash(store, camera, slot_idx, &sku);
        let distance = prev.map(|p| planogram::hamming(p, phash));
        let mut out = CropOutcome {
            camera_id: camera.to_string(),
            slot: slot_idx,
            sku: sku.clone(),
            captured_ms,
            phash,
            distance,
            changed: distance.is_none_or(|d| d > self.cfg.change_threshold),
            path: None,
            image_id: None,
            new_item: false,
        };
        if !out.changed {
            return Ok(out);
        }
        let dir = self.crops_root.join(path_component(camera)).join(format!("{slot_idx:02}-{}", path_component(&sku)));
        std::fs::create_dir_all(&dir).map_err(|e| io_err(dir.display(), e))?;
        let path = dir.join(format!("{captured_ms}.jpg"));
        let tmp = dir.join(format!(".{captured_ms}.jpg.tmp"));
        let jpeg = planogram::encode_jpeg(&crop, self.cfg.crop_jpeg_quality)?;
        std::fs::write(&tmp, &jpeg).map_err(|e| io_err(tmp.display(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(path.display(), e))?;
        let path_str = path.to_string_lossy().into_owned();
        let store_err = |e: crate::store::StoreError| CaptureError::Store(e.to_string());
        if store.item_by_sku(&sku).map_err(store_err)?.is_none() {
            let item = NewItem {
                sku: sku.clone(),
                title: String::new(),
                description: String::new(),
                attributes: serde_json::json!({ "source": "capture", "camera": camera, "slot": slot_idx }),
                image_path: Some(path_str.clone()),
            };
            let (_, created) = store.upsert_item(&item).map_err(store_err)?;
            out.new_item = created;
            if created {
                self.metrics.incr("capture.new_items");
                tracing::info!(camera, slot = slot_idx, sku = %sku, "capture: unknown SKU recorded as a new item");
            }
        }
        let source = format!("{camera}/{slot_idx}");
        out.image_id = Some(store.add_image(&sku, &path_str, &source, captured_ms, Some(phash)).map_err(store_err)?);
        out.path = Some(path);
        self.last.insert((camera.to_string(), slot_idx), Some(phash));
        Ok(out)
    }
}

fn record_source_error(status: &StatusBoard, metrics: &Metrics, camera_id: &str, e: &CaptureError) {
    let counter = match e {
        CaptureError::Timeout { .. } => "capture.camera_timeouts",
        _ => "capture.camera_errors",
    };
    metrics.incr(counter);
    status.error(camera_id, &e.to_string());
    tracing::warn!(camera = camera_id, error = %e, "capture: camera degraded");
}

/// Takes one frame from each configured camera, all cameras at once, waiting up to `wait` each.
/// Errors are recorded in `status` and `metrics` and returned per camera.
pub fn capture_once(
    cfg: &CaptureConfig,
    wait: Duration,
    status: &StatusBoard,
    metrics: &Metrics,
) -> Vec<(String, Result<Option<Frame>>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cfg
            .cameras
            .iter()
            .map(|cam| {
                let id = cam.id.clone();
                (id, s.spawn(move || super::open_source(cam, cfg).next_frame(wait)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(id, h)| {
                let r = h.join().unwrap_or_else(|_| Err(CaptureError::Config(format!("camera {id} thread panicked"))));
                if let Err(e) = &r {
                    record_source_error(status, metrics, &id, e);
                }
                (id, r)
            })
            .collect()
    })
}

/// One thread per camera, each sending its frames into one bounded channel.
pub struct CameraThreads {
    pub frames: Receiver<Frame>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl CameraThreads {
    /// Starts a thread per configured camera. A camera fault is recorded (status, metrics, log)
    /// and retried with a backoff of 1 s doubling up to 30 s; the other cameras keep running.
    pub fn spawn(cfg: &CaptureConfig, status: StatusBoard, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let sources = cfg.cameras.iter().map(|c| super::open_source(c, cfg)).collect();
        Self::spawn_sources(sources, status, metrics)
    }

    /// Same as [`CameraThreads::spawn`] with sources built by the caller (tests, benchmarks).
    pub fn spawn_sources(
        sources: Vec<Box<dyn Source>>,
        status: StatusBoard,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4 * sources.len().max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for src in sources {
            let (tx, stop, status, metrics) = (tx.clone(), stop.clone(), status.clone(), metrics.clone());
            let name = format!("cam-{}", src.camera_id());
            handles.push(std::thread::Builder::new().name(name).spawn(move || camera_loop(src, tx, stop, status, metrics))?);
        }
        Ok(Self { frames: rx, stop, handles })
    }

    /// Asks every camera thread to stop and waits for them (each stops within its poll time).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.frames);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn camera_loop(
    mut src: Box<dyn Source>,
    tx: SyncSender<Frame>,
    stop: Arc<AtomicBool>,
    status: StatusBoard,
    metrics: Arc<Metrics>,
) {
    let id = src.camera_id().to_string();
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::SeqCst) {
        match src.next_frame(Duration::from_millis(200)) {
            Ok(Some(f)) => {
                backoff = Duration::from_secs(1);
                if tx.send(f).is_err() {
                    break; // the processor is gone
                }
            }
            Ok(None) => {}
            Err(e) => {
                record_source_error(&status, &metrics, &id, &e);
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
