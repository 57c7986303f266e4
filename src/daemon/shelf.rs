//! The shelf stage: cameras -> capture (crops stored) -> denoise (clean text, features) -> store.
//!
//! Threads (all blocking work, none on the tokio runtime):
//! - one thread per camera ([`CameraThreads`]) delivering frames into a bounded channel;
//! - `capture`: runs [`Capturer::process_frame`] with its own store connection; each changed crop
//!   (already stored as a file and an `images` row) goes into a bounded queue to the denoiser
//!   (a full queue makes the capture thread wait: back-pressure, not growth);
//! - `denoise`: loads the models once (BLIP when its files are present and verified, MiniLM when
//!   present), then per crop: caption it and pool the BLIP image feature (when BLIP is loaded),
//!   clean the item's description (rule-based only without BLIP: degraded, said once in the log
//!   and in `status.json`/stats), embed the item text with MiniLM (when loaded), and store the
//!   features (with their model ids) and then the clean text (the text written last marks the item
//!   done).
//!
//! Both stages beat their heartbeat (`capture`, `denoise`) at least every 500 ms between jobs.
//! Shutdown: the stop flag ends both loops after the frame / item in hand (every row is written
//! by one statement, so nothing is half-written); crops still queued keep no clean text and are
//! picked up again at the next start (items with a camera crop and no clean description).
use super::Ctx;
use crate::capture::pipeline::{CameraThreads, Capturer, CropOutcome};
use crate::capture::status::{CameraState, CameraStatus, StatusBoard};
use crate::config::{CameraKind, Config};
use crate::denoise::text::Denoiser;
use crate::denoise::{Captioner, TextEncoder};
use crate::store::{FeatureKind, Store};
use crate::telemetry::Metrics;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Heartbeat names of the shelf stages (registered only when cameras are configured).
pub const STAGES: [&str; 2] = ["capture", "denoise"];

/// Crops waiting for the denoiser.
const QUEUE: usize = 256;
/// Longest wait between heartbeats of an idle stage.
const TICK: Duration = Duration::from_millis(500);

/// The stage names to register for `cfg` (none without cameras).
pub fn stages(cfg: &Config) -> &'static [&'static str] {
    if cfg.capture.cameras.is_empty() {
        &[]
    } else {
        &STAGES
    }
}

/// What the denoiser can do, for `status.json`, stats and `sgbd-edge status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DenoiseState {
    /// `loading`, `running` or `stopped`.
    pub state: String,
    /// BLIP captions (and image features) are produced.
    pub captioning: bool,
    /// `captioning enabled (blip-large-q4k)` or `captioning disabled: <reason>`.
    pub caption_detail: String,
    /// Model id of the sentence encoder when loaded (text features are stored).
    pub text_model: Option<String>,
    /// `text features with all-minilm-l6-v2` or why there are none.
    pub text_detail: String,
    /// Cleaning is rule-based only (no captions).
    pub degraded: bool,
}

impl Default for DenoiseState {
    fn default() -> Self {
        Self {
            state: "loading".into(),
            captioning: false,
            caption_detail: "models loading".into(),
            text_model: None,
            text_detail: "models loading".into(),
            degraded: true,
        }
    }
}

/// The shelf part of `status.json` and of the `stats` payload.
#[derive(Debug, Clone, Serialize)]
pub struct ShelfReport {
    pub cameras: Vec<CameraStatus>,
    pub denoise: DenoiseState,
    /// Crops stored but not denoised yet.
    pub queued: u64,
}

/// Shared view of the shelf stages (cheap to clone).
#[derive(Clone)]
pub struct ShelfHandle {
    board: StatusBoard,
    denoise: Arc<RwLock<DenoiseState>>,
    metrics: Arc<Metrics>,
}

impl ShelfHandle {
    pub fn report(&self) -> ShelfReport {
        let denoise = self.denoise.read().map(|d| d.clone()).unwrap_or_else(|p| p.into_inner().clone());
        let m = &self.metrics;
        let done = m.get("denoise.items") + m.get("denoise.errors") + m.get("denoise.not_queued");
        let queued = m.get("denoise.queued").saturating_sub(done);
        ShelfReport { cameras: self.board.snapshot(), denoise, queued }
    }

    /// A short summary for systemd's `STATUS=` line.
    pub fn summary(&self) -> String {
        let r = self.report();
        let ok = r.cameras.iter().filter(|c| c.state == CameraState::Ok).count();
        let mode = if r.denoise.state == "loading" {
            "models loading"
        } else if r.denoise.degraded {
            "degraded, no BLIP"
        } else {
            "captioning"
        };
        format!(
            "shelf: {ok}/{} cameras ok, {} items denoised ({mode})",
            r.cameras.len(),
            self.metrics.get("denoise.items")
        )
    }

    fn set_denoise(&self, f: impl FnOnce(&mut DenoiseState)) {
        match self.denoise.write() {
            Ok(mut d) => f(&mut d),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

/// One crop (or backlog item) for the denoiser.
#[derive(Debug, Clone)]
struct Job {
    sku: String,
    crop: Option<PathBuf>,
    captured_ms: Option<i64>,
}

impl From<&CropOutcome> for Job {
    fn from(c: &CropOutcome) -> Self {
        Job { sku: c.sku.clone(), crop: c.path.clone(), captured_ms: Some(c.captured_ms) }
    }
}

/// The shelf stages before their threads start (so their handle can go into the daemon's context).
pub struct Shelf {
    capturer: Capturer,
    handle: ShelfHandle,
    cfg: Config,
}

impl Shelf {
    /// `None` when no camera is configured.
    pub fn prepare(cfg: &Config, metrics: Arc<Metrics>) -> Option<Shelf> {
        if cfg.capture.cameras.is_empty() {
            return None;
        }
        let capturer = Capturer::new(cfg, metrics.clone());
        let handle = ShelfHandle { board: capturer.status(), denoise: Default::default(), metrics };
        Some(Shelf { capturer, handle, cfg: cfg.clone() })
    }

    pub fn handle(&self) -> ShelfHandle {
        self.handle.clone()
    }

    /// Starts the camera, capture and denoise threads.
    pub(crate) fn start(self, ctx: Arc<Ctx>) -> std::io::Result<ShelfStage> {
        let Shelf { mut capturer, handle, cfg } = self;
        for cam in &cfg.capture.cameras {
            if let CameraKind::Folder { dir, .. } = &cam.source {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    tracing::warn!(camera = %cam.id, dir = %dir.display(), error = %e, "shelf: cannot create the camera folder");
                }
            }
        }
        let metrics = handle.metrics.clone();
        // Taken before any camera runs, so a crop of this run is not queued twice.
        let backlog = crate::store::open_config(&cfg).map(|st| backlog(&cfg, &st)).unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        {
            let metrics = metrics.clone();
            capturer.set_sink(move |c: &CropOutcome| {
                metrics.incr("denoise.queued");
                if tx.send(Job::from(c)).is_err() {
                    metrics.incr("denoise.not_queued");
                }
            });
        }
        let denoise = {
            let (ctx, cfg, handle, stop) = (ctx.clone(), cfg.clone(), handle.clone(), stop.clone());
            std::thread::Builder::new()
                .name("denoise".into())
                .spawn(move || denoise_loop(ctx, cfg, handle, backlog, rx, stop))?
        };
        let cams = CameraThreads::spawn(&cfg.capture, capturer.status(), metrics.clone())?;
        for cam in &cfg.capture.cameras {
            let source = match &cam.source {
                CameraKind::Folder { dir, .. } => format!("folder {}", dir.display()),
                CameraKind::Serial { port, .. } => format!("serial {port}"),
            };
            tracing::info!(camera = %cam.id, slots = cam.slots.len(), source = %source, "shelf: camera watching");
        }
        let capture = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || capture_loop(ctx, cfg, capturer, cams, stop))?
        };
        Ok(ShelfStage { stop, capture, denoise, handle })
    }
}

/// The running shelf stages.
pub struct ShelfStage {
    stop: Arc<AtomicBool>,
    capture: JoinHandle<()>,
    denoise: JoinHandle<()>,
    handle: ShelfHandle,
}

impl ShelfStage {
    /// Stops the cameras and both stages after the frame / item in hand and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.capture.join();
        let _ = self.denoise.join();
        self.handle.set_denoise(|d| d.state = "stopped".into());
        tracing::info!("shelf: stopped");
    }
}

fn capture_loop(ctx: Arc<Ctx>, cfg: Config, mut capturer: Capturer, cams: CameraThreads, stop: Arc<AtomicBool>) {
    let store = loop {
        match crate::store::open_config(&cfg) {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "shelf: capture cannot open the store; retrying");
                for _ in 0..10 {
                    ctx.health.beats.beat("capture");
                    if stop.load(Ordering::SeqCst) {
                        cams.stop();
                        return;
                    }
                    std::thread::sleep(TICK);
                }
            }
        }
    };
    while !stop.load(Ordering::SeqCst) {
        ctx.health.beats.beat("capture");
        match cams.frames.recv_timeout(TICK) {
            Ok(frame) => {
                // Errors are logged, counted and mark the camera degraded inside process_frame.
                let _ = capturer.process_frame(&store, &frame);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    cams.stop();
}

/// Loads the captioner and the sentence encoder, recording why one is missing.
fn load_models(cfg: &Config, handle: &ShelfHandle) -> Denoiser {
    let d = &cfg.denoise;
    let caption = crate::modelfiles::caption_status(cfg);
    let (captioner, caption_detail) = if caption.available {
        let t = Instant::now();
        match Captioner::from_config(d) {
            Ok(c) => {
                tracing::info!(model = %c.model_id, ms = t.elapsed().as_millis() as u64, "denoise: BLIP captioner loaded");
                (Some(c), caption.detail)
            }
            Err(e) => (None, format!("captioning disabled: {e}")),
        }
    } else {
        (None, caption.detail)
    };
    let (encoder, text_detail) = match TextEncoder::from_config(d) {
        Ok(e) => {
            let detail = format!("text features with {}", e.model_id);
            (Some(e), detail)
        }
        Err(e) => (None, format!("no text features: {e}")),
    };
    let degraded = captioner.is_none();
    if degraded {
        tracing::warn!(reason = %caption_detail, "denoise: running degraded (rule-based cleaning only, no captions or image features)");
    }
    match &encoder {
        Some(e) => tracing::info!(model = %e.model_id, "denoise: sentence encoder loaded (text features)"),
        None => {
            tracing::warn!(reason = %text_detail, "denoise: no sentence encoder (no text features, no similarity filter)")
        }
    }
    handle.set_denoise(|s| {
        *s = DenoiseState {
            state: "running".into(),
            captioning: !degraded,
            caption_detail,
            text_model: encoder.as_ref().map(|e| e.model_id.clone()),
            text_detail,
            degraded,
        }
    });
    Denoiser { cfg: d.clone(), captioner, encoder }
}

/// Items with a crop from one of the configured cameras but no clean description yet (crops
/// queued when the daemon last stopped, or whose merchant description changed).
fn backlog(cfg: &Config, store: &Store) -> Vec<Job> {
    let cams: Vec<String> = cfg.capture.cameras.iter().map(|c| format!("{}/", c.id)).collect();
    let Ok(items) = store.items() else { return Vec::new() };
    items
        .into_iter()
        .filter(|i| i.clean_description.is_none())
        .filter_map(|i| {
            let img =
                store.item_images(&i.sku).ok()?.into_iter().find(|r| cams.iter().any(|c| r.source.starts_with(c)))?;
            Some(Job { sku: i.sku, crop: Some(PathBuf::from(img.path)), captured_ms: None })
        })
        .collect()
}

fn denoise_loop(
    ctx: Arc<Ctx>,
    cfg: Config,
    handle: ShelfHandle,
    backlog: Vec<Job>,
    rx: Receiver<Job>,
    stop: Arc<AtomicBool>,
) {
    ctx.health.beats.beat("denoise");
    let mut denoiser = load_models(&cfg, &handle);
    ctx.health.beats.beat("denoise");
    let metrics = handle.metrics.clone();
    let store = loop {
        match crate::store::open_config(&cfg) {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "shelf: denoise cannot open the store; retrying");
                for _ in 0..10 {
                    ctx.health.beats.beat("denoise");
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(TICK);
                }
            }
        }
    };
    let mut pending: std::collections::VecDeque<Job> = backlog.into();
    if !pending.is_empty() {
        metrics.add("denoise.queued", pending.len() as u64);
        tracing::info!(items = pending.len(), "denoise: picking up crops not denoised before the last stop");
    }
    // Items since the queue was last empty: (count, first started, last finished).
    let mut batch = (0usize, Instant::now(), Instant::now());
    while !stop.load(Ordering::SeqCst) {
        ctx.health.beats.beat("denoise");
        let job = match pending.pop_front() {
            Some(j) => j,
            None => match rx.recv_timeout(TICK) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    if batch.0 > 0 {
                        tracing::info!(
                            items = batch.0,
                            ms = (batch.2 - batch.1).as_millis() as u64,
                            "denoise: all shelf crops denoised and stored"
                        );
                        batch.0 = 0;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if batch.0 == 0 {
            batch.1 = Instant::now();
        }
        let t = Instant::now();
        match denoise_one(&mut denoiser, &store, &job) {
            Ok(line) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                metrics.observe_ms("denoise.ms", ms);
                if let Some(c) = job.captured_ms {
                    metrics.observe_ms("shelf.e2e_ms", (crate::sys::now_ms() - c).max(0) as f64);
                }
                metrics.incr("denoise.items");
                batch.0 += 1;
                batch.2 = Instant::now();
                tracing::info!(
                    sku = %job.sku,
                    ms = ms.round() as u64,
                    phrases_kept = line.kept,
                    phrases_dropped = line.dropped,
                    caption = line.caption.as_deref().unwrap_or("-"),
                    text = %line.item_text,
                    "denoise: item stored"
                );
            }
            Err(e) => {
                metrics.incr("denoise.errors");
                tracing::warn!(sku = %job.sku, error = %e, "denoise: item skipped");
            }
        }
    }
}

/// What one item's denoising produced (for the log line).
struct Done {
    kept: usize,
    dropped: usize,
    caption: Option<String>,
    item_text: String,
}

fn attributes(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) if !s.is_empty() => Some((k.clone(), s.clone())),
            serde_json::Value::Number(n) => Some((k.clone(), n.to_string())),
            _ => None,
        })
        .collect()
}

fn denoise_one(d: &mut Denoiser, store: &Store, job: &Job) -> Result<Done, crate::denoise::DenoiseError> {
    let Some(item) = store.item_by_sku(&job.sku)? else {
        return Err(crate::denoise::DenoiseError::Config(format!("item {} is not in the store", job.sku)));
    };
    // Decode the crop only when a captioner will look at it.
    let photo = match (&d.captioner, &job.crop) {
        (Some(_), Some(p)) => Some(crate::denoise::load_image(Path::new(p))?),
        _ => None,
    };
    let attrs = attributes(&item.attributes);
    let (dn, image_feature) = crate::denoise::text::denoise(d, photo.as_ref(), &item.title, &item.description, &attrs)?;
    if let (Some(f), Some(cap)) = (&image_feature, &d.captioner) {
        store.set_item_feature(&item.sku, FeatureKind::Image, &cap.model_id, f)?;
    }
    if let Some(enc) = &d.encoder {
        if let Some(f) = enc.embed(&[dn.item_text.as_str()])?.pop() {
            store.set_item_feature(&item.sku, FeatureKind::Text, &enc.model_id, &f)?;
        }
    }
    // Written last: an item with a clean description is done.
    store.set_item_text(&item.sku, &dn.clean_description, dn.caption.as_deref())?;
    let kept = dn.phrases.iter().filter(|p| p.kept).count();
    Ok(Done { kept, dropped: dn.phrases.len() - kept, caption: dn.caption, item_text: dn.item_text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_keep_strings_and_numbers() {
        let v = serde_json::json!({"colour": "Red", "year": 2011, "empty": "", "nested": {"a": 1}});
        let mut a = attributes(&v);
        a.sort();
        assert_eq!(a, vec![("colour".into(), "Red".into()), ("year".into(), "2011".into())]);
        assert!(attributes(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn describe_reads_the_status_file_shape() {
        let board = StatusBoard::default();
        board.register("shelf-a");
        board.frame_ok("shelf-a", 1);
        board.register("shelf-b");
        board.error("shelf-b", "cannot decode");
        let h = ShelfHandle { board, denoise: Default::default(), metrics: Arc::new(Metrics::default()) };
        h.set_denoise(|d| {
            d.state = "running".into();
            d.caption_detail = "captioning disabled: missing".into();
            d.text_detail = "no text features".into();
        });
        let v = serde_json::json!({ "shelf": h.report() });
        let lines = crate::doctor::describe_shelf(&v);
        assert_eq!(lines[0], "camera shelf-a: ok (1 frames, 0 errors)");
        assert_eq!(lines[1], "camera shelf-b: degraded: cannot decode (0 frames, 1 errors)");
        assert_eq!(lines[2], "denoise running: captioning disabled: missing; no text features");
        assert!(h.summary().starts_with("shelf: 1/2 cameras ok, 0 items denoised"), "{}", h.summary());
        assert!(crate::doctor::describe_shelf(&serde_json::json!({})).is_empty());
    }
}
