//! The status task: `status.json`, systemd `STATUS=` and the watchdog.

use crate::daemon::health::{self, StageState, StatusFile};
use crate::daemon::Ctx;
use crate::sys::now_ms;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A stage that has not beaten for this long is stuck (they beat at least once a second).
const STAGE_STALL: Duration = Duration::from_secs(30);

pub(crate) fn write_status_file(ctx: &Ctx, running: bool) {
    let cfg = ctx.cfg.read().map(|c| c.clone()).unwrap_or_default();
    let now = now_ms();
    let stall = STAGE_STALL;
    let stages = ctx
        .health
        .beats
        .ages(now)
        .into_iter()
        .map(|(k, a)| (k.to_string(), StageState { last_beat_ms_ago: a, ok: a <= stall.as_millis() as i64 }))
        .collect();
    let s = StatusFile {
        running,
        pid: std::process::id(),
        software_version: crate::VERSION.into(),
        node_id: cfg.node.node_id.clone(),
        store_id: cfg.node.store_id.clone(),
        started_at: ctx.started_ms,
        updated_at: now,
        uptime_s: ctx.started.elapsed().as_secs(),
        broker_mode: format!("{:?}", cfg.mqtt.broker).to_lowercase(),
        broker: format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
        broker_connected: ctx.link.is_connected(),
        model_version: ctx.ranker.get().model_version(),
        stages,
        counters: ctx.metrics().counters(),
        latencies: ctx.metrics().latency_summaries(),
        shelf: ctx.shelf.as_ref().map(|s| s.report()),
    };
    if let Err(e) = health::write_status(&health::status_path(&cfg.node.data_dir), &s) {
        tracing::warn!(error = %e, "status.json not written");
    }
}

/// Every 2 s: status.json and `STATUS=`; `WATCHDOG=1` at half of `WATCHDOG_USEC` while no stage
/// is stuck (the MQTT stage counts as alive while its poll task handles events or reconnects).
pub(crate) async fn status_loop(ctx: Arc<Ctx>, notifier: health::Notifier, mut shutdown: watch::Receiver<bool>) {
    let tick = notifier.watchdog_every.map(|w| w.min(Duration::from_secs(2))).unwrap_or(Duration::from_secs(2));
    let mut last_mqtt = ctx.link.heartbeat();
    let mut last_file = Instant::now() - Duration::from_secs(10);
    let keepalive = ctx.cfg.read().map(|c| c.mqtt.keep_alive_s).unwrap_or(30);
    loop {
        let hb = ctx.link.heartbeat();
        if hb != last_mqtt {
            last_mqtt = hb;
            ctx.health.beats.beat("mqtt");
        }
        let now = now_ms();
        // Internal stages beat every second; the MQTT poll task only sees traffic or a keep-alive
        // ping, so it gets three keep-alive periods.
        let mqtt_stall = Duration::from_secs(30.max(keepalive * 3));
        let stuck: Vec<&str> = ctx
            .health
            .beats
            .stuck(now, STAGE_STALL)
            .into_iter()
            .filter(|s| *s != "mqtt" || ctx.health.beats.stuck(now, mqtt_stall).contains(&"mqtt"))
            .collect();
        if stuck.is_empty() {
            notifier.watchdog();
        } else {
            tracing::error!(stages = ?stuck, "stages stuck: not petting the watchdog");
        }
        if last_file.elapsed() >= Duration::from_secs(2) {
            last_file = Instant::now();
            write_status_file(&ctx, true);
            let mut line =
                health::status_line(ctx.metrics(), ctx.link.is_connected(), &ctx.ranker.get().model_version(), &stuck);
            if let Some(s) = &ctx.shelf {
                line = format!("{line}, {}", s.summary());
            }
            notifier.status(&line);
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}
