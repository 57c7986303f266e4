//! The node's client ([`Link`]) and the embedded broker at library level: availability (LWT on an
//! unclean death, `stopped` on a clean one) and v5 properties through rumqttd. (The durable outbox
//! across a broker restart: `system::mqtt::link`.)

use crate::harness::daemon::free_port_pair;
use crate::harness::mqtt::{link_options, Observer};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use sgbd_edge::mqtt::{Link, Topics};
use sgbd_edge::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_lwt_offline_on_unclean_death_and_stopped_on_clean_stop() {
    let _turn = crate::harness::shared();
    let port = free_port_pair();
    sgbd_edge::mqtt::broker::start_embedded("127.0.0.1", port, 65536).unwrap();
    let topics = Topics::new("sgbd", "s1", "n-lwt");
    let mut obs = Observer::connect(port, "obs-lwt", &[topics.status()], true, 0).await;

    // A link on its own runtime: dropping the runtime closes the socket without DISCONNECT,
    // as a crash or kill -9 would.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let t2 = topics.clone();
    let link = rt
        .spawn(async move {
            let (l, _rx) = Link::start(
                link_options(port, t2, "n-lwt"),
                vec![],
                "{}".into(),
                None,
                Arc::new(Metrics::default()),
                16,
            )
            .unwrap();
            l
        })
        .await
        .unwrap();
    assert!(obs.wait_text(&topics.status(), "online", T).await, "online not published");
    assert!(link.is_connected());
    tokio::task::spawn_blocking(move || drop(rt)).await.unwrap();
    assert!(obs.wait_text(&topics.status(), "offline", T).await, "Last Will not published");

    // Clean stop: `stopped` (acknowledged), and no `offline` after it.
    let (l, _rx) = Link::start(
        link_options(port, topics.clone(), "n-lwt"),
        vec![],
        "{}".into(),
        None,
        Arc::new(Metrics::default()),
        16,
    )
    .unwrap();
    assert!(obs.wait_text(&topics.status(), "online", T).await);
    assert!(l.shutdown("stopped", T).await, "stopped not acknowledged");
    assert!(obs.wait_text(&topics.status(), "stopped", T).await);
    let after = obs.next_on(&topics.status(), Duration::from_millis(1500)).await;
    assert!(after.is_none(), "unexpected status after a clean stop: {:?}", after.map(|m| m.text()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_forwards_v5_response_topic_correlation_and_retains() {
    let _turn = crate::harness::shared();
    let port = free_port_pair();
    sgbd_edge::mqtt::broker::start_embedded("127.0.0.1", port, 65536).unwrap();
    let mut sub = Observer::connect(port, "sub-props", &["t/req".to_string()], true, 0).await;
    let pubr = Observer::connect(port, "pub-props", &["t/none".to_string()], true, 0).await;
    let props = PublishProperties {
        response_topic: Some("t/resp".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-42")),
        message_expiry_interval: Some(30),
        ..Default::default()
    };
    pubr.client.publish_with_properties("t/req", QoS::AtLeastOnce, false, "x", props).await.unwrap();
    let m = sub.next_on("t/req", T).await.expect("forwarded");
    let p = m.props.expect("v5 properties forwarded");
    assert_eq!(p.response_topic.as_deref(), Some("t/resp"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-42"[..]));
    assert!(p.message_expiry_interval.is_some_and(|e| e <= 30));

    pubr.client.publish("t/ret", QoS::AtLeastOnce, true, "kept").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = Observer::connect(port, "late", &["t/ret".to_string()], true, 0).await;
    let r = late.next_on("t/ret", T).await.expect("retained delivered to a late subscriber");
    assert!(r.retain);
    assert_eq!(r.text(), "kept");
}
