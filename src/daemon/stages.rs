//! The daemon's stages (see the module docs of [`crate::daemon`]).

use super::health::{self, StageState, StatusFile};
use super::{Ctx, LiveSettings};
use crate::config::Config;
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{
    self, decode, now_ms, Command, DecodeError, ErrorBody, ErrorCode, ErrorReply, EventAck, EventMsg, FleetEvent,
    FleetEvents, Inbound, RecommendReply, RecommendRequest, Stats,
};
use crate::serve::{Ranker, ReplyCache, RequestCtx};
use crate::store::{Event, NewItem, Store};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A stage that has not beaten for this long is stuck (they beat at least once a second).
const STAGE_STALL: Duration = Duration::from_secs(30);

/// Largest batch committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Where and how to answer one message.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTarget {
    pub topic: String,
    pub correlation: Option<Bytes>,
    pub request_id: Option<String>,
}

/// Work for the ingest thread (the store's single writer).
pub(crate) enum WriterMsg {
    Event {
        ev: Event,
        reply: Option<ReplyTarget>,
    },
    Catalog {
        items: Vec<NewItem>,
        reply: Option<ReplyTarget>,
    },
}

fn props_of(m: &InMsg) -> Option<&PublishProperties> {
    m.properties.as_ref()
}

/// The reply target a message names: MQTT 5 Response Topic, else JSON `reply_to`, else the kiosk's
/// default reply topic when `default` is set. `Err` carries the default target when the named topic
/// is not the kiosk's own.
fn reply_target(
    ctx: &Ctx,
    kiosk: &str,
    m: &InMsg,
    reply_to: Option<&str>,
    request_id: Option<&str>,
    default: bool,
) -> Result<Option<ReplyTarget>, ReplyTarget> {
    let props = props_of(m);
    let correlation = props.and_then(|p| p.correlation_data.clone());
    let named = props
        .and_then(|p| p.response_topic.clone())
        .or_else(|| reply_to.map(str::to_string));
    let fallback = ReplyTarget {
        topic: ctx.topics.kiosk_reply(kiosk),
        correlation: correlation.clone(),
        request_id: request_id.map(str::to_string),
    };
    match named {
        Some(t) if ctx.topics.reply_topic_allowed(kiosk, &t) => Ok(Some(ReplyTarget {
            topic: t,
            correlation,
            request_id: request_id.map(str::to_string),
        })),
        Some(_) => Err(fallback),
        None if default || request_id.is_some() => Ok(Some(fallback)),
        None => Ok(None),
    }
}

fn send_reply(ctx: &Ctx, target: &ReplyTarget, payload: Bytes) -> bool {
    let props = target.correlation.as_ref().map(|c| PublishProperties {
        correlation_data: Some(c.clone()),
        ..Default::default()
    });
    match ctx.link.publish(&target.topic, QoS::AtLeastOnce, false, payload, props) {
        Ok(()) => true,
        Err(e) => {
            ctx.metrics().incr("mqtt.reply_dropped");
            tracing::warn!(topic = %target.topic, error = %e, "reply dropped");
            false
        }
    }
}

fn error_payload(ctx: &Ctx, request_id: Option<String>, code: ErrorCode, message: String) -> Bytes {
    let e = ErrorReply {
        schema_version: contract::SCHEMA_VERSION.into(),
        ts: now_ms(),
        node_id: ctx.topics.base.rsplit('/').next().unwrap_or_default().to_string(),
        request_id,
        error: ErrorBody { code, message },
    };
    Bytes::from(serde_json::to_vec(&e).unwrap_or_default())
}

fn node_id(ctx: &Ctx) -> String {
    ctx.cfg.read().map(|c| c.node.node_id.clone()).unwrap_or_default()
}

/// Counts, logs and (when a reply topic exists) answers a payload that could not be decoded.
fn refuse(ctx: &Ctx, kiosk: Option<&str>, m: &InMsg, e: DecodeError) {
    let counter = match e.code {
        ErrorCode::TooLarge => "mqtt.oversized",
        ErrorCode::UnsupportedSchema => "mqtt.unknown_schema",
        _ => "mqtt.malformed",
    };
    ctx.metrics().incr(counter);
    tracing::warn!(topic = %m.topic, code = ?e.code, error = %e.message, "payload refused");
    let Some(kiosk) = kiosk else { return };
    // Answer where the sender said, or by MQTT 5 response topic; a broken 3.1.1 payload without a
    // readable reply_to gets its error on the kiosk's default reply topic.
    let target = match reply_target(ctx, kiosk, m, e.reply_to.as_deref(), e.request_id.as_deref(), true) {
        Ok(Some(t)) | Err(t) => t,
        Ok(None) => return,
    };
    let payload = error_payload(ctx, target.request_id.clone(), e.code, e.message);
    send_reply(ctx, &target, payload);
}

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
    let rctx = RequestCtx {
        kiosk: Some(kiosk.to_string()),
        exclude: req.exclude.clone(),
        now_ms: now,
    };
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

/// The ingest thread: batches events into one transaction, acks after commit, feeds the ranker,
/// forwards to the fleet through the outbox; applies catalogue updates.
pub(crate) fn ingest_loop(
    ctx: Arc<Ctx>,
    mut store: Store,
    mut rx: mpsc::Receiver<WriterMsg>,
    rt: tokio::runtime::Handle,
) {
    loop {
        ctx.health.beats.beat("ingest");
        let first = rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), rx.recv()).await });
        let first = match first {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => continue,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut events = Vec::new();
        let mut replies = Vec::new();
        for m in batch {
            match m {
                WriterMsg::Event { ev, reply } => {
                    if let Some(r) = reply {
                        replies.push((ev.event_id.clone(), r));
                    }
                    events.push(ev);
                }
                WriterMsg::Catalog { items, reply } => apply_catalog(&ctx, &store, items, reply),
            }
        }
        if !events.is_empty() {
            commit_events(&ctx, &mut store, events, replies);
        }
    }
    tracing::debug!("ingest stage stopped");
}

fn commit_events(ctx: &Ctx, store: &mut Store, events: Vec<Event>, replies: Vec<(String, ReplyTarget)>) {
    let metrics = ctx.metrics();
    let t0 = Instant::now();
    let stored = match store.insert_events(&events) {
        Ok(new) => {
            metrics.add("ingest.events", new as u64);
            metrics.add("ingest.duplicates", (events.len() - new) as u64);
            true
        }
        Err(e) => {
            metrics.incr("ingest.errors");
            tracing::error!(error = %e, n = events.len(), "event batch not stored");
            false
        }
    };
    metrics.observe_ms("ingest.commit_ms", t0.elapsed().as_secs_f64() * 1e3);
    metrics.set("ingest.last_batch", events.len() as u64);
    if stored {
        // The popularity ranker always learns exclusions (it is the fallback); a swapped-in model
        // gets the events too.
        ctx.popularity.observe(&events);
        let current = ctx.ranker.get();
        if current.model_version() != crate::serve::POPULARITY_VERSION {
            current.observe(&events);
        }
        ctx.dirty.store(true, Ordering::Relaxed);
        let live = ctx.live();
        if live.forward_events {
            forward(ctx, store, &events);
        }
        push_suggestions(ctx, &live, &events);
    }
    for (event_id, target) in replies {
        let payload = if stored {
            let ack = EventAck {
                schema_version: contract::SCHEMA_VERSION.into(),
                ts: now_ms(),
                node_id: node_id(ctx),
                request_id: target.request_id.clone(),
                event_id,
                stored: true,
            };
            Bytes::from(serde_json::to_vec(&ack).unwrap_or_default())
        } else {
            error_payload(
                ctx,
                target.request_id.clone(),
                ErrorCode::Internal,
                "event not stored; send it again".into(),
            )
        };
        send_reply(ctx, &target, payload);
    }
}

/// After a `serve.push_kinds` interaction at a kiosk, push fresh suggestions for that shopper to
/// the kiosk (`kiosk/<id>/push`, QoS 1, not retained). One push per (kiosk, user) per batch.
fn push_suggestions(ctx: &Ctx, live: &LiveSettings, events: &[Event]) {
    if live.push_kinds.is_empty() {
        return;
    }
    let mut done = std::collections::HashSet::new();
    for e in events.iter().filter(|e| live.push_kinds.contains(&e.kind)) {
        let Some(kiosk) = e.kiosk.as_deref() else { continue };
        if !done.insert((kiosk, e.user.as_str())) {
            continue;
        }
        let now = now_ms();
        let rctx = RequestCtx {
            kiosk: Some(kiosk.to_string()),
            exclude: vec![],
            now_ms: now,
        };
        let rec = ctx.ranker.get().recommend(&e.user, live.default_k, &rctx);
        let push = contract::Push {
            schema_version: contract::SCHEMA_VERSION.into(),
            ts: now,
            node_id: node_id(ctx),
            user: e.user.clone(),
            model_version: rec.model_version,
            fallback: rec.fallback,
            items: rec.items,
        };
        let payload = Bytes::from(serde_json::to_vec(&push).unwrap_or_default());
        match ctx
            .link
            .publish(&ctx.topics.kiosk_push(kiosk), QoS::AtLeastOnce, false, payload, None)
        {
            Ok(()) => ctx.metrics().incr("serve.pushes"),
            Err(e) => tracing::debug!(error = %e, "push dropped"),
        }
    }
}

fn forward(ctx: &Ctx, store: &Store, events: &[Event]) {
    let (node, store_id) = ctx
        .cfg
        .read()
        .map(|c| (c.node.node_id.clone(), c.node.store_id.clone()))
        .unwrap_or_default();
    let msg = FleetEvents {
        schema_version: contract::SCHEMA_VERSION.into(),
        ts: now_ms(),
        node_id: node,
        store_id,
        events: events
            .iter()
            .map(|e| FleetEvent {
                event_id: e.event_id.clone(),
                user: e.user.clone(),
                sku: e.sku.clone(),
                kind: e.kind.as_str().into(),
                ts: e.ts_ms,
                kiosk: e.kiosk.clone(),
            })
            .collect(),
    };
    let payload = serde_json::to_vec(&msg).unwrap_or_default();
    match store.outbox_push(&ctx.topics.fleet_events(), &payload, 1, false) {
        Ok(_) => ctx.link.kick_outbox(),
        Err(e) => tracing::error!(error = %e, "fleet forward not queued"),
    }
}

fn apply_catalog(ctx: &Ctx, store: &Store, items: Vec<NewItem>, reply: Option<ReplyTarget>) {
    let (mut created, mut updated, mut failed) = (0usize, 0usize, 0usize);
    for it in &items {
        match store.upsert_item(it) {
            Ok((_, true)) => created += 1,
            Ok((_, false)) => updated += 1,
            Err(e) => {
                failed += 1;
                tracing::warn!(sku = %it.sku, error = %e, "catalogue item refused");
            }
        }
    }
    tracing::info!(created, updated, failed, "catalogue update applied");
    ctx.metrics().add("catalog.upserts", (created + updated) as u64);
    ctx.dirty.store(true, Ordering::Relaxed);
    if let Some(t) = reply {
        let v = serde_json::json!({
            "schema_version": contract::SCHEMA_VERSION, "ts": now_ms(), "node_id": node_id(ctx),
            "request_id": t.request_id, "created": created, "updated": updated, "failed": failed,
        });
        send_reply(ctx, &t, Bytes::from(v.to_string()));
    }
}

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
            ctx.metrics()
                .observe_ms("serve.refresh_ms", t0.elapsed().as_secs_f64() * 1e3);
        }
    }
}

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
            tokio::task::spawn_blocking(move || crate::online::fleet_pin(&cfg, &m.payload, &metrics));
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
                let birth = super::birth(&cfg, &ctx.ranker.get().model_version());
                ctx.link
                    .set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
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
    let birth = super::birth(&new, &ctx.ranker.get().model_version());
    ctx.link
        .set_birth(Bytes::from(serde_json::to_vec(&birth).unwrap_or_default()));
}

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
        disk_free_bytes: health::disk_free(&data_dir),
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
        let db_rows = tokio::task::spawn_blocking(move || crate::store::open_config(&cfg).and_then(|s| s.counts()).ok())
            .await
            .ok()
            .flatten();
        let s = stats(&ctx, db_rows);
        let payload = serde_json::to_vec(&s).unwrap_or_default();
        if let Err(e) = ctx
            .link
            .publish(&ctx.topics.stats(), QoS::AtMostOnce, false, payload, None)
        {
            tracing::debug!(error = %e, "stats not published");
        }
    }
}

pub(crate) fn write_status_file(ctx: &Ctx, running: bool) {
    let cfg = ctx.cfg.read().map(|c| c.clone()).unwrap_or_default();
    let now = now_ms();
    let stall = STAGE_STALL;
    let stages = ctx
        .health
        .beats
        .ages(now)
        .into_iter()
        .map(|(k, a)| {
            (
                k.to_string(),
                StageState {
                    last_beat_ms_ago: a,
                    ok: a <= stall.as_millis() as i64,
                },
            )
        })
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
    let tick = notifier
        .watchdog_every
        .map(|w| w.min(Duration::from_secs(2)))
        .unwrap_or(Duration::from_secs(2));
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
            let mut line = health::status_line(
                ctx.metrics(),
                ctx.link.is_connected(),
                &ctx.ranker.get().model_version(),
                &stuck,
            );
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
