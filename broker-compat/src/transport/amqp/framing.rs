//! A kombu [`Message`] as AMQP basic properties + body, and back (spec §3.1).
//!
//! The body is the raw serialized bytes (no envelope, no base64). Content
//! type/encoding, delivery mode, priority, correlation id, reply-to and
//! expiration are basic properties; `Message.headers` is the
//! `application_headers` table. The remaining basic properties (`message_id`,
//! `timestamp`, `type`, `user_id`, `app_id`, `cluster_id`) travel through
//! `Properties.extra` under kombu's names; other `extra` keys have no AMQP
//! slot and are not sent (kombu drops them too).

use lapin::types::ShortString;
use lapin::BasicProperties;
use serde_json::{Map, Value};

use super::headers::{from_field_table, to_field_table};
use super::names::short;
use crate::protocol::{Message, Properties};
use crate::Result;

/// The basic properties kombu sets for `message`.
pub fn to_basic_properties(message: &Message) -> Result<BasicProperties> {
    let p = &message.properties;
    // kombu always sends the headers table, even when empty.
    let mut props = BasicProperties::default().with_headers(to_field_table(&message.headers)?);
    if !message.content_type.is_empty() {
        props = props.with_content_type(short("content_type", &message.content_type)?);
    }
    if !message.content_encoding.is_empty() {
        props = props.with_content_encoding(short("content_encoding", &message.content_encoding)?);
    }
    if let Some(mode) = p.delivery_mode {
        props = props.with_delivery_mode(mode);
    }
    if let Some(priority) = p.priority {
        props = props.with_priority(priority);
    }
    if let Some(id) = &p.correlation_id {
        props = props.with_correlation_id(short("correlation_id", id)?);
    }
    if let Some(reply_to) = &p.reply_to {
        props = props.with_reply_to(short("reply_to", reply_to)?);
    }
    if let Some(expiration) = &p.expiration {
        props = props.with_expiration(short("expiration", expiration)?);
    }
    with_extra(props, &p.extra)
}

fn with_extra(mut props: BasicProperties, extra: &Map<String, Value>) -> Result<BasicProperties> {
    let text = |key: &str| -> Result<Option<ShortString>> {
        extra
            .get(key)
            .and_then(Value::as_str)
            .map(|s| short(key, s))
            .transpose()
    };
    if let Some(v) = text("message_id")? {
        props = props.with_message_id(v);
    }
    if let Some(ts) = extra.get("timestamp").and_then(Value::as_u64) {
        props = props.with_timestamp(ts);
    }
    if let Some(v) = text("type")? {
        props = props.with_type(v);
    }
    if let Some(v) = text("user_id")? {
        props = props.with_user_id(v);
    }
    if let Some(v) = text("app_id")? {
        props = props.with_app_id(v);
    }
    if let Some(v) = text("cluster_id")? {
        props = props.with_cluster_id(v);
    }
    Ok(props)
}

/// The kombu message a delivery carries.
pub fn to_message(props: &BasicProperties, body: Vec<u8>) -> Message {
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    let mut extra = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            extra.insert(key.to_owned(), v);
        }
    };
    put("message_id", text(props.message_id()).map(Value::from));
    put("timestamp", props.timestamp().map(Value::from));
    put("type", text(props.kind()).map(Value::from));
    put("user_id", text(props.user_id()).map(Value::from));
    put("app_id", text(props.app_id()).map(Value::from));
    put("cluster_id", text(props.cluster_id()).map(Value::from));
    Message {
        body,
        content_type: text(props.content_type()).unwrap_or_default(),
        content_encoding: text(props.content_encoding()).unwrap_or_default(),
        headers: props
            .headers()
            .as_ref()
            .map(from_field_table)
            .unwrap_or_default(),
        properties: Properties {
            correlation_id: text(props.correlation_id()),
            reply_to: text(props.reply_to()),
            delivery_mode: *props.delivery_mode(),
            priority: *props.priority(),
            expiration: text(props.expiration()),
            extra,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn properties_round_trip() {
        let Value::Object(headers) = json!({"id": "x", "retries": 0, "eta": null}) else {
            unreachable!()
        };
        let Value::Object(extra) = json!({"message_id": "m", "timestamp": 17, "app_id": "a"})
        else {
            unreachable!()
        };
        let message = Message {
            body: b"[[], {}, {}]".to_vec(),
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            headers,
            properties: Properties {
                correlation_id: Some("x".into()),
                reply_to: Some("r".into()),
                delivery_mode: Some(2),
                priority: Some(0),
                expiration: Some("120000".into()),
                extra,
            },
        };
        let props = to_basic_properties(&message).unwrap();
        assert_eq!(to_message(&props, message.body.clone()), message);
    }
}
