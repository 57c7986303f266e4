//! The one test harness, shared by both test binaries (`tests/integration`, `tests/system`), one
//! module per concern. Each binary declares it once (`#[path = "../harness/mod.rs"] mod harness;`)
//! and uses the part it needs.
//!
//! Tests of every file run side by side in one process (libtest's threads), so each test takes its
//! turn first: [`exclusive`] for a test that measures time, latency percentiles or memory, floods
//! the machine or sets process-wide state (it runs alone), [`shared`] for every other one (they run
//! together, never beside an exclusive one). One turn per test, taken first in the test body and
//! nowhere else (a helper that took a second one could deadlock behind a waiting exclusive test).

pub mod broker;
pub mod daemon;
pub mod grad;
pub mod mqtt;
pub mod netfault;
pub mod online;
pub mod pki;
pub mod planted;

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static TURN: RwLock<()> = RwLock::new(());

/// A test's turn, held until it is dropped (at the end of the test). Async tests hold it across
/// `.await`: it is the first thing the test's future does, on the thread that blocks on it, and
/// no task of that runtime takes it.
#[must_use = "the turn ends when it is dropped: bind it for the whole test (`let _turn = ...`)"]
pub struct Turn<G> {
    _guard: G,
}

/// The whole machine for this test: no other test of the binary runs until the turn is dropped.
pub fn exclusive() -> Turn<RwLockWriteGuard<'static, ()>> {
    // A test that panicked while holding its turn poisons the lock; the others still run.
    Turn { _guard: TURN.write().unwrap_or_else(|e| e.into_inner()) }
}

/// A turn beside other shared tests, never beside an exclusive one.
pub fn shared() -> Turn<RwLockReadGuard<'static, ()>> {
    Turn { _guard: TURN.read().unwrap_or_else(|e| e.into_inner()) }
}

/// A path in the repository.
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The bundled demo catalogue and shelf.
pub fn demo_assets() -> PathBuf {
    repo("assets/demo")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The real data sets (`SGBD_DATA`), or `None` with a visible skip line.
pub fn sgbd_data() -> Option<PathBuf> {
    match std::env::var_os("SGBD_DATA") {
        Some(d) if Path::new(&d).is_dir() => Some(PathBuf::from(d)),
        _ => {
            eprintln!("skipping: SGBD_DATA not set");
            None
        }
    }
}
