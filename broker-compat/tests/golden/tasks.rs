//! Every task message in the captures: decode, then encode again to the same bytes.

use broker_compat::protocol::{
    decode_envelope, encode_envelope, pyjson, Compression, DecodeOptions, EncodeOptions, Envelope,
    Serializer, TaskMessage,
};

use super::fixtures::raw_envelopes;

/// Hand-made messages (not written by Celery): checked case by case in `malformed`.
const HANDMADE: [&str; 2] = [
    "celery/redis-malformed-handling.json",
    "celery/redis-malformed-worker-crash.json",
];

/// Task envelopes Celery (or Airflow through Celery) wrote: not events, not pidbox.
pub fn task_envelopes() -> Vec<(String, Envelope, Vec<u8>)> {
    raw_envelopes()
        .into_iter()
        .filter(|(at, _)| !HANDMADE.iter().any(|h| at.starts_with(h)))
        .filter_map(|(at, raw)| {
            let env = decode_envelope(&raw).unwrap_or_else(|e| panic!("{at}: {e}"));
            let is_task = env.message.headers.contains_key("task") || is_v1(&env);
            is_task.then_some((at, env, raw))
        })
        .collect()
}

fn is_v1(env: &Envelope) -> bool {
    env.message.headers.is_empty()
        && serde_json::from_slice::<serde_json::Value>(&env.message.body)
            .is_ok_and(|b| b.get("task").is_some())
}

/// Encode options that reproduce what the sender used.
pub fn same_options(tm: &TaskMessage) -> EncodeOptions {
    EncodeOptions {
        protocol: tm.protocol,
        serializer: Serializer::Json,
        compression: tm
            .headers
            .compression
            .as_deref()
            .and_then(Compression::from_header),
    }
}

#[test]
fn every_task_message_decodes_and_reencodes_byte_for_byte() {
    let all = task_envelopes();
    assert!(
        all.len() > 100,
        "expected many task messages, found {}",
        all.len()
    );
    for (at, env, raw) in all {
        let tm = TaskMessage::decode(&env.message, &DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        let again = tm
            .encode(&same_options(&tm))
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(
            pyjson::to_string(&again.headers),
            pyjson::to_string(&env.message.headers),
            "{at}: headers"
        );
        assert_eq!(
            String::from_utf8_lossy(&again.body),
            String::from_utf8_lossy(&env.message.body),
            "{at}: body"
        );
        assert_eq!(again, env.message, "{at}: message");
        let rewrapped = Envelope {
            message: again,
            ..env.clone()
        };
        assert_eq!(
            String::from_utf8_lossy(&rewrapped.encode()),
            String::from_utf8_lossy(&raw),
            "{at}: envelope"
        );
        if !env.redelivered {
            let tag = env.delivery_tag.as_deref().unwrap_or_default();
            let fresh = encode_envelope(&rewrapped.message, &env.exchange, &env.routing_key, tag);
            assert_eq!(fresh, raw, "{at}: fresh envelope");
        }
    }
}
