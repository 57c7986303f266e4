//! From frames to stored crops: decode (with limits), cut the planogram slots, skip unchanged
//! crops (dHash), store changed ones (file + `images` row), record unknown SKUs as new items,
//! and hand changed crops to the denoiser through a sink.
//!
//! Change detection compares each crop with the last *stored* crop of the same camera slot: a crop
//! is changed when its 64-bit dHash is more than `change_threshold` bits away, or its normalised
//! 16x16 thumbnail more than `change_pixel_threshold` away (see [`planogram::thumb_distance`]).
//! The previous hash and thumbnail are kept in memory and, after a restart, read back from the
//! newest `images` row of the slot (its phash, and the crop file it names). Comparing with the
//! last stored crop (not the last seen one) makes a slow drift count as a change eventually.
//! Image rows carry `source = "<camera>/<slot index>"`.
use super::status::StatusBoard;
use super::{io_err, path_component, planogram, CaptureError, Frame, Result, Source};
use crate::config::{CaptureConfig, Config};
use crate::store::{NewItem, Store};
use crate::telemetry::Metrics;
use rayon::prelude::*;
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
    /// Thumbnail distance to the previous stored crop (`None`: first crop or its file is gone).
    pub pixel_distance: Option<f32>,
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

#[derive(Debug, Clone)]
struct Previous {
    hash: u64,
    thumb: Option<planogram::Thumb>,
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
    /// Last stored crop per (camera, slot); `None` once looked up and absent.
    last: HashMap<(String, usize), Option<Previous>>,
    sink: Option<Sink>,
}

impl Capturer {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let c = &cfg.capture;
        let crops_root =
            if c.crops_dir.is_absolute() { c.crops_dir.clone() } else { cfg.data_dir().join(&c.crops_dir) };
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
        // Cut and fingerprint every slot in parallel.
        let cut: Vec<Result<(image::RgbImage, u64, planogram::Thumb)>> = cam
            .slots
            .par_iter()
            .enumerate()
            .map(|(i, slot)| {
                let c = planogram::crop(&img, i, slot)?;
                let (h, t) = planogram::fingerprint(&c);
                Ok((c, h, t))
            })
            .collect();
        // Compare with the previous crops (may read the store), then encode the changed ones in parallel.
        let mut judged = Vec::with_capacity(cut.len());
        for (i, r) in cut.into_iter().enumerate() {
            let sku = cam.slots[i].sku.trim().to_string();
            judged.push(match r {
                Ok((c, h, t)) => Ok((self.judge(store, &cam.id, i, &sku, h, &t, frame.captured_ms), c, t)),
                Err(e) => Err((i, sku, e)),
            });
        }
        let (format, quality) = (self.cfg.crop_format, self.cfg.crop_jpeg_quality);
        let encoded: Vec<Option<Result<Vec<u8>>>> = judged
            .par_iter()
            .map(|j| match j {
                Ok((o, c, _)) if o.changed => Some(planogram::encode_crop(c, format, quality)),
                _ => None,
            })
            .collect();
        for (j, enc) in judged.into_iter().zip(encoded) {
            let res = match (j, enc) {
                (Err((i, sku, e)), _) => Err((i, sku, e)),
                (Ok((o, _, _)), None) => Ok(o),
                (Ok((o, _, _)), Some(Err(e))) => Err((o.slot, o.sku, e)),
                (Ok((mut o, _, t)), Some(Ok(bytes))) => match self.store_crop(store, &mut o, &bytes, t) {
                    Ok(()) => Ok(o),
                    Err(e) => Err((o.slot, o.sku, e)),
                },
            };
            match res {
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
                Err((i, sku, e)) => {
                    let counter = match e {
                        CaptureError::Store(_) => "capture.store_errors",
                        _ => "capture.slot_errors",
                    };
                    self.metrics.incr(counter);
                    tracing::warn!(camera = %cam.id, slot = i, sku = %sku, error = %e, "capture: slot skipped");
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

    fn previous(&mut self, store: &Store, camera: &str, slot: usize, sku: &str) -> Option<Previous> {
        let key = (camera.to_string(), slot);
        if let Some(p) = self.last.get(&key) {
            return p.clone();
        }
        let source = format!("{camera}/{slot}");
        let row = store.item_images(sku).ok().and_then(|rows| rows.into_iter().find(|r| r.source == source));
        let prev = row.and_then(|r| {
            let thumb = std::fs::read(&r.path)
                .ok()
                .and_then(|b| planogram::decode(&b, &r.path, self.limits).ok())
                .map(|img| planogram::thumb(&img));
            r.phash.map(|hash| Previous { hash, thumb })
        });
        self.last.insert(key, prev.clone());
        prev
    }

    /// Compares a crop's fingerprint with the slot's previous stored crop.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        store: &Store,
        camera: &str,
        slot_idx: usize,
        sku: &str,
        phash: u64,
        thumb: &planogram::Thumb,
        captured_ms: i64,
    ) -> CropOutcome {
        let prev = self.previous(store, camera, slot_idx, sku);
        let distance = prev.as_ref().map(|p| planogram::hamming(p.hash, phash));
        let pixel_distance = prev.as_ref().and_then(|p| p.thumb.as_ref()).map(|t| planogram::thumb_distance(t, thumb));
        // Without the previous thumbnail (crop file gone), re-process rather than miss a change.
        let changed = match (distance, pixel_distance) {
            (Some(d), Some(pd)) => d > self.cfg.change_threshold || pd > self.cfg.change_pixel_threshold,
            _ => true,
        };
        CropOutcome {
            camera_id: camera.to_string(),
            slot: slot_idx,
            sku: sku.to_string(),
            captured_ms,
            phash,
            distance,
            pixel_distance,
            changed,
            path: None,
            image_id: None,
            new_item: false,
        }
    }

    /// Writes a changed crop (atomically: temp file + rename), records an unknown SKU as a new
    /// item, adds the image row and remembers the crop as the slot's last one.
    fn store_crop(
        &mut self,
        store: &Store,
        out: &mut CropOutcome,
        bytes: &[u8],
        thumb: planogram::Thumb,
    ) -> Result<()> {
        let (camera, slot_idx, sku, captured_ms) = (out.camera_id.clone(), out.slot, out.sku.clone(), out.captured_ms);
        let dir = self.crops_root.join(path_component(&camera)).join(format!("{slot_idx:02}-{}", path_component(&sku)));
        std::fs::create_dir_all(&dir).map_err(|e| io_err(dir.display(), e))?;
        let ext = self.cfg.crop_format.extension();
        let path = dir.join(format!("{captured_ms}.{ext}"));
        crate::sys::write_atomic(&path, bytes, false).map_err(|e| io_err(path.display(), e))?;
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
                tracing::info!(camera = %camera, slot = slot_idx, sku = %sku, "capture: unknown SKU recorded as a new item");
            }
        }
        let source = format!("{camera}/{slot_idx}");
        out.image_id =
            Some(store.add_image(&sku, &path_str, &source, captured_ms, Some(out.phash)).map_err(store_err)?);
        out.path = Some(path);
        self.last.insert((camera, slot_idx), Some(Previous { hash: out.phash, thumb: Some(thumb) }));
        Ok(())
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
            handles.push(
                std::thread::Builder::new().name(name).spawn(move || camera_loop(src, tx, stop, status, metrics))?,
            );
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
