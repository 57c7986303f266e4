//! MQTT payloads as the daemon decodes them: the first byte picks the topic kind, the rest is the
//! payload. Every decoder must return an error for bad input, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sgbd_edge::mqtt::contract::{decode, Command, EventMsg, PinCommand, RecommendRequest, Topics};

/// The daemon's limit for kiosk payloads (`mqtt.max_payload_bytes` default order of magnitude).
const MAX: usize = 64 << 10;
/// A fixed "now" so that a crash reproduces (2026-01-01T00:00:00Z).
const NOW: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else { return };
    let topics = Topics::new("sgbd", "s1", "edge-1");
    match sel % 5 {
        // kiosk/<id>/events: decode, then the router's checks.
        0 => {
            if let Ok(m) = decode::<EventMsg>(payload, MAX) {
                if let Some(r) = m.reply_to.as_deref() {
                    let _ = topics.reply_topic_allowed("k1", r);
                }
                if let Ok(ev) = m.to_event("k1", NOW) {
                    assert!(ev.check().is_ok(), "to_event accepted an event the store refuses: {ev:?}");
                }
            }
        }
        // kiosk/<id>/recommend
        1 => {
            if let Ok(r) = decode::<RecommendRequest>(payload, MAX) {
                let _ = r.check(NOW);
                let _ = r.deadline_ms();
                if let Some(t) = r.reply_to.as_deref() {
                    let _ = topics.reply_topic_allowed("k1", t);
                }
            }
        }
        // cmd/<name> (rebirth, config-reload, catalog-update) and the fleet's.
        2 => {
            let _ = decode::<Command>(payload, 4 << 20);
        }
        // cmd/model-pin
        3 => {
            let _ = decode::<PinCommand>(payload, 64 << 10);
        }
        // Topic classification and reply-topic confinement on arbitrary topic strings.
        _ => {
            if let Ok(s) = std::str::from_utf8(payload) {
                let _ = topics.classify(s);
                let (kiosk, topic) = s.split_once('\n').unwrap_or(("k1", s));
                let _ = topics.reply_topic_allowed(kiosk, topic);
            }
        }
    }
});
