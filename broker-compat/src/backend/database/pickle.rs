//! A minimal pickle *writer* for JSON-like values.
//!
//! Celery ≤ 5.6 (what Airflow 3.3 runs) declares `celery_taskmeta.result` as
//! SQLAlchemy `PickleType`, so a row written for those readers must hold a
//! pickle. We only ever *write* pickles, and only of None/bool/int/float/str/
//! list/dict, so no class lookups (`GLOBAL`/`REDUCE`) are ever emitted and the
//! reader cannot be made to run code. The opcodes and framing are those of
//! CPython's C pickler at protocol 5 (SQLAlchemy uses `HIGHEST_PROTOCOL`), so
//! small values are byte-identical to what Python writes.

use serde_json::{Map, Number, Value};

const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const STOP: u8 = b'.';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const BINFLOAT: u8 = b'G';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const BINUNICODE8: u8 = 0x8d;
const MEMOIZE: u8 = 0x94;
const EMPTY_LIST: u8 = b']';
const EMPTY_DICT: u8 = b'}';
const MARK: u8 = b'(';
const APPEND: u8 = b'a';
const APPENDS: u8 = b'e';
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
/// CPython's `BATCHSIZE`: APPENDS/SETITEMS groups of at most this many items.
const BATCH: usize = 1000;
/// CPython only emits a FRAME opcode for frames of at least this many bytes.
const FRAME_SIZE_MIN: usize = 4;

/// `pickle.dumps(value, protocol=5)` for a JSON-like value.
pub fn dumps(value: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    write_value(&mut body, value);
    body.push(STOP);
    let mut out = Vec::with_capacity(body.len() + 11);
    out.extend_from_slice(&[PROTO, 5]);
    // One frame for the whole payload: valid for any size, and identical to
    // CPython's output below its 64 KiB frame target.
    if body.len() >= FRAME_SIZE_MIN {
        out.push(FRAME);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(&body);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(NONE),
        Value::Bool(true) => out.push(NEWTRUE),
        Value::Bool(false) => out.push(NEWFALSE),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_list(out, items),
        Value::Object(map) => write_dict(out, map),
    }
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(i) = n.as_i64() {
        write_int(out, i128::from(i));
    } else if let Some(u) = n.as_u64() {
        write_int(out, i128::from(u));
    } else {
        out.push(BINFLOAT);
        out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_be_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, i: i128) {
    if (0..0x100).contains(&i) {
        out.extend_from_slice(&[BININT1, i as u8]);
    } else if (0..0x1_0000).contains(&i) {
        out.push(BININT2);
        out.extend_from_slice(&(i as u16).to_le_bytes());
    } else if let Ok(small) = i32::try_from(i) {
        out.push(BININT);
        out.extend_from_slice(&small.to_le_bytes());
    } else {
        let bytes = long_bytes(i);
        out.extend_from_slice(&[LONG1, bytes.len() as u8]);
        out.extend_from_slice(&bytes);
    }
}

/// Python's `encode_long`: the shortest little-endian two's complement.
fn long_bytes(i: i128) -> Vec<u8> {
    let mut bytes = i.to_le_bytes().to_vec();
    while bytes.len() > 1 {
        let last = bytes[bytes.len() - 1];
        let sign_of_prev = bytes[bytes.len() - 2] & 0x80;
        let redundant = (last == 0 && sign_of_prev == 0) || (last == 0xff && sign_of_prev != 0);
        if !redundant {
            break;
        }
        bytes.pop();
    }
    bytes
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 0x100 {
        out.extend_from_slice(&[SHORT_BINUNICODE, len as u8]);
    } else if let Ok(len32) = u32::try_from(len) {
        out.push(BINUNICODE);
        out.extend_from_slice(&len32.to_le_bytes());
    } else {
        out.push(BINUNICODE8);
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    out.extend_from_slice(s.as_bytes());
    out.push(MEMOIZE);
}

fn write_list(out: &mut Vec<u8>, items: &[Value]) {
    out.extend_from_slice(&[EMPTY_LIST, MEMOIZE]);
    if let [only] = items {
        write_value(out, only);
        out.push(APPEND);
        return;
    }
    for chunk in items.chunks(BATCH) {
        out.push(MARK);
        chunk.iter().for_each(|v| write_value(out, v));
        out.push(APPENDS);
    }
}

fn write_dict(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.extend_from_slice(&[EMPTY_DICT, MEMOIZE]);
    let entries: Vec<(&String, &Value)> = map.iter().collect();
    if let [(k, v)] = entries.as_slice() {
        write_str(out, k);
        write_value(out, v);
        out.push(SETITEM);
        return;
    }
    for chunk in entries.chunks(BATCH) {
        out.push(MARK);
        for (k, v) in chunk {
            write_str(out, k);
            write_value(out, v);
        }
        out.push(SETITEMS);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn started_dict_matches_cpython() {
        // celery_taskmeta STARTED row captured from Airflow 3.3 / Celery 5.6.
        let v = json!({"pid": 1139, "hostname": "celery@vm"});
        assert_eq!(
            hex(&dumps(&v)),
            "80059525000000000000007d94288c03706964944d73048c08686f73746e616d65948c0963656c65727940766d94752e"
        );
    }

    #[test]
    fn values_match_cpython() {
        // `pickle.dumps(x, 5).hex()` in CPython 3.11.
        let cases = [
            (json!(null), "80054e2e"),
            (json!(5), "80054b052e"),
            (json!(true), "8005882e"),
            (json!(-1), "80059506000000000000004affffffff2e"),
            (json!([]), "80055d942e"),
            (json!([1]), "80059506000000000000005d944b01612e"),
            (json!([1, 2]), "80059509000000000000005d94284b014b02652e"),
            (json!({}), "80057d942e"),
            (
                json!(1_u64 << 40),
                "80059509000000000000008a060000000000012e",
            ),
            (
                json!(-(1_i64 << 40)),
                "80059509000000000000008a060000000000ff2e",
            ),
            (json!(1.5), "8005950a00000000000000473ff80000000000002e"),
            (json!("\u{e9}"), "80059506000000000000008c02c3a9942e"),
            (
                json!({"a": [1, "x"]}),
                "80059512000000000000007d948c0161945d94284b018c01789465732e",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(hex(&dumps(&value)), expected, "{value}");
        }
    }

    #[test]
    fn long_encoding_is_minimal() {
        assert_eq!(long_bytes(1 << 40), vec![0, 0, 0, 0, 0, 1]);
        assert_eq!(long_bytes(-(1 << 40)), vec![0, 0, 0, 0, 0, 0xff]);
        assert_eq!(
            long_bytes(0xff_ffff_ffff),
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0]
        );
    }
}
