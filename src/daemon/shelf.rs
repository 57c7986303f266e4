//! The shelf stage: cameras -> capture (crops stored) -> denoise (clean text, features) -> store.
//!
//! Threads (all blocking work, none on the tokio runtime):
//! - one thread per camera ([`CameraThreads`]) delivering frames into a bounded channel;
//! - `capture`: runs [`Capturer::process_frame`] with its own store connection; each changed crop
//!   (already stored as a file and an `images` row) goes into a bounded queue to the denoiser
//!   (a full queue makes the capture thread wait: back-pressure, not growth);
//! - `denoise`: loads the models once ([`Denoiser::load`]: BLIP when its files are present and
//!   verified, MiniLM when present), then per crop [`Denoiser::process_item`], the one denoise
//!   path: caption the crop and pool the BLIP image feature (when BLIP is loaded), clean the
//!   item's description (rule-based only without BLIP: degraded, said once in the log and in
//!   `status.json`/stats), embed the item text with MiniLM (when loaded), and store the features
//!   (with their model ids) and then the clean text (the text written last marks the item done:
//!   `backlog` relies on it).
//!
//! Both stages beat their heartbeat (`capture`, `denoise`) at least every 500 ms between jobs.
//! Shutdown: the stop flag ends both loops after the frame / item in hand (every row is written
//! by one statement, so nothing is half-written); crops still queued keep no clean text and are
//! picked up again at the next start (items with a camera crop and no clean description).
use super::Ctx;
use crate::capture::pipeline::{CameraThreads, Capturer, CropOutcome};
use crate::capture::status::{CameraState, CameraStatus, StatusBoard};
use crate::config::{CameraKind, Config};
use crate::denoise::features::CatalogItem;
use crate::denoise::{Denoiser, ItemResult, LoadReport};
use crate::store::Store;
use crate::telemetry::Metrics;
use serde::Serialize;
use std::path::PathBuf;
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

impl DenoiseState {
    /// The running denoiser with the models [`Denoiser::load`] found.
    fn running(m: LoadReport) -> Self {
        Self {
            state: "running".into(),
            captioning: m.captioning,
            caption_detail: m.caption_detail,
            text_model: m.text_model,
            text_detail: m.text_detail,
            degraded: !m.captioning,
        }
    }
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

/// Loads the models (the reasons of any left out go into the shared state).
fn load_models(cfg: &Config, handle: &ShelfHandle) -> Denoiser {
    let (denoiser, models) = Denoiser::load(&cfg.denoise);
    handle.set_denoise(|s| *s = DenoiseState::running(models));
    denoiser
}

/// Items with a crop from one of the configured cameras but no clean description yet (crops
/// queued when the daemon last stopped, a pass stopped between its writes, or items whose
/// merchant description changed). "No clean description" is "not done" because
/// [`Denoiser::process_item`] writes the clean text last (`denoise::pipeline`).
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
            Ok(r) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                metrics.observe_ms("denoise.ms", ms);
                if let Some(c) = job.captured_ms {
                    metrics.observe_ms("shelf.e2e_ms", (crate::sys::now_ms() - c).max(0) as f64);
                }
                metrics.incr("denoise.items");
                batch.0 += 1;
                batch.2 = Instant::now();
                let (kept, dropped) = r.kept_dropped();
                tracing::info!(
                    sku = %job.sku,
                    ms = ms.round() as u64,
                    phrases_kept = kept,
                    phrases_dropped = dropped,
                    caption = r.denoised.caption.as_deref().unwrap_or("-"),
                    text = %r.denoised.item_text,
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

/// The item of `job` as the store holds it, with its crop, through the one denoise path.
fn denoise_one(d: &mut Denoiser, store: &Store, job: &Job) -> Result<ItemResult, crate::denoise::DenoiseError> {
    let Some(row) = store.item_by_sku(&job.sku)? else {
        return Err(crate::denoise::DenoiseError::Config(format!("item {} is not in the store", job.sku)));
    };
    d.process_item(&CatalogItem::from_row(&row, job.crop.clone()), Some(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_between_the_writes_keeps_the_crop_in_the_backlog_until_a_pass_completes_it() {
        use crate::denoise::pipeline::testing::*;
        use crate::store::{FeatureKind, NewItem};
        let d = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.node.data_dir = d.path().join("var");
        cfg.capture.cameras = vec![crate::config::CameraConfig {
            id: "shelf-a".into(),
            source: CameraKind::Folder { dir: d.path().join("in"), done_dir: "done".into() },
            slots: vec![],
        }];
        let store = crate::store::open_config(&cfg).unwrap();
        let item = NewItem {
            sku: "10003".into(),
            title: "Denim jacket".into(),
            description: "Jacket in washed denim. FREE SHIPPING!!!".into(),
            attributes: serde_json::json!({"colour": "blue"}),
            image_path: None,
        };
        store.upsert_item(&item).unwrap();
        let crop = photo(&d.path().join("crop.png"));
        store.add_image("10003", &crop.display().to_string(), "shelf-a/0", 1, None).unwrap();
        let queued = |st: &Store| backlog(&cfg, st).into_iter().map(|j| j.sku).collect::<Vec<_>>();
        assert_eq!(queued(&store), ["10003"]);
        let mut denoiser = tiny_denoiser(d.path());
        let job = Job { sku: "10003".into(), crop: Some(crop), captured_ms: None };
        // The image feature write fails after the text feature was written.
        let side = side_connection(&crate::store::db_path(&cfg));
        fail_image_feature_writes(&side);
        assert!(denoise_one(&mut denoiser, &store, &job).is_err());
        assert_eq!(store.item_features(FeatureKind::Text).unwrap().len(), 1, "the first write happened");
        assert_eq!(store.item_by_sku("10003").unwrap().unwrap().clean_description, None);
        assert_eq!(queued(&store), ["10003"], "still to be denoised at the next start");
        // The next pass completes it and takes it off the backlog.
        heal(&side);
        let r = denoise_one(&mut denoiser, &store, &job).unwrap();
        assert!(r.denoised.caption.is_some());
        assert!(queued(&store).is_empty());
        let row = store.item_by_sku("10003").unwrap().unwrap();
        assert_eq!(row.clean_description.as_deref(), Some("Jacket in washed denim."));
        assert_eq!(store.item_features(FeatureKind::Image).unwrap().len(), 1);
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
