//! The command stage: fleet commands (rebirth, config-reload, catalog-update, model-pin), each
//! answered with a [`CommandResult`] on `<base>/cmd/<name>/result`.

use super::ingest::WriterMsg;
use super::reply::{node_id, refuse};
use crate::config::Config;
use crate::daemon::{Ctx, LiveSettings};
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{decode, Command, CommandResult, CommandStatus, PinCommand};
use crate::store::NewItem;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Publishes a command's result on `<base>/cmd/<name>/result` (QoS 1, not retained; MQTT 5
/// Correlation Data copied from the command). Like a reply it is ephemeral: dropped and counted
/// when the link's queue is full.
pub(crate) fn publish_result(
    ctx: &Ctx,
    name: &str,
    correlation: Option<Bytes>,
    request_id: Option<String>,
    status: CommandStatus,
    message: String,
) {
    match status {
        CommandStatus::Failed => tracing::warn!(command = name, request_id = ?request_id, %message, "command failed"),
        _ => tracing::info!(command = name, request_id = ?request_id, status = ?status, %message, "command result"),
    }
    let r = CommandResult::new(&node_id(ctx), name, request_id, status, message);
    let props = correlation.map(|c| PublishProperties { correlation_data: Some(c), ..Default::default() });
    let payload = Bytes::from(serde_json::to_vec(&r).unwrap_or_default());
    if let Err(e) = ctx.link.publish(&ctx.topics.cmd_result(name), QoS::AtLeastOnce, false, payload, props) {
        ctx.metrics().incr("mqtt.reply_dropped");
        tracing::warn!(command = name, error = %e, "command result dropped");
    }
}

/// Fleet commands. Each one gets a [`CommandResult`] ([`publish_result`]).
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
        let correlation = m.properties.as_ref().and_then(|p| p.correlation_data.clone());
        let result = |request_id: Option<String>, status, message: String| {
            publish_result(&ctx, &name, correlation.clone(), request_id, status, message)
        };
        let limit = ctx.live().max_payload_bytes.max(4 << 20);
        if name == "model-pin" {
            let cmd: PinCommand = match decode(&m.payload, limit.min(64 << 10)) {
                Ok(c) => c,
                Err(e) => {
                    result(e.request_id.clone(), CommandStatus::Failed, format!("{}: {}", e.code.as_str(), e.message));
                    refuse(&ctx, None, &m, e);
                    continue;
                }
            };
            let (cfg, metrics) = (ctx.cfg.read().map(|c| c.clone()).unwrap_or_default(), ctx.health.metrics.clone());
            let version = cmd.version.clone();
            let outcome =
                tokio::task::spawn_blocking(move || crate::daemon::publish::fleet_pin(&cfg, &version, &metrics))
                    .await
                    .unwrap_or_else(|e| Err(format!("pin task failed: {e}")));
            match outcome {
                Ok(msg) => result(cmd.request_id, CommandStatus::Done, msg),
                Err(msg) => result(cmd.request_id, CommandStatus::Failed, msg),
            }
            continue;
        }
        let cmd: Option<Command> = if m.payload.is_empty() {
            None
        } else {
            match decode(&m.payload, limit) {
                Ok(c) => Some(c),
                Err(e) => {
                    result(e.request_id.clone(), CommandStatus::Failed, format!("{}: {}", e.code.as_str(), e.message));
                    refuse(&ctx, None, &m, e);
                    continue;
                }
            }
        };
        let request_id = cmd.as_ref().and_then(|c| c.request_id.clone());
        tracing::info!(command = %name, request_id = ?request_id, "fleet command");
        match name.as_str() {
            "rebirth" => {
                let cfg = ctx.cfg.read().map(|c| c.clone()).unwrap_or_default();
                let birth = crate::daemon::birth(&cfg, &ctx.ranker.get().model_version());
                ctx.link.set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
                result(request_id, CommandStatus::Done, "birth republished".into());
            }
            "config-reload" => match config_reload(&ctx) {
                Ok(msg) => result(request_id, CommandStatus::Done, msg),
                Err(msg) => result(request_id, CommandStatus::Failed, msg),
            },
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
                let n = items.len();
                let done = CatalogDone { correlation: correlation.clone(), request_id: request_id.clone() };
                if ev_tx.send(WriterMsg::Catalog { items, done: Some(done) }).await.is_err() {
                    result(request_id, CommandStatus::Failed, "the node is stopping".into());
                    break;
                }
                result(request_id, CommandStatus::Accepted, format!("{n} items queued for the store"));
            }
            other => {
                ctx.metrics().incr("fleet.unknown_command");
                tracing::warn!(command = other, "unknown fleet command ignored");
                result(
                    request_id,
                    CommandStatus::Failed,
                    format!("unknown command {other:?} (rebirth, config-reload, catalog-update, model-pin)"),
                );
            }
        }
    }
    tracing::debug!("command stage stopped");
}

/// Where the ingest thread reports a `catalog-update` it applied.
#[derive(Debug, Clone)]
pub(crate) struct CatalogDone {
    pub correlation: Option<Bytes>,
    pub request_id: Option<String>,
}

/// Re-reads and validates the config file; applies what can change live, logs the rest.
/// Returns what the command's result says.
fn config_reload(ctx: &Ctx) -> Result<String, String> {
    let Some(path) = ctx.opts.config_path.clone() else {
        tracing::warn!("config-reload: the daemon was started without --config; nothing to reload");
        return Err("the daemon was started without --config: nothing to reload".into());
    };
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics().incr("fleet.config_reload_failed");
            tracing::error!(error = %e, "config-reload refused; keeping the running configuration");
            return Err(format!("refused, the running configuration is kept: {e}"));
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
    let mut msg = format!("reloaded (config hash {})", new.hash());
    if !needs_restart.is_empty() {
        msg.push_str(&format!("; changed, applied after a restart: {}", needs_restart.join(", ")));
    }
    Ok(msg)
}
