//! A decoded Celery task ([`TaskMessage`]), always in the protocol 2 model,
//! and its encoding back to a kombu [`Message`] (spec §1.1–§1.5).

use serde_json::{Map, Value};

use super::body::{from_map_body, Embed, TaskBody};
use super::compression::{self, Compression};
use super::headers::TaskHeaders;
use super::serializer::{deserialize, AcceptContent, Decoded, Serializer};
use super::time::to_isoformat;
use super::{pyjson, Message, Properties};
use crate::error::{DecodeError, DecodeErrorKind, Error};

/// Redis cannot hold a string above 512 MiB, so no real message is larger;
/// the default also bounds what a compressed body may expand to.
pub const DEFAULT_MAX_BODY_SIZE: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// Legacy: everything in a map body, headers empty.
    V1,
    /// Celery 4+ default: task fields in headers, body `[args, kwargs, embed]`.
    #[default]
    V2,
}

/// How to decode bodies: what content is accepted and how large it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    pub accept: AcceptContent,
    /// Limit on the body, before and after decompression (`None` = no limit).
    pub max_body_size: Option<usize>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            accept: AcceptContent::default(),
            max_body_size: Some(DEFAULT_MAX_BODY_SIZE),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    pub protocol: ProtocolVersion,
    pub serializer: Serializer,
    pub compression: Option<Compression>,
}

/// A Celery task, normalised to protocol 2 whatever it arrived as.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The protocol it arrived in (hybrid messages count as V2).
    pub protocol: ProtocolVersion,
    pub headers: TaskHeaders,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub embed: Embed,
    pub properties: Properties,
    /// Protocol 1 `utc` flag: false means naive times were local to the
    /// sender. Celery 5 always sends true; naive times are read as UTC anyway.
    pub utc: bool,
}

impl TaskMessage {
    /// Decode a kombu message as Celery's worker does (§1.1): protocol 2 when
    /// the `task` header exists, else a map body with `task` is protocol 1,
    /// else [`DecodeErrorKind::NotATask`]. Errors carry the task id/name when known.
    pub fn decode(msg: &Message, opts: &DecodeOptions) -> Result<TaskMessage, DecodeError> {
        Self::decode_inner(msg, opts).map_err(|e| {
            e.with_task(msg.task_id(), msg.task_name())
                .with_content_type(&msg.content_type)
        })
    }

    fn decode_inner(msg: &Message, opts: &DecodeOptions) -> Result<TaskMessage, DecodeError> {
        let is_v2 = msg.headers.contains_key("task");
        // Celery decodes the body first even for protocol 2 (to look for a
        // hybrid map body), so body errors win over header errors.
        let payload = decode_payload(msg, opts)?;
        match payload {
            Decoded::Value(Value::Object(map)) if is_v2 && map.contains_key("args") => {
                Self::from_map(&map, msg, ProtocolVersion::V2)
            }
            Decoded::Value(v) if is_v2 => {
                let headers = TaskHeaders::from_map(&msg.headers)?;
                let body = TaskBody::from_v2(&v)
                    .map_err(|e| e.with_task(Some(&headers.id), Some(&headers.task)))?;
                Ok(Self::assemble(
                    ProtocolVersion::V2,
                    headers,
                    body,
                    msg.properties.clone(),
                    true,
                ))
            }
            Decoded::Raw(raw) if is_v2 => Err(DecodeError::new(
                DecodeErrorKind::BodyShape,
                format!("body is {} raw bytes, not [args, kwargs, embed]", raw.len()),
            )),
            Decoded::Value(Value::Object(map)) if map.contains_key("task") => {
                Self::from_map(&map, msg, ProtocolVersion::V1)
            }
            _ => Err(DecodeError::new(
                DecodeErrorKind::NotATask,
                "no task header and the body is not a protocol 1 task",
            )),
        }
    }

    fn from_map(
        body: &Map<String, Value>,
        msg: &Message,
        protocol: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let name = body.get("task").and_then(Value::as_str);
        let id = body.get("id").and_then(Value::as_str);
        let (header_map, task_body, utc) =
            from_map_body(body, &msg.headers).map_err(|e| e.with_task(id, name))?;
        let headers = TaskHeaders::from_map(&header_map).map_err(|e| e.with_task(id, name))?;
        Ok(Self::assemble(
            protocol,
            headers,
            task_body,
            msg.properties.clone(),
            utc,
        ))
    }

    fn assemble(
        protocol: ProtocolVersion,
        headers: TaskHeaders,
        body: TaskBody,
        properties: Properties,
        utc: bool,
    ) -> Self {
        TaskMessage {
            protocol,
            headers,
            args: body.args,
            kwargs: body.kwargs,
            embed: body.embed,
            properties,
            utc,
        }
    }

    pub fn id(&self) -> &str {
        &self.headers.id
    }

    pub fn task(&self) -> &str {
        &self.headers.task
    }

    /// The body as protocol 2 `[args, kwargs, embed]`.
    pub fn body(&self) -> TaskBody {
        TaskBody {
            args: self.args.clone(),
            kwargs: self.kwargs.clone(),
            embed: self.embed.clone(),
        }
    }

    /// Encode as Celery's client would: protocol 2 headers in Celery's order
    /// (or a protocol 1 map body), serialized and optionally compressed.
    pub fn encode(&self, opts: &EncodeOptions) -> Result<Message, Error> {
        let (mut headers, value) = match opts.protocol {
            ProtocolVersion::V2 => {
                let mut h = self.headers.clone();
                h.compression = None;
                (h.to_map(), self.body().to_v2())
            }
            ProtocolVersion::V1 => (Map::new(), self.v1_body()),
        };
        let mut body = opts.serializer.serialize(&value)?;
        if let Some(c) = opts.compression {
            body = c.compress(&body)?;
            // kombu's publish adds it after every other header.
            let redelivered = headers.remove("redelivered");
            headers.insert("compression".into(), c.content_type().into());
            if let Some(r) = redelivered {
                headers.insert("redelivered".into(), r);
            }
        }
        Ok(Message {
            body,
            content_type: opts.serializer.content_type().into(),
            content_encoding: opts.serializer.content_encoding().into(),
            headers,
            properties: self.publish_properties(),
        })
    }

    /// Properties as `send_task` sets them: correlation id = task id,
    /// persistent delivery, priority 0 unless given.
    fn publish_properties(&self) -> Properties {
        let mut p = self.properties.clone();
        p.correlation_id = Some(self.headers.id.clone());
        p.delivery_mode = p.delivery_mode.or(Some(2));
        p.priority = p.priority.or(Some(0));
        p
    }

    /// `as_task_v1`'s body map.
    fn v1_body(&self) -> Value {
        let h = &self.headers;
        let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
        let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or(Value::Null, |t| to_isoformat(t).into())
        };
        let limit = |x: Option<f64>| x.map_or(Value::Null, pyjson::number);
        let list = |l: &Option<Vec<Value>>| l.clone().map_or(Value::Null, Value::Array);
        let fields: [(&str, Value); 15] = [
            ("task", h.task.clone().into()),
            ("id", h.id.clone().into()),
            ("args", Value::Array(self.args.clone())),
            ("kwargs", Value::Object(self.kwargs.clone())),
            ("group", opt(&h.group)),
            (
                "group_index",
                h.group_index.map_or(Value::Null, Value::from),
            ),
            ("retries", h.retries.into()),
            ("eta", time(&h.eta)),
            ("expires", time(&h.expires)),
            ("utc", true.into()),
            ("callbacks", list(&self.embed.callbacks)),
            ("errbacks", list(&self.embed.errbacks)),
            (
                "timelimit",
                Value::Array(vec![limit(h.timelimit.0), limit(h.timelimit.1)]),
            ),
            ("taskset", opt(&h.group)),
            ("chord", self.embed.chord.clone().unwrap_or(Value::Null)),
        ];
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

/// The message body deserialized as kombu's `Message.decode` does: size
/// limit, decompression per the `compression` header, accept check, then the
/// serializer. Also useful for event and pidbox bodies.
pub fn decode_payload(msg: &Message, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    check_size(msg.body.len(), opts.max_body_size)?;
    let decompressed;
    let body = match msg.headers.get("compression") {
        None | Some(Value::Null) => msg.body.as_slice(),
        Some(Value::String(c)) => {
            decompressed = compression::decompress(c, &msg.body, opts.max_body_size)?;
            decompressed.as_slice()
        }
        Some(other) => {
            return Err(DecodeError::new(
                DecodeErrorKind::Compression,
                format!(
                    "compression header is not a string: {}",
                    pyjson::to_string(other)
                ),
            ))
        }
    };
    deserialize(body, &msg.content_type, &opts.accept)
}

fn check_size(len: usize, max: Option<usize>) -> Result<(), DecodeError> {
    match max {
        Some(max) if len > max => Err(DecodeError::new(
            DecodeErrorKind::Oversized,
            format!("body of {len} bytes exceeds the limit of {max}"),
        )),
        _ => Ok(()),
    }
}
