//! The stats publisher: `stats` (QoS 0) every `mqtt.stats_interval_s`.

use super::reply::node_id;
use crate::daemon::health;
use crate::daemon::Ctx;
use crate::mqtt::contract::{self, Stats};
use crate::sys::now_ms;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn stats(ctx: &Ctx, db_rows: Option<crate::store::TableCounts>) -> Stats {
    let m = ctx.metrics();
    let data_dir = ctx.cfg.read().map(|c| c.node.data_dir.clone()).unwrap_or_default();
    Stats {
        schema_version: contract::SCHEMA_VERSION.into(),
        ts: now_ms(),
        node_id: node_id(ctx),
        uptime_s: ctx.started.elapsed().as_secs(),
        broker_connected: ctx.link.is_connected(),
        model_version: ctx.ranker.get().model_version(),
        counters: m.counters(),
        latencies: m.latency_summaries().into_iter().map(|(k, v)| (k, v.into())).collect(),
        outbox_backlog: m.get("outbox.backlog"),
        disk_free_bytes: crate::sys::disk_free_bytes(&data_dir).ok(),
        gpu_load_pct: health::gpu_load_pct(),
        db_rows,
        temperatures_c: health::temperatures_c(),
        shelf: ctx.shelf.as_ref().and_then(|s| serde_json::to_value(s.report()).ok()),
    }
}

/// Publishes `stats` (QoS 0) every `mqtt.stats_interval_s`.
pub(crate) async fn stats_loop(ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let every = Duration::from_secs(ctx.live().stats_interval_s.max(1));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let cfg = ctx.cfg.read().map(|c| c.clone()).unwrap_or_default();
        let db_rows =
            tokio::task::spawn_blocking(move || crate::store::open_config(&cfg).and_then(|s| s.counts()).ok())
                .await
                .ok()
                .flatten();
        let s = stats(&ctx, db_rows);
        let payload = serde_json::to_vec(&s).unwrap_or_default();
        if let Err(e) = ctx.link.publish(&ctx.topics.stats(), QoS::AtMostOnce, false, payload, None) {
            tracing::debug!(error = %e, "stats not published");
        }
    }
}
