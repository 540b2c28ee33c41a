//! kombu's Redis envelope: the JSON text a message is stored as in a Redis
//! list or published on a PUB/SUB channel (spec §2.1).
//!
//! Encoding is byte-identical to kombu's `json.dumps` of the payload dict, so
//! key order matters: `body, content-encoding, content-type, headers,
//! properties`, and inside `properties` the order kombu builds them in
//! (`Producer.publish` keyword properties, then `delivery_mode`,
//! `expiration`; `prepare_message` adds `delivery_info`, `priority`;
//! `basic_publish` adds `body_encoding`, `delivery_tag`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::{pyjson, DeliveryInfo, Message, Properties};
use crate::error::{DecodeError, DecodeErrorKind};

/// A decoded Redis envelope: the message plus what kombu's virtual transport
/// keeps next to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub message: Message,
    pub exchange: String,
    pub routing_key: String,
    /// kombu's delivery tag (a uuid4 string set by the publisher).
    pub delivery_tag: Option<String>,
    /// Set by kombu when it restores or requeues a message.
    pub redelivered: bool,
}

impl Envelope {
    /// The delivery info a consumer reports for this message.
    pub fn delivery_info(&self) -> DeliveryInfo {
        DeliveryInfo {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            redelivered: self.redelivered,
        }
    }

    /// Re-encode this envelope as kombu would store it, including the
    /// `delivery_info.redelivered` flag when set.
    pub fn encode(&self) -> Vec<u8> {
        let tag = self.delivery_tag.as_deref();
        let info = self.delivery_info();
        pyjson::to_vec(&envelope_value(&self.message, &info, tag))
    }
}

/// Decode one envelope. Never panics; every failure is a typed [`DecodeError`].
pub fn decode_envelope(raw: &[u8]) -> Result<Envelope, DecodeError> {
    let text = std::str::from_utf8(raw).map_err(|e| {
        DecodeError::new(DecodeErrorKind::Utf8, format!("envelope is not UTF-8: {e}"))
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| envelope_err(format!("envelope is not JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(envelope_err("envelope is not a JSON object"));
    };
    let headers = match top.remove("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(h)) => h,
        Some(_) => return Err(envelope_err("envelope headers is not a map")),
    };
    let task_id = headers.get("id").and_then(Value::as_str).map(str::to_owned);
    let task_name = headers
        .get("task")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let with_task = |e: DecodeError| e.with_task(task_id.as_deref(), task_name.as_deref());

    let content_type = string_field(&top, "content-type").map_err(with_task)?;
    let content_encoding = string_field(&top, "content-encoding").map_err(with_task)?;
    let props = match top.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(with_task(envelope_err("envelope properties is not a map"))),
    };
    let parts = split_properties(props).map_err(with_task)?;
    let body = decode_body(top.get("body"), parts.body_encoding.as_deref())
        .map_err(|e| with_task(e).with_content_type(&content_type))?;
    let redelivered =
        parts.info.redelivered || headers.get("redelivered") == Some(&Value::Bool(true));
    Ok(Envelope {
        message: Message {
            body,
            content_type,
            content_encoding,
            headers,
            properties: parts.properties,
        },
        exchange: parts.info.exchange,
        routing_key: parts.info.routing_key,
        delivery_tag: parts.delivery_tag,
        redelivered,
    })
}

/// The envelope kombu's Redis channel writes for a fresh publish
/// (`body_encoding` base64, not redelivered).
pub fn encode_envelope(
    message: &Message,
    exchange: &str,
    routing_key: &str,
    delivery_tag: &str,
) -> Vec<u8> {
    let info = DeliveryInfo {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        redelivered: false,
    };
    pyjson::to_vec(&envelope_value(message, &info, Some(delivery_tag)))
}

/// What kombu's `_do_restore_message` does before pushing a message back:
/// `headers["redelivered"] = True` and `properties.delivery_info["redelivered"] = True`
/// (a missing key is skipped, as kombu's `except KeyError: pass`), then re-dump.
pub fn mark_redelivered(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut value: Value = serde_json::from_slice(raw)
        .map_err(|e| envelope_err(format!("envelope is not JSON: {e}")))?;
    let Value::Object(top) = &mut value else {
        return Err(envelope_err("envelope is not a JSON object"));
    };
    if let Some(Value::Object(headers)) = top.get_mut("headers") {
        headers.insert("redelivered".into(), Value::Bool(true));
        let info = top
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .and_then(|p| p.get_mut("delivery_info"))
            .and_then(Value::as_object_mut);
        if let Some(info) = info {
            info.insert("redelivered".into(), Value::Bool(true));
        }
    }
    Ok(pyjson::to_vec(&value))
}

fn envelope_err(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(DecodeErrorKind::Envelope, detail)
}

fn string_field(top: &Map<String, Value>, key: &str) -> Result<String, DecodeError> {
    match top.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(envelope_err(format!("envelope {key} is not a string"))),
    }
}

fn decode_body(body: Option<&Value>, encoding: Option<&str>) -> Result<Vec<u8>, DecodeError> {
    let text = match body {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s,
        Some(_) => return Err(envelope_err("envelope body is not a string")),
    };
    if encoding == Some("base64") {
        BASE64.decode(text.as_bytes()).map_err(|e| {
            DecodeError::new(DecodeErrorKind::Base64, format!("body is not base64: {e}"))
        })
    } else {
        Ok(text.as_bytes().to_vec())
    }
}

/// The envelope's properties map split into the message's [`Properties`] and
/// the transport-level fields kombu keeps in the same map.
struct PropertyParts {
    properties: Properties,
    info: DeliveryInfo,
    body_encoding: Option<String>,
    delivery_tag: Option<String>,
}

fn split_properties(props: Map<String, Value>) -> Result<PropertyParts, DecodeError> {
    let mut parts = PropertyParts {
        properties: Properties::default(),
        info: DeliveryInfo::default(),
        body_encoding: None,
        delivery_tag: None,
    };
    for (key, value) in props {
        // A value of an unexpected type is kept verbatim in `extra` rather
        // than dropped, so it survives a round trip.
        match (key.as_str(), value) {
            ("correlation_id", Value::String(s)) => parts.properties.correlation_id = Some(s),
            ("reply_to", Value::String(s)) => parts.properties.reply_to = Some(s),
            ("expiration", Value::String(s)) => parts.properties.expiration = Some(s),
            ("delivery_mode", Value::Number(n)) if small(&n).is_some() => {
                parts.properties.delivery_mode = small(&n)
            }
            ("priority", Value::Number(n)) if small(&n).is_some() => {
                parts.properties.priority = small(&n)
            }
            ("body_encoding", Value::String(s)) => parts.body_encoding = Some(s),
            ("body_encoding", Value::Null) => parts.body_encoding = None,
            ("delivery_tag", Value::String(s)) => parts.delivery_tag = Some(s),
            ("delivery_info", Value::Object(info)) => parts.info = delivery_info(&info)?,
            (_, value) => {
                parts.properties.extra.insert(key, value);
            }
        }
    }
    Ok(parts)
}

fn small(n: &serde_json::Number) -> Option<u8> {
    n.as_u64().and_then(|v| u8::try_from(v).ok())
}

fn delivery_info(info: &Map<String, Value>) -> Result<DeliveryInfo, DecodeError> {
    let text = |key: &str| match info.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(envelope_err(format!("delivery_info.{key} is not a string"))),
    };
    Ok(DeliveryInfo {
        exchange: text("exchange")?,
        routing_key: text("routing_key")?,
        redelivered: info.get("redelivered") == Some(&Value::Bool(true)),
    })
}

fn envelope_value(message: &Message, info: &DeliveryInfo, delivery_tag: Option<&str>) -> Value {
    let mut top = Map::new();
    top.insert("body".into(), Value::String(BASE64.encode(&message.body)));
    top.insert(
        "content-encoding".into(),
        message.content_encoding.clone().into(),
    );
    top.insert("content-type".into(), message.content_type.clone().into());
    top.insert("headers".into(), Value::Object(message.headers.clone()));
    top.insert(
        "properties".into(),
        Value::Object(properties_map(&message.properties, info, delivery_tag)),
    );
    Value::Object(top)
}

fn properties_map(
    p: &Properties,
    info: &DeliveryInfo,
    delivery_tag: Option<&str>,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(id) = &p.correlation_id {
        out.insert("correlation_id".into(), id.clone().into());
    }
    if let Some(reply_to) = &p.reply_to {
        out.insert("reply_to".into(), reply_to.clone().into());
    }
    // Other publish keyword properties (e.g. `origin` on a retried task) come
    // right after the named ones, before kombu's own.
    for (k, v) in &p.extra {
        out.insert(k.clone(), v.clone());
    }
    if let Some(mode) = p.delivery_mode {
        out.insert("delivery_mode".into(), mode.into());
    }
    if let Some(expiration) = &p.expiration {
        out.insert("expiration".into(), expiration.clone().into());
    }
    let mut di = Map::new();
    di.insert("exchange".into(), info.exchange.clone().into());
    di.insert("routing_key".into(), info.routing_key.clone().into());
    if info.redelivered {
        di.insert("redelivered".into(), true.into());
    }
    out.insert("delivery_info".into(), Value::Object(di));
    // kombu's prepare_message always sets a priority (default 0).
    out.insert("priority".into(), p.priority.unwrap_or(0).into());
    out.insert("body_encoding".into(), "base64".into());
    if let Some(tag) = delivery_tag {
        out.insert("delivery_tag".into(), tag.into());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"{"body": "W1syXSwgeyJ5IjogM30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "capapp.add", "id": "b446f242-27dd-462f-9dad-cf453f38f06e"}, "properties": {"correlation_id": "b446f242-27dd-462f-9dad-cf453f38f06e", "reply_to": "80e464bc-8182-38d8-864d-eefc49ae55ac", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "0dc56939-f87b-4822-8916-e76125d6f596"}}"#;

    #[test]
    fn decodes_and_reencodes_byte_for_byte() {
        let env = decode_envelope(PLAIN.as_bytes()).unwrap();
        assert_eq!(env.routing_key, "celery");
        assert_eq!(env.message.task_name(), Some("capapp.add"));
        assert!(env.message.body.starts_with(b"[[2], {\"y\": 3}"));
        let tag = env.delivery_tag.as_deref().unwrap();
        let again = encode_envelope(&env.message, &env.exchange, &env.routing_key, tag);
        assert_eq!(String::from_utf8(again).unwrap(), PLAIN);
        assert_eq!(String::from_utf8(env.encode()).unwrap(), PLAIN);
    }

    #[test]
    fn mark_redelivered_sets_both_flags() {
        let marked = mark_redelivered(PLAIN.as_bytes()).unwrap();
        let env = decode_envelope(&marked).unwrap();
        assert!(env.redelivered);
        assert_eq!(
            env.message.headers.get("redelivered"),
            Some(&Value::Bool(true))
        );
        assert_eq!(env.encode(), marked);
    }

    #[test]
    fn raw_body_encoding_is_taken_verbatim() {
        let raw = br#"{"body": "[[], {}, {}]", "properties": {"body_encoding": null}}"#;
        let env = decode_envelope(raw).unwrap();
        assert_eq!(env.message.body, b"[[], {}, {}]");
    }
}
