//! The log leaves out rumqttd's false alarm on a clean client disconnect (`ERROR router-drop`) and
//! nothing else: checked against the real embedded broker, with one log layer filtered as the
//! daemon's is and one unfiltered layer beside it that must see the event.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::prelude::*;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_disconnect_logs_no_false_error_but_other_broker_lines_stay() {
    // Installs the process-wide tracing subscriber and counts every broker line logged meanwhile.
    let _turn = crate::harness::exclusive();
    let (filtered, raw) = (Buf::default(), Buf::default());
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(filtered.clone())
                .with_filter(sgbd_edge::telemetry::quiet_broker()),
        )
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(raw.clone()))
        .init();

    let port = sgbd_edge::mqtt::broker::free_port_pair().expect("free port");
    sgbd_edge::mqtt::broker::start_embedded("127.0.0.1", port, 65536).unwrap();
    let mut opts = rumqttc::MqttOptions::new("log-check", "127.0.0.1", port + 1);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
    // Connect, then disconnect cleanly (DISCONNECT packet), and run the loop until the socket closes.
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => {
                connected = true;
                client.disconnect().await.unwrap();
            }
            Ok(Ok(_)) => {}
            // After the DISCONNECT the loop ends; before it, the listener may not be up yet.
            Ok(Err(_)) if connected => break,
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => {}
        }
    }
    assert!(connected, "no CONNACK from the embedded broker");
    // The broker's link task logs after the router has dropped it.
    let mut waited = Duration::ZERO;
    while !raw.text().contains("router-drop") && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let (raw, filtered) = (raw.text(), filtered.text());
    assert!(
        raw.contains("router-drop"),
        "rumqttd no longer logs router-drop on a clean disconnect (or moved it): update \
         telemetry::is_broker_false_alarm.\n{raw}"
    );
    assert!(!filtered.contains("router-drop"), "the false alarm reached the log:\n{filtered}");
    // Everything else the broker said is still there.
    let others = |log: &str| log.lines().filter(|l| l.contains("rumqttd") && !l.contains("router-drop")).count();
    assert!(others(&raw) > 0, "expected other broker lines:\n{raw}");
    assert_eq!(others(&filtered), others(&raw), "the filter dropped more than the false alarm");
}
