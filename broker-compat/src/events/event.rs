//! One Celery event: a JSON object whose keys stay in the order they were
//! built or received, so what we send matches Celery byte for byte and what
//! we receive re-serializes to the bytes it came as.
//!
//! Celery builds every event as `Event(type, hostname=, utcoffset=, pid=,
//! clock=, **fields)` (`celery/events/dispatcher.py`), and `Event()` appends
//! `timestamp` then `type` — hence [`Event::stamp`]'s order.

use serde_json::{Map, Value};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::protocol::pyjson;

/// Keys the dispatcher fills in at send time; a constructor never sets them.
const STAMPED: [&str; 6] = ["hostname", "utcoffset", "pid", "clock", "timestamp", "type"];

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    fields: Map<String, Value>,
}

/// What the dispatcher stamps on every event (§5.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp<'a> {
    pub hostname: &'a str,
    pub utcoffset: f64,
    pub pid: u32,
    pub clock: u64,
    /// Float UNIX seconds.
    pub timestamp: f64,
}

impl Event {
    /// An event of `event_type` with no other fields yet.
    pub fn new(event_type: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("type".to_owned(), Value::from(event_type));
        Event { fields }
    }

    /// Add (or replace) a type-specific field, keeping insertion order.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// Take a decoded event object as received. Only `type` is required.
    pub fn from_map(fields: Map<String, Value>) -> Result<Self, DecodeError> {
        match fields.get("type") {
            Some(Value::String(_)) => Ok(Event { fields }),
            _ => Err(DecodeError::new(
                DecodeErrorKind::MissingField,
                "event without a string \"type\"",
            )),
        }
    }

    /// Decode one event body, or a `task.multi` list of them (§5.1).
    pub fn parse_body(body: &[u8]) -> Result<Vec<Event>, DecodeError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| DecodeError::new(DecodeErrorKind::Body, format!("event body: {e}")))?;
        match value {
            Value::Object(map) => Ok(vec![Event::from_map(map)?]),
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::Object(map) => Event::from_map(map),
                    other => Err(not_an_event(&other)),
                })
                .collect(),
            other => Err(not_an_event(&other)),
        }
    }

    /// Put the dispatcher's fields around the type-specific ones in Celery's
    /// order: hostname, utcoffset, pid, clock, fields…, timestamp, type.
    /// A `timestamp` already present keeps its place (as in Celery's `Event()`).
    pub fn stamp(self, stamp: &Stamp<'_>) -> Event {
        let event_type = self.fields.get("type").cloned().unwrap_or(Value::Null);
        let has_timestamp = self.fields.contains_key("timestamp");
        let mut out = Map::new();
        out.insert("hostname".into(), Value::from(stamp.hostname));
        // `+ 0.0` turns -0.0 into 0.0: Python prints `0.0` for UTC.
        out.insert("utcoffset".into(), Value::from(stamp.utcoffset + 0.0));
        out.insert("pid".into(), Value::from(stamp.pid));
        out.insert("clock".into(), Value::from(stamp.clock));
        for (k, v) in self.fields {
            let keep_timestamp = has_timestamp && k == "timestamp";
            if keep_timestamp || !STAMPED.contains(&k.as_str()) {
                out.insert(k, v);
            }
        }
        if !has_timestamp {
            out.insert("timestamp".into(), Value::from(stamp.timestamp));
        }
        out.insert("type".into(), event_type);
        Event { fields: out }
    }

    pub fn event_type(&self) -> &str {
        self.fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The routing key Celery publishes this event with: `task-succeeded` → `task.succeeded`.
    pub fn routing_key(&self) -> String {
        routing_key_for(self.event_type())
    }

    pub fn hostname(&self) -> Option<&str> {
        self.fields.get("hostname").and_then(Value::as_str)
    }

    pub fn clock(&self) -> Option<u64> {
        self.fields.get("clock").and_then(Value::as_u64)
    }

    pub fn timestamp(&self) -> Option<f64> {
        self.fields.get("timestamp").and_then(Value::as_f64)
    }

    pub fn pid(&self) -> Option<u64> {
        self.fields.get("pid").and_then(Value::as_u64)
    }

    /// The task id of a `task-*` event.
    pub fn uuid(&self) -> Option<&str> {
        self.fields.get("uuid").and_then(Value::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }

    /// `json.dumps(event)`: the exact body bytes Celery would send.
    pub fn to_json(&self) -> Vec<u8> {
        pyjson::to_vec(&self.fields)
    }
}

/// Event type → routing key (`-` → `.`), as `EventDispatcher.publish` does.
pub fn routing_key_for(event_type: &str) -> String {
    event_type.replace('-', ".")
}

fn not_an_event(v: &Value) -> DecodeError {
    let what = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    DecodeError::new(DecodeErrorKind::BodyShape, format!("event body is {what}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stamp_orders_fields_like_celery() {
        let stamp = Stamp {
            hostname: "celery@vm",
            utcoffset: 0.0,
            pid: 42,
            clock: 7,
            timestamp: 1795301147.2945087,
        };
        let e = Event::new("task-succeeded")
            .with("uuid", "id")
            .with("result", "5")
            .with("runtime", 0.5)
            .stamp(&stamp);
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"hostname": "celery@vm", "utcoffset": 0.0, "pid": 42, "clock": 7, "uuid": "id", "result": "5", "runtime": 0.5, "timestamp": 1795301147.2945087, "type": "task-succeeded"}"#
        );
        assert_eq!(e.routing_key(), "task.succeeded");
    }

    #[test]
    fn parse_accepts_object_and_list_and_rejects_others() {
        assert_eq!(
            Event::parse_body(br#"{"type": "worker-online"}"#)
                .unwrap()
                .len(),
            1
        );
        let two = Event::parse_body(br#"[{"type": "a"}, {"type": "b"}]"#).unwrap();
        assert_eq!(two[1].event_type(), "b");
        for bad in [&b"5"[..], b"[1]", b"{\"x\": 1}", b"not json"] {
            assert!(Event::parse_body(bad).is_err());
        }
    }
}
