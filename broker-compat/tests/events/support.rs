//! Shared by tests/events.rs and tests/control.rs: fixtures and brokers.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/celery")
        .join(name)
}

pub fn fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The `messages` list of a capture file.
pub fn fixture_messages(name: &str) -> Vec<Value> {
    fixture(name)["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no messages"))
        .clone()
}
