//! Interactions (kiosk events and imported histories): idempotent ingest and the reads the
//! recommender needs.

use crate::sys::now_ms;
use super::{Event, EventKind, Result, Store, StoreError};
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
    for (name, v) in [("event_id", &ev.event_id), ("user", &ev.user), ("sku", &ev.sku)] {
        if v.trim().is_empty() {
            return Err(StoreError::Invalid(format!("event {:?}: empty {name}", ev.event_id)));
        }
    }
    Ok(())
}

/// Inserts one event inside the caller's transaction; `false` when the event id is already stored.
pub(super) fn insert_in(c: &Connection, ev: &Event, split: Option<u8>, received_ms: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT INTO interactions (event_id, user, sku, kind, ts_ms, kiosk, split, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (event_id) DO NOTHING",
        )?
        .execute(params![ev.event_id, ev.user, ev.sku, ev.kind.as_str(), ev.ts_ms, ev.kiosk, split, received_ms])?;
    Ok(n == 1)
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

    /// Items by weighted interaction count, best first (ties by sku). Weights: view 1, scan 2,
    /// cart 4, purchase 8 ([`EventKind::weight`]). `since_ms` keeps events with `ts_ms >= since_ms`.
    pub fn popularity(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<(String, f64)>> {
        let w = |k: EventKind| k.weight();
        let sql = format!(
            "SELECT sku, sum(CASE kind WHEN 'view' THEN {} WHEN 'scan' THEN {} WHEN 'cart' THEN {} ELSE {} END) AS score
             FROM interactions WHERE ts_ms >= ?1 GROUP BY sku ORDER BY score DESC, sku ASC LIMIT ?2",
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
        s.insert_events(&evs).unwrap();
        let p = s.popularity(None, 10).unwrap();
        assert_eq!(p, vec![("bought".into(), 8.0), ("viewed".into(), 7.0), ("carted".into(), 6.0)]);
        assert_eq!(s.popularity(None, 1).unwrap().len(), 1);
        let recent = s.popularity(Some(150), 10).unwrap();
        assert_eq!(recent, vec![("bought".into(), 8.0), ("carted".into(), 2.0)]);
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
