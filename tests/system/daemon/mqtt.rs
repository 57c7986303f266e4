//! The daemon binary with its embedded broker, driven over MQTT on loopback.

use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use sgbd_edge::mqtt::kiosk::{parse_reply, Protocol};
use std::time::Duration;

const T: Duration = Duration::from_secs(3);

fn count_events(dir: &std::path::Path, event_id: &str) -> usize {
    let s = sgbd_edge::store::Store::open(&dir.join("var/sgbd.db"), 5000).unwrap();
    s.interactions().unwrap().iter().filter(|e| e.event_id == event_id).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_idempotent_replies_correlated_and_clean_stop() {
    // Stats every second, expiry windows under a second, the reply cache: timing on a quiet machine.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");
    seed_catalog(&cfg, &["SKU1", "SKU2"]);
    let mut d = Daemon::spawn(&cfg);
    let k5 = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let base = topics().base;
    let mut obs = Observer::connect(port, "obs1", &[format!("{base}/#")], true, 0).await;

    // Retained availability and birth are there for a late subscriber.
    let st = obs.next_on(&format!("{base}/status"), T).await.expect("retained status");
    assert_eq!(st.text(), "online");
    assert!(st.retain);
    let birth = obs.next_on(&format!("{base}/birth"), T).await.expect("retained birth").json();
    assert_eq!(birth["node_id"], "edge-t");
    assert_eq!(birth["schema_version"], sgbd_edge::mqtt::contract::SCHEMA_VERSION);
    assert!(birth["config_hash"].as_str().is_some_and(|h| !h.is_empty()));

    let mut pushes = Observer::connect(port, "obs-push", &[topics().kiosk_push("k1")], true, 0).await;
    // The same event twice: acknowledged twice (the second time as a duplicate), stored once,
    // forwarded to the fleet once, pushed once.
    for round in 0..2 {
        let ack = k5.event("ev-dup-1", "alice", "SKU1", "purchase", Some(T)).await.unwrap().unwrap();
        assert_eq!(ack.json["stored"], true, "{}", ack.json);
        assert_eq!(ack.json["event_id"], "ev-dup-1");
        assert_eq!(ack.json.get("duplicate").is_some_and(|d| d == true), round == 1, "{}", ack.json);
    }
    k5.event("ev-2", "bob", "SKU2", "view", Some(T)).await.unwrap().unwrap();
    let mut forwarded = Vec::new();
    while let Some(m) = obs.next_on(&format!("{base}/events"), Duration::from_millis(1500)).await {
        for e in m.json()["events"].as_array().unwrap() {
            forwarded.push(e["event_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(forwarded, ["ev-dup-1", "ev-2"], "fleet events forwarded once each");
    // A purchase pushes fresh suggestions to the kiosk, without what was just bought.
    let push = pushes.next_on(&topics().kiosk_push("k1"), T).await.expect("suggestions pushed after a purchase");
    assert!(!push.retain);
    let push = push.json();
    assert_eq!(push["user"], "alice");
    assert!(push["items"].as_array().unwrap().iter().all(|i| i["sku"] != "SKU1"), "{push}");
    assert!(
        pushes.next_on(&topics().kiosk_push("k1"), Duration::from_millis(500)).await.is_none(),
        "the resent purchase pushed again"
    );

    // MQTT 5 request: the reply carries our correlation data, is not retained, and (after the
    // incremental popularity update) excludes what alice bought.
    let id = k5.next_id();
    let body = serde_json::json!({"schema_version": "1.0", "ts": sgbd_edge::sys::now_ms(), "user": "alice", "k": 5});
    let r =
        k5.request_raw(&topics().kiosk_recommend("k1"), body.to_string().into_bytes(), &id, Some(10), T).await.unwrap();
    assert_eq!(r.correlation.as_deref(), Some(id.as_bytes()));
    let rep = parse_reply(&r).unwrap();
    assert!(rep.fallback);
    assert_eq!(rep.model_version, "popularity");
    assert!(rep.items.iter().all(|i| i.sku != "SKU1"), "{:?}", rep.items);
    let rep_b = parse_reply(&k5.recommend("bob", Some(5), T).await.unwrap()).unwrap();
    assert_eq!(rep_b.items.first().map(|i| i.sku.as_str()), Some("SKU1"), "{:?}", rep_b.items);

    // MQTT 3.1.1 kiosk on the second listener: request_id echoed, default reply topic works.
    let k4 = kiosk_when_ready(port + 1, "k2", Protocol::V311).await;
    let r4 = k4.recommend("carol", Some(3), T).await.unwrap();
    assert!(r4.json["request_id"].as_str().is_some());
    assert_eq!(r4.topic, topics().kiosk_reply("k2"));
    assert!(parse_reply(&r4).unwrap().items.len() <= 3);

    // A duplicate request (same correlation data) is answered from the cache: same generated_at.
    let id = k5.next_id();
    let body = serde_json::json!({"schema_version": "1.0", "ts": sgbd_edge::sys::now_ms(), "user": "dave"});
    let a = k5.request_raw(&topics().kiosk_recommend("k1"), body.to_string().into_bytes(), &id, None, T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = k5.request_raw(&topics().kiosk_recommend("k1"), body.to_string().into_bytes(), &id, None, T).await.unwrap();
    assert_eq!(a.json["generated_at"], b.json["generated_at"]);

    // Clean stop: SIGTERM -> exit 0 and retained `stopped`.
    d.signal(libc::SIGTERM);
    let status = d.wait(Duration::from_secs(15)).expect("daemon exits on SIGTERM");
    assert!(status.success(), "exit {status:?}\n{}", d.log_text());
    assert!(obs.wait_text(&format!("{}/status", base), "stopped", T).await, "no stopped status\n{}", d.log_text());
    assert_eq!(count_events(dir.path(), "ev-dup-1"), 1);
    let status_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("var/status.json")).unwrap()).unwrap();
    assert_eq!(status_file["running"], false);
    let counter = |k: &str| status_file["counters"][k].as_u64().unwrap_or(0);
    assert!(counter("ingest.events") >= 2, "{status_file}");
    assert!(counter("ingest.duplicates") >= 1, "{status_file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_error_replies_and_daemon_keeps_serving() {
    // Stats every second, expiry windows under a second, the reply cache: timing on a quiet machine.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "max_payload_bytes = 1024");
    let _d = Daemon::spawn(&cfg);
    let k5 = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let k4 = kiosk_when_ready(port + 1, "k2", Protocol::V311).await;
    let rec5 = topics().kiosk_recommend("k1");

    // Not JSON, MQTT 5: error reply with our correlation data.
    let id = k5.next_id();
    let r = k5.request_raw(&rec5, b"{not json".to_vec(), &id, None, T).await.expect("error reply");
    assert_eq!(r.error_code(), Some("malformed"));
    assert_eq!(r.correlation.as_deref(), Some(id.as_bytes()));

    // Unknown schema major, 3.1.1: error reply with the request_id.
    let id = k4.next_id();
    let body = serde_json::json!({"schema_version": "2.0", "ts": 1, "user": "u", "request_id": id, "reply_to": k4.reply_topic()});
    let r = k4.request_raw(&topics().kiosk_recommend("k2"), body.to_string().into_bytes(), &id, None, T).await.unwrap();
    assert_eq!(r.error_code(), Some("unsupported_schema"));

    // Oversized (over max_payload_bytes): error reply.
    let id = k5.next_id();
    let big = serde_json::json!({"schema_version": "1.0", "ts": 1, "user": "x".repeat(4000)});
    let r = k5.request_raw(&rec5, big.to_string().into_bytes(), &id, None, T).await.unwrap();
    assert_eq!(r.error_code(), Some("too_large"));

    // Unknown event kind: error reply.
    let id = k5.next_id();
    let ev = serde_json::json!({"schema_version": "1.0", "ts": 1, "event_id": "e", "user": "u", "sku": "s", "kind": "teleport"});
    let r = k5.request_raw(&topics().kiosk_events("k1"), ev.to_string().into_bytes(), &id, None, T).await.unwrap();
    assert_eq!(r.error_code(), Some("invalid_field"));
    assert!(r.json["error"]["message"].as_str().unwrap_or("").starts_with("kind"), "{}", r.json);

    // Values the store would refuse are refused here, alone and with the field named: a blank
    // user, an unset kiosk clock, `k` of 0, a blank user in a request.
    let now = sgbd_edge::sys::now_ms();
    for (topic, body, field) in [
        (
            topics().kiosk_events("k1"),
            serde_json::json!({"schema_version": "1.1", "ts": now, "event_id": "e-blank", "user": "   ", "sku": "s", "kind": "view"}),
            "user",
        ),
        (
            topics().kiosk_events("k1"),
            serde_json::json!({"schema_version": "1.1", "ts": 5, "event_id": "e-1970", "user": "u", "sku": "s", "kind": "view"}),
            "ts",
        ),
        (
            topics().kiosk_events("k1"),
            serde_json::json!({"schema_version": "1.1", "ts": now, "event_id": "e\u{7}", "user": "u", "sku": "s", "kind": "view"}),
            "event_id",
        ),
        (rec5.clone(), serde_json::json!({"schema_version": "1.1", "ts": now, "user": "u", "k": 0}), "k"),
        (rec5.clone(), serde_json::json!({"schema_version": "1.1", "ts": now, "user": " "}), "user"),
    ] {
        let id = k5.next_id();
        let r = k5.request_raw(&topic, body.to_string().into_bytes(), &id, None, T).await.unwrap();
        assert_eq!(r.error_code(), Some("invalid_field"), "{body}: {}", r.json);
        assert!(r.json["error"]["message"].as_str().unwrap_or("").starts_with(field), "{body}: {}", r.json);
    }

    // A reply topic outside the kiosk's own topics is refused.
    let id = k4.next_id();
    let body = serde_json::json!({"schema_version": "1.0", "ts": 1, "user": "u", "request_id": id, "reply_to": topics().kiosk_reply("k9")});
    let r = k4.request_raw(&topics().kiosk_recommend("k2"), body.to_string().into_bytes(), &id, None, T).await.unwrap();
    assert_eq!(r.error_code(), Some("forbidden_reply_topic"));
    assert_eq!(r.topic, topics().kiosk_reply("k2"));

    // Expired requests are never answered (JSON expires_at, and ts + ttl_ms).
    let now = sgbd_edge::sys::now_ms();
    for body in [
        serde_json::json!({"schema_version": "1.0", "ts": now, "user": "u", "expires_at": now - 1}),
        serde_json::json!({"schema_version": "1.0", "ts": now - 10_000, "user": "u", "ttl_ms": 5000}),
    ] {
        let id = k4.next_id();
        let mut body = body;
        body["request_id"] = id.clone().into();
        body["reply_to"] = k4.reply_topic().into();
        let r = k4
            .request_raw(
                &topics().kiosk_recommend("k2"),
                body.to_string().into_bytes(),
                &id,
                None,
                Duration::from_millis(800),
            )
            .await;
        assert!(r.is_err(), "expired request answered: {:?}", r.map(|r| r.json));
    }

    // Still serving.
    let ok = parse_reply(&k5.recommend("u", Some(2), T).await.unwrap()).unwrap();
    assert_eq!(ok.model_version, "popularity");

    // The stats message counts what was refused.
    let mut obs = Observer::connect(port, "obs2", &[topics().stats()], true, 0).await;
    let stats = obs.next_on(&topics().stats(), Duration::from_secs(5)).await.expect("stats every second").json();
    assert!(stats["counters"]["mqtt.malformed"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert!(stats["counters"]["mqtt.invalid_field"].as_u64().unwrap_or(0) >= 6, "{stats}");
    assert!(stats["counters"]["mqtt.oversized"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert!(stats["counters"]["mqtt.unknown_schema"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert!(stats["counters"]["serve.expired"].as_u64().unwrap_or(0) >= 2, "{stats}");
    assert!(stats["db_rows"]["items"].is_u64(), "{stats}");
    assert!(stats["disk_free_bytes"].as_u64().unwrap_or(0) > 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_commands_catalog_update_and_rebirth() {
    // Stats every second, expiry windows under a second, the reply cache: timing on a quiet machine.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");
    let d = Daemon::spawn(&cfg);
    let k5 = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let mut obs = Observer::connect(port, "fleet", &[topics().birth()], true, 0).await;
    let first = obs.next_on(&topics().birth(), T).await.expect("retained birth").json();

    let cmd = serde_json::json!({"schema_version": "1.0", "ts": 1, "items": [
        {"sku": "NEW1", "title": "New shirt"}, {"sku": "NEW2", "title": "New scarf", "attributes": {"colour": "red"}}]});
    obs.client.publish(topics().fleet_cmd("catalog-update"), QoS::AtLeastOnce, false, cmd.to_string()).await.unwrap();
    // New items become recommendable (cold catalogue: reason new_in_catalogue) after the refresh.
    let mut seen = false;
    for _ in 0..50 {
        let rep = parse_reply(&k5.recommend("zed", Some(10), T).await.unwrap()).unwrap();
        if rep.items.iter().any(|i| i.sku == "NEW1") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "catalogue update not served");

    obs.client
        .publish_with_properties(
            topics().cmd("rebirth"),
            QoS::AtLeastOnce,
            false,
            Bytes::new(),
            PublishProperties::default(),
        )
        .await
        .unwrap();
    let again = obs.next_on(&topics().birth(), T).await.expect("birth republished on rebirth").json();
    assert!(again["ts"].as_i64().unwrap() > first["ts"].as_i64().unwrap(), "birth not regenerated");

    // config-reload: a bad file is refused (the running config stays), a good one applies live.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\n[serve]\ndefault_k = 0\n")).unwrap();
    obs.client.publish(topics().cmd("config-reload"), QoS::AtLeastOnce, false, Bytes::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(parse_reply(&k5.recommend("zed", None, T).await.unwrap()).unwrap().items.len() >= 2);
    std::fs::write(&cfg, format!("{good}\n[serve]\ndefault_k = 1\n")).unwrap();
    obs.client.publish(topics().cmd("config-reload"), QoS::AtLeastOnce, false, Bytes::new()).await.unwrap();
    let reloaded = obs.next_on(&topics().birth(), T).await.expect("birth after config-reload").json();
    assert_ne!(reloaded["config_hash"], first["config_hash"]);
    let rep = parse_reply(&k5.recommend("zed", None, T).await.unwrap()).unwrap();
    assert_eq!(rep.items.len(), 1, "default_k not applied live");
    assert!(d.log_text().contains("config-reload refused"), "{}", d.log_text());
}

/// Every fleet command gets a result on `<base>/cmd/<name>/result`, with its `request_id` echoed:
/// valid ones `done` (catalog-update `accepted` first), invalid ones `failed` with the reason; the
/// node's own results on its `cmd/#` filter are not taken for commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_commands_get_results() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");
    let d = Daemon::spawn(&cfg);
    let _k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let t = topics();
    let mut obs =
        Observer::connect(port, "fleet-results", &[format!("{}/cmd/+/result", t.base), t.stats()], true, 0).await;
    let client = obs.client.clone();
    let send = move |topic: String, body: String| {
        let c = client.clone();
        async move { c.publish(topic, QoS::AtLeastOnce, false, body).await.unwrap() }
    };
    let now = sgbd_edge::sys::now_ms();
    let result = |m: Option<Msg>, what: &str| -> serde_json::Value {
        let m = m.unwrap_or_else(|| panic!("no result for {what}\n{}", d.log_text()));
        assert!(!m.retain, "{what}: results are not retained");
        let v = m.json();
        assert_eq!(v["schema_version"], sgbd_edge::mqtt::contract::SCHEMA_VERSION, "{v}");
        assert_eq!(v["node_id"], "edge-t", "{v}");
        v
    };

    // Valid: rebirth on the node's topic.
    send(t.cmd("rebirth"), serde_json::json!({"schema_version": "1.2", "ts": now, "request_id": "r-ok"}).to_string())
        .await;
    let r = result(obs.next_on(&t.cmd_result("rebirth"), T).await, "rebirth");
    assert_eq!(
        (r["command"].as_str(), r["request_id"].as_str(), r["status"].as_str()),
        (Some("rebirth"), Some("r-ok"), Some("done")),
        "{r}"
    );

    // Invalid: a pin of a version the registry does not know.
    let pin =
        serde_json::json!({"schema_version": "1.2", "ts": now, "version": "no-such-version", "request_id": "r-bad"});
    send(t.cmd("model-pin"), pin.to_string()).await;
    let r = result(obs.next_on(&t.cmd_result("model-pin"), T).await, "model-pin");
    assert_eq!((r["request_id"].as_str(), r["status"].as_str()), (Some("r-bad"), Some("failed")), "{r}");
    assert!(r["message"].as_str().is_some_and(|m| m.contains("no-such-version")), "{r}");

    // Invalid: a payload that does not decode (request_id still read from it), and one that is not JSON.
    send(
        t.cmd("catalog-update"),
        serde_json::json!({"schema_version": "1.2", "ts": now, "request_id": "r-shape", "items": "x"}).to_string(),
    )
    .await;
    let r = result(obs.next_on(&t.cmd_result("catalog-update"), T).await, "malformed catalog-update");
    assert_eq!((r["request_id"].as_str(), r["status"].as_str()), (Some("r-shape"), Some("failed")), "{r}");
    send(t.cmd("config-reload"), "{not json".into()).await;
    let r = result(obs.next_on(&t.cmd_result("config-reload"), T).await, "config-reload");
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r.get("request_id").is_none(), "{r}");

    // Valid, on the fleet topic: catalog-update is accepted, then done once stored.
    let cat = serde_json::json!({"schema_version": "1.2", "ts": now, "request_id": "r-cat",
        "items": [{"sku": "NEW1", "title": "New shirt"}]});
    send(t.fleet_cmd("catalog-update"), cat.to_string()).await;
    let r = result(obs.next_on(&t.cmd_result("catalog-update"), T).await, "catalog-update");
    assert_eq!((r["request_id"].as_str(), r["status"].as_str()), (Some("r-cat"), Some("accepted")), "{r}");
    let r = result(obs.next_on(&t.cmd_result("catalog-update"), T).await, "catalog-update done");
    assert_eq!((r["request_id"].as_str(), r["status"].as_str()), (Some("r-cat"), Some("done")), "{r}");
    assert!(r["message"].as_str().is_some_and(|m| m.contains("1 created")), "{r}");

    // An unknown command fails, naming it; an empty payload has no request_id to echo.
    send(t.cmd("frobnicate"), String::new()).await;
    let r = result(obs.next_on(&t.cmd_result("frobnicate"), T).await, "frobnicate");
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["message"].as_str().is_some_and(|m| m.contains("frobnicate")), "{r}");

    // Six commands, no more: the results the node received back were not commands.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut last = None;
    while let Some(m) = obs.next_on(&t.stats(), Duration::from_millis(1500)).await {
        last = Some(m.json());
        if last.as_ref().is_some_and(|s| s["counters"]["fleet.commands"].as_u64() >= Some(6)) {
            break;
        }
    }
    let stats = last.expect("stats");
    assert_eq!(stats["counters"]["fleet.commands"], 6, "{stats}");
    assert_eq!(stats["counters"]["fleet.unknown_command"], 1, "{stats}");
    assert!(obs
        .next_on(&format!("{}/cmd/frobnicate/result/result", t.base), Duration::from_millis(100))
        .await
        .is_none());
}
