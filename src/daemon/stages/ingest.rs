//! The ingest stage, the store's single writer: batches events into one transaction, acknowledges
//! after commit, feeds the rankers, pushes fresh suggestions, forwards to the fleet through the
//! outbox; applies catalogue updates.

use super::reply::{error_payload, node_id, send_reply, ReplyTarget};
use crate::daemon::{Ctx, LiveSettings};
use crate::mqtt::contract::{self, AckCode, ErrorCode, EventAck, FleetEvent, FleetEvents};
use crate::serve::{Ranker, RequestCtx};
use crate::store::space::{is_disk_full, SpaceGuard};
use crate::store::{Event, Ingested, NewItem, Store};
use crate::sys::now_ms;
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
    /// A `catalog-update`; `done` says where its command result goes.
    Catalog {
        items: Vec<NewItem>,
        done: Option<super::commands::CatalogDone>,
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
    let space = ctx.cfg.read().map(|c| SpaceGuard::from_config(&c)).ok();
    let mut reserve_checked = Instant::now();
    loop {
        ctx.health.beats.beat("ingest");
        if let Some(g) = &space {
            if reserve_checked.elapsed() >= Duration::from_secs(10) {
                reserve_checked = Instant::now();
                g.refill_reserve();
            }
        }
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
                        replies.push((events.len(), r));
                    }
                    events.push(ev);
                }
                WriterMsg::Catalog { items, done } => apply_catalog(&ctx, &store, items, done),
            }
        }
        if !events.is_empty() {
            commit_events(&ctx, &mut store, space.as_ref(), events, replies);
        }
    }
    tracing::debug!("ingest stage stopped");
}

/// Stores a batch, then tells the rest of the node about the events that are new: rankers,
/// fleet forward, pushes. A duplicate (the kiosk sent it before) is acknowledged again and
/// nothing else; an event for an unknown SKU is held apart and acknowledged with a code.
fn commit_events(
    ctx: &Ctx,
    store: &mut Store,
    space: Option<&SpaceGuard>,
    events: Vec<Event>,
    replies: Vec<(usize, ReplyTarget)>,
) {
    let metrics = ctx.metrics();
    let t0 = Instant::now();
    let outcomes = if space.is_some_and(|g| !g.has_room()) {
        // Below `store.min_free_bytes`: refuse before SQLite grows its files; serving goes on.
        metrics.add("ingest.disk_full", events.len() as u64);
        if log_disk_full_now() {
            tracing::error!(n = events.len(), free = ?space.and_then(|g| g.free()), "event batch not stored: the data directory's disk is full (events are refused until space frees; counter ingest.disk_full)");
        }
        vec![Err(DISK_FULL.to_string()); events.len()]
    } else {
        ingest(store, space, &events)
    };
    metrics.observe_ms("ingest.commit_ms", t0.elapsed().as_secs_f64() * 1e3);
    metrics.set("ingest.last_batch", events.len() as u64);
    let mut new = Vec::new();
    for (ev, o) in events.iter().zip(&outcomes) {
        match o {
            Ok(Ingested::New) => new.push(ev.clone()),
            Ok(Ingested::Duplicate) => metrics.incr("ingest.duplicates"),
            Ok(Ingested::IdReused) => {
                metrics.incr("ingest.id_reused");
                tracing::warn!(kiosk = ?ev.kiosk, event_id = %ev.event_id, "event id reused with other content; first copy kept");
            }
            Ok(Ingested::HeldUnknownItem) => {
                metrics.incr("ingest.unknown_item");
                tracing::info!(kiosk = ?ev.kiosk, sku = %ev.sku, "event for a SKU not in the catalogue held apart");
            }
            Err(_) => metrics.incr("ingest.errors"),
        }
    }
    metrics.add("ingest.events", new.len() as u64);
    if !new.is_empty() {
        // The popularity ranker always learns exclusions (it is the fallback); a swapped-in model
        // gets the events too.
        ctx.popularity.observe(&new);
        let current = ctx.ranker.get();
        if current.model_version() != crate::serve::POPULARITY_VERSION {
            current.observe(&new);
        }
        ctx.dirty.store(true, Ordering::Relaxed);
        let live = ctx.live();
        if live.forward_events {
            forward(ctx, store, &new);
        }
        push_suggestions(ctx, &live, &new);
    }
    for (k, target) in replies {
        let (Some(ev), Some(o)) = (events.get(k), outcomes.get(k)) else { continue };
        let ack = |duplicate: bool, code: Option<AckCode>| {
            let a = EventAck {
                schema_version: contract::SCHEMA_VERSION.into(),
                ts: now_ms(),
                node_id: node_id(ctx),
                request_id: target.request_id.clone(),
                event_id: ev.event_id.clone(),
                stored: true,
                duplicate,
                code,
            };
            Bytes::from(serde_json::to_vec(&a).unwrap_or_default())
        };
        let payload = match o {
            Ok(Ingested::New) => ack(false, None),
            Ok(Ingested::Duplicate) => ack(true, None),
            Ok(Ingested::IdReused) => ack(true, Some(AckCode::EventIdReused)),
            Ok(Ingested::HeldUnknownItem) => ack(false, Some(AckCode::UnknownItem)),
            Err(e) => error_payload(ctx, target.request_id.clone(), ErrorCode::Internal, e.clone()),
        };
        send_reply(ctx, &target, payload);
    }
}

/// [`Store::ingest`] over the batch; when the batch as a whole fails, each event is tried on its
/// own, so one event that cannot be stored does not take the others with it. `Err` carries the
/// message for the kiosk.
fn ingest(store: &mut Store, space: Option<&SpaceGuard>, events: &[Event]) -> Vec<Result<Ingested, String>> {
    match store.ingest(events) {
        Ok(o) => o.into_iter().map(Ok).collect(),
        Err(e) if is_disk_full(&e) => {
            // Give SQLite room to roll back and shrink its WAL; the guard refuses the next batches.
            tracing::error!(error = %e, n = events.len(), "event batch not stored: disk full");
            if space.is_some_and(|g| g.release_reserve()) {
                if let Err(e) = store.checkpoint() {
                    tracing::warn!(error = %e, "WAL checkpoint after a full disk failed");
                }
            }
            vec![Err(DISK_FULL.to_string()); events.len()]
        }
        Err(e) if events.len() == 1 => {
            tracing::error!(error = %e, event_id = %events[0].event_id, "event not stored");
            vec![Err(not_stored(&e))]
        }
        Err(e) => {
            tracing::warn!(error = %e, n = events.len(), "event batch not stored; storing one at a time");
            events
                .iter()
                .map(|ev| match store.ingest(std::slice::from_ref(ev)) {
                    Ok(mut o) => o.pop().ok_or_else(|| "event not stored; send it again".to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, event_id = %ev.event_id, "event not stored");
                        Err(not_stored(&e))
                    }
                })
                .collect()
        }
    }
}

/// At most one "disk full" log line every 30 s: kiosks resend while the disk stays full.
fn log_disk_full_now() -> bool {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = now_ms();
    let last = LAST.load(Ordering::Relaxed);
    now - last >= 30_000 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// What a kiosk is told when the disk is full.
const DISK_FULL: &str = "event not stored: the node's disk is full; send it again later";

/// What a kiosk is told when its event could not be stored.
fn not_stored(e: &crate::store::StoreError) -> String {
    match e {
        crate::store::StoreError::Invalid(m) => format!("event refused: {m}"),
        _ => "event not stored (the node's store failed); send it again later".into(),
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
        let rctx = RequestCtx { kiosk: Some(kiosk.to_string()), exclude: vec![], now_ms: now };
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
        match ctx.link.publish(&ctx.topics.kiosk_push(kiosk), QoS::AtLeastOnce, false, payload, None) {
            Ok(()) => ctx.metrics().incr("serve.pushes"),
            Err(e) => tracing::debug!(error = %e, "push dropped"),
        }
    }
}

fn forward(ctx: &Ctx, store: &Store, events: &[Event]) {
    let (node, store_id) =
        ctx.cfg.read().map(|c| (c.node.node_id.clone(), c.node.store_id.clone())).unwrap_or_default();
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

fn apply_catalog(ctx: &Ctx, store: &Store, items: Vec<NewItem>, done: Option<super::commands::CatalogDone>) {
    let (mut created, mut updated, mut failed) = (0usize, 0usize, Vec::new());
    for it in &items {
        match store.upsert_item(it) {
            Ok((_, true)) => created += 1,
            Ok((_, false)) => updated += 1,
            Err(e) => {
                tracing::warn!(sku = %it.sku, error = %e, "catalogue item refused");
                failed.push(format!("{}: {e}", it.sku));
            }
        }
    }
    tracing::info!(created, updated, failed = failed.len(), "catalogue update applied");
    ctx.metrics().add("catalog.upserts", (created + updated) as u64);
    ctx.dirty.store(true, Ordering::Relaxed);
    if let Some(d) = done {
        let mut msg = format!("{created} created, {updated} updated");
        let status = if failed.is_empty() {
            contract::CommandStatus::Done
        } else {
            let shown: Vec<&str> = failed.iter().take(5).map(String::as_str).collect();
            msg.push_str(&format!(
                ", {} refused ({}{})",
                failed.len(),
                shown.join("; "),
                if failed.len() > 5 { "; ..." } else { "" }
            ));
            contract::CommandStatus::Failed
        };
        super::commands::publish_result(ctx, "catalog-update", d.correlation, d.request_id, status, msg);
    }
}
