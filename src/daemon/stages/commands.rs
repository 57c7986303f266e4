//! The command stage: fleet commands (rebirth, config-reload, catalog-update, model-pin).

use super::ingest::WriterMsg;
use super::reply::refuse;
use crate::config::Config;
use crate::daemon::{Ctx, LiveSettings};
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{decode, Command};
use crate::store::NewItem;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Fleet commands.
pub(crate) async fn command_loop(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<(String, InMsg)>,
    ev_tx: mpsc::Sender<WriterMsg>,
) {
    loop {
        ctx.health.beats.beat("commands");
        let (name, m) = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(_) => continue,
        };
        ctx.metrics().incr("fleet.commands");
        if name == "model-pin" {
            let (cfg, metrics) = (ctx.cfg.read().map(|c| c.clone()).unwrap_or_default(), ctx.health.metrics.clone());
            tokio::task::spawn_blocking(move || crate::daemon::publish::fleet_pin(&cfg, &m.payload, &metrics));
            continue;
        }
        let cmd: Option<Command> = if m.payload.is_empty() {
            None
        } else {
            match decode(&m.payload, ctx.live().max_payload_bytes.max(4 << 20)) {
                Ok(c) => Some(c),
                Err(e) => {
                    refuse(&ctx, None, &m, e);
                    continue;
                }
            }
        };
        tracing::info!(command = %name, "fleet command");
        match name.as_str() {
            "rebirth" => {
                let cfg = ctx.cfg.read().map(|c| c.clone()).unwrap_or_default();
                let birth = crate::daemon::birth(&cfg, &ctx.ranker.get().model_version());
                ctx.link.set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
            }
            "config-reload" => config_reload(&ctx),
            "catalog-update" => {
                let items: Vec<NewItem> = cmd
                    .map(|c| c.items)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| NewItem {
                        sku: i.sku,
                        title: i.title,
                        description: i.description,
                        attributes: i.attributes,
                        image_path: i.image_path,
                    })
                    .collect();
                if ev_tx.send(WriterMsg::Catalog { items, reply: None }).await.is_err() {
                    break;
                }
            }
            other => {
                ctx.metrics().incr("fleet.unknown_command");
                tracing::warn!(command = other, "unknown fleet command ignored");
            }
        }
    }
    tracing::debug!("command stage stopped");
}

/// Re-reads and validates the config file; applies what can change live, logs the rest.
fn config_reload(ctx: &Ctx) {
    let Some(path) = ctx.opts.config_path.clone() else {
        tracing::warn!("config-reload: the daemon was started without --config; nothing to reload");
        return;
    };
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics().incr("fleet.config_reload_failed");
            tracing::error!(error = %e, "config-reload refused; keeping the running configuration");
            return;
        }
    };
    let old = ctx.cfg.read().map(|c| c.clone()).unwrap_or_default();
    let needs_restart: Vec<&str> = [
        ("node", old.node != new.node),
        ("store", old.store != new.store),
        ("mqtt (broker, identity, limits)", {
            let mut a = old.mqtt.clone();
            let mut b = new.mqtt.clone();
            a.stats_interval_s = 0;
            b.stats_interval_s = 0;
            a.max_payload_bytes = 0;
            b.max_payload_bytes = 0;
            a.forward_events = false;
            b.forward_events = false;
            a != b
        }),
        (
            "serve.exclude_kinds / serve.refresh_s",
            old.serve.exclude_kinds != new.serve.exclude_kinds || old.serve.refresh_s != new.serve.refresh_s,
        ),
        ("learn", old.learn != new.learn),
        ("denoise", old.denoise != new.denoise),
        ("capture", old.capture != new.capture),
        ("log", old.log != new.log),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(k, _)| k)
    .collect();
    if let Ok(mut l) = ctx.live.write() {
        *l = LiveSettings::from(&new);
    }
    if let Ok(mut c) = ctx.cfg.write() {
        *c = new.clone();
    }
    for k in &needs_restart {
        tracing::warn!(section = k, "config-reload: changed, takes effect after a restart");
    }
    tracing::info!(hash = %new.hash(), "config reloaded (serve limits, reply cache, stats interval, payload limit applied)");
    let birth = crate::daemon::birth(&new, &ctx.ranker.get().model_version());
    ctx.link.set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
}
