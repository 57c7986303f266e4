//! Opening the database (file checks, pragmas, migrations), transactions, counts, integrity.

use super::{io_err, migrations, Result, StoreError};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store: one SQLite connection. `Send`, not `Sync`: open one per thread or task.
pub struct Store {
    pub(super) conn: Connection,
    path: Option<PathBuf>,
    /// Keeps this connection in the per-process count of open connections (see
    /// [`check_file_unless_open`]); declared after `conn`, so it is dropped after the connection.
    counted: OpenGuard,
}

/// Uncounts an open connection when dropped.
struct OpenGuard(Option<PathBuf>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(k) = self.0.take() {
            count_open(&k, -1);
        }
    }
}

/// Rows per table (plus distinct users), for `status`, `stats` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TableCounts {
    pub items: u64,
    pub images: u64,
    pub item_features: u64,
    pub interactions: u64,
    /// Kiosk events held apart because their SKU is not in the catalogue.
    #[serde(default)]
    pub held_interactions: u64,
    /// Distinct users seen in interactions.
    pub users: u64,
    /// Messages waiting to be published.
    pub outbox: u64,
    pub model_versions: u64,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Connections this process holds open, per database file (canonical path).
static OPEN_CONNECTIONS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, usize>>> =
    std::sync::OnceLock::new();

fn open_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Adds `delta` to the open connections of `key`; returns how many were open before.
fn count_open(key: &Path, delta: isize) -> usize {
    let Ok(mut m) = OPEN_CONNECTIONS.get_or_init(Default::default).lock() else {
        return 0;
    };
    let before = m.get(key).copied().unwrap_or(0);
    let after = before.saturating_add_signed(delta);
    if after == 0 {
        m.remove(key);
    } else {
        m.insert(key.to_path_buf(), after);
    }
    before
}

/// [`check_file`], unless this process already holds a connection to the file. Closing *any*
/// descriptor of a file releases every POSIX (fcntl) lock the process holds on it, SQLite's
/// included ("How To Corrupt An SQLite Database", 2.2): re-reading the header while a connection
/// of this process is open silently drops that connection's locks, and another process
/// (`doctor`, an import, a test) closing its last connection then believes it is alone,
/// checkpoints and deletes the WAL under the running daemon, whose later commits are lost.
fn check_file_unless_open(path: &Path) -> Result<()> {
    let open =
        OPEN_CONNECTIONS.get_or_init(Default::default).lock().map(|m| m.contains_key(&open_key(path))).unwrap_or(false);
    if open {
        return Ok(());
    }
    check_file(path)
}

/// Checks an existing file's header before SQLite touches it: a file that is not SQLite, or is
/// visibly truncated, is refused without being opened for writing.
fn check_file(path: &Path) -> Result<()> {
    let not = |reason: String| StoreError::NotSqlite { path: path.to_path_buf(), reason };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    if !meta.is_file() {
        return Err(not("not a regular file".into()));
    }
    let len = meta.len();
    if len == 0 {
        return Ok(()); // SQLite treats an empty file as a new database.
    }
    let mut header = [0u8; 100];
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    if len < 100 {
        return Err(not(format!("{len} bytes, shorter than the 100-byte SQLite header")));
    }
    f.read_exact(&mut header).map_err(|e| io_err(path, e))?;
    if &header[..16] != SQLITE_MAGIC {
        return Err(not("no SQLite header".into()));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        p if p >= 512 && p.is_power_of_two() => p as u64,
        p => return Err(not(format!("invalid page size {p} in the header"))),
    };
    if len % page_size != 0 {
        return Err(not(format!("truncated: {len} bytes is not a whole number of {page_size}-byte pages")));
    }
    // The in-header page count is valid when the "version-valid-for" number equals the change
    // counter. A non-empty WAL may legitimately hold pages beyond the main file's end.
    let pages = u32::from_be_bytes([header[28], header[29], header[30], header[31]]) as u64;
    let valid = header[92..96] == header[24..28];
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_has_frames = std::fs::metadata(PathBuf::from(wal)).map(|m| m.len() > 0).unwrap_or(false);
    if valid && pages > 0 && len < pages * page_size && !wal_has_frames {
        return Err(not(format!("truncated: the header says {pages} pages, the file holds {}", len / page_size)));
    }
    Ok(())
}

fn corrupt_to_not_sqlite(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            StoreError::NotSqlite { path: path.to_path_buf(), reason: e.to_string() }
        }
        _ => StoreError::Sqlite(e),
    }
}

impl Store {
    /// Opens (or creates) the database at `path`: creates the parent directory, refuses a file
    /// that is not SQLite or is truncated ([`StoreError::NotSqlite`], file untouched) and a schema
    /// newer than this binary ([`StoreError::SchemaTooNew`]), then sets WAL, `synchronous=FULL`,
    /// foreign keys and the busy timeout, and applies pending migrations.
    pub fn open(path: &Path, busy_timeout_ms: u64) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        check_file_unless_open(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        // Counted from here (the Store below, or this guard on an early return, uncounts it).
        let key = open_key(path);
        count_open(&key, 1);
        let guard = OpenGuard(Some(key));
        conn.busy_timeout(Duration::from_millis(busy_timeout_ms))?;
        // Read-only probes first: nothing is written to a file that fails them.
        let objects = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
            .map_err(|e| corrupt_to_not_sqlite(path, e))?;
        let version = migrations::check_not_newer(&conn).map_err(|e| match e {
            StoreError::Sqlite(e) => corrupt_to_not_sqlite(path, e),
            other => other,
        })?;
        if version == 0 && objects > 0 {
            // Schema objects but no version of ours: another application's database.
            return Err(StoreError::NotSqlite {
                path: path.to_path_buf(),
                reason: format!(
                    "an SQLite database of another application ({objects} schema objects, no sgbd-edge schema version)"
                ),
            });
        }
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "store: WAL mode unavailable");
        }
        let mut store = Self::setup(conn, Some(path.to_path_buf()))?;
        store.counted = guard;
        tracing::debug!(path = %path.display(), schema = migrations::LATEST, "store opened");
        Ok(store)
    }

    /// A private in-memory database with the full schema (tests, benchmarks).
    pub fn open_in_memory() -> Result<Store> {
        Self::setup(Connection::open_in_memory()?, None)
    }

    fn setup(conn: Connection, path: Option<PathBuf>) -> Result<Store> {
        // FULL: in WAL mode every commit fsyncs the WAL, so an acknowledged event survives a power
        // cut (NORMAL may lose the last commits). Batches share one fsync.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Keep the WAL from growing without bound after a burst (64 MiB).
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrations::migrate(&conn)?;
        Ok(Store { conn, path, counted: OpenGuard(None) })
    }

    /// The database file, `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`: the write lock is taken up front, so
    /// the busy timeout applies and no lock upgrade can deadlock). Nested calls join the outer one.
    pub(super) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return f(&self.conn);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let out = f(&self.conn).and_then(|v| {
            self.conn.execute_batch("COMMIT")?;
            Ok(v)
        });
        if out.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        out
    }

    /// Runs `f` in one read transaction: every query inside sees the same snapshot.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return f(&self.conn);
        }
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(&self.conn);
        let _ = self.conn.execute_batch("COMMIT");
        out
    }

    /// Rows per table, all from one snapshot.
    pub fn counts(&self) -> Result<TableCounts> {
        self.read(|c| {
            let n =
                |sql: &str| -> Result<u64> { Ok(c.prepare_cached(sql)?.query_row([], |r| r.get::<_, i64>(0))? as u64) };
            Ok(TableCounts {
                items: n("SELECT count(*) FROM items")?,
                images: n("SELECT count(*) FROM images")?,
                item_features: n("SELECT count(*) FROM item_features")?,
                interactions: n("SELECT count(*) FROM interactions")?,
                held_interactions: n("SELECT count(*) FROM held_interactions")?,
                users: n("SELECT count(DISTINCT user) FROM interactions")?,
                outbox: n("SELECT count(*) FROM outbox")?,
                model_versions: n("SELECT count(*) FROM model_versions")?,
            })
        })
    }

    /// `PRAGMA integrity_check`: `"ok"`, or SQLite's messages joined by newlines.
    pub fn integrity_check(&self) -> Result<String> {
        let mut st = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.join("\n"))
    }

    /// The schema version (`PRAGMA user_version`), [`migrations::LATEST`] after a successful open.
    pub fn schema_version(&self) -> Result<i64> {
        migrations::version(&self.conn)
    }

    /// Copies the WAL into the main file and truncates it (e.g. before a backup or at shutdown).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_has_latest_schema_and_empty_counts() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(s.schema_version().unwrap(), migrations::LATEST);
        assert_eq!(s.counts().unwrap(), TableCounts::default());
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn header_is_checked_only_while_no_connection_of_this_process_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let key = open_key(&Store::open(&db, 5000).map(|s| s.path().unwrap().to_path_buf()).unwrap());
        let open = || OPEN_CONNECTIONS.get().and_then(|m| m.lock().ok()).and_then(|m| m.get(&key).copied());
        assert_eq!(open(), None, "a dropped store is uncounted");
        let a = Store::open(&db, 5000).unwrap();
        let b = Store::open(&db, 5000).unwrap();
        assert_eq!(open(), Some(2));
        drop(a);
        assert_eq!(open(), Some(1));
        drop(b);
        assert_eq!(open(), None);
        // With no connection open, a damaged file is refused from its header again.
        std::fs::write(
            &db,
            b"not a database at all, but long enough to have a header......................................",
        )
        .unwrap();
        assert!(matches!(Store::open(&db, 5000), Err(StoreError::NotSqlite { .. })));
    }

    #[test]
    fn store_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Store>();
    }
}
