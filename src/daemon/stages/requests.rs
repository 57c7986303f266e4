//! The request stage: recommendation requests answered from memory.

use super::reply::{error_payload, node_id, props_of, refuse, reply_target, send_reply};
use crate::daemon::{Ctx, LiveSettings};
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{self, decode, ErrorCode, RecommendReply, RecommendRequest};
use crate::serve::{ReplyCache, RequestCtx};
use crate::sys::now_ms;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Requests: decode, expiry, duplicate cache, rank from memory, reply.
pub(crate) async fn request_loop(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<(String, InMsg)>) {
    let mut cache = ReplyCache::new(Duration::from_secs(ctx.live().reply_cache_s), 10_000);
    let mut cache_s = ctx.live().reply_cache_s;
    let mut limiter = {
        let cfg = ctx.cfg.read().map(|c| c.mqtt.clone()).unwrap_or_default();
        crate::mqtt::ratelimit::KioskRateLimiter::new(cfg.kiosk_rate_per_s, cfg.kiosk_burst, 10_000)
    };
    loop {
        ctx.health.beats.beat("requests");
        let (kiosk, m) = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(_) => continue,
        };
        let live = ctx.live();
        if live.reply_cache_s != cache_s {
            cache = ReplyCache::new(Duration::from_secs(live.reply_cache_s), 10_000);
            cache_s = live.reply_cache_s;
        }
        handle_request(&ctx, &live, &mut cache, &mut limiter, &kiosk, &m);
    }
    tracing::debug!("request stage stopped");
}

fn handle_request(
    ctx: &Ctx,
    live: &LiveSettings,
    cache: &mut ReplyCache,
    limiter: &mut crate::mqtt::ratelimit::KioskRateLimiter,
    kiosk: &str,
    m: &InMsg,
) {
    let metrics = ctx.metrics();
    let req: RecommendRequest = match decode(&m.payload, live.max_payload_bytes) {
        Ok(r) => r,
        Err(e) => return refuse(ctx, Some(kiosk), m, e),
    };
    // Never answer an expired request: MQTT 5 Message Expiry (remaining seconds as the broker
    // forwarded it, counted from when we received it) or the JSON deadline.
    if let Some(exp) = props_of(m).and_then(|p| p.message_expiry_interval) {
        if m.received.elapsed() >= Duration::from_secs(exp as u64) {
            metrics.incr("serve.expired");
            return;
        }
    }
    let now = now_ms();
    if req.deadline_ms().is_some_and(|d| now > d) {
        metrics.incr("serve.expired");
        tracing::debug!(kiosk, request_id = ?req.request_id, "expired request not answered");
        return;
    }
    let target = match reply_target(ctx, kiosk, m, req.reply_to.as_deref(), req.request_id.as_deref(), true) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(t) => {
            metrics.incr("mqtt.forbidden_reply_topic");
            let p = error_payload(
                ctx,
                t.request_id.clone(),
                ErrorCode::ForbiddenReplyTopic,
                "reply topic outside the kiosk's topics".into(),
            );
            send_reply(ctx, &t, p);
            return;
        }
    };
    if let Err(message) = req.check(now_ms()) {
        metrics.incr("mqtt.invalid_field");
        tracing::warn!(kiosk, error = %message, "request refused");
        let p = error_payload(ctx, target.request_id.clone(), ErrorCode::InvalidField, message);
        send_reply(ctx, &target, p);
        return;
    }
    if !limiter.allow(kiosk, Instant::now()) {
        metrics.incr("serve.rate_limited");
        tracing::warn!(kiosk, "request over the kiosk rate limit");
        let p = error_payload(
            ctx,
            target.request_id.clone(),
            ErrorCode::RateLimited,
            "too many requests from this kiosk; retry later".into(),
        );
        send_reply(ctx, &target, p);
        return;
    }
    let key = target
        .correlation
        .as_ref()
        .map(|c| format!("{kiosk}/c/{}", hex::encode(c)))
        .or_else(|| target.request_id.as_ref().map(|r| format!("{kiosk}/r/{r}")));
    let t_now = Instant::now();
    if let Some(hit) = key.as_ref().and_then(|k| cache.get(k, t_now)) {
        metrics.incr("serve.cache_hits");
        send_reply(ctx, &target, hit);
        return;
    }
    let k = req.k.unwrap_or(live.default_k).clamp(1, live.max_k);
    let rctx = RequestCtx { kiosk: Some(kiosk.to_string()), exclude: req.exclude.clone(), now_ms: now };
    let ranker = ctx.ranker.get();
    let rec = ranker.recommend(&req.user, k, &rctx);
    let reply = RecommendReply {
        schema_version: contract::SCHEMA_VERSION.into(),
        ts: now_ms(),
        node_id: node_id(ctx),
        request_id: target.request_id.clone(),
        user: req.user,
        model_version: rec.model_version,
        generated_at: rec.generated_at,
        fallback: rec.fallback,
        items: rec.items,
    };
    let payload = Bytes::from(serde_json::to_vec(&reply).unwrap_or_default());
    if let Some(k) = key {
        cache.insert(k, payload.clone(), t_now);
    }
    if send_reply(ctx, &target, payload) {
        metrics.incr("serve.requests");
        metrics.observe_ms("serve.request_ms", m.received.elapsed().as_secs_f64() * 1e3);
    }
}
