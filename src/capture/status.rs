//! Per-camera health, shared between camera threads, the CLI and the daemon's status report.
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum CameraState {
    Ok,
    /// The camera stopped answering or delivers bad pictures; the reason is the last error.
    Degraded(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraStatus {
    pub id: String,
    pub state: CameraState,
    /// Time of the last good frame (ms since the epoch), if any.
    pub last_frame_ms: Option<i64>,
    pub frames: u64,
    pub errors: u64,
}

/// Status of every camera, cheap to clone and share between threads.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<String, CameraStatus>>>);

impl StatusBoard {
    pub fn register(&self, id: &str) {
        self.with(id, |_| ());
    }

    fn with(&self, id: &str, f: impl FnOnce(&mut CameraStatus)) {
        if let Ok(mut m) = self.0.lock() {
            let s = m.entry(id.to_string()).or_insert_with(|| CameraStatus {
                id: id.to_string(),
                state: CameraState::Ok,
                last_frame_ms: None,
                frames: 0,
                errors: 0,
            });
            f(s);
        }
    }

    /// A good frame: the camera is `Ok` again.
    pub fn frame_ok(&self, id: &str, at_ms: i64) {
        self.with(id, |s| {
            s.state = CameraState::Ok;
            s.last_frame_ms = Some(at_ms);
            s.frames += 1;
        });
    }

    /// A fault: the camera is `Degraded(reason)` until its next good frame.
    pub fn error(&self, id: &str, reason: &str) {
        self.with(id, |s| {
            s.state = CameraState::Degraded(reason.to_string());
            s.errors += 1;
        });
    }

    pub fn get(&self, id: &str) -> Option<CameraStatus> {
        self.0.lock().ok().and_then(|m| m.get(id).cloned())
    }

    pub fn snapshot(&self) -> Vec<CameraStatus> {
        self.0.lock().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_until_next_good_frame() {
        let b = StatusBoard::default();
        b.register("a");
        b.error("a", "timeout");
        assert_eq!(b.get("a").unwrap().state, CameraState::Degraded("timeout".into()));
        b.frame_ok("a", 5);
        let s = b.get("a").unwrap();
        assert_eq!((s.state, s.last_frame_ms, s.frames, s.errors), (CameraState::Ok, Some(5), 1, 1));
        assert_eq!(serde_json::to_value(b.snapshot()).unwrap()[0]["state"]["state"], "ok");
    }
}
