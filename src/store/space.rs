//! Disk space for the store: the daemon stops writing events before the disk is full, and keeps
//! a reserve file it can delete so that SQLite can still open, checkpoint and shrink its WAL when
//! something else filled the disk.
//!
//! - [`SpaceGuard::has_room`]: events are refused (a clear `internal` error the kiosk retries)
//!   while less than `store.min_free_bytes` is free, so the WAL never fills the disk and the node
//!   keeps serving from memory; writes resume by themselves once space is back.
//! - The reserve (`<data_dir>/.space-reserve`, `store.reserve_bytes`) is written at start when
//!   there is room and deleted when the disk is found full (a failed probe at start, SQLite's
//!   `SQLITE_FULL`), giving the database the room to open and checkpoint; it is written again once
//!   there is plenty of room.

use std::path::{Path, PathBuf};

/// File name of the reserve in the data directory.
pub const RESERVE_FILE: &str = ".space-reserve";

/// Free-space policy for one data directory.
#[derive(Debug, Clone)]
pub struct SpaceGuard {
    dir: PathBuf,
    min_free: u64,
    reserve: u64,
}

impl SpaceGuard {
    pub fn new(dir: &Path, min_free_bytes: u64, reserve_bytes: u64) -> Self {
        Self { dir: dir.to_path_buf(), min_free: min_free_bytes, reserve: reserve_bytes }
    }

    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(&cfg.node.data_dir, cfg.store.min_free_bytes, cfg.store.reserve_bytes)
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Bytes free on the data directory's file system (`None` when it cannot be read).
    pub fn free(&self) -> Option<u64> {
        crate::sys::disk_free_bytes(&self.dir).ok()
    }

    /// Whether an event batch may be written: at least `min_free` bytes free (an unreadable
    /// free-space figure does not block writes; SQLite will say if it fails).
    pub fn has_room(&self) -> bool {
        self.free().is_none_or(|f| f >= self.min_free)
    }

    /// Whether the reserve file is in place.
    pub fn reserve_held(&self) -> bool {
        self.reserve > 0 && self.reserve_path().is_file()
    }

    /// Deletes the reserve file (the disk is full); true when there was one.
    pub fn release_reserve(&self) -> bool {
        match std::fs::remove_file(self.reserve_path()) {
            Ok(()) => {
                tracing::warn!(dir = %self.dir.display(), bytes = self.reserve, "disk full: space reserve released for the database");
                true
            }
            Err(_) => false,
        }
    }

    /// Writes the reserve file when it is missing and the disk has room for it with `min_free`
    /// to spare twice over. Returns true when a reserve is in place afterwards.
    pub fn refill_reserve(&self) -> bool {
        if self.reserve == 0 {
            return false;
        }
        if self.reserve_held() {
            return true;
        }
        let enough = self.free().is_some_and(|f| f >= self.reserve.saturating_add(self.min_free.saturating_mul(2)));
        if !enough {
            return false;
        }
        let chunk = vec![0u8; 64 * 1024];
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = self.dir.join(format!("{RESERVE_FILE}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            let mut left = self.reserve;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, self.reserve_path())
        };
        match write() {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), bytes = self.reserve, "space reserve written");
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.dir.join(format!("{RESERVE_FILE}.tmp")));
                tracing::debug!(error = %e, "space reserve not written");
                false
            }
        }
    }
}

/// Whether a store error means the disk is full.
pub fn is_disk_full(e: &super::StoreError) -> bool {
    match e {
        super::StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => f.code == rusqlite::ErrorCode::DiskFull,
        super::StoreError::Io { source, .. } => source.raw_os_error() == Some(28),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_written_once_released_and_room_follows_min_free() {
        let d = tempfile::tempdir().unwrap();
        let g = SpaceGuard::new(d.path(), 1024, 100_000);
        assert!(g.has_room());
        assert!(!g.reserve_held());
        assert!(g.refill_reserve());
        assert_eq!(std::fs::metadata(d.path().join(RESERVE_FILE)).unwrap().len(), 100_000);
        assert!(g.refill_reserve(), "already there");
        assert!(g.release_reserve());
        assert!(!g.release_reserve(), "nothing left to release");
        assert!(!g.reserve_held());
        // A minimum larger than any disk: no room, and no reserve either.
        let tight = SpaceGuard::new(d.path(), u64::MAX / 4, 100_000);
        assert!(!tight.has_room());
        assert!(!tight.refill_reserve());
        assert!(!SpaceGuard::new(d.path(), 0, 0).refill_reserve(), "reserve off");
    }

    #[test]
    fn disk_full_errors_are_recognised() {
        let full = crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        assert!(is_disk_full(&full));
        let enospc = crate::store::StoreError::Io { path: "x".into(), source: std::io::Error::from_raw_os_error(28) };
        assert!(is_disk_full(&enospc));
        assert!(!is_disk_full(&crate::store::StoreError::Invalid("x".into())));
    }
}
