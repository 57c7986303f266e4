//! `kiosk` (owned by the MQTT concern): a kiosk client for people and tests.
use super::ConfigArg;
use crate::config::BrokerMode;
use crate::mqtt::kiosk::{KioskClient, Protocol};
use crate::mqtt::{MqttError, Topics};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when no reply came in time.
pub const EXIT_TIMEOUT: u8 = 3;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["event", "recommend"])))]
pub struct KioskArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Kiosk id (the topic level `kiosk/<id>/...`).
    #[arg(long)]
    pub kiosk: String,
    /// Shopper id.
    #[arg(long)]
    pub user: String,
    /// Send an interaction of this kind (view, scan, cart, purchase); needs --item.
    #[arg(long, requires = "item")]
    pub event: Option<String>,
    /// The item's SKU for --event.
    #[arg(long)]
    pub item: Option<String>,
    /// Idempotency key of the event (default: generated).
    #[arg(long)]
    pub event_id: Option<String>,
    /// Ask for recommendations.
    #[arg(long)]
    pub recommend: bool,
    /// Number of recommendations.
    #[arg(long)]
    pub k: Option<usize>,
    /// Speak MQTT 3.1.1 (JSON reply_to / request_id) instead of MQTT 5. With the embedded broker
    /// this connects to its 3.1.1 listener on port + 1.
    #[arg(long)]
    pub v311: bool,
    /// Wait this long for the reply, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

pub fn run(a: KioskArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&a.config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let protocol = if a.v311 { Protocol::V311 } else { Protocol::V5 };
        let port = match (protocol, cfg.mqtt.broker) {
            (Protocol::V311, BrokerMode::Embedded) => cfg.mqtt.port.saturating_add(1),
            _ => cfg.mqtt.port,
        };
        let timeout = Duration::from_millis(a.timeout_ms);
        let creds = crate::mqtt::credentials(&cfg.mqtt)?;
        let topics = Topics::from_config(&cfg);
        let client = match KioskClient::connect(&cfg.mqtt.host, port, topics, &a.kiosk, protocol, creds, timeout).await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot connect to {}:{port}: {e}", cfg.mqtt.host);
                return Ok(ExitCode::from(EXIT_TIMEOUT));
            }
        };
        let reply = if let (Some(kind), Some(item)) = (&a.event, &a.item) {
            let id = a.event_id.clone().unwrap_or_else(|| format!("{}-{}", a.kiosk, crate::sys::now_ms()));
            client.event(&id, &a.user, item, kind, Some(timeout)).await.map(|r| r.map(|r| r.json))
        } else {
            client.recommend(&a.user, a.k, timeout).await.map(|r| Some(r.json))
        };
        match reply {
            Ok(Some(json)) => {
                println!("{}", serde_json::to_string_pretty(&json)?);
                Ok(if json.get("error").is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
            }
            Ok(None) => Ok(ExitCode::SUCCESS),
            Err(MqttError::Timeout(t)) => {
                eprintln!("error: no reply within {t:?}");
                Ok(ExitCode::from(EXIT_TIMEOUT))
            }
            Err(e) => Err(e.into()),
        }
    })
}
