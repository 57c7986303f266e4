//! Stage heartbeats, `<data_dir>/status.json`, and systemd notifications (`READY=1`, `STATUS=`,
//! `WATCHDOG=1` only while every stage makes progress).

use crate::telemetry::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Last-beat times (ms UTC) of the daemon's stages. Each stage loop wakes at least once a second
/// and beats; a stage that has not beaten for `stall_after` is stuck.
pub struct Heartbeats {
    stages: BTreeMap<&'static str, AtomicI64>,
}

/// The stages of the pipeline.
pub const STAGES: [&str; 5] = ["mqtt", "router", "requests", "ingest", "commands"];

impl Default for Heartbeats {
    fn default() -> Self {
        Self::with_stages(&[])
    }
}

impl Heartbeats {
    /// [`STAGES`] plus optional stages (e.g. the shelf stages when cameras are configured).
    pub fn with_stages(extra: &[&'static str]) -> Self {
        let now = crate::sys::now_ms();
        Self { stages: STAGES.iter().chain(extra).map(|s| (*s, AtomicI64::new(now))).collect() }
    }

    pub fn beat(&self, stage: &str) {
        if let Some(a) = self.stages.get(stage) {
            a.store(crate::sys::now_ms(), Ordering::Relaxed);
        }
    }

    /// `(stage, ms since its last beat)`.
    pub fn ages(&self, now_ms: i64) -> Vec<(&'static str, i64)> {
        self.stages.iter().map(|(k, v)| (*k, now_ms - v.load(Ordering::Relaxed))).collect()
    }

    /// The stages that have not beaten within `stall_after`.
    pub fn stuck(&self, now_ms: i64, stall_after: Duration) -> Vec<&'static str> {
        self.ages(now_ms).into_iter().filter(|(_, a)| *a > stall_after.as_millis() as i64).map(|(k, _)| k).collect()
    }
}

#[derive(Serialize)]
pub struct StageState {
    pub last_beat_ms_ago: i64,
    pub ok: bool,
}

/// What `<data_dir>/status.json` holds (read by `sgbd-edge status`).
#[derive(Serialize)]
pub struct StatusFile {
    pub running: bool,
    pub pid: u32,
    pub software_version: String,
    pub node_id: String,
    pub store_id: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub uptime_s: u64,
    pub broker_mode: String,
    pub broker: String,
    pub broker_connected: bool,
    pub model_version: String,
    pub stages: BTreeMap<String, StageState>,
    pub counters: BTreeMap<String, u64>,
    pub latencies: BTreeMap<String, crate::telemetry::LatencySummary>,
    /// Cameras and the denoiser, when cameras are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shelf: Option<super::shelf::ShelfReport>,
}

/// Path of the live status file.
pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join("status.json")
}

/// Writes the status file atomically (temp file + rename).
pub fn write_status(path: &Path, s: &StatusFile) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    crate::sys::write_atomic(path, &text, false)
}

/// The `STATUS=` line for `systemctl status`.
pub fn status_line(m: &Metrics, connected: bool, model: &str, stuck: &[&str]) -> String {
    let mut s = format!(
        "serving: {} requests, {} events, broker {}, model {}",
        m.get("serve.requests"),
        m.get("ingest.events"),
        if connected { "connected" } else { "disconnected" },
        model
    );
    if !stuck.is_empty() {
        s.push_str(&format!(", STUCK: {}", stuck.join(",")));
    }
    s
}

/// systemd notifications; all calls are no-ops outside systemd.
pub struct Notifier {
    /// Half of `WATCHDOG_USEC`, when the watchdog is enabled.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Self {
        let mut usec = 0u64;
        let enabled = sd_notify::watchdog_enabled(false, &mut usec);
        Self { watchdog_every: enabled.then(|| Duration::from_micros(usec / 2)) }
    }

    pub fn ready(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }

    pub fn status(&self, line: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(line)]);
    }

    pub fn watchdog(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
    }

    pub fn stopping(&self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
}

/// Jetson GPU load in percent, when the file exists.
pub fn gpu_load_pct() -> Option<f64> {
    std::fs::read_to_string("/sys/devices/gpu.0/load").ok()?.trim().parse::<f64>().ok().map(|v| v / 10.0)
}

/// Thermal zone temperatures in degrees Celsius, keyed by zone type (e.g. `CPU-therm`).
pub fn temperatures_c() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/thermal") else { return out };
    for e in dir.flatten() {
        let p = e.path();
        if !e.file_name().to_string_lossy().starts_with("thermal_zone") {
            continue;
        }
        let milli = std::fs::read_to_string(p.join("temp")).ok().and_then(|t| t.trim().parse::<f64>().ok());
        let name = std::fs::read_to_string(p.join("type"))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| e.file_name().to_string_lossy().into_owned());
        if let Some(m) = milli {
            out.insert(name, m / 1000.0);
        }
    }
    out
}

/// Shared by the status task: metrics and heartbeats.
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub beats: Heartbeats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_stage_detected() {
        let h = Heartbeats::default();
        let now = crate::sys::now_ms();
        assert!(h.stuck(now, Duration::from_secs(5)).is_empty());
        h.beat("router");
        let later = now + 10_000;
        let stuck = h.stuck(later, Duration::from_secs(5));
        assert_eq!(stuck.len(), STAGES.len());
        h.stages["router"].store(later, Ordering::Relaxed);
        assert!(!h.stuck(later, Duration::from_secs(5)).contains(&"router"));
    }

    #[test]
    fn status_file_written_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = status_path(d.path());
        let s = StatusFile {
            running: true,
            pid: 1,
            software_version: "x".into(),
            node_id: "n".into(),
            store_id: "s".into(),
            started_at: 0,
            updated_at: 1,
            uptime_s: 2,
            broker_mode: "embedded".into(),
            broker: "127.0.0.1:1883".into(),
            broker_connected: true,
            model_version: "popularity".into(),
            stages: BTreeMap::new(),
            counters: BTreeMap::new(),
            latencies: BTreeMap::new(),
            shelf: None,
        };
        write_status(&p, &s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["broker_connected"], true);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }
}
