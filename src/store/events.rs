//! Interactions (kiosk events and imported histories): idempotent ingest and the reads the
//! recommender needs.

use super::{Event, EventKind, Ingested, Result, Store, StoreError};
use crate::sys::now_ms;
use rusqlite::{params, Connection, Row};
use std::collections::HashSet;

const EVENT_COLS: &str = "event_id, user, sku, kind, ts_ms, kiosk";

fn event_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(3)?;
    Ok(Event {
        event_id: r.get(0)?,
        user: r.get(1)?,
        sku: r.get(2)?,
        // The CHECK constraint admits only the four names.
        kind: kind.parse().unwrap_or(EventKind::View),
        ts_ms: r.get(4)?,
        kiosk: r.get(5)?,
    })
}

pub(super) fn validate(ev: &Event) -> Result<()> {
    ev.check().map_err(|e| StoreError::Invalid(format!("event {:?}: {e}", ev.event_id)))
}

/// Inserts one event inside the caller's transaction; `false` when its sender already stored this
/// event id (idempotency is per sender: the kiosk, or `''` for imports).
pub(super) fn insert_in(c: &Connection, ev: &Event, split: Option<u8>, received_ms: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT INTO interactions (event_id, user, sku, kind, ts_ms, kiosk, split, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?
        .execute(params![ev.event_id, ev.user, ev.sku, ev.kind.as_str(), ev.ts_ms, ev.kiosk, split, received_ms])?;
    Ok(n == 1)
}

/// The stored copy of `ev`'s (sender, event id) in `table`, if any: (user, sku, kind).
fn stored_copy(c: &Connection, table: &str, ev: &Event) -> Result<Option<(String, String, String)>> {
    let sql = format!("SELECT user, sku, kind FROM {table} WHERE coalesce(kiosk, '') = ?1 AND event_id = ?2");
    let mut st = c.prepare_cached(&sql)?;
    let mut rows = st.query(params![ev.kiosk.as_deref().unwrap_or(""), ev.event_id])?;
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, r.get(1)?, r.get(2)?)),
        None => None,
    })
}

fn ingest_in(c: &Connection, ev: &Event, now: i64) -> Result<Ingested> {
    for table in ["interactions", "held_interactions"] {
        if let Some((user, sku, kind)) = stored_copy(c, table, ev)? {
            // A resend may carry a new `ts` (kiosks that stamp at send time): the same user, item
            // and kind is the same event; anything else is a reused id.
            let same = user == ev.user && sku == ev.sku && kind == ev.kind.as_str();
            return Ok(if same { Ingested::Duplicate } else { Ingested::IdReused });
        }
    }
    let known: bool =
        c.prepare_cached("SELECT EXISTS (SELECT 1 FROM items WHERE sku = ?1)")?.query_row([&ev.sku], |r| r.get(0))?;
    if known {
        insert_in(c, ev, None, now)?;
        return Ok(Ingested::New);
    }
    c.prepare_cached(
        "INSERT INTO held_interactions (event_id, user, sku, kind, ts_ms, kiosk, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![ev.event_id, ev.user, ev.sku, ev.kind.as_str(), ev.ts_ms, ev.kiosk, now])?;
    Ok(Ingested::HeldUnknownItem)
}

/// Moves the held kiosk events of `sku` into the interactions (inside the caller's transaction,
/// when the item has just been catalogued). Returns how many moved.
pub(super) fn release_held(c: &Connection, sku: &str) -> Result<usize> {
    let moved = c
        .prepare_cached(
            "INSERT INTO interactions (event_id, user, sku, kind, ts_ms, kiosk, split, received_ms)
             SELECT event_id, user, sku, kind, ts_ms, kiosk, NULL, received_ms FROM held_interactions
             WHERE sku = ?1 ORDER BY id ON CONFLICT DO NOTHING",
        )?
        .execute([sku])?;
    c.prepare_cached("DELETE FROM held_interactions WHERE sku = ?1")?.execute([sku])?;
    Ok(moved)
}

impl Store {
    /// Stores one event durably. `true` if new, `false` if its `event_id` was already stored (the
    /// stored copy is kept). Each call is one fsync: batch with [`Store::insert_events`].
    pub fn insert_event(&self, ev: &Event) -> Result<bool> {
        validate(ev)?;
        insert_in(&self.conn, ev, None, now_ms())
    }

    /// Stores a batch in one transaction (one fsync). Returns how many were new. The batch is
    /// checked first: an event with an empty id, user or sku refuses the whole batch.
    pub fn insert_events(&mut self, evs: &[Event]) -> Result<usize> {
        evs.iter().try_for_each(validate)?;
        let now = now_ms();
        self.write(|c| {
            let mut new = 0;
            for ev in evs {
                new += insert_in(c, ev, None, now)? as usize;
            }
            Ok(new)
        })
    }

    /// Stores a batch of kiosk events in one transaction (one fsync) and says what happened to
    /// each, in order: idempotent per sender (`kiosk`, `event_id`), and an event whose SKU is not
    /// in the catalogue is kept apart ([`Ingested::HeldUnknownItem`]) rather than stored as an
    /// interaction. Every event must pass [`Event::check`] (the daemon checks at the edge); one
    /// that does not refuses the batch, as [`Store::insert_events`] does.
    pub fn ingest(&mut self, evs: &[Event]) -> Result<Vec<Ingested>> {
        evs.iter().try_for_each(validate)?;
        let now = now_ms();
        self.write(|c| {
            let mut out = Vec::with_capacity(evs.len());
            for ev in evs {
                out.push(ingest_in(c, ev, now)?);
            }
            Ok(out)
        })
    }

    /// Kiosk events held because their SKU is not in the catalogue, in arrival order.
    pub fn held_interactions(&self) -> Result<Vec<Event>> {
        let sql = format!("SELECT {EVENT_COLS} FROM held_interactions ORDER BY id");
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], event_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Catalogue items by weighted interaction count, best first (ties by sku). Weights: view 1,
    /// scan 2, cart 4, purchase 8 ([`EventKind::weight`]). `since_ms` keeps events with
    /// `ts_ms >= since_ms`. Interactions with SKUs the catalogue does not hold do not count.
    pub fn popularity(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<(String, f64)>> {
        let w = |k: EventKind| k.weight();
        let sql = format!(
            "SELECT sku, sum(CASE kind WHEN 'view' THEN {} WHEN 'scan' THEN {} WHEN 'cart' THEN {} ELSE {} END) AS score
             FROM interactions WHERE ts_ms >= ?1 AND sku IN (SELECT sku FROM items)
             GROUP BY sku ORDER BY score DESC, sku ASC LIMIT ?2",
            w(EventKind::View),
            w(EventKind::Scan),
            w(EventKind::Cart),
            w(EventKind::Purchase)
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params![since_ms.unwrap_or(i64::MIN), limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The SKUs this user interacted with through any of `kinds` (an empty slice gives an empty set;
    /// pass [`EventKind::ALL`] for every kind).
    pub fn user_skus(&self, user: &str, kinds: &[EventKind]) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        let mut st = self.conn.prepare_cached("SELECT DISTINCT sku FROM interactions WHERE user = ?1 AND kind = ?2")?;
        let kinds: HashSet<EventKind> = kinds.iter().copied().collect();
        for k in kinds {
            for sku in st.query_map(params![user, k.as_str()], |r| r.get::<_, String>(0))? {
                out.insert(sku?);
            }
        }
        Ok(out)
    }

    /// Every interaction in time order (`ts_ms`, then arrival).
    pub fn interactions(&self) -> Result<Vec<Event>> {
        let sql = format!("SELECT {EVENT_COLS} FROM interactions ORDER BY ts_ms, id");
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], event_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every interaction with its MMRec split (`x_label`: 0 train, 1 valid, 2 test; `None` for live
    /// events), in time order. Lets the learning engine reproduce an imported data set's split.
    pub fn interactions_with_split(&self) -> Result<Vec<(Event, Option<u8>)>> {
        let sql = format!("SELECT {EVENT_COLS}, split FROM interactions ORDER BY ts_ms, id");
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map([], |r| Ok((event_row(r)?, r.get::<_, Option<i64>>(6)?.map(|s| s as u8))))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Interactions stored after arrival position `rowid` (0 = from the start), in arrival order,
    /// and the position to pass next time (unchanged when there is nothing new).
    pub fn interactions_since(&self, rowid: i64) -> Result<(Vec<Event>, i64)> {
        let sql = format!("SELECT {EVENT_COLS}, id FROM interactions WHERE id > ?1 ORDER BY id");
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut last = rowid;
        let mut out = Vec::new();
        for row in st.query_map([rowid], |r| Ok((event_row(r)?, r.get::<_, i64>(6)?)))? {
            let (ev, id) = row?;
            last = id;
            out.push(ev);
        }
        Ok((out, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ev(id: &str, user: &str, sku: &str, kind: EventKind, ts: i64) -> Event {
        Event { event_id: id.into(), user: user.into(), sku: sku.into(), kind, ts_ms: ts, kiosk: Some("k1".into()) }
    }

    #[test]
    fn duplicate_event_id_is_stored_once_and_first_copy_wins() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(s.insert_event(&ev("e1", "u", "a", EventKind::View, 5)).unwrap());
        assert!(!s.insert_event(&ev("e1", "u", "b", EventKind::Purchase, 6)).unwrap());
        let batch = vec![
            ev("e1", "u", "c", EventKind::Cart, 1),
            ev("e2", "u", "a", EventKind::Cart, 2),
            ev("e2", "u", "a", EventKind::Cart, 2),
        ];
        assert_eq!(s.insert_events(&batch).unwrap(), 1);
        let all = s.interactions().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], ev("e1", "u", "a", EventKind::View, 5));
        assert_eq!(all[0].event_id, "e2"); // time order
    }

    #[test]
    fn invalid_event_refuses_the_whole_batch() {
        let mut s = Store::open_in_memory().unwrap();
        let batch = vec![ev("e1", "u", "a", EventKind::View, 1), ev("e2", "", "a", EventKind::View, 1)];
        assert!(matches!(s.insert_events(&batch), Err(StoreError::Invalid(_))));
        assert_eq!(s.counts().unwrap().interactions, 0);
        assert!(s.insert_event(&ev(" ", "u", "a", EventKind::View, 1)).is_err());
    }

    #[test]
    fn popularity_weights_kinds_and_filters_by_time() {
        let mut s = Store::open_in_memory().unwrap();
        let mut evs = Vec::new();
        for i in 0..7 {
            evs.push(ev(&format!("v{i}"), "u", "viewed", EventKind::View, 100));
        }
        evs.push(ev("p1", "u", "bought", EventKind::Purchase, 200));
        evs.push(ev("c1", "u", "carted", EventKind::Cart, 50));
        evs.push(ev("s1", "u", "carted", EventKind::Scan, 300));
        evs.push(ev("x1", "u", "not-in-catalogue", EventKind::Purchase, 300));
        s.insert_events(&evs).unwrap();
        // Only catalogue items count.
        assert!(s.popularity(None, 10).unwrap().is_empty());
        for sku in ["viewed", "bought", "carted"] {
            s.upsert_item(&item(sku)).unwrap();
        }
        let p = s.popularity(None, 10).unwrap();
        assert_eq!(p, vec![("bought".into(), 8.0), ("viewed".into(), 7.0), ("carted".into(), 6.0)]);
        assert_eq!(s.popularity(None, 1).unwrap().len(), 1);
        let recent = s.popularity(Some(150), 10).unwrap();
        assert_eq!(recent, vec![("bought".into(), 8.0), ("carted".into(), 2.0)]);
    }

    fn item(sku: &str) -> crate::store::NewItem {
        crate::store::NewItem {
            sku: sku.into(),
            title: sku.into(),
            description: String::new(),
            attributes: serde_json::Value::Null,
            image_path: None,
        }
    }

    #[test]
    fn ingest_is_idempotent_per_kiosk_and_holds_unknown_skus_until_catalogued() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert_item(&item("a")).unwrap();
        let at = |id: &str, kiosk: &str, sku: &str| Event {
            kiosk: Some(kiosk.into()),
            ..ev(id, "u", sku, EventKind::View, 5)
        };
        let out =
            s.ingest(&[at("e1", "k1", "a"), at("e1", "k2", "a"), at("e1", "k1", "a"), at("e2", "k1", "new")]).unwrap();
        assert_eq!(out, vec![Ingested::New, Ingested::New, Ingested::Duplicate, Ingested::HeldUnknownItem]);
        // The same id from the same kiosk with other content: the first copy stays.
        let reused = Event { kind: EventKind::Purchase, ..at("e1", "k1", "a") };
        assert_eq!(s.ingest(&[reused, at("e2", "k1", "new")]).unwrap(), vec![Ingested::IdReused, Ingested::Duplicate]);
        assert_eq!(s.interactions().unwrap().len(), 2);
        assert_eq!(s.held_interactions().unwrap().len(), 1);
        assert!(s.user_skus("u", &[EventKind::Purchase]).unwrap().is_empty());
        // Cataloguing the item moves its held events into the interactions, once.
        s.upsert_item(&item("new")).unwrap();
        assert!(s.held_interactions().unwrap().is_empty());
        let all = s.interactions().unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().any(|e| e.sku == "new" && e.event_id == "e2"));
        assert_eq!(s.ingest(&[at("e2", "k1", "new")]).unwrap(), vec![Ingested::Duplicate]);
        assert_eq!(s.counts().unwrap().held_interactions, 0);
        // A blank field refuses the batch with the field named.
        let blank = at("e3", "k1", "  ");
        let err = s.ingest(&[blank]).unwrap_err().to_string();
        assert!(err.contains("sku"), "{err}");
    }

    #[test]
    fn user_skus_filters_by_kind() {
        let mut s = Store::open_in_memory().unwrap();
        s.insert_events(&[
            ev("1", "u1", "a", EventKind::Purchase, 1),
            ev("2", "u1", "b", EventKind::View, 2),
            ev("3", "u2", "c", EventKind::Purchase, 3),
        ])
        .unwrap();
        let bought = s.user_skus("u1", &[EventKind::Purchase]).unwrap();
        assert_eq!(bought, HashSet::from(["a".to_string()]));
        assert_eq!(s.user_skus("u1", &EventKind::ALL).unwrap().len(), 2);
        assert!(s.user_skus("u1", &[]).unwrap().is_empty());
        assert!(s.user_skus("nobody", &EventKind::ALL).unwrap().is_empty());
    }

    #[test]
    fn interactions_since_pages_in_arrival_order() {
        let mut s = Store::open_in_memory().unwrap();
        let (none, pos) = s.interactions_since(0).unwrap();
        assert!(none.is_empty());
        assert_eq!(pos, 0);
        s.insert_events(&[ev("a", "u", "x", EventKind::View, 30), ev("b", "u", "y", EventKind::View, 10)]).unwrap();
        let (first, pos) = s.interactions_since(0).unwrap();
        assert_eq!(first.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        s.insert_event(&ev("c", "u", "z", EventKind::View, 1)).unwrap();
        s.insert_event(&ev("a", "u", "z", EventKind::View, 1)).unwrap(); // duplicate: not new
        let (next, pos2) = s.interactions_since(pos).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].event_id, "c");
        assert_eq!(s.interactions_since(pos2).unwrap(), (vec![], pos2));
    }
}
