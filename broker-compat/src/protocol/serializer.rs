//! Serializers and the accept list (spec §1.6, `kombu/serialization.py`).
//!
//! Like Celery's default `accept_content = ['json']`, only JSON is accepted
//! unless configured otherwise. msgpack and yaml need the crate features of
//! the same name. Pickle is never decoded: unpickling runs arbitrary code
//! chosen by whoever can publish to the broker, so a pickle message is
//! refused as [`DecodeErrorKind::ContentDisallowed`] (what Celery does with
//! content outside `accept_content`).

use serde_json::Value;

use super::{kombu_json, pyjson};
use crate::error::{DecodeError, DecodeErrorKind, Error};

/// Content types kombu always passes through undecoded (`TRUSTED_CONTENT`).
const TRUSTED_RAW: [&str; 2] = ["application/data", "application/text"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Serializer {
    #[default]
    Json,
    Msgpack,
    Yaml,
    Pickle,
}

impl Serializer {
    pub const ALL: [Serializer; 4] = [
        Serializer::Json,
        Serializer::Msgpack,
        Serializer::Yaml,
        Serializer::Pickle,
    ];

    /// The name used in Celery settings (`task_serializer`, `accept_content`).
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::Msgpack => "msgpack",
            Serializer::Yaml => "yaml",
            Serializer::Pickle => "pickle",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Serializer::Json => "application/json",
            Serializer::Msgpack => "application/x-msgpack",
            Serializer::Yaml => "application/x-yaml",
            Serializer::Pickle => "application/x-python-serialize",
        }
    }

    pub fn content_encoding(self) -> &'static str {
        match self {
            Serializer::Json | Serializer::Yaml => "utf-8",
            Serializer::Msgpack | Serializer::Pickle => "binary",
        }
    }

    /// A setting value: the name (`json`) or the content type (`application/json`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name || s.content_type() == name)
    }

    pub fn from_content_type(content_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.content_type().eq_ignore_ascii_case(content_type.trim()))
    }

    /// Serialize a value. JSON is byte-identical to kombu's `json.dumps`.
    pub fn serialize(self, value: &Value) -> Result<Vec<u8>, Error> {
        match self {
            Serializer::Json => Ok(pyjson::to_vec(value)),
            #[cfg(feature = "msgpack")]
            Serializer::Msgpack => {
                rmp_serde::to_vec(value).map_err(|e| Error::Encode(format!("msgpack: {e}")))
            }
            #[cfg(feature = "yaml")]
            Serializer::Yaml => serde_yaml::to_string(value)
                .map(String::into_bytes)
                .map_err(|e| Error::Encode(format!("yaml: {e}"))),
            Serializer::Pickle => Err(Error::Encode(
                "pickle is not supported: it is unsafe (arbitrary code on decode); use json".into(),
            )),
            #[allow(unreachable_patterns)]
            other => Err(Error::Encode(format!(
                "serializer {} is not compiled in (enable the crate feature {0})",
                other.name()
            ))),
        }
    }
}

/// The content types a consumer accepts (Celery `accept_content`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptContent {
    allowed: Vec<Serializer>,
}

impl Default for AcceptContent {
    /// JSON only, as Celery's default.
    fn default() -> Self {
        AcceptContent {
            allowed: vec![Serializer::Json],
        }
    }
}

impl AcceptContent {
    /// Parse `accept_content` entries (names or content types). Pickle and
    /// serializers that are not compiled in are configuration errors, so a
    /// worker refuses to start rather than silently dropping such messages.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Error> {
        let mut allowed = Vec::new();
        for entry in entries {
            let entry = entry.as_ref();
            let s = Serializer::from_name(entry)
                .ok_or_else(|| config(format!("unknown serializer {entry:?}")))?;
            if !compiled_in(s) {
                return Err(config(format!(
                    "{} is not supported by this build",
                    s.name()
                )));
            }
            if !allowed.contains(&s) {
                allowed.push(s);
            }
        }
        Ok(AcceptContent { allowed })
    }

    pub fn accepts(&self, s: Serializer) -> bool {
        self.allowed.contains(&s)
    }

    pub fn serializers(&self) -> &[Serializer] {
        &self.allowed
    }
}

fn config(reason: String) -> Error {
    Error::Config {
        setting: "accept_content".into(),
        reason,
    }
}

fn compiled_in(s: Serializer) -> bool {
    match s {
        Serializer::Json => true,
        Serializer::Msgpack => cfg!(feature = "msgpack"),
        Serializer::Yaml => cfg!(feature = "yaml"),
        Serializer::Pickle => false,
    }
}

/// A deserialized body.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A structured value (kombu JSON typed objects left as they are).
    Value(Value),
    /// Bytes kombu returns undecoded: `application/data`, `application/text`, or an empty body.
    Raw(Vec<u8>),
}

/// kombu's `loads`: accept check first, then decode. An empty content type
/// means `application/data`.
pub fn deserialize(
    body: &[u8],
    content_type: &str,
    accept: &AcceptContent,
) -> Result<Decoded, DecodeError> {
    let ct = if content_type.is_empty() {
        "application/data"
    } else {
        content_type
    };
    if TRUSTED_RAW.iter().any(|t| t.eq_ignore_ascii_case(ct)) {
        return Ok(Decoded::Raw(body.to_vec()));
    }
    let serializer = Serializer::from_content_type(ct).ok_or_else(|| {
        DecodeError::new(
            DecodeErrorKind::UnknownContentType,
            format!("unknown content type {ct:?}"),
        )
    })?;
    if !accept.accepts(serializer) {
        return Err(DecodeError::new(
            DecodeErrorKind::ContentDisallowed,
            refusal(serializer),
        ));
    }
    if body.is_empty() {
        return Ok(Decoded::Raw(Vec::new()));
    }
    decode_accepted(serializer, body).map(Decoded::Value)
}

fn refusal(s: Serializer) -> String {
    let why = if s == Serializer::Pickle {
        " (pickle is never accepted: unpickling runs arbitrary code)"
    } else {
        ""
    };
    format!(
        "Refusing to deserialize untrusted content of type {} ({}){why}",
        s.name(),
        s.content_type()
    )
}

fn decode_accepted(s: Serializer, body: &[u8]) -> Result<Value, DecodeError> {
    let body_err = |e: String| DecodeError::new(DecodeErrorKind::Body, e);
    let value: Value = match s {
        Serializer::Json => {
            let text = std::str::from_utf8(body).map_err(|e| {
                DecodeError::new(DecodeErrorKind::Utf8, format!("body is not UTF-8: {e}"))
            })?;
            serde_json::from_str(text).map_err(|e| body_err(format!("invalid JSON body: {e}")))?
        }
        #[cfg(feature = "msgpack")]
        Serializer::Msgpack => rmp_serde::from_slice(body)
            .map_err(|e| body_err(format!("invalid msgpack body: {e}")))?,
        #[cfg(feature = "yaml")]
        Serializer::Yaml => {
            serde_yaml::from_slice(body).map_err(|e| body_err(format!("invalid yaml body: {e}")))?
        }
        #[allow(unreachable_patterns)]
        other => {
            return Err(DecodeError::new(
                DecodeErrorKind::ContentDisallowed,
                refusal(other),
            ));
        }
    };
    // kombu JSON typed objects are decoded by every kombu JSON load; an
    // unknown `__type__` fails the whole body there too.
    if s == Serializer::Json {
        kombu_json::validate(&value)?;
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_only_default() {
        let accept = AcceptContent::default();
        let ok = deserialize(b"[1]", "application/json", &accept).unwrap();
        assert_eq!(ok, Decoded::Value(serde_json::json!([1])));
        let pickle =
            deserialize(b"\x80\x04N.", "application/x-python-serialize", &accept).unwrap_err();
        assert_eq!(pickle.kind, DecodeErrorKind::ContentDisallowed);
        assert!(
            pickle.detail.contains("arbitrary code"),
            "{}",
            pickle.detail
        );
        let yaml = deserialize(b"- 1", "application/x-yaml", &accept).unwrap_err();
        assert_eq!(yaml.kind, DecodeErrorKind::ContentDisallowed);
        let unknown = deserialize(b"x", "text/plain", &accept).unwrap_err();
        assert_eq!(unknown.kind, DecodeErrorKind::UnknownContentType);
    }

    #[test]
    fn trusted_raw_types_pass_through() {
        let accept = AcceptContent::default();
        assert_eq!(
            deserialize(b"\xff", "application/data", &accept).unwrap(),
            Decoded::Raw(vec![0xff])
        );
        assert_eq!(
            deserialize(b"hi", "", &accept).unwrap(),
            Decoded::Raw(b"hi".to_vec())
        );
    }

    #[test]
    fn accept_content_parses_names_and_refuses_pickle() {
        let a = AcceptContent::parse(&["json", "application/json"]).unwrap();
        assert_eq!(a.serializers(), &[Serializer::Json]);
        assert!(AcceptContent::parse(&["pickle"]).is_err());
        assert!(AcceptContent::parse(&["toml"]).is_err());
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_round_trips_when_enabled() {
        let accept = AcceptContent::parse(&["msgpack"]).unwrap();
        let v = serde_json::json!([[1, "a"], {"k": 2.5}, {}]);
        let bytes = Serializer::Msgpack.serialize(&v).unwrap();
        assert_eq!(
            deserialize(&bytes, "application/x-msgpack", &accept).unwrap(),
            Decoded::Value(v)
        );
    }
}
