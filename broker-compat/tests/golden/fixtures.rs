//! Loading the captured fixtures and finding the kombu envelopes in them.

use std::path::{Path, PathBuf};

use broker_compat::protocol::pyjson;
use serde_json::Value;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One fixture file parsed as JSON.
pub fn load(rel: &str) -> Value {
    let path = dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.json` file (and every line of every `.jsonl` file) under the
/// fixture folders, with a name for messages. The `*-task-lifecycle.json`
/// files are excluded: they hold shortened previews of commands, not wire bytes.
pub fn all_documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for sub in ["celery", "airflow"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir().join(sub))
            .unwrap_or_else(|e| panic!("fixtures/{sub}: {e}"))
            .map(|e| e.expect("dir entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let name = format!(
                "{sub}/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            if name.ends_with("-task-lifecycle.json") {
                continue;
            }
            if name.ends_with(".json") {
                out.push((name.clone(), load(&name)));
            } else if name.ends_with(".jsonl") {
                let text = std::fs::read_to_string(&path).expect("read jsonl");
                for (i, line) in text.lines().enumerate() {
                    let v =
                        serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{i}: {e}"));
                    out.push((format!("{name}:{}", i + 1), v));
                }
            }
        }
    }
    out
}

/// Envelope bytes as Redis held them: raw strings verbatim; envelopes the
/// capture scripts stored already parsed are re-dumped with Python's
/// `json.dumps` rules (the fixtures keep the key order).
pub fn raw_envelopes() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, doc) in all_documents() {
        walk(&doc, &name, &mut out);
    }
    out
}

fn walk(v: &Value, at: &str, out: &mut Vec<(String, Vec<u8>)>) {
    match v {
        Value::String(s) if s.starts_with("{\"body\"") => {
            out.push((at.to_owned(), s.as_bytes().to_vec()))
        }
        Value::String(s) if s.starts_with("[{\"body\"") => {
            // HSET unacked value: json.dumps([envelope, exchange, routing_key]).
            let parsed: Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                pyjson::to_string(&parsed),
                *s,
                "{at}: unacked entry is not json.dumps output"
            );
            walk(&parsed, at, out);
        }
        Value::Object(o) if is_envelope(o) => {
            out.push((format!("{at} (parsed)"), pyjson::to_vec(v)))
        }
        Value::Object(o) => o.values().for_each(|x| walk(x, at, out)),
        Value::Array(a) => a.iter().for_each(|x| walk(x, at, out)),
        _ => {}
    }
}

fn is_envelope(o: &serde_json::Map<String, Value>) -> bool {
    o.contains_key("body") && o.contains_key("content-type") && o.contains_key("properties")
}
