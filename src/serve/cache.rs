//! Remembers replies for a short time so that a QoS 1 redelivery of the same request (same
//! correlation data / `request_id` from the same kiosk) gets the same answer, computed once.

use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Bounded, time-limited reply cache.
pub struct ReplyCache {
    ttl: Duration,
    cap: usize,
    map: HashMap<String, (Instant, Bytes)>,
}

impl ReplyCache {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self { ttl, cap: cap.max(1), map: HashMap::new() }
    }

    /// The cached reply for `key`, if still fresh.
    pub fn get(&self, key: &str, now: Instant) -> Option<Bytes> {
        self.map.get(key).filter(|(t, _)| now.duration_since(*t) < self.ttl).map(|(_, b)| b.clone())
    }

    pub fn insert(&mut self, key: String, reply: Bytes, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        if self.map.len() >= self.cap {
            let ttl = self.ttl;
            self.map.retain(|_, (t, _)| now.duration_since(*t) < ttl);
            if self.map.len() >= self.cap {
                // Still full of fresh entries: drop the oldest half rather than grow.
                let mut ages: Vec<Instant> = self.map.values().map(|(t, _)| *t).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                self.map.retain(|_, (t, _)| *t > cut);
            }
        }
        self.map.insert(key, (now, reply));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_entries_hit_and_expired_miss() {
        let mut c = ReplyCache::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        c.insert("k1/r1".into(), Bytes::from_static(b"a"), t0);
        assert_eq!(c.get("k1/r1", t0 + Duration::from_secs(5)).as_deref(), Some(&b"a"[..]));
        assert_eq!(c.get("k1/r1", t0 + Duration::from_secs(11)), None);
        assert_eq!(c.get("k2/r1", t0), None);
    }

    #[test]
    fn bounded() {
        let mut c = ReplyCache::new(Duration::from_secs(100), 10);
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert(format!("k{i}"), Bytes::from_static(b"x"), t0 + Duration::from_millis(i));
        }
        assert!(c.len() <= 10, "{}", c.len());
        assert!(c.get("k999", t0 + Duration::from_secs(1)).is_some());
    }
}
