//! kombu's JSON dialect: plain JSON plus `{"__type__": T, "__value__": V}`
//! objects for Python types JSON lacks (spec §1.6, `kombu/utils/json.py`).
//!
//! Task arguments stay [`serde_json::Value`] (so re-encoding them is exact);
//! [`KombuValue`] is the typed view for code that wants the Python value.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{
    DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone, Utc,
};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use super::pyjson;
use crate::error::{DecodeError, DecodeErrorKind};

/// A JSON value with kombu's typed objects converted.
#[derive(Debug, Clone, PartialEq)]
pub enum KombuValue {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<KombuValue>),
    /// A JSON object, in wire order.
    Object(Vec<(String, KombuValue)>),
    /// `datetime`; naive values are taken as UTC.
    DateTime(DateTime<FixedOffset>),
    Date(NaiveDate),
    Time(NaiveTime),
    /// `Decimal`, kept as its exact text.
    Decimal(String),
    Uuid(Uuid),
    /// `bytes` (`__type__` `bytes` when UTF-8, `base64` otherwise).
    Bytes(Vec<u8>),
}

impl KombuValue {
    /// Convert a decoded JSON value, as kombu's `object_hook` does. An
    /// unknown `__type__` is [`DecodeErrorKind::UnknownType`]; a bad
    /// `__value__` is [`DecodeErrorKind::Body`] (kombu raises ValueError for both).
    pub fn from_json(v: &Value) -> Result<KombuValue, DecodeError> {
        Ok(match v {
            Value::Null => KombuValue::Null,
            Value::Bool(b) => KombuValue::Bool(*b),
            Value::Number(n) => KombuValue::Number(n.clone()),
            Value::String(s) => KombuValue::String(s.clone()),
            Value::Array(a) => {
                KombuValue::Array(a.iter().map(Self::from_json).collect::<Result<_, _>>()?)
            }
            Value::Object(o) => match typed_parts(o) {
                Some((ty, value)) => typed(ty, value)?,
                None => KombuValue::Object(
                    o.iter()
                        .map(|(k, x)| Ok((k.clone(), Self::from_json(x)?)))
                        .collect::<Result<_, DecodeError>>()?,
                ),
            },
        })
    }

    /// The JSON kombu writes for this value.
    pub fn to_json(&self) -> Value {
        match self {
            KombuValue::Null => Value::Null,
            KombuValue::Bool(b) => Value::Bool(*b),
            KombuValue::Number(n) => Value::Number(n.clone()),
            KombuValue::String(s) => Value::String(s.clone()),
            KombuValue::Array(a) => Value::Array(a.iter().map(Self::to_json).collect()),
            KombuValue::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), x.to_json())).collect())
            }
            KombuValue::DateTime(t) => envelope("datetime", isoformat_datetime(t).into()),
            KombuValue::Date(d) => envelope("date", d.format("%Y-%m-%d").to_string().into()),
            KombuValue::Time(t) => envelope("time", isoformat_time(t).into()),
            KombuValue::Decimal(d) => envelope("decimal", d.clone().into()),
            KombuValue::Uuid(u) => {
                let mut hex = Map::new();
                hex.insert("hex".into(), u.simple().to_string().into());
                envelope("uuid", Value::Object(hex))
            }
            KombuValue::Bytes(b) => match std::str::from_utf8(b) {
                Ok(text) => envelope("bytes", text.into()),
                Err(_) => envelope("base64", BASE64.encode(b).into()),
            },
        }
    }

    /// Celery's `saferepr` of the Python value (for `argsrepr`/`kwargsrepr`).
    pub fn py_repr(&self) -> String {
        match self {
            KombuValue::Array(a) => format!("[{}]", join(a.iter().map(Self::py_repr))),
            KombuValue::Object(o) => format!(
                "{{{}}}",
                join(
                    o.iter()
                        .map(|(k, x)| format!("{}: {}", pyjson::str_repr(k), x.py_repr()))
                )
            ),
            KombuValue::DateTime(t) => repr_datetime(t),
            KombuValue::Date(d) => format!(
                "datetime.date({}, {}, {})",
                d.format("%Y"),
                d.format("%-m"),
                d.format("%-d")
            ),
            KombuValue::Time(t) => format!("datetime.time({})", time_fields(t)),
            KombuValue::Decimal(d) => format!("Decimal({})", pyjson::str_repr(d)),
            KombuValue::Uuid(u) => format!("UUID('{}')", u.hyphenated()),
            // celery.utils.saferepr shows undecodable bytes as hex.
            KombuValue::Bytes(b) => match std::str::from_utf8(b) {
                Ok(text) => format!("b{}", pyjson::str_repr(text)),
                Err(_) => format!(
                    "b'{}'",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                ),
            },
            scalar => pyjson::repr(&scalar.to_json()),
        }
    }
}

/// Check that every typed object in `v` is one kombu knows and is well formed.
pub fn validate(v: &Value) -> Result<(), DecodeError> {
    match v {
        Value::Array(a) => a.iter().try_for_each(validate),
        Value::Object(o) => match typed_parts(o) {
            Some((ty, value)) => typed(ty, value).map(drop),
            None => o.values().try_for_each(validate),
        },
        _ => Ok(()),
    }
}

/// Python repr of a decoded JSON value with typed objects shown as their
/// Python values; falls back to the plain JSON repr if a typed object is bad.
pub fn repr(v: &Value) -> String {
    KombuValue::from_json(v)
        .map(|k| k.py_repr())
        .unwrap_or_else(|_| pyjson::repr(v))
}

fn typed_parts(o: &Map<String, Value>) -> Option<(&Value, &Value)> {
    if o.len() != 2 {
        return None;
    }
    Some((o.get("__type__")?, o.get("__value__")?))
}

fn typed(ty: &Value, value: &Value) -> Result<KombuValue, DecodeError> {
    let ty_name = ty.as_str().unwrap_or_default();
    let bad = || {
        DecodeError::new(
            DecodeErrorKind::Body,
            format!(
                "invalid kombu JSON {ty_name} value {}",
                pyjson::to_string(value)
            ),
        )
    };
    let text = || value.as_str().ok_or_else(bad);
    match ty_name {
        "datetime" => parse_datetime(text()?)
            .map(KombuValue::DateTime)
            .ok_or_else(bad),
        "date" => parse_date(text()?).map(KombuValue::Date).ok_or_else(bad),
        "time" => parse_time(text()?).map(KombuValue::Time).ok_or_else(bad),
        "decimal" => decimal(text()?).ok_or_else(bad),
        "uuid" => value
            .get("hex")
            .and_then(Value::as_str)
            .and_then(|h| Uuid::try_parse(h).ok())
            .map(KombuValue::Uuid)
            .ok_or_else(bad),
        "bytes" => Ok(KombuValue::Bytes(text()?.as_bytes().to_vec())),
        "base64" => BASE64
            .decode(text()?)
            .map(KombuValue::Bytes)
            .map_err(|_| bad()),
        _ => Err(DecodeError::new(
            DecodeErrorKind::UnknownType,
            format!("unsupported kombu JSON __type__ {}", pyjson::to_string(ty)),
        )),
    }
}

fn envelope(ty: &str, value: Value) -> Value {
    let mut o = Map::new();
    o.insert("__type__".into(), ty.into());
    o.insert("__value__".into(), value);
    Value::Object(o)
}

/// What Python's `Decimal(text)` accepts, close enough: a float literal
/// (with `_` separators) or `NaN`/`sNaN`/`Infinity`.
fn decimal(s: &str) -> Option<KombuValue> {
    let t = s.trim().replace('_', "");
    let ok = t.parse::<f64>().is_ok()
        || t.trim_start_matches(['+', '-'])
            .eq_ignore_ascii_case("snan");
    ok.then(|| KombuValue::Decimal(s.to_owned()))
}

/// `datetime.fromisoformat`: naive values become UTC.
fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t);
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&n).fixed_offset());
        }
    }
    let d = parse_date(s)?;
    Some(
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
            .fixed_offset(),
    )
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    ["%H:%M:%S%.f", "%H:%M"]
        .iter()
        .find_map(|fmt| NaiveTime::parse_from_str(s, fmt).ok())
}

/// `datetime.isoformat()`: microseconds only when non-zero, `+HH:MM` offset.
fn isoformat_datetime(t: &DateTime<FixedOffset>) -> String {
    let format = if t.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    t.to_rfc3339_opts(format, false)
}

fn isoformat_time(t: &NaiveTime) -> String {
    if micros(t) == 0 {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%H:%M:%S%.6f").to_string()
    }
}

fn micros(t: &NaiveTime) -> u32 {
    chrono::Timelike::nanosecond(t) / 1000
}

/// Python's `datetime.__repr__`: trailing zero microsecond/second fields dropped.
fn repr_datetime(t: &DateTime<FixedOffset>) -> String {
    let d = t.date_naive();
    let date = format!(
        "{}, {}, {}",
        d.format("%Y"),
        d.format("%-m"),
        d.format("%-d")
    );
    let offset = t.offset().local_minus_utc();
    let tz = if offset == 0 {
        "datetime.timezone.utc".to_owned()
    } else {
        format!("datetime.timezone(datetime.timedelta(seconds={offset}))")
    };
    format!(
        "datetime.datetime({date}, {}, tzinfo={tz})",
        time_fields(&t.time())
    )
}

fn time_fields(t: &NaiveTime) -> String {
    use chrono::Timelike;
    let mut fields = vec![t.hour(), t.minute(), t.second(), micros(t)];
    while fields.len() > 2 && fields.last() == Some(&0) {
        fields.pop();
    }
    join(fields.iter().map(u32::to_string))
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_args_from_the_capture_convert_and_round_trip() {
        let args = json!([
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"},
            {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
            {"__type__": "decimal", "__value__": "1.10"},
            {"__type__": "bytes", "__value__": "raw"},
            {"__type__": "base64", "__value__": "/wA="}
        ]);
        let typed = KombuValue::from_json(&args).unwrap();
        assert_eq!(typed.to_json(), args);
        assert_eq!(
            typed.py_repr(),
            "[datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), \
             UUID('12345678-1234-5678-1234-567812345678'), Decimal('1.10'), b'raw', b'ff00']"
        );
        let kwargs = json!({"d": {"__type__": "date", "__value__": "2024-01-02"}});
        assert_eq!(repr(&kwargs), "{'d': datetime.date(2024, 1, 2)}");
    }

    #[test]
    fn naive_datetime_is_utc_and_time_keeps_micros() {
        let v = json!({"__type__": "datetime", "__value__": "2024-01-02T03:04:05.678901"});
        let KombuValue::DateTime(t) = KombuValue::from_json(&v).unwrap() else {
            panic!()
        };
        assert_eq!(isoformat_datetime(&t), "2024-01-02T03:04:05.678901+00:00");
        let v = json!({"__type__": "time", "__value__": "03:04:05.000120"});
        assert_eq!(KombuValue::from_json(&v).unwrap().to_json(), v);
    }

    #[test]
    fn unknown_type_and_bad_values_are_typed_errors() {
        let unknown = json!([{"__type__": "set", "__value__": [1]}]);
        assert_eq!(
            validate(&unknown).unwrap_err().kind,
            DecodeErrorKind::UnknownType
        );
        let bad = json!({"__type__": "uuid", "__value__": {"hex": "zz"}});
        assert_eq!(validate(&bad).unwrap_err().kind, DecodeErrorKind::Body);
        // Three keys: a plain object, not a typed one.
        assert!(validate(&json!({"__type__": "x", "__value__": 1, "y": 2})).is_ok());
    }
}
