//! JSON ⇄ AMQP field tables, with the types py-amqp writes (spec §3.1).
//!
//! py-amqp (`amqp/serialization.py::_write_item`) encodes `str` as a long
//! string `S`, `bool` as `t`, `float` as a double `d`, `int` as a signed
//! 32-bit `I` when it fits in ±2147483647 and a signed 64-bit otherwise,
//! `None` as void `V`, lists as arrays `A` and dicts as tables `F`. We write
//! the same types so that a Python peer reads back exactly what it would have
//! sent, and so that queue arguments carry the types kombu's do
//! (`signedint` in `rabbitmqctl list_queues arguments`).
//!
//! Two limits of the wire: a field table has no order (lapin keeps it sorted
//! by key, so received headers come back in key order, not wire order), and
//! a key is a short string (at most 255 bytes).

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

use crate::{Error, Result};

/// py-amqp's bound for the 32-bit `I` type (it excludes `i32::MIN`).
const PY_AMQP_INT32_MAX: i64 = 2_147_483_647;

/// A JSON object as an AMQP field table (e.g. `application_headers`).
pub fn to_field_table(map: &Map<String, Value>) -> Result<FieldTable> {
    let mut table = FieldTable::default();
    for (key, value) in map {
        let key = ShortString::try_new(key.as_str())
            .map_err(|e| Error::Encode(format!("header key {key:.40}…: {e}")))?;
        table.insert(key, to_amqp_value(value)?);
    }
    Ok(table)
}

/// One JSON value as the AMQP value py-amqp would write for it.
pub fn to_amqp_value(value: &Value) -> Result<AMQPValue> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => number_to_amqp(n)?,
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(to_amqp_value)
                .collect::<Result<Vec<_>>>()?,
        )),
        Value::Object(map) => AMQPValue::FieldTable(to_field_table(map)?),
    })
}

/// An integer as py-amqp writes it: `I` within ±2147483647, else signed 64-bit.
pub fn int_to_amqp(i: i64) -> AMQPValue {
    if (-PY_AMQP_INT32_MAX..=PY_AMQP_INT32_MAX).contains(&i) {
        // The range check above makes the conversion exact.
        AMQPValue::LongInt(i as i32)
    } else {
        AMQPValue::LongLongInt(i)
    }
}

fn number_to_amqp(n: &Number) -> Result<AMQPValue> {
    if let Some(i) = n.as_i64() {
        return Ok(int_to_amqp(i));
    }
    if n.is_u64() {
        // RabbitMQ has no unsigned 64-bit field type (lapin writes `l`,
        // signed): refuse rather than send a negative number.
        return Err(Error::Encode(format!(
            "integer {n} does not fit a signed 64-bit AMQP field"
        )));
    }
    n.as_f64()
        .map(AMQPValue::Double)
        .ok_or_else(|| Error::Encode(format!("number {n} has no AMQP representation")))
}

/// An AMQP field table as a JSON object (keys in table order, i.e. sorted).
pub fn from_field_table(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), from_amqp_value(v)))
        .collect()
}

/// One AMQP value as JSON, as py-amqp + json would see it.
pub fn from_amqp_value(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Void => Value::Null,
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        // py-amqp hands invalid UTF-8 over as bytes, which JSON cannot hold:
        // replace the bad sequences rather than drop the whole message.
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(from_amqp_value).collect())
        }
        AMQPValue::FieldTable(t) => Value::Object(from_field_table(t)),
    }
}

/// NaN and infinities have no JSON form; Celery never puts them in headers.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_py_amqp_types() {
        let cases = [
            (json!(null), AMQPValue::Void),
            (json!(true), AMQPValue::Boolean(true)),
            (json!(0), AMQPValue::LongInt(0)),
            (json!(-2147483647), AMQPValue::LongInt(-2147483647)),
            (json!(-2147483648i64), AMQPValue::LongLongInt(-2147483648)),
            (json!(2147483648i64), AMQPValue::LongLongInt(2147483648)),
            (json!(0.0), AMQPValue::Double(0.0)),
            (json!("x"), AMQPValue::LongString("x".into())),
        ];
        for (json, amqp) in cases {
            assert_eq!(to_amqp_value(&json).unwrap(), amqp, "{json}");
            assert_eq!(from_amqp_value(&amqp), json);
        }
    }

    #[test]
    fn nested_round_trip() {
        let v = json!({"timelimit": [null, 30], "stamps": {}, "nested": {"a": [1.5, "s", false]}});
        let Value::Object(map) = v.clone() else {
            unreachable!()
        };
        let table = to_field_table(&map).unwrap();
        assert_eq!(Value::Object(from_field_table(&table)), v);
    }

    #[test]
    fn refuses_what_amqp_cannot_carry() {
        assert!(to_amqp_value(&json!(u64::MAX)).is_err());
        let mut map = Map::new();
        map.insert("k".repeat(256), json!(1));
        assert!(to_field_table(&map).is_err());
    }
}
