//! The node's client ([`Link`]) against mosquitto (skipped with a message when it is not
//! installed): the durable outbox across a broker restart. (Availability and v5 properties through
//! the embedded broker: `integration::mqtt::link`.)

use crate::harness::broker::Mosquitto;
use crate::harness::mqtt::{link_options, Observer};
use sgbd_edge::mqtt::{Link, Topics};
use sgbd_edge::store::Store;
use sgbd_edge::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

async fn wait_connected(l: &Link) {
    for _ in 0..200 {
        if l.is_connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("link did not connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_survives_broker_restart_nothing_lost() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let Some(mut mosq) = Mosquitto::start(dir.path()) else {
        return;
    };
    let port = mosq.port;
    let topics = Topics::new("sgbd", "s1", "n-ob");
    let topic = topics.fleet_events();
    // A fleet subscriber with a persistent session: mosquitto keeps its queue across the restart.
    let mut obs = Observer::connect(port, "fleet-ob", std::slice::from_ref(&topic), false, 3600).await;

    let db = dir.path().join("ob.db");
    let producer = Store::open(&db, 5000).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (link, _rx) = Link::start(
        link_options(port, topics.clone(), "n-ob"),
        vec![],
        "{}".into(),
        Some(Store::open(&db, 5000).unwrap()),
        metrics.clone(),
        16,
    )
    .unwrap();
    wait_connected(&link).await;
    for i in 0..5 {
        producer.outbox_push(&topic, format!("m{i}").as_bytes(), 1, false).unwrap();
    }
    link.kick_outbox();
    for i in 0..5 {
        assert_eq!(obs.next_on(&topic, T).await.expect("delivered while up").text(), format!("m{i}"));
    }

    // Broker away: queue more; they stay in the outbox.
    drop(obs);
    mosq.stop();
    for _ in 0..100 {
        if !link.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!link.is_connected());
    for i in 5..25 {
        producer.outbox_push(&topic, format!("m{i}").as_bytes(), 1, false).unwrap();
    }
    link.kick_outbox();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(producer.outbox_len().unwrap() >= 20, "rows were dropped while the broker was away");

    // Broker back: everything is delivered (at least once), and the outbox drains.
    mosq.resume();
    let mut obs = Observer::connect(port, "fleet-ob", std::slice::from_ref(&topic), false, 3600).await;
    let want: std::collections::BTreeSet<String> = (5..25).map(|i| format!("m{i}")).collect();
    let mut got = std::collections::BTreeSet::new();
    // At least once: earlier messages may come again; wait for all of the queued ones.
    while !want.is_subset(&got) {
        match obs.next_on(&topic, Duration::from_secs(10)).await {
            Some(m) => {
                got.insert(m.text());
            }
            None => break,
        }
    }
    assert!(want.is_subset(&got), "missing: {:?}", want.difference(&got).collect::<Vec<_>>());
    for _ in 0..100 {
        if producer.outbox_len().unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(producer.outbox_len().unwrap(), 0, "outbox not drained after PUBACKs");
    assert!(metrics.get("outbox.acked") >= 25);
    link.shutdown("stopped", T).await;
}
