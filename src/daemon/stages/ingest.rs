//! The ingest stage, the store's single writer: batches events into one transaction, acknowledges
//! after commit, feeds the rankers, pushes fresh suggestions, forwards to the fleet through the
//! outbox; applies catalogue updates.

use crate::sys::now_ms;
use super::reply::{error_payload, node_id, send_reply, ReplyTarget};
use crate::daemon::{Ctx, LiveSettings};
use crate::mqtt::contract::{self, ErrorCode, EventAck, FleetEvent, FleetEvents};
use crate::serve::{Ranker, RequestCtx};
use crate::store::{Event, NewItem, Store};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Largest batch committed in one transaction.
const MAX_BATCH: usize = 1024;

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
