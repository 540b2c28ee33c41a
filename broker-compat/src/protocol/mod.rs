//! The Celery task message, transport-neutral and pure (no I/O).
//!
//! A [`Message`] is what kombu moves: serialized body bytes plus content
//! type/encoding, headers and properties. A [`TaskMessage`] is a decoded
//! Celery task, always normalised to the protocol 2 model (protocol 1 bodies
//! are converted on decode, as `celery/worker/strategy.py::proto1_to_proto2` does).
//!
//! Spec: `shared/spec/celery-wire.md` §1.

pub mod body;
mod builder;
pub mod compression;
pub mod envelope;
pub mod headers;
pub mod kombu_json;
pub mod message;
pub mod pyjson;
pub mod serializer;
pub mod time;

pub use body::{Embed, TaskBody};
pub use compression::Compression;
pub use envelope::{decode_envelope, encode_envelope, mark_redelivered, Envelope};
pub use headers::{TaskHeaders, TimeLimit};
pub use kombu_json::KombuValue;
pub use message::{decode_payload, DecodeOptions, EncodeOptions, ProtocolVersion, TaskMessage};
pub use serializer::{AcceptContent, Decoded, Serializer};

use serde_json::{Map, Value};

/// Fields of kombu's `properties` that Celery sets (§1.2). Unknown
/// properties are kept in `extra` so they survive a round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    /// Per-message TTL in milliseconds as a decimal string (AMQP `expiration`).
    pub expiration: Option<String>,
    pub extra: Map<String, Value>,
}

/// Where a message came from, as the broker reports it on receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// `""` for the default (anonymous) exchange, which Celery uses for tasks.
    pub exchange: String,
    /// The queue name for tasks.
    pub routing_key: String,
    pub redelivered: bool,
}

/// A kombu message: what every transport publishes and delivers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// Serialized (and possibly compressed) body bytes — never base64 here;
    /// the Redis transport adds and strips its base64 body encoding.
    pub body: Vec<u8>,
    pub content_type: String,
    pub content_encoding: String,
    /// Header map, in wire order.
    pub headers: Map<String, Value>,
    pub properties: Properties,
}

impl Message {
    /// The task id, from the v2 header or the correlation id.
    pub fn task_id(&self) -> Option<&str> {
        self.headers
            .get("id")
            .and_then(Value::as_str)
            .or(self.properties.correlation_id.as_deref())
    }

    /// The task name when the message is protocol 2.
    pub fn task_name(&self) -> Option<&str> {
        self.headers.get("task").and_then(Value::as_str)
    }
}
