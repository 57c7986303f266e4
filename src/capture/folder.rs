//! Folder source: picture files dropped into a directory (by an IP camera's FTP upload, a phone
//! app, `scp`, ...).
//!
//! The directory is listed every `poll_ms`. A file (`.jpg`, `.jpeg`, `.png`, not hidden) is read
//! once it has *settled*: its size and mtime were the same for `settle_ms`, or its mtime is at
//! least `settle_ms` old, so a half-written upload is not read. After reading, the file is moved
//! into `done_dir` (default `<dir>/done/`; a name clash gets a `-<ms>` suffix). When the move fails
//! (read-only share), the file is remembered by name + size + mtime and not read again while it
//! stays unchanged. The frame's capture time is the file's mtime.
use super::{io_err, CaptureError, Frame, Result, Source};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

type Stamp = (u64, SystemTime);

pub struct FolderSource {
    id: String,
    dir: PathBuf,
    done_dir: PathBuf,
    settle: Duration,
    poll: Duration,
    max_bytes: u64,
    /// Files seen but not read yet: the (size, mtime) last seen and since when it is unchanged.
    pending: HashMap<PathBuf, (Stamp, Instant)>,
    /// Files read whose move failed.
    consumed: HashSet<(PathBuf, Stamp)>,
    last_scan: Option<Instant>,
}

fn is_picture(p: &Path) -> bool {
    let hidden = p.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
    let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    !hidden && matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

impl FolderSource {
    pub fn new(id: &str, dir: &Path, done_dir: &Path, settle_ms: u64, poll_ms: u64, max_bytes: u64) -> Self {
        let done_dir = if done_dir.is_absolute() { done_dir.to_path_buf() } else { dir.join(done_dir) };
        Self {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            done_dir,
            settle: Duration::from_millis(settle_ms),
            poll: Duration::from_millis(poll_ms.max(1)),
            max_bytes,
            pending: HashMap::new(),
            consumed: HashSet::new(),
            last_scan: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists the directory and returns the settled file with the oldest mtime, if any.
    fn scan(&mut self) -> Result<Option<(PathBuf, Stamp)>> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| io_err(self.dir.display(), e))?;
        let mut present = HashSet::new();
        let mut best: Option<(PathBuf, Stamp)> = None;
        for entry in rd.flatten() {
            let path = entry.path();
            if !is_picture(&path) {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            let stamp: Stamp = (md.len(), md.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            present.insert(path.clone());
            if self.consumed.contains(&(path.clone(), stamp)) {
                continue;
            }
            let since = match self.pending.get(&path) {
                Some((s, since)) if *s == stamp => *since,
                _ => {
                    self.pending.insert(path.clone(), (stamp, now));
                    now
                }
            };
            let old_enough = wall.duration_since(stamp.1).is_ok_and(|age| age >= self.settle);
            let settled = now.duration_since(since) >= self.settle || old_enough;
            if settled && best.as_ref().is_none_or(|(_, b)| stamp.1 < b.1) {
                best = Some((path, stamp));
            }
        }
        self.pending.retain(|p, _| present.contains(p));
        self.consumed.retain(|(p, _)| present.contains(p));
        Ok(best)
    }

    fn take(&mut self, path: PathBuf, stamp: Stamp) -> Result<Frame> {
        self.pending.remove(&path);
        let captured_ms = stamp.1.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let origin = path.display().to_string();
        let read = if stamp.0 > self.max_bytes {
            Err(CaptureError::TooLarge { origin: origin.clone(), bytes: stamp.0, limit: self.max_bytes })
        } else {
            std::fs::read(&path).map_err(|e| io_err(&origin, e))
        };
        // Consume the file whether or not it could be read, so that a bad file is not retried forever.
        let moved = self.move_done(&path, captured_ms);
        if moved.is_none() {
            self.consumed.insert((path, stamp));
        }
        let bytes = read?;
        let origin = moved.map_or(origin, |p| p.display().to_string());
        Ok(Frame { camera_id: self.id.clone(), captured_ms, jpeg_bytes: bytes, origin })
    }

    fn move_done(&self, path: &Path, ms: i64) -> Option<PathBuf> {
        if let Err(e) = std::fs::create_dir_all(&self.done_dir) {
            tracing::warn!(camera = %self.id, dir = %self.done_dir.display(), error = %e, "cannot create done dir; tracking files by name and mtime");
            return None;
        }
        let name = path.file_name()?;
        let mut target = self.done_dir.join(name);
        if target.exists() {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("frame");
            let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("jpg");
            target = self.done_dir.join(format!("{stem}-{ms}-{}.{ext}", crate::sys::now_ms()));
        }
        match std::fs::rename(path, &target) {
            Ok(()) => Some(target),
            Err(e) => {
                tracing::warn!(camera = %self.id, file = %path.display(), error = %e, "cannot move file to done dir; tracking it by name and mtime");
                None
            }
        }
    }
}

impl Source for FolderSource {
    fn camera_id(&self) -> &str {
        &self.id
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        loop {
            // List the directory at most once per poll interval, however often we are called.
            let now = Instant::now();
            let due = self.last_scan.map_or(now, |t| t + self.poll);
            if due > now {
                if due > deadline {
                    std::thread::sleep(deadline.saturating_duration_since(now));
                    return Ok(None);
                }
                std::thread::sleep(due - now);
            }
            self.last_scan = Some(Instant::now());
            if let Some((path, stamp)) = self.scan()? {
                return self.take(path, stamp).map(Some);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
