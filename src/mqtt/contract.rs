//! The versioned MQTT contract: topic layout and JSON payloads (see `docs/mqtt.md`).
//!
//! Every topic lives under `<prefix>/<store_id>/<node_id>/`. Kiosk traffic lives under
//! `.../kiosk/<kiosk_id>/...` so that a broker ACL line such as
//! `pattern readwrite sgbd/+/+/kiosk/%u/#` confines each kiosk to its own sub-tree.
//!
//! Payloads are JSON objects carrying `schema_version` (`"<major>.<minor>"`), `ts` (ms since the
//! Unix epoch, UTC) and, for what the node sends, `node_id`. A payload whose major version is not
//! [`SCHEMA_MAJOR`] is refused with an error reply (`unsupported_schema`); unknown fields are
//! ignored, so minor versions may add fields.

use crate::sys::now_ms;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Major version of the payload schema this build speaks; payloads with another major are refused.
pub const SCHEMA_MAJOR: u32 = 1;
/// Full schema version written into every payload this node sends.
pub const SCHEMA_VERSION: &str = "1.2";

/// Last topic level of a command's result topic ([`Topics::cmd_result`]).
pub const RESULT: &str = "result";

/// Retained `status` payloads (plain text, as Frigate and Home Assistant expect).
pub const STATUS_ONLINE: &str = "online";
pub const STATUS_STOPPED: &str = "stopped";
pub const STATUS_OFFLINE: &str = "offline";

/// The topic names of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `<prefix>/<store_id>/<node_id>`
    pub base: String,
    /// `<prefix>/fleet`
    pub fleet: String,
}

/// What an incoming topic is, once parsed against [`Topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `<base>/kiosk/<kiosk_id>/events`
    Event { kiosk: String },
    /// `<base>/kiosk/<kiosk_id>/recommend`
    Recommend { kiosk: String },
    /// `<base>/cmd/<name>` or `<prefix>/fleet/cmd/<name>`
    Command { name: String },
    /// Anything else (ignored).
    Other,
}

impl Topics {
    pub fn new(prefix: &str, store_id: &str, node_id: &str) -> Self {
        Self { base: format!("{prefix}/{store_id}/{node_id}"), fleet: format!("{prefix}/fleet") }
    }

    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(&cfg.mqtt.topic_prefix, &cfg.node.store_id, &cfg.node.node_id)
    }

    /// Retained availability: `online`, `stopped`, or `offline` (Last Will).
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// Retained birth document ([`Birth`]).
    pub fn birth(&self) -> String {
        format!("{}/birth", self.base)
    }
    /// Telemetry ([`Stats`]), QoS 0.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }
    /// Ingested kiosk events forwarded to the fleet ([`FleetEvents`]), QoS 1 through the outbox.
    pub fn fleet_events(&self) -> String {
        format!("{}/events", self.base)
    }
    /// Model announcements for the fleet ([`ModelAnnouncement`]), QoS 1 through the outbox.
    pub fn model(&self) -> String {
        format!("{}/model", self.base)
    }
    /// Sub-tree of one kiosk.
    pub fn kiosk(&self, kiosk: &str) -> String {
        format!("{}/kiosk/{kiosk}", self.base)
    }
    pub fn kiosk_events(&self, kiosk: &str) -> String {
        format!("{}/events", self.kiosk(kiosk))
    }
    pub fn kiosk_recommend(&self, kiosk: &str) -> String {
        format!("{}/recommend", self.kiosk(kiosk))
    }
    /// Default reply topic (MQTT 3.1.1 kiosks that name no `reply_to`).
    pub fn kiosk_reply(&self, kiosk: &str) -> String {
        format!("{}/reply", self.kiosk(kiosk))
    }
    /// Suggestions pushed to a kiosk without a request ([`Push`]).
    pub fn kiosk_push(&self, kiosk: &str) -> String {
        format!("{}/push", self.kiosk(kiosk))
    }
    /// A node command topic, e.g. `cmd("rebirth")`.
    pub fn cmd(&self, name: &str) -> String {
        format!("{}/cmd/{name}", self.base)
    }
    /// Where the node answers a command ([`CommandResult`]), whether it came on its own
    /// `cmd/<name>` or on the fleet's: `<base>/cmd/<name>/result`.
    pub fn cmd_result(&self, name: &str) -> String {
        format!("{}/cmd/{name}/{RESULT}", self.base)
    }
    /// A fleet-wide command topic.
    pub fn fleet_cmd(&self, name: &str) -> String {
        format!("{}/cmd/{name}", self.fleet)
    }

    /// The filters the node subscribes to.
    pub fn subscriptions(&self) -> Vec<String> {
        vec![
            format!("{}/kiosk/+/events", self.base),
            format!("{}/kiosk/+/recommend", self.base),
            format!("{}/cmd/#", self.base),
            format!("{}/cmd/#", self.fleet),
        ]
    }

    /// Classifies an incoming topic.
    pub fn classify(&self, topic: &str) -> Inbound {
        if let Some(rest) = topic.strip_prefix(&self.base).and_then(|r| r.strip_prefix('/')) {
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                ["kiosk", k, "events"] if !k.is_empty() => return Inbound::Event { kiosk: k.to_string() },
                ["kiosk", k, "recommend"] if !k.is_empty() => return Inbound::Recommend { kiosk: k.to_string() },
                // The node's own results (`cmd/<name>/result`) come back on its `cmd/#` filter.
                ["cmd", .., RESULT] => return Inbound::Other,
                ["cmd", name @ ..] if !name.is_empty() => return Inbound::Command { name: name.join("/") },
                _ => return Inbound::Other,
            }
        }
        if let Some(name) = topic.strip_prefix(&self.fleet).and_then(|r| r.strip_prefix("/cmd/")) {
            if !name.is_empty() && name != RESULT && !name.ends_with(&format!("/{RESULT}")) {
                return Inbound::Command { name: name.to_string() };
            }
        }
        Inbound::Other
    }

    /// A reply topic a kiosk may name (MQTT 5 Response Topic or JSON `reply_to`): only inside its
    /// own sub-tree, so that a kiosk cannot make the node publish into another kiosk's topics or the
    /// fleet's (the node's broker account can write everywhere; the kiosk's cannot).
    pub fn reply_topic_allowed(&self, kiosk: &str, topic: &str) -> bool {
        let own = self.kiosk(kiosk);
        topic.strip_prefix(&own).is_some_and(|r| r.starts_with('/') && r.len() > 1)
            && !topic.contains(['#', '+'])
            && !topic.ends_with("/events")
            && !topic.ends_with("/recommend")
    }
}

/// Why a payload was refused; `code` is stable, `message` is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or JSON that does not match the schema.
    Malformed,
    /// Larger than `mqtt.max_payload_bytes`.
    TooLarge,
    /// `schema_version` with a major this node does not speak.
    UnsupportedSchema,
    /// The named `reply_to` is outside the kiosk's own topics.
    ForbiddenReplyTopic,
    /// The store failed to write; retry later.
    Internal,
    /// The kiosk sent requests faster than `mqtt.kiosk_rate_per_s` (or events faster than
    /// `mqtt.kiosk_event_rate_per_s`); retry later.
    RateLimited,
    /// A field has a value the node does not accept (blank id, `k` of 0, a timestamp far from
    /// now, ...); `message` names the field. Sending it again will not help.
    InvalidField,
}

impl ErrorCode {
    /// The code as it appears in JSON (`malformed`, `too_large`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedSchema => "unsupported_schema",
            ErrorCode::ForbiddenReplyTopic => "forbidden_reply_topic",
            ErrorCode::Internal => "internal",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidField => "invalid_field",
        }
    }
}

/// A remark on an acknowledged event ([`EventAck::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AckCode {
    /// The SKU is not in the node's catalogue: the event is kept apart (never served, never
    /// trained on) and joins the interactions when the item is catalogued.
    UnknownItem,
    /// This kiosk already sent this `event_id` for another user, item or kind; the first copy is
    /// kept. (A resend with only a new `ts` is a plain duplicate.)
    EventIdReused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Error reply, on the reply topic of the request that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorReply {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub error: ErrorBody,
}

/// Earliest `ts` accepted from a kiosk: 2020-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 1_577_836_800_000;
/// How far ahead of the node's clock a kiosk's `ts` may be (a kiosk clock a little fast).
pub const MAX_CLOCK_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// A kiosk's `ts` (ms UTC) must lie between [`MIN_TS_MS`] and a day after `now`: a kiosk
/// without a set clock (1970) or a unit mistake (seconds, microseconds) is refused, not stored.
pub fn check_ts(ts: i64, now: i64) -> Result<(), String> {
    if ts < MIN_TS_MS {
        Err(format!("{ts} is before 2020-01-01 (ms since the Unix epoch, UTC expected; is the kiosk clock set?)"))
    } else if ts > now.saturating_add(MAX_CLOCK_AHEAD_MS) {
        Err(format!("{ts} is more than a day after the node's clock ({now})"))
    } else {
        Ok(())
    }
}

/// The major part of a `schema_version` such as `"1.2"` (or `"1"`).
pub fn schema_major(v: &str) -> Option<u32> {
    v.split('.').next()?.trim().parse().ok()
}

/// A kiosk interaction (`kiosk/<id>/events`, QoS 1). Idempotent by `event_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventMsg {
    pub schema_version: String,
    pub ts: i64,
    /// Idempotency key: the same `event_id` is stored once.
    pub event_id: String,
    pub user: String,
    pub sku: String,
    /// `view`, `scan`, `cart` or `purchase`.
    pub kind: String,
    /// The sender's id (the kiosk); informative.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Ask for an acknowledgement ([`EventAck`]) after the event is durable (3.1.1 path; MQTT 5
    /// kiosks set a Response Topic instead).
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl EventMsg {
    /// The interaction this message describes, sent by `kiosk` and checked at `now` (ms UTC), or
    /// why it is not acceptable: a known `kind`, a plausible `ts` ([`check_ts`]) and every rule the
    /// store applies ([`crate::store::Event::check`]). The daemon's router refuses an event this
    /// rejects, so that it never reaches the store's writer.
    pub fn to_event(&self, kiosk: &str, now: i64) -> Result<crate::store::Event, String> {
        let kind =
            self.kind.parse().map_err(|_| format!("kind: unknown {:?}; use view, scan, cart, purchase", self.kind))?;
        check_ts(self.ts, now).map_err(|e| format!("ts: {e}"))?;
        let ev = crate::store::Event {
            event_id: self.event_id.clone(),
            user: self.user.clone(),
            sku: self.sku.clone(),
            kind,
            ts_ms: self.ts,
            kiosk: Some(kiosk.to_string()),
        };
        ev.check().map_err(|e| e.to_string())?;
        Ok(ev)
    }
}

/// Acknowledgement of an event, sent only when asked for, after the event is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventAck {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub event_id: String,
    /// The event is durable on the node (new or already known); the kiosk may forget it.
    pub stored: bool,
    /// This kiosk sent this `event_id` before: nothing was stored again, counted again or
    /// forwarded again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// A remark, when the event was not stored as a plain new interaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<AckCode>,
}

/// A recommendation request (`kiosk/<id>/recommend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecommendRequest {
    pub schema_version: String,
    pub ts: i64,
    pub user: String,
    /// Items wanted; default `serve.default_k`, at most `serve.max_k`.
    #[serde(default)]
    pub k: Option<usize>,
    /// SKUs the kiosk does not want (e.g. what is on screen).
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub node_id: Option<String>,
    /// 3.1.1 path: where to answer (default `kiosk/<id>/reply`) and what to echo back.
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    /// 3.1.1 path: do not answer after this instant (ms UTC) ...
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// ... or after `ts + ttl_ms`.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

impl RecommendRequest {
    /// The rules a request must follow beyond its JSON shape: a user id like an interaction's
    /// ([`crate::store::check_id`]), `k` of at least 1, a plausible `ts` ([`check_ts`]).
    pub fn check(&self, now: i64) -> Result<(), String> {
        crate::store::check_id("user", &self.user).map_err(|e| e.to_string())?;
        if self.k == Some(0) {
            return Err("k: must be at least 1 (leave it out for the node's default)".into());
        }
        check_ts(self.ts, now).map_err(|e| format!("ts: {e}"))
    }

    /// The instant (ms UTC) after which the request must not be answered, if it names one.
    pub fn deadline_ms(&self) -> Option<i64> {
        let by_ttl = self.ttl_ms.map(|t| self.ts.saturating_add(t.min(i64::MAX as u64) as i64));
        match (self.expires_at, by_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecItem {
    pub sku: String,
    pub score: f64,
    /// Why it is recommended, e.g. `popular_in_store`.
    pub reason: String,
}

/// Reply to a [`RecommendRequest`]. Never retained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecommendReply {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub user: String,
    pub model_version: String,
    /// When the ranking was computed (ms UTC); older than `ts` when served from the reply cache.
    pub generated_at: i64,
    /// True when a fallback (store popularity, content similarity) served the request.
    pub fallback: bool,
    pub items: Vec<RecItem>,
}

/// Suggestions pushed to a kiosk (`kiosk/<id>/push`, QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Push {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    pub user: String,
    pub model_version: String,
    pub fallback: bool,
    pub items: Vec<RecItem>,
}

/// A model the node serves or uses, as listed in the birth document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Retained birth document (`birth`), republished after every (re)connect and on `cmd/rebirth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Birth {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    pub store_id: String,
    pub software_version: String,
    pub models: Vec<ModelInfo>,
    pub capabilities: Vec<String>,
    pub config_hash: String,
    /// MQTT protocol levels the node answers on (`5`, `3.1.1`).
    pub protocols: Vec<String>,
}

impl Birth {
    /// What every node offers, in the birth document's `capabilities`.
    pub const CAPABILITIES: [&'static str; 7] =
        ["events", "recommend", "push", "cmd/rebirth", "cmd/config-reload", "cmd/catalog-update", "cmd/model-pin"];

    /// The birth document of a node of this build, stamped now.
    pub fn new(node_id: &str, store_id: &str, config_hash: &str, models: Vec<ModelInfo>) -> Self {
        Birth {
            schema_version: SCHEMA_VERSION.into(),
            ts: now_ms(),
            node_id: node_id.into(),
            store_id: store_id.into(),
            software_version: crate::VERSION.into(),
            models,
            capabilities: Self::CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            config_hash: config_hash.into(),
            protocols: vec!["5".into(), "3.1.1".into()],
        }
    }
}

/// A model announcement (`<base>/model`, QoS 1 through the durable outbox): what changed and the
/// offline metrics behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelAnnouncement {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    pub store_id: String,
    /// `promoted`, `rejected`, `held` (passed the gate, not promoted: a pin holds), `activated`
    /// (rollback / manual activation / a pin of another version), `pinned`, `unpinned`
    /// (`version` is the version whose pin was lifted).
    pub event: String,
    pub version: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub metrics: serde_json::Value,
}

/// How far a command got ([`CommandResult::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Taken, to be applied later (`catalog-update`: queued for the store's writer); a `done` or
    /// `failed` result follows.
    Accepted,
    /// Applied.
    Done,
    /// Not applied: `message` says why (payload refused, unknown command or version, invalid
    /// config file, ...).
    Failed,
}

/// The node's answer to a command (`<base>/cmd/<name>/result`, QoS 1, not retained), for a
/// command on the node's own topic or on the fleet's. Every command gets one final result
/// (`done` or `failed`), some an `accepted` before it. MQTT 5 Correlation Data is copied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandResult {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    /// The command's name (`rebirth`, `config-reload`, `catalog-update`, `model-pin`, or the
    /// unknown name that was sent).
    pub command: String,
    /// The command's `request_id`, echoed (absent when it had none or was unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub status: CommandStatus,
    /// For people: what was done, or why not.
    pub message: String,
}

impl CommandResult {
    /// A result stamped now.
    pub fn new(
        node_id: &str,
        command: &str,
        request_id: Option<String>,
        status: CommandStatus,
        message: String,
    ) -> Self {
        CommandResult {
            schema_version: SCHEMA_VERSION.into(),
            ts: now_ms(),
            node_id: node_id.into(),
            command: command.into(),
            request_id,
            status,
            message,
        }
    }
}

/// Payload of `cmd/model-pin`: `version` pins (and activates) it; `null` or absent unpins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinCommand {
    pub schema_version: String,
    pub ts: i64,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Echoed in the [`CommandResult`].
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Telemetry (`stats`, QoS 0, every `mqtt.stats_interval_s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    pub uptime_s: u64,
    pub broker_connected: bool,
    pub model_version: String,
    /// Named counters (`serve.requests`, `mqtt.malformed`, `ingest.events`, ...).
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Latency summaries by name (`serve.request_ms`, `ingest.commit_ms`).
    pub latencies: std::collections::BTreeMap<String, Latency>,
    pub outbox_backlog: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    /// Jetson GPU load in percent (`/sys/devices/gpu.0/load` / 10), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_load_pct: Option<f64>,
    /// Rows per store table, when the store could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_rows: Option<crate::store::TableCounts>,
    /// Thermal zones in degrees Celsius (`/sys/class/thermal/thermal_zone*/temp`), by zone type.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub temperatures_c: std::collections::BTreeMap<String, f64>,
    /// Cameras and the denoiser (captioning enabled or why not), when cameras are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelf: Option<serde_json::Value>,
}

/// A latency summary in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<crate::telemetry::LatencySummary> for Latency {
    fn from(s: crate::telemetry::LatencySummary) -> Self {
        Self { count: s.count, p50_ms: s.p50_ms, p90_ms: s.p90_ms, p99_ms: s.p99_ms, max_ms: s.max_ms }
    }
}

/// An event as forwarded to the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FleetEvent {
    pub event_id: String,
    pub user: String,
    pub sku: String,
    pub kind: String,
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiosk: Option<String>,
}

/// Newly ingested events forwarded to the fleet (`events`, QoS 1, through the durable outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FleetEvents {
    pub schema_version: String,
    pub ts: i64,
    pub node_id: String,
    pub store_id: String,
    pub events: Vec<FleetEvent>,
}

/// A catalogue item in a `catalog-update` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogItem {
    pub sku: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "empty_object")]
    pub attributes: serde_json::Value,
    #[serde(default)]
    pub image_path: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Payload of a command (`cmd/rebirth`, `cmd/config-reload`, `cmd/catalog-update`). An empty
/// payload is accepted for commands without arguments (its result then has no `request_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Command {
    pub schema_version: String,
    pub ts: i64,
    #[serde(default)]
    pub node_id: Option<String>,
    /// `catalog-update`: items to insert or update (keyed by sku).
    #[serde(default)]
    pub items: Vec<CatalogItem>,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Echoed in the [`CommandResult`].
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// `request_id` and `reply_to` if they could be read from the broken payload, so that an error
    /// reply can still reach a 3.1.1 kiosk.
    pub request_id: Option<String>,
    pub reply_to: Option<String>,
}

/// Decodes a payload: size limit, JSON, schema major, then the typed struct.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], max_bytes: usize) -> Result<T, DecodeError> {
    let err = |code, message: String, v: Option<&serde_json::Value>| DecodeError {
        code,
        message,
        request_id: v.and_then(|v| v.get("request_id")).and_then(|x| x.as_str()).map(str::to_string),
        reply_to: v.and_then(|v| v.get("reply_to")).and_then(|x| x.as_str()).map(str::to_string),
    };
    if payload.len() > max_bytes {
        return Err(err(ErrorCode::TooLarge, format!("payload of {} bytes exceeds {max_bytes}", payload.len()), None));
    }
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| err(ErrorCode::Malformed, format!("not JSON: {e}"), None))?;
    if !v.is_object() {
        return Err(err(ErrorCode::Malformed, "payload must be a JSON object".into(), None));
    }
    match v.get("schema_version").and_then(|s| s.as_str()) {
        None => return Err(err(ErrorCode::Malformed, "missing string field schema_version".into(), Some(&v))),
        Some(s) => match schema_major(s) {
            Some(SCHEMA_MAJOR) => {}
            _ => {
                return Err(err(
                    ErrorCode::UnsupportedSchema,
                    format!("schema_version {s:?} not supported (this node speaks {SCHEMA_MAJOR}.x)"),
                    Some(&v),
                ))
            }
        },
    }
    T::deserialize(&v).map_err(|e| err(ErrorCode::Malformed, format!("bad payload: {e}"), Some(&v)))
}

/// The messages of the contract: (topic relative to `<base>`, direction, message type name, its
/// schema). Plain-text `status` (`online` / `stopped` / `offline`) has no JSON schema.
fn messages(g: &mut schemars::SchemaGenerator) -> Vec<(&'static str, &'static str, schemars::Schema)> {
    vec![
        ("kiosk/<kiosk>/events", "in", g.subschema_for::<EventMsg>()),
        ("kiosk/<kiosk>/recommend", "in", g.subschema_for::<RecommendRequest>()),
        ("cmd/<name>, <prefix>/fleet/cmd/<name>", "in", g.subschema_for::<Command>()),
        ("cmd/model-pin, <prefix>/fleet/cmd/model-pin", "in", g.subschema_for::<PinCommand>()),
        ("reply topic of an event", "out", g.subschema_for::<EventAck>()),
        ("reply topic of a request", "out", g.subschema_for::<RecommendReply>()),
        ("reply topic of any refused message", "out", g.subschema_for::<ErrorReply>()),
        ("kiosk/<kiosk>/push", "out", g.subschema_for::<Push>()),
        ("birth", "out", g.subschema_for::<Birth>()),
        ("stats", "out", g.subschema_for::<Stats>()),
        ("events", "out", g.subschema_for::<FleetEvents>()),
        ("model", "out", g.subschema_for::<ModelAnnouncement>()),
        ("cmd/<name>/result", "out", g.subschema_for::<CommandResult>()),
    ]
}

/// The JSON Schema (draft 2020-12) of every payload of this contract version, shipped as
/// `docs/mqtt.schema.json` (`sgbd-edge print-mqtt-schema` writes it). `x-topics` maps each topic
/// to its message.
pub fn json_schema() -> serde_json::Value {
    let mut g = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let msgs = messages(&mut g);
    let topics: serde_json::Map<String, serde_json::Value> = msgs
        .iter()
        .map(|(topic, dir, schema)| (topic.to_string(), serde_json::json!({ "direction": dir, "message": schema })))
        .collect();
    let defs: serde_json::Map<String, serde_json::Value> = g.take_definitions(true).into_iter().collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:sgbd-edge:mqtt:{SCHEMA_VERSION}"),
        "title": format!("sgbd-edge MQTT contract {SCHEMA_VERSION}"),
        "description": "Payloads of the node's MQTT topics (docs/mqtt.md). Topics are relative to <prefix>/<store_id>/<node_id>/. Unknown fields are ignored by the node; a minor version only adds fields.",
        "oneOf": msgs.iter().map(|(_, _, s)| s).collect::<Vec<_>>(),
        "x-topics": topics,
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topics {
        Topics::new("sgbd", "s1", "edge-1")
    }

    #[test]
    fn classify_topics() {
        let t = t();
        assert_eq!(t.classify("sgbd/s1/edge-1/kiosk/k7/events"), Inbound::Event { kiosk: "k7".into() });
        assert_eq!(t.classify("sgbd/s1/edge-1/kiosk/k7/recommend"), Inbound::Recommend { kiosk: "k7".into() });
        assert_eq!(t.classify("sgbd/s1/edge-1/cmd/rebirth"), Inbound::Command { name: "rebirth".into() });
        assert_eq!(t.classify("sgbd/fleet/cmd/catalog-update"), Inbound::Command { name: "catalog-update".into() });
        assert_eq!(t.classify("sgbd/s1/edge-2/kiosk/k7/events"), Inbound::Other);
        assert_eq!(t.classify("sgbd/s1/edge-1/kiosk//events"), Inbound::Other);
        assert_eq!(t.classify("sgbd/s1/edge-1/status"), Inbound::Other);
        // The node's own command results are not commands.
        assert_eq!(t.cmd_result("rebirth"), "sgbd/s1/edge-1/cmd/rebirth/result");
        assert_eq!(t.classify(&t.cmd_result("rebirth")), Inbound::Other);
        assert_eq!(t.classify("sgbd/fleet/cmd/rebirth/result"), Inbound::Other);
    }

    #[test]
    fn reply_topics_confined_to_the_kiosk() {
        let t = t();
        assert!(t.reply_topic_allowed("k7", "sgbd/s1/edge-1/kiosk/k7/reply"));
        assert!(t.reply_topic_allowed("k7", "sgbd/s1/edge-1/kiosk/k7/reply/abc"));
        assert!(!t.reply_topic_allowed("k7", "sgbd/s1/edge-1/kiosk/k8/reply"));
        assert!(!t.reply_topic_allowed("k7", "sgbd/s1/edge-1/kiosk/k7"));
        assert!(!t.reply_topic_allowed("k7", "sgbd/s1/edge-1/kiosk/k70/reply"));
        assert!(!t.reply_topic_allowed("k7", "sgbd/s1/edge-1/kiosk/k7/events"));
        assert!(!t.reply_topic_allowed("k7", "sgbd/s1/edge-1/status"));
    }

    #[test]
    fn decode_checks_size_json_and_schema() {
        let ok = br#"{"schema_version":"1.3","ts":1,"user":"u","request_id":"r1"}"#;
        let r: RecommendRequest = decode(ok, 1024).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("r1"));
        let e = decode::<RecommendRequest>(ok, 10).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        let e = decode::<RecommendRequest>(b"{nope", 1024).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
        let e = decode::<RecommendRequest>(
            br#"{"schema_version":"2.0","ts":1,"user":"u","request_id":"x","reply_to":"t"}"#,
            1024,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedSchema);
        assert_eq!(e.request_id.as_deref(), Some("x"));
        assert_eq!(e.reply_to.as_deref(), Some("t"));
        let e = decode::<RecommendRequest>(br#"{"schema_version":"1.0","ts":1,"request_id":"y"}"#, 1024).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
        assert_eq!(e.request_id.as_deref(), Some("y"));
    }

    #[test]
    fn deadline_from_expires_at_or_ttl() {
        let mut r: RecommendRequest = decode(br#"{"schema_version":"1.0","ts":1000,"user":"u"}"#, 1024).unwrap();
        assert_eq!(r.deadline_ms(), None);
        r.ttl_ms = Some(500);
        assert_eq!(r.deadline_ms(), Some(1500));
        r.expires_at = Some(1200);
        assert_eq!(r.deadline_ms(), Some(1200));
    }

    #[test]
    fn shipped_json_schema_matches_the_payload_types() {
        let generated = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        let shipped = include_str!("../../docs/mqtt.schema.json");
        assert!(
            generated == shipped,
            "docs/mqtt.schema.json is out of date: run `cargo run --release -- print-mqtt-schema > docs/mqtt.schema.json`"
        );
        // Every message of the contract is in it, and it validates a real payload's shape.
        let v: serde_json::Value = serde_json::from_str(shipped).unwrap();
        for name in [
            "EventMsg",
            "RecommendRequest",
            "RecommendReply",
            "EventAck",
            "ErrorReply",
            "Birth",
            "Stats",
            "ModelAnnouncement",
            "PinCommand",
            "CommandResult",
        ] {
            assert!(v["$defs"].get(name).is_some(), "{name} missing from the schema");
        }
        let ev = &v["$defs"]["EventMsg"];
        let required: Vec<&str> = ev["required"].as_array().unwrap().iter().filter_map(|x| x.as_str()).collect();
        for f in ["schema_version", "ts", "event_id", "user", "sku", "kind"] {
            assert!(required.contains(&f), "EventMsg.{f} must be required");
        }
    }
}
