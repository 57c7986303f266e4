//! The router stage: classifies incoming messages by topic and hands them to a stage over bounded
//! channels; events are decoded and checked here, before they reach the store's writer.

use super::ingest::WriterMsg;
use super::reply::{error_payload, refuse, reply_target, send_reply};
use crate::daemon::Ctx;
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{decode, DecodeError, ErrorCode, EventMsg, Inbound};
use crate::mqtt::ratelimit::KioskRateLimiter;
use crate::sys::now_ms;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    let mut event_limit = {
        let m = ctx.cfg.read().map(|c| c.mqtt.clone()).unwrap_or_default();
        KioskRateLimiter::new(m.kiosk_event_rate_per_s, m.kiosk_event_burst, 10_000)
    };
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
                if let Some(w) = decode_event(&ctx, &kiosk, &m, &mut event_limit) {
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

/// Decodes and checks one kiosk event ([`EventMsg::to_event`]: every rule the store applies plus
/// the contract's own, a known `kind` and a plausible `ts`), and the kiosk's event rate. A bad
/// event is refused here, alone, with a code naming the problem; it never reaches the writer.
fn decode_event(ctx: &Ctx, kiosk: &str, m: &InMsg, limit: &mut KioskRateLimiter) -> Option<WriterMsg> {
    let max = ctx.live().max_payload_bytes;
    let msg: EventMsg = match decode(&m.payload, max) {
        Ok(v) => v,
        Err(e) => {
            refuse(ctx, Some(kiosk), m, e);
            return None;
        }
    };
    let refused = |code, message: String| DecodeError {
        code,
        message,
        request_id: msg.request_id.clone(),
        reply_to: msg.reply_to.clone(),
    };
    let ev = match msg.to_event(kiosk, now_ms()) {
        Ok(ev) => ev,
        Err(message) => {
            refuse(ctx, Some(kiosk), m, refused(ErrorCode::InvalidField, message));
            return None;
        }
    };
    if !limit.allow(kiosk, Instant::now()) {
        ctx.metrics().incr("ingest.rate_limited");
        tracing::warn!(kiosk, event_id = %ev.event_id, "event over the kiosk's event rate limit");
        let message = "too many events from this kiosk; send it again later".to_string();
        refuse(ctx, Some(kiosk), m, refused(ErrorCode::RateLimited, message));
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
    Some(WriterMsg::Event { ev, reply })
}
