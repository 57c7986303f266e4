//! Request rate limit per kiosk: a token bucket per kiosk id (`mqtt.kiosk_rate_per_s` tokens a
//! second, up to `mqtt.kiosk_burst`). Memory is bounded: at most `max_kiosks` buckets are kept,
//! and when that is reached the buckets that have refilled completely (idle kiosks) are dropped.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by kiosk id.
#[derive(Debug)]
pub struct KioskRateLimiter {
    rate: f64,
    burst: f64,
    max_kiosks: usize,
    buckets: HashMap<String, Bucket>,
}

impl KioskRateLimiter {
    /// `rate_per_s` <= 0 disables the limit.
    pub fn new(rate_per_s: f64, burst: u32, max_kiosks: usize) -> Self {
        Self {
            rate: if rate_per_s.is_finite() { rate_per_s } else { 0.0 },
            burst: f64::from(burst.max(1)),
            max_kiosks: max_kiosks.max(1),
            buckets: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one token for `kiosk` at `now`; false when the kiosk is over its rate.
    pub fn allow(&mut self, kiosk: &str, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        if !self.buckets.contains_key(kiosk) && self.buckets.len() >= self.max_kiosks {
            self.evict_idle(now);
            if self.buckets.len() >= self.max_kiosks {
                // Every tracked kiosk is active: refuse new ones rather than grow without bound.
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(kiosk.to_string()).or_insert(Bucket { tokens: burst, last: now });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn evict_idle(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
    }

    /// Kiosks currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let mut l = KioskRateLimiter::new(10.0, 5, 100);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| l.allow("k1", t0)).count();
        assert_eq!(allowed, 5, "the burst only");
        // Another kiosk has its own bucket.
        assert!(l.allow("k2", t0));
        // 0.5 s later: 5 more tokens at 10/s.
        let t1 = t0 + Duration::from_millis(500);
        let allowed = (0..20).filter(|_| l.allow("k1", t1)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn disabled_allows_everything() {
        let mut l = KioskRateLimiter::new(0.0, 1, 1);
        let t = Instant::now();
        assert!((0..1000).all(|i| l.allow(&format!("k{i}"), t)));
        assert!(l.is_empty());
    }

    #[test]
    fn bounded_memory_evicts_idle_kiosks() {
        let mut l = KioskRateLimiter::new(100.0, 2, 3);
        let t0 = Instant::now();
        for k in ["a", "b", "c"] {
            assert!(l.allow(k, t0));
        }
        // All three are active (not refilled): a fourth kiosk is refused, memory stays at 3.
        assert!(!l.allow("d", t0));
        assert_eq!(l.len(), 3);
        // After they refill they are idle and get evicted to make room.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.allow("d", t1));
        assert!(l.len() <= 3);
    }
}
