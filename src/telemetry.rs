//! Logging setup and the in-process metrics that `stats`, `status` and benchmarks read.
//!
//! Counters are named with dotted strings (`mqtt.malformed`, `store.events_ingested`) so that each
//! concern can add its own without touching this file; latencies go into fixed-bucket histograms.

use crate::config::{LogConfig, LogFormat};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Installs the global `tracing` subscriber on stderr. `RUST_LOG` overrides the configured filter.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init_logging(cfg: &LogConfig) {
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_new(&cfg.filter).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Under systemd, journald timestamps each line: leave ours out there.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match (cfg.format, under_journald) {
        (LogFormat::Json, _) => registry.with(layer.json().flatten_event(true).with_filter(quiet_broker())).try_init(),
        (LogFormat::Text, true) => {
            registry.with(layer.without_time().with_ansi(false).with_filter(quiet_broker())).try_init()
        }
        (LogFormat::Text, false) => registry.with(layer.with_filter(quiet_broker())).try_init(),
    };
}

/// The embedded broker's false alarm: rumqttd 0.20 logs every clean client DISCONNECT (a kiosk
/// leaving, the daemon's own link at shutdown) as `ERROR router-drop`, because the client's link sees
/// the router close the channel that the router closed on purpose. This one call site
/// (`rumqttd/src/server/broker.rs`, line 581 of the locked 0.20.0; `tests/integration/telemetry.rs`
/// checks it against the real broker) is left out of the log; every other broker line passes.
pub fn is_broker_false_alarm(meta: &tracing::Metadata<'_>) -> bool {
    const ROUTER_DROP_LINE: u32 = 581;
    meta.target() == "rumqttd::server::broker"
        && *meta.level() == tracing::Level::ERROR
        && meta.line() == Some(ROUTER_DROP_LINE)
        && meta.file().is_some_and(|f| f.replace('\\', "/").ends_with("server/broker.rs"))
}

/// A per-layer filter that drops [`is_broker_false_alarm`] events.
pub fn quiet_broker() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| !is_broker_false_alarm(meta))
}

/// At most this many distinct counter names and as many histogram names: a name built from
/// outside data (a kiosk id, a topic) must not grow a long-running daemon's memory without bound.
/// Updates to new names past the cap are dropped and counted in [`NAMES_DROPPED`].
pub const MAX_NAMES: usize = 1024;
/// Counter of metric updates dropped because [`MAX_NAMES`] names exist already.
pub const NAMES_DROPPED: &str = "telemetry.names_dropped";

/// The counter slot for `name`: existing, new while under [`MAX_NAMES`], else `None` (the drop is
/// counted). Looks up before allocating the key.
fn bounded_slot<'a>(c: &'a mut BTreeMap<String, u64>, name: &str) -> Option<&'a mut u64> {
    if c.contains_key(name) {
        return c.get_mut(name);
    }
    if c.len() < MAX_NAMES {
        return Some(c.entry(name.to_string()).or_default());
    }
    *c.entry(NAMES_DROPPED.to_string()).or_default() += 1;
    None
}

/// Named counters and latency histograms, shared by all stages of the daemon.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<String, u64>>,
    latencies: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn incr(&self, name: &str) {
        self.add(name, 1);
    }

    pub fn add(&self, name: &str, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            if let Some(slot) = bounded_slot(&mut c, name) {
                *slot += n;
            }
        }
    }

    /// Sets a gauge-like value (queue backlog, rows in a table).
    pub fn set(&self, name: &str, v: u64) {
        if let Ok(mut c) = self.counters.lock() {
            if let Some(slot) = bounded_slot(&mut c, name) {
                *slot = v;
            }
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counters.lock().ok().and_then(|c| c.get(name).copied()).unwrap_or(0)
    }

    pub fn observe_ms(&self, name: &str, ms: f64) {
        let Ok(mut l) = self.latencies.lock() else { return };
        if let Some(h) = l.get_mut(name) {
            h.record(ms);
        } else if l.len() < MAX_NAMES {
            l.entry(name.to_string()).or_default().record(ms);
        } else {
            drop(l);
            self.incr(NAMES_DROPPED);
        }
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Latency summaries (count, p50, p90, p99, max in ms) by name.
    pub fn latency_summaries(&self) -> BTreeMap<String, LatencySummary> {
        self.latencies.lock().map(|l| l.iter().map(|(k, h)| (k.clone(), h.summary())).collect()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Log-spaced buckets from 1 microsecond to about 100 s; 5 % relative resolution.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: f64,
}

const H_MIN_MS: f64 = 1e-3;
const H_GROWTH: f64 = 1.05;
const H_BUCKETS: usize = 380;

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: vec![0; H_BUCKETS], count: 0, max: 0.0 }
    }
}

impl Histogram {
    pub fn record(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let idx = if ms <= H_MIN_MS { 0 } else { ((ms / H_MIN_MS).ln() / H_GROWTH.ln()).ceil() as usize };
        self.buckets[idx.min(H_BUCKETS - 1)] += 1;
        self.count += 1;
        self.max = self.max.max(ms);
    }

    /// Upper bound of the bucket holding quantile `q` (0..1).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return (H_MIN_MS * H_GROWTH.powi(i as i32)).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            p50_ms: self.quantile(0.5),
            p90_ms: self.quantile(0.9),
            p99_ms: self.quantile(0.99),
            max_ms: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_within_resolution() {
        let mut h = Histogram::default();
        for i in 1..=1000 {
            h.record(i as f64 / 100.0); // 0.01 .. 10 ms
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 5.0).abs() / 5.0 < 0.06, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() / 9.9 < 0.06, "{s:?}");
        assert_eq!(s.max_ms, 10.0);
    }

    #[test]
    fn counters_add_and_set() {
        let m = Metrics::default();
        m.incr("a");
        m.add("a", 2);
        m.set("b", 7);
        assert_eq!(m.get("a"), 3);
        assert_eq!(m.get("b"), 7);
        assert_eq!(m.get("missing"), 0);
    }

    #[test]
    fn metric_names_are_bounded() {
        let m = Metrics::default();
        m.incr("early");
        for i in 0..MAX_NAMES + 500 {
            m.incr(&format!("kiosk.k{i}.requests"));
            m.observe_ms(&format!("kiosk.k{i}.ms"), 1.0);
        }
        let c = m.counters();
        // MAX_NAMES names plus the drop counter itself.
        assert_eq!(c.len(), MAX_NAMES + 1, "{}", c.len());
        assert_eq!(m.latency_summaries().len(), MAX_NAMES);
        // Counters: 501 names did not fit (the first 1023 did, after "early"); histograms: 500.
        assert_eq!(m.get(NAMES_DROPPED), 501 + 500);
        // Existing names keep counting after the cap.
        m.incr("early");
        m.observe_ms("kiosk.k0.ms", 2.0);
        assert_eq!(m.get("early"), 2);
        assert_eq!(m.latency_summaries()["kiosk.k0.ms"].count, 2);
    }
}
