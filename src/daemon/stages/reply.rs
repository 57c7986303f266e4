//! Answering a kiosk: where a reply goes (MQTT 5 Response Topic, JSON `reply_to`, or the kiosk's
//! default reply topic), error replies, and refusing a payload that does not decode.

use crate::daemon::Ctx;
use crate::mqtt::client::InMsg;
use crate::mqtt::contract::{self, DecodeError, ErrorBody, ErrorCode, ErrorReply};
use crate::sys::now_ms;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;

/// Where and how to answer one message.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTarget {
    pub topic: String,
    pub correlation: Option<Bytes>,
    pub request_id: Option<String>,
}

pub(super) fn props_of(m: &InMsg) -> Option<&PublishProperties> {
    m.properties.as_ref()
}

/// The reply target a message names: MQTT 5 Response Topic, else JSON `reply_to`, else the kiosk's
/// default reply topic when `default` is set. `Err` carries the default target when the named topic
/// is not the kiosk's own.
pub(super) fn reply_target(
    ctx: &Ctx,
    kiosk: &str,
    m: &InMsg,
    reply_to: Option<&str>,
    request_id: Option<&str>,
    default: bool,
) -> Result<Option<ReplyTarget>, ReplyTarget> {
    let props = props_of(m);
    let correlation = props.and_then(|p| p.correlation_data.clone());
    let named = props.and_then(|p| p.response_topic.clone()).or_else(|| reply_to.map(str::to_string));
    let fallback = ReplyTarget {
        topic: ctx.topics.kiosk_reply(kiosk),
        correlation: correlation.clone(),
        request_id: request_id.map(str::to_string),
    };
    match named {
        Some(t) if ctx.topics.reply_topic_allowed(kiosk, &t) => {
            Ok(Some(ReplyTarget { topic: t, correlation, request_id: request_id.map(str::to_string) }))
        }
        Some(_) => Err(fallback),
        None if default || request_id.is_some() => Ok(Some(fallback)),
        None => Ok(None),
    }
}

pub(super) fn send_reply(ctx: &Ctx, target: &ReplyTarget, payload: Bytes) -> bool {
    let props = target
        .correlation
        .as_ref()
        .map(|c| PublishProperties { correlation_data: Some(c.clone()), ..Default::default() });
    match ctx.link.publish(&target.topic, QoS::AtLeastOnce, false, payload, props) {
        Ok(()) => true,
        Err(e) => {
            ctx.metrics().incr("mqtt.reply_dropped");
            tracing::warn!(topic = %target.topic, error = %e, "reply dropped");
            false
        }
    }
}

pub(super) fn error_payload(ctx: &Ctx, request_id: Option<String>, code: ErrorCode, message: String) -> Bytes {
    let e = ErrorReply {
        schema_version: contract::SCHEMA_VERSION.into(),
        ts: now_ms(),
        node_id: ctx.topics.base.rsplit('/').next().unwrap_or_default().to_string(),
        request_id,
        error: ErrorBody { code, message },
    };
    Bytes::from(serde_json::to_vec(&e).unwrap_or_default())
}

pub(super) fn node_id(ctx: &Ctx) -> String {
    ctx.cfg.read().map(|c| c.node.node_id.clone()).unwrap_or_default()
}

/// Counts, logs and (when a reply topic exists) answers a payload that could not be decoded.
pub(super) fn refuse(ctx: &Ctx, kiosk: Option<&str>, m: &InMsg, e: DecodeError) {
    let counter = match e.code {
        ErrorCode::TooLarge => "mqtt.oversized",
        ErrorCode::UnsupportedSchema => "mqtt.unknown_schema",
        ErrorCode::InvalidField => "mqtt.invalid_field",
        ErrorCode::RateLimited => "mqtt.rate_limited",
        _ => "mqtt.malformed",
    };
    ctx.metrics().incr(counter);
    tracing::warn!(topic = %m.topic, code = ?e.code, error = %e.message, "payload refused");
    let Some(kiosk) = kiosk else { return };
    // Answer where the sender said, or by MQTT 5 response topic; a broken 3.1.1 payload without a
    // readable reply_to gets its error on the kiosk's default reply topic.
    let target = match reply_target(ctx, kiosk, m, e.reply_to.as_deref(), e.request_id.as_deref(), true) {
        Ok(Some(t)) | Err(t) => t,
        Ok(None) => return,
    };
    let payload = error_payload(ctx, target.request_id.clone(), e.code, e.message);
    send_reply(ctx, &target, payload);
}
