//! The durable outbox: messages the daemon must publish even if the broker is away or the
//! process restarts. Push, peek the oldest, ack after the broker confirmed.

use super::{OutboxRow, Result, Store, StoreError};
use crate::sys::now_ms;
use rusqlite::params;

impl Store {
    /// Queues a message durably; returns its id (increasing, never reused).
    pub fn outbox_push(&self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Result<i64> {
        if qos > 2 {
            return Err(StoreError::Invalid(format!("qos {qos} (0, 1 or 2)")));
        }
        if topic.is_empty() {
            return Err(StoreError::Invalid("empty topic".into()));
        }
        self.conn
            .prepare_cached("INSERT INTO outbox (topic, payload, qos, retain, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![topic, payload, qos, retain, now_ms()])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Up to `limit` queued messages, oldest first. They stay queued until acknowledged.
    pub fn outbox_peek(&self, limit: usize) -> Result<Vec<OutboxRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut st = self
            .conn
            .prepare_cached("SELECT id, topic, payload, qos, retain, created_ms FROM outbox ORDER BY id LIMIT ?1")?;
        let rows = st
            .query_map([limit], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                    qos: r.get(3)?,
                    retain: r.get(4)?,
                    created_ms: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Removes a message once the broker has it. Acknowledging an unknown or already acknowledged
    /// id is not an error (acks may repeat after a reconnect).
    pub fn outbox_ack(&self, id: i64) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?.execute([id])?;
        Ok(())
    }

    /// Messages waiting.
    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self.conn.prepare_cached("SELECT count(*) FROM outbox")?.query_row([], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_peek_ack_and_ids_never_reused() {
        let s = Store::open_in_memory().unwrap();
        let a = s.outbox_push("t/a", b"one", 1, true).unwrap();
        let b = s.outbox_push("t/b", &[0, 255, 7], 0, false).unwrap();
        assert!(b > a);
        let rows = s.outbox_peek(10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id, rows[0].topic.as_str(), rows[0].payload.as_slice(), rows[0].qos, rows[0].retain),
            (a, "t/a", &b"one"[..], 1, true)
        );
        assert_eq!(rows[1].payload, vec![0, 255, 7]);
        assert_eq!(s.outbox_peek(1).unwrap().len(), 1);
        s.outbox_ack(b).unwrap();
        s.outbox_ack(b).unwrap();
        s.outbox_ack(a).unwrap();
        assert_eq!(s.outbox_len().unwrap(), 0);
        let c = s.outbox_push("t/c", b"", 2, false).unwrap();
        assert!(c > b, "AUTOINCREMENT: ids are not reused after acks");
        assert!(s.outbox_push("t", b"", 3, false).is_err());
        assert!(s.outbox_push("", b"", 1, false).is_err());
    }
}
