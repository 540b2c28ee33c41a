//! Reply values (`celery/worker/control.py` `ok`/`nok`, kombu's error
//! reply) and the reply message `{node: value}` (§6.2).

use serde_json::{Map, Value};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::protocol::{pyjson, Message, Properties};

/// `{"ok": x}`.
pub fn ok(x: impl Into<Value>) -> Value {
    single("ok", x.into())
}

/// `{"error": x}`.
pub fn nok(x: impl Into<Value>) -> Value {
    single("error", x.into())
}

/// What kombu answers for a method no handler exists for: the repr of the
/// `KeyError`, e.g. `{"error": "KeyError('no_such_command')"}`.
pub fn unknown_command(method: &str) -> Value {
    nok(format!("KeyError({})", pyjson::str_repr(method)))
}

fn single(key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_owned(), value);
    Value::Object(m)
}

/// One reply as received by a client: `{node: value}` plus its headers.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlReply {
    /// The `{node: value}` body (one entry in practice).
    pub body: Map<String, Value>,
    pub ticket: Option<String>,
    pub clock: Option<u64>,
}

impl ControlReply {
    pub fn from_message(message: &Message) -> Result<Self, DecodeError> {
        let body: Value = serde_json::from_slice(&message.body)
            .map_err(|e| DecodeError::new(DecodeErrorKind::Body, format!("control reply: {e}")))?;
        let Value::Object(body) = body else {
            return Err(DecodeError::new(
                DecodeErrorKind::BodyShape,
                "control reply is not a {node: value} object",
            ));
        };
        Ok(ControlReply {
            body,
            ticket: message
                .headers
                .get("ticket")
                .and_then(Value::as_str)
                .map(str::to_owned),
            clock: message.headers.get("clock").and_then(Value::as_u64),
        })
    }

    /// The replying node name.
    pub fn node(&self) -> Option<&str> {
        self.body.keys().next().map(String::as_str)
    }

    /// The reply value of the (first) node.
    pub fn value(&self) -> Option<&Value> {
        self.body.values().next()
    }
}

/// The message a node replies with: body `{node: value}`, headers
/// `{"ticket", "clock"}`, transient.
pub fn reply_message(node: &str, value: Value, ticket: Option<&str>, clock: u64) -> Message {
    let mut body = Map::new();
    body.insert(node.to_owned(), value);
    let mut headers = Map::new();
    headers.insert(
        "ticket".into(),
        ticket.map(Value::from).unwrap_or(Value::Null),
    );
    headers.insert("clock".into(), Value::from(clock));
    Message {
        body: pyjson::to_vec(&body),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        headers,
        properties: Properties {
            delivery_mode: Some(1),
            priority: Some(0),
            ..Properties::default()
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn helpers_match_celery() {
        assert_eq!(ok("pong"), json!({"ok": "pong"}));
        assert_eq!(nok("unknown task"), json!({"error": "unknown task"}));
        assert_eq!(
            unknown_command("no_such_command"),
            json!({"error": "KeyError('no_such_command')"})
        );
    }

    #[test]
    fn reply_message_bytes() {
        let m = reply_message("celery@vm", ok("pong"), Some("t"), 5);
        assert_eq!(m.body, br#"{"celery@vm": {"ok": "pong"}}"#);
        assert_eq!(
            pyjson::to_string(&m.headers),
            r#"{"ticket": "t", "clock": 5}"#
        );
        assert_eq!(m.properties.delivery_mode, Some(1));
    }
}
