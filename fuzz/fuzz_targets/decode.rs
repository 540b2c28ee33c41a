//! Arbitrary bytes as a kombu Redis envelope, then as a Celery task; also the
//! same bytes as a bare JSON task body under protocol 2 headers. Decoding
//! may fail, but only with a typed error: never a panic, hang or OOM.
#![no_main]

use broker_compat::protocol::{
    decode_envelope, mark_redelivered, DecodeOptions, Message, TaskMessage,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        max_body_size: Some(1 << 20),
        ..DecodeOptions::default()
    };
    if let Ok(env) = decode_envelope(data) {
        if let Ok(task) = TaskMessage::decode(&env.message, &opts) {
            // What decodes must encode again.
            let _ = task.encode(&Default::default());
        }
        let _ = env.encode();
        let _ = mark_redelivered(data);
    }
    let mut headers = serde_json::Map::new();
    headers.insert("task".into(), "fuzz.task".into());
    headers.insert("id".into(), "fuzz-id".into());
    let bare = Message {
        body: data.to_vec(),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        headers,
        ..Message::default()
    };
    let _ = TaskMessage::decode(&bare, &opts);
});
