//! The crate's one error type. Callers ask [`Error::is_transient`] to decide
//! whether to retry (broker/backend connectivity) or give up (bad data, bad config).

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message (or result, or event) could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Something could not be encoded (e.g. a serializer that is not compiled in).
    #[error("encode error: {0}")]
    Encode(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A broker or backend URL that cannot be used. The URL is already masked.
    #[error("invalid url {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A setting that is not valid (names the setting).
    #[error("invalid setting {setting}: {reason}")]
    Config { setting: String, reason: String },
    /// The connection or channel was closed under us.
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// The peer answered something that breaks the protocol (e.g. a schema we do not know).
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl Error {
    /// True when retrying the same operation later may succeed (lost
    /// connection, timeout, server restarting); false for bad input or config.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
                            | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
                    )
            }
            Error::Amqp(e) => amqp_is_transient(e),
            Error::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            Error::Closed(_) | Error::Timeout(_) => true,
            Error::Decode(_)
            | Error::Encode(_)
            | Error::InvalidUrl { .. }
            | Error::Config { .. }
            | Error::Protocol(_) => false,
        }
    }
}

/// AMQP errors the broker answered with a reply code that says "your request
/// is wrong" (PRECONDITION_FAILED on a redeclare with other arguments,
/// NOT_FOUND, ACCESS_REFUSED, NO_ROUTE, NOT_ALLOWED, NOT_IMPLEMENTED...) do
/// not heal by retrying; lost connections, timeouts and forced closes do.
fn amqp_is_transient(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    match e.kind() {
        lapin::ErrorKind::InvalidChannel(_)
        | lapin::ErrorKind::ParsingError(_)
        | lapin::ErrorKind::SerialisationError(_) => false,
        lapin::ErrorKind::ProtocolError(err) => !matches!(
            err.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::NOROUTE
                    | AMQPSoftError::CONTENTTOOLARGE
            ) | AMQPErrorKind::Hard(
                AMQPHardError::NOTALLOWED
                    | AMQPHardError::NOTIMPLEMENTED
                    | AMQPHardError::INVALIDPATH
            )
        ),
        _ => true,
    }
}

/// Why a message could not be decoded. The variants are a fixed set so they
/// can label metrics (`kind.as_str()`), and each maps to what Celery does with
/// such a message ([`DecodeErrorKind::disposition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// The transport envelope (Redis JSON text) is not valid JSON / not the expected shape.
    Envelope,
    /// `body_encoding: base64` but the body is not valid base64.
    Base64,
    /// Compressed body that fails to decompress, or an unknown compression.
    Compression,
    /// The content type is unknown to us.
    UnknownContentType,
    /// The content type is known but not accepted (pickle unless enabled, yaml/msgpack unless enabled).
    ContentDisallowed,
    /// The body bytes are not valid UTF-8 where text is required.
    Utf8,
    /// The body does not parse with its serializer.
    Body,
    /// The body parses but has the wrong shape (not `[args, kwargs, embed]`, kwargs not a map...).
    BodyShape,
    /// A required field (`id`, `task`) is missing or not a string.
    MissingField,
    /// A header has an invalid value (unparsable `eta`/`expires`, bad `timelimit`...).
    Header,
    /// kombu JSON `{"__type__": ...}` with a type we do not know.
    UnknownType,
    /// Neither a protocol 2 nor a protocol 1 task message.
    NotATask,
    /// Larger than the configured maximum.
    Oversized,
}

/// What a Celery 5.7 worker does with a message that failed to decode (spec §7.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Acknowledge (drop) it: body decode errors.
    Ack,
    /// Reject without requeue (dropped): unknown messages, refused content, invalid headers.
    Reject,
}

impl DecodeErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::Envelope => "envelope",
            DecodeErrorKind::Base64 => "base64",
            DecodeErrorKind::Compression => "compression",
            DecodeErrorKind::UnknownContentType => "unknown_content_type",
            DecodeErrorKind::ContentDisallowed => "content_disallowed",
            DecodeErrorKind::Utf8 => "utf8",
            DecodeErrorKind::Body => "body",
            DecodeErrorKind::BodyShape => "body_shape",
            DecodeErrorKind::MissingField => "missing_field",
            DecodeErrorKind::Header => "header",
            DecodeErrorKind::UnknownType => "unknown_type",
            DecodeErrorKind::NotATask => "not_a_task",
            DecodeErrorKind::Oversized => "oversized",
        }
    }

    /// Celery acks undecodable bodies and rejects (requeue=false) everything
    /// else it cannot turn into a request. Either way the message is gone: it
    /// is never left unacked.
    pub fn disposition(self) -> Disposition {
        match self {
            DecodeErrorKind::Body
            | DecodeErrorKind::Utf8
            | DecodeErrorKind::Base64
            | DecodeErrorKind::Compression
            | DecodeErrorKind::UnknownType
            | DecodeErrorKind::BodyShape => Disposition::Ack,
            _ => Disposition::Reject,
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed decode error with enough context to log and count.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot decode message{}{}: {kind}: {detail}", .task_id.as_deref().map(|i| format!(" id={i}")).unwrap_or_default(), .task_name.as_deref().map(|n| format!(" task={n}")).unwrap_or_default())]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub detail: String,
    /// The task id when it could be read before the failure.
    pub task_id: Option<String>,
    /// The task name when it could be read before the failure.
    pub task_name: Option<String>,
    pub content_type: Option<String>,
}

impl DecodeError {
    pub fn new(kind: DecodeErrorKind, detail: impl Into<String>) -> Self {
        DecodeError {
            kind,
            detail: detail.into(),
            task_id: None,
            task_name: None,
            content_type: None,
        }
    }

    pub fn with_task(mut self, id: Option<&str>, name: Option<&str>) -> Self {
        self.task_id = self.task_id.or(id.map(str::to_owned));
        self.task_name = self.task_name.or(name.map(str::to_owned));
        self
    }

    pub fn with_content_type(mut self, ct: &str) -> Self {
        self.content_type = Some(ct.to_owned());
        self
    }
}
