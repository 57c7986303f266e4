//! Structure-aware: a kiosk event through the router's checks (`decode` of the JSON payload, then
//! `EventMsg::to_event`, as `daemon::stages::router` does) and through the store's
//! (`Store::ingest` on an in-memory SQLite store). The two must agree:
//! - an event the router accepts is stored (as new, or held when its SKU is not catalogued), and a
//!   second copy is refused by the store only as a duplicate;
//! - an event the router refuses for a field rule is refused by the store too (so a caller that
//!   skipped the router could not store it), and nothing reaches the store.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sgbd_edge::mqtt::contract::{decode, EventMsg, SCHEMA_VERSION};
use sgbd_edge::store::{Event, EventKind, Ingested, NewItem, Store};

/// A fixed "now" so that a crash reproduces (2026-01-01T00:00:00Z).
const NOW: i64 = 1_767_225_600_000;

#[derive(Debug, Arbitrary)]
enum Kind {
    View,
    Scan,
    Cart,
    Purchase,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Ts {
    /// An offset from `NOW` in seconds (mostly plausible).
    Recent(i32),
    Raw(i64),
}

#[derive(Debug, Arbitrary)]
struct Input {
    event_id: String,
    user: String,
    sku: String,
    kind: Kind,
    ts: Ts,
    kiosk: String,
    /// Catalogue the event's SKU (as a `catalog-update` would) before the event arrives.
    catalogued: bool,
    /// A second event from the same kiosk with the same id but another user, sent after.
    reuse_with_user: Option<String>,
}

fuzz_target!(|inp: Input| {
    let kind = match &inp.kind {
        Kind::View => "view".to_string(),
        Kind::Scan => "scan".to_string(),
        Kind::Cart => "cart".to_string(),
        Kind::Purchase => "purchase".to_string(),
        Kind::Other(s) => s.clone(),
    };
    let ts = match inp.ts {
        Ts::Recent(s) => NOW.saturating_add(i64::from(s) * 1000),
        Ts::Raw(t) => t,
    };
    let msg = EventMsg {
        schema_version: SCHEMA_VERSION.into(),
        ts,
        event_id: inp.event_id.clone(),
        user: inp.user.clone(),
        sku: inp.sku.clone(),
        kind: kind.clone(),
        node_id: None,
        reply_to: None,
        request_id: None,
    };
    // The wire: what the kiosk sends, decoded as the router decodes it.
    let payload = serde_json::to_vec(&msg).expect("an EventMsg serialises");
    let decoded: EventMsg = match decode(&payload, usize::MAX) {
        Ok(m) => m,
        Err(e) => panic!("the router cannot decode a well-formed event: {:?} {}", e.code, e.message),
    };
    assert_eq!(decoded, msg, "JSON round trip changed the event");
    let routed = decoded.to_event(&inp.kiosk, NOW);

    let Ok(mut store) = Store::open_in_memory() else { return };
    if inp.catalogued {
        let item = NewItem {
            sku: inp.sku.clone(),
            title: "t".into(),
            description: String::new(),
            attributes: serde_json::Value::Null,
            image_path: None,
        };
        // A blank SKU cannot be catalogued; that is not the event path's business.
        let _ = store.upsert_item(&item);
    }
    let known = matches!(store.item_by_sku(&inp.sku), Ok(Some(_)));
    match routed {
        Ok(ev) => {
            let first = match store.ingest(std::slice::from_ref(&ev)) {
                Ok(v) => v,
                Err(e) => panic!("the router accepted {ev:?} but the store refused it: {e}"),
            };
            let want = if known { Ingested::New } else { Ingested::HeldUnknownItem };
            assert_eq!(first, vec![want], "first copy of {ev:?} (sku catalogued: {known})");
            let again = store.ingest(std::slice::from_ref(&ev)).expect("a resend is not an error");
            assert_eq!(again, vec![Ingested::Duplicate], "resend of {ev:?}");
            if let Some(u) = inp.reuse_with_user {
                let other = EventMsg { user: u, ..msg };
                if let Ok(ev2) = other.to_event(&inp.kiosk, NOW) {
                    let r = store.ingest(std::slice::from_ref(&ev2)).expect("a reused id is not an error");
                    let want = if ev2.user == ev.user { Ingested::Duplicate } else { Ingested::IdReused };
                    assert_eq!(r, vec![want], "same id {:?}, user {:?} then {:?}", ev.event_id, ev.user, ev2.user);
                }
            }
            let c = store.counts().expect("counts");
            assert_eq!(c.interactions + c.held_interactions, 1, "one event, one row: {c:?}");
        }
        Err(reason) => {
            // What a caller that skipped the router would hand the store. A refusal for a rule
            // only the contract has (unknown kind, implausible ts) says nothing about the store.
            let Ok(k) = kind.parse::<EventKind>() else { return };
            let ts_ok = sgbd_edge::mqtt::contract::check_ts(ts, NOW).is_ok();
            if !ts_ok {
                return;
            }
            let raw = Event {
                event_id: inp.event_id,
                user: inp.user,
                sku: inp.sku,
                kind: k,
                ts_ms: ts,
                kiosk: Some(inp.kiosk),
            };
            assert!(
                store.ingest(std::slice::from_ref(&raw)).is_err(),
                "the router refused {raw:?} ({reason}) but the store would store it"
            );
            let c = store.counts().expect("counts");
            assert_eq!(c.interactions + c.held_interactions, 0, "a refused event left rows: {c:?}");
        }
    }
});
