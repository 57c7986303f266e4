//! The shelf pipeline in the real daemon binary: a shelf picture dropped into a camera folder is
//! cut into its 12 planogram crops, each stored with an image row, denoised (clean description,
//! MiniLM text feature when the model files are present) and reported in `status.json`; a corrupt
//! picture degrades the camera while the daemon keeps serving kiosks.

use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use crate::harness::repo;
use sgbd_edge::config::Config;
use sgbd_edge::mqtt::kiosk::Protocol;
use sgbd_edge::store::{FeatureKind, Store};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SKUS: [&str; 12] =
    ["10003", "10185", "10144", "10037", "10098", "10198", "10272", "14908", "10775", "12412", "10332", "10604"];

/// A node with the demo shelf camera watching `<dir>/incoming` and models from `models_dir`.
struct Node {
    dir: tempfile::TempDir,
    port: u16,
    config: PathBuf,
    cfg: Config,
}

impl Node {
    fn new(models_dir: &Path) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let incoming = dir.path().join("incoming");
        let planogram = std::fs::read_to_string(repo("assets/demo/shelf/planogram.toml")).unwrap();
        assert!(planogram.contains("./var/incoming/shelf-a"));
        let camera = planogram.replace("./var/incoming/shelf-a", &incoming.display().to_string());
        let extra = format!(
            "\n[denoise]\nmodels_dir = \"{}\"\n\n[capture]\nsettle_ms = 100\npoll_ms = 50\n\n{camera}",
            models_dir.display()
        );
        let config = write_config(dir.path(), port, false, &extra);
        let cfg = Config::load(&config).unwrap();
        Node { dir, port, config, cfg }
    }

    /// Imports a catalogue of the 12 shelf SKUs whose descriptions carry noise.
    fn import_noisy_catalogue(&self) {
        let csv = self.dir.path().join("catalog.csv");
        let mut w = csv::Writer::from_path(&csv).unwrap();
        w.write_record(["sku", "title", "description"]).unwrap();
        for sku in SKUS {
            w.write_record([sku, &format!("Product {sku}"), &noisy(sku)]).unwrap();
        }
        w.flush().unwrap();
        let mut st = sgbd_edge::store::open_config(&self.cfg).unwrap();
        let s = sgbd_edge::store::import_catalog_csv(&mut st, &csv).unwrap();
        assert_eq!(s.inserted, 12);
    }

    fn store(&self) -> Store {
        sgbd_edge::store::open_config(&self.cfg).unwrap()
    }

    fn incoming(&self) -> PathBuf {
        self.dir.path().join("incoming")
    }

    /// Writes a picture into the camera folder (hidden name first, then renamed).
    fn drop_picture(&self, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(self.incoming()).unwrap();
        let tmp = self.incoming().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.incoming().join(name)).unwrap();
    }

    fn status(&self) -> serde_json::Value {
        let p = self.dir.path().join("var/status.json");
        std::fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null)
    }
}

fn noisy(sku: &str) -> String {
    format!("Soft cotton fabric {sku}. FREE SHIPPING on all orders!!! Soft cotton fabric {sku}. Regular fit.")
}

fn clean(sku: &str) -> String {
    format!("Soft cotton fabric {sku}. Regular fit.")
}

fn shelf_jpeg() -> Vec<u8> {
    std::fs::read(repo("assets/demo/shelf/shelf-a.jpg")).unwrap()
}

/// Polls `f` every 100 ms until it returns `Some` or `secs` pass.
async fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shelf-camera crops stored and items with a clean description, by SKU.
fn shelf_progress(st: &Store) -> (usize, Vec<(String, String)>) {
    let mut crops = 0;
    let mut cleaned = Vec::new();
    for sku in SKUS {
        crops += st.item_images(sku).unwrap().iter().filter(|r| r.source.starts_with("shelf-a/")).count();
        if let Some(c) = st.item_by_sku(sku).unwrap().and_then(|i| i.clean_description) {
            cleaned.push((sku.to_string(), c));
        }
    }
    (crops, cleaned)
}

async fn stop(mut d: Daemon) -> String {
    d.signal(libc::SIGTERM);
    let st = d.wait(Duration::from_secs(20)).expect("daemon exits after SIGTERM");
    assert!(st.success(), "exit status {st:?}\n{}", d.log_text());
    d.log_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelf_picture_cut_denoised_and_stored() {
    // Capture, denoise and MiniLM in the daemon under time limits; it times the shelf end to end.
    let _turn = crate::harness::exclusive();
    let empty_models = tempfile::tempdir().unwrap();
    let n = Node::new(empty_models.path());
    n.import_noisy_catalogue();
    let d = Daemon::spawn(&n.config);
    let _kiosk = kiosk_when_ready(n.port, "k1", Protocol::V5).await;

    let t0 = Instant::now();
    n.drop_picture("shelf-a-1.jpg", &shelf_jpeg());
    let st = n.store();
    let cleaned = until(60, "12 crops and 12 denoised items", || {
        let (crops, cleaned) = shelf_progress(&st);
        (crops == 12 && cleaned.len() == 12).then_some(cleaned)
    })
    .await;
    eprintln!("shelf picture -> 12 crops stored and denoised in {} ms", t0.elapsed().as_millis());
    for (sku, c) in &cleaned {
        assert_eq!(c, &clean(sku), "noise (promotion, duplicate) dropped for {sku}");
    }
    // Every crop file exists, and the picture left the incoming folder.
    for sku in SKUS {
        let rows = st.item_images(sku).unwrap();
        let crop = rows.iter().find(|r| r.source.starts_with("shelf-a/")).unwrap();
        assert!(Path::new(&crop.path).is_file(), "{}", crop.path);
        assert!(crop.phash.is_some());
    }
    assert!(!n.incoming().join("shelf-a-1.jpg").exists());
    // No model files: no features, and the status says captioning is disabled and why.
    assert!(st.item_features(FeatureKind::Text).unwrap().is_empty());
    let s = until(10, "status.json with 12 denoised items", || {
        let s = n.status();
        (s["counters"]["denoise.items"].as_u64() >= Some(12)).then_some(s)
    })
    .await;
    let cam = &s["shelf"]["cameras"][0];
    assert_eq!(cam["id"], "shelf-a");
    assert_eq!(cam["state"]["state"], "ok", "{s:#}");
    assert_eq!(cam["frames"], 1);
    assert_eq!(s["shelf"]["denoise"]["degraded"], true);
    assert_eq!(s["shelf"]["denoise"]["captioning"], false);
    assert!(s["shelf"]["denoise"]["caption_detail"].as_str().unwrap().starts_with("captioning disabled"), "{s:#}");
    assert_eq!(s["counters"]["capture.crops_changed"], 12);
    assert_eq!(s["shelf"]["queued"], 0, "{s:#}");
    assert!(s["stages"]["capture"]["ok"].as_bool().unwrap() && s["stages"]["denoise"]["ok"].as_bool().unwrap());
    assert!(s["latencies"]["shelf.e2e_ms"]["count"].as_u64() == Some(12), "{s:#}");

    // The fleet sees the same in the stats payload (published every second here).
    let stats_topic = topics().stats();
    let mut obs = Observer::connect(n.port, "obs-stats", std::slice::from_ref(&stats_topic), true, 0).await;
    let stats = obs.next_on(&stats_topic, Duration::from_secs(10)).await.expect("stats published").json();
    assert_eq!(stats["shelf"]["cameras"][0]["state"]["state"], "ok", "{stats:#}");
    assert_eq!(stats["shelf"]["denoise"]["degraded"], true, "{stats:#}");
    assert!(stats["counters"]["denoise.items"].as_u64() >= Some(12), "{stats:#}");

    let log = stop(d).await;
    assert_eq!(log.matches("denoise: running degraded").count(), 1, "said once:\n{log}");
    assert_eq!(log.matches("denoise: item stored").count(), 12, "{log}");
    assert!(log.contains("shelf: stopped"), "{log}");
    let after = n.status();
    assert_eq!(after["running"], false);
    assert_eq!(after["shelf"]["denoise"]["state"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_picture_degrades_the_camera_and_kiosks_are_still_served() {
    // Capture, denoise and MiniLM in the daemon under time limits; it times the shelf end to end.
    let _turn = crate::harness::exclusive();
    let empty_models = tempfile::tempdir().unwrap();
    let n = Node::new(empty_models.path());
    n.import_noisy_catalogue();
    let d = Daemon::spawn(&n.config);
    let kiosk = kiosk_when_ready(n.port, "k1", Protocol::V5).await;

    // A JPEG header followed by garbage.
    let mut bad = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bad.extend((0..4000u32).map(|i| (i * 7 % 251) as u8));
    n.drop_picture("broken.jpg", &bad);
    let s = until(30, "camera degraded in status.json", || {
        let s = n.status();
        (s["shelf"]["cameras"][0]["state"]["state"] == "degraded").then_some(s)
    })
    .await;
    assert!(s["counters"]["capture.decode_errors"].as_u64() >= Some(1), "{s:#}");
    assert_eq!(s["shelf"]["cameras"][0]["errors"], 1);
    assert!(s["shelf"]["cameras"][0]["state"]["reason"].as_str().unwrap().contains("decode"), "{s:#}");
    // Nothing stored from the broken picture.
    assert_eq!(shelf_progress(&n.store()).0, 0);

    // The daemon still answers a kiosk.
    let reply = kiosk.recommend("alice", Some(3), Duration::from_secs(5)).await.expect("reply after a bad picture");
    let r = sgbd_edge::mqtt::kiosk::parse_reply(&reply).unwrap();
    assert_eq!(r.items.len(), 3);

    // The next good picture makes the camera ok again.
    n.drop_picture("shelf-a-2.jpg", &shelf_jpeg());
    until(60, "camera ok after a good picture", || {
        let s = n.status();
        (s["shelf"]["cameras"][0]["state"]["state"] == "ok" && s["counters"]["denoise.items"].as_u64() >= Some(12))
            .then_some(())
    })
    .await;
    let log = stop(d).await;
    assert!(log.contains("capture: bad picture skipped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crops_left_undenoised_are_picked_up_at_the_next_start() {
    // Capture, denoise and MiniLM in the daemon under time limits; it times the shelf end to end.
    let _turn = crate::harness::exclusive();
    let empty_models = tempfile::tempdir().unwrap();
    let n = Node::new(empty_models.path());
    n.import_noisy_catalogue();
    // Crops stored by the capture stage of an earlier run that stopped before denoising them.
    {
        let st = n.store();
        let mut cap = sgbd_edge::capture::pipeline::Capturer::new(&n.cfg, Default::default());
        let frame = sgbd_edge::capture::Frame {
            camera_id: "shelf-a".into(),
            captured_ms: 1,
            jpeg_bytes: shelf_jpeg(),
            origin: "test".into(),
        };
        assert_eq!(cap.process_frame(&st, &frame).unwrap().changed().count(), 12);
        assert_eq!(shelf_progress(&st), (12, vec![]));
    }
    let d = Daemon::spawn(&n.config);
    let st = n.store();
    let cleaned = until(60, "12 items denoised without a new picture", || {
        let (_, cleaned) = shelf_progress(&st);
        (cleaned.len() == 12).then_some(cleaned)
    })
    .await;
    for (sku, c) in &cleaned {
        assert_eq!(c, &clean(sku));
    }
    let log = stop(d).await;
    assert!(log.contains("denoise: picking up crops not denoised before the last stop"), "{log}");
    assert!(!log.contains("capture: frame processed"), "no picture was dropped:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_text_features_stored_with_the_model_id() {
    // Capture, denoise and MiniLM in the daemon under time limits; it times the shelf end to end.
    let _turn = crate::harness::exclusive();
    let models = std::env::var_os("SGBD_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| repo("models"));
    if !models.join("all-MiniLM-L6-v2/model.safetensors").is_file() {
        eprintln!(
            "skipping: MiniLM files not in {} (run `sgbd-edge models fetch` or set SGBD_MODELS_DIR)",
            models.display()
        );
        return;
    }
    let n = Node::new(&models);
    n.import_noisy_catalogue();
    let d = Daemon::spawn(&n.config);
    let _kiosk = kiosk_when_ready(n.port, "k1", Protocol::V5).await;
    n.drop_picture("shelf-a-1.jpg", &shelf_jpeg());
    let st = n.store();
    let feats = until(90, "12 text features", || {
        let f = st.item_features(FeatureKind::Text).unwrap();
        (f.len() == 12 && shelf_progress(&st).1.len() == 12).then_some(f)
    })
    .await;
    for (sku, model, v) in &feats {
        assert!(SKUS.contains(&sku.as_str()));
        assert_eq!(model, "all-minilm-l6-v2");
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "L2-normalised: {norm}");
    }
    // Items differ only by SKU in their text, so their features differ but stay close.
    assert_ne!(feats[0].2, feats[1].2);
    // status.json is rewritten every 2 s.
    let s = until(10, "status.json with 12 denoised items", || {
        let s = n.status();
        (s["counters"]["denoise.items"].as_u64() >= Some(12)).then_some(s)
    })
    .await;
    assert_eq!(s["shelf"]["denoise"]["text_model"], "all-minilm-l6-v2", "{s:#}");
    assert_eq!(s["shelf"]["denoise"]["text_detail"], "text features with all-minilm-l6-v2", "{s:#}");
    let log = stop(d).await;
    assert!(log.contains("denoise: sentence encoder loaded"), "{log}");
}
