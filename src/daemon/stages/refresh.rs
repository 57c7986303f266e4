//! The popularity refresher thread.

use crate::daemon::Ctx;
use crate::store::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-reads popularity from the store when events or the catalogue changed (every `refresh_s`).
pub(crate) fn refresh_loop(ctx: Arc<Ctx>, store: Store, stopping: Arc<AtomicBool>) {
    let every = Duration::from_secs(ctx.cfg.read().map(|c| c.serve.refresh_s).unwrap_or(5).max(1));
    let mut last = Instant::now();
    while !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        if ctx.dirty.swap(false, Ordering::Relaxed) {
            let t0 = Instant::now();
            if let Err(e) = ctx.popularity.refresh(&store) {
                tracing::error!(error = %e, "popularity refresh failed");
            }
            ctx.metrics().observe_ms("serve.refresh_ms", t0.elapsed().as_secs_f64() * 1e3);
        }
    }
}
