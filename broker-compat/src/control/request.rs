//! A control request as `kombu.pidbox.Mailbox._publish` writes it (§6.1),
//! and the node filter of `kombu.pidbox.Node.handle_message`.

use serde_json::{Map, Value};

use super::matcher;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::protocol::{pyjson, Message, Properties};

/// Where the reply goes: exchange `reply.celery.pidbox`, routing key = the
/// client's oid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub exchange: String,
    pub routing_key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    pub method: String,
    /// Keyword arguments of the command, in wire order.
    pub arguments: Map<String, Value>,
    /// Node names; `None`/empty = every node (subject to `pattern`).
    pub destination: Option<Vec<String>>,
    pub pattern: Option<String>,
    /// `glob` or `pcre` (`kombu/matcher.py`).
    pub matcher: Option<String>,
    /// Present only when the client waits for replies.
    pub ticket: Option<String>,
    pub reply_to: Option<ReplyTo>,
    /// Header `clock`: the sender's Lamport clock.
    pub clock: Option<u64>,
    /// Header `expires`: float UNIX time after which the client stops
    /// listening, or 0 for none. The worker does not act on it.
    pub expires: Option<f64>,
}

impl ControlRequest {
    /// A request for every node, no reply wanted.
    pub fn new(method: &str, arguments: Map<String, Value>) -> Self {
        ControlRequest {
            method: method.to_owned(),
            arguments,
            destination: None,
            pattern: None,
            matcher: None,
            ticket: None,
            reply_to: None,
            clock: None,
            expires: None,
        }
    }

    /// Decode a pidbox message (JSON body, headers `clock`/`expires`).
    pub fn from_message(message: &Message) -> Result<Self, DecodeError> {
        if message.content_type != "application/json" {
            return Err(DecodeError::new(
                DecodeErrorKind::ContentDisallowed,
                "control requests are accepted as JSON only",
            )
            .with_content_type(&message.content_type));
        }
        let body: Value = serde_json::from_slice(&message.body).map_err(|e| {
            DecodeError::new(DecodeErrorKind::Body, format!("control request: {e}"))
        })?;
        let Value::Object(body) = body else {
            return Err(shape("body is not an object"));
        };
        let mut request = Self::from_body(body)?;
        request.clock = message.headers.get("clock").and_then(Value::as_u64);
        request.expires = message.headers.get("expires").and_then(Value::as_f64);
        Ok(request)
    }

    fn from_body(mut body: Map<String, Value>) -> Result<Self, DecodeError> {
        let method = match body.remove("method") {
            Some(Value::String(m)) => m,
            _ => return Err(DecodeError::new(DecodeErrorKind::MissingField, "no method")),
        };
        let arguments = match body.remove("arguments") {
            Some(Value::Object(a)) => a,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(shape("arguments is not an object")),
        };
        Ok(ControlRequest {
            method,
            arguments,
            destination: destination(body.remove("destination"))?,
            pattern: opt_string(body.remove("pattern")),
            matcher: opt_string(body.remove("matcher")),
            ticket: opt_string(body.remove("ticket")),
            reply_to: reply_to(body.remove("reply_to")),
            clock: None,
            expires: None,
        })
    }

    /// The body as kombu writes it: method, arguments, destination,
    /// pattern, matcher, then ticket and reply_to only when a reply is wanted.
    pub fn to_body(&self) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("method".into(), Value::from(self.method.as_str()));
        body.insert("arguments".into(), Value::Object(self.arguments.clone()));
        body.insert(
            "destination".into(),
            self.destination
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        body.insert("pattern".into(), opt_value(&self.pattern));
        body.insert("matcher".into(), opt_value(&self.matcher));
        if let (Some(ticket), Some(reply_to)) = (&self.ticket, &self.reply_to) {
            body.insert("ticket".into(), Value::from(ticket.as_str()));
            let mut rt = Map::new();
            rt.insert("exchange".into(), Value::from(reply_to.exchange.as_str()));
            rt.insert(
                "routing_key".into(),
                Value::from(reply_to.routing_key.as_str()),
            );
            body.insert("reply_to".into(), Value::Object(rt));
        }
        pyjson::to_vec(&body)
    }

    /// The message kombu publishes: this body, headers `{"clock": clock,
    /// "expires": expires or 0}`, persistent, priority 0, JSON.
    pub fn to_message(&self, clock: u64, expires: Option<f64>) -> Message {
        let mut headers = Map::new();
        headers.insert("clock".into(), Value::from(clock));
        headers.insert(
            "expires".into(),
            expires.map(Value::from).unwrap_or(Value::from(0)),
        );
        Message {
            body: self.to_body(),
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            headers,
            properties: Properties {
                delivery_mode: Some(2),
                priority: Some(0),
                ..Properties::default()
            },
        }
    }

    /// Whether `node` should act on this request (`Node.handle_message`):
    /// a non-empty destination must name it; otherwise pattern + matcher,
    /// when both are set, must match it; otherwise every node acts.
    pub fn is_for(&self, node: &str) -> bool {
        if let Some(dest) = self.destination.as_ref().filter(|d| !d.is_empty()) {
            return dest.iter().any(|d| d == node);
        }
        match (non_empty(&self.pattern), non_empty(&self.matcher)) {
            (Some(pattern), Some(matcher)) => matcher::matches(matcher, pattern, node),
            _ => true,
        }
    }

    /// Whether the sender waits for a reply (kombu replies iff `reply_to`).
    pub fn wants_reply(&self) -> bool {
        self.reply_to.is_some()
    }
}

fn destination(v: Option<Value>) -> Result<Option<Vec<String>>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        // kombu tests `hostname in destination`; a bare string is one name.
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(Value::Array(items)) => Ok(Some(
            items
                .into_iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
        )),
        Some(_) => Err(shape("destination is not a list")),
    }
}

fn reply_to(v: Option<Value>) -> Option<ReplyTo> {
    let Some(Value::Object(mut rt)) = v else {
        return None;
    };
    Some(ReplyTo {
        exchange: opt_string(rt.remove("exchange")).unwrap_or_default(),
        routing_key: opt_string(rt.remove("routing_key"))?,
    })
}

fn opt_string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn opt_value(v: &Option<String>) -> Value {
    v.as_deref().map(Value::from).unwrap_or(Value::Null)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn shape(detail: &str) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::BodyShape,
        format!("control request: {detail}"),
    )
}
