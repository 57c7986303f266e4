//! The router stage: classifies incoming messages by topic and hands them to a stage over bounded
//! channels; events are decoded and checked here, before they reach the store's writer.

use super::ingest::WriterMsg;
use super::reply::{error_payload, refuse, reply_target, send_reply};
use crate::daemon::Ctx;
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{decode, DecodeError, ErrorCode, EventMsg, Inbound};
use crate::store::Event;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Router: topic -> stage. Ends on shutdown, dropping the stage senders.
pub(crate) async fn router(
    ctx: Arc<Ctx>,
    mut incoming: mpsc::Receiver<InMsg>,
    ev_tx: mpsc::Sender<WriterMsg>,
    req_tx: mpsc::Sender<(String, InMsg)>,
    cmd_tx: mpsc::Sender<(String, InMsg)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        ctx.health.beats.beat("router");
        let m = tokio::select! {
            m = incoming.recv() => match m { Some(m) => m, None => break },
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            _ = shutdown.changed() => break,
        };
        if *shutdown.borrow() {
            break;
        }
        match ctx.topics.classify(&m.topic) {
            Inbound::Event { kiosk } => {
                if let Some(w) = decode_event(&ctx, &kiosk, &m) {
                    if ev_tx.send(w).await.is_err() {
                        break;
                    }
                }
            }
            Inbound::Recommend { kiosk } => {
                if req_tx.send((kiosk, m)).await.is_err() {
                    break;
                }
            }
            Inbound::Command { name } => {
                if cmd_tx.send((name, m)).await.is_err() {
                    break;
                }
            }
            Inbound::Other => tracing::debug!(topic = %m.topic, "ignored"),
        }
    }
    tracing::debug!("router stopped");
}

fn decode_event(ctx: &Ctx, kiosk: &str, m: &InMsg) -> Option<WriterMsg> {
    let max = ctx.live().max_payload_bytes;
    let msg: EventMsg = match decode(&m.payload, max) {
        Ok(v) => v,
        Err(e) => {
            refuse(ctx, Some(kiosk), m, e);
            return None;
        }
    };
    let kind = match msg.kind.parse() {
        Ok(k) => k,
        Err(_) => {
            let e = DecodeError {
                code: ErrorCode::Malformed,
                message: format!("unknown kind {:?}; use view, scan, cart, purchase", msg.kind),
                request_id: msg.request_id.clone(),
                reply_to: msg.reply_to.clone(),
            };
            refuse(ctx, Some(kiosk), m, e);
            return None;
        }
    };
    if msg.event_id.is_empty() || msg.user.is_empty() || msg.sku.is_empty() {
        let e = DecodeError {
            code: ErrorCode::Malformed,
            message: "event_id, user and sku must not be empty".into(),
            request_id: msg.request_id.clone(),
            reply_to: msg.reply_to.clone(),
        };
        refuse(ctx, Some(kiosk), m, e);
        return None;
    }
    let reply = match reply_target(ctx, kiosk, m, msg.reply_to.as_deref(), msg.request_id.as_deref(), false) {
        Ok(t) => t,
        Err(t) => {
            ctx.metrics().incr("mqtt.forbidden_reply_topic");
            let p = error_payload(
                ctx,
                t.request_id.clone(),
                ErrorCode::ForbiddenReplyTopic,
                "reply_to outside the kiosk's topics".into(),
            );
            send_reply(ctx, &t, p);
            return None;
        }
    };
    let ev = Event {
        event_id: msg.event_id,
        user: msg.user,
        sku: msg.sku,
        kind,
        ts_ms: msg.ts,
        kiosk: Some(kiosk.to_string()),
    };
    Some(WriterMsg::Event { ev, reply })
}
