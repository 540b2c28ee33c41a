//! kombu Redis envelopes (§2.1): tasks, events, pidbox requests and replies.

use std::collections::HashMap;

use broker_compat::protocol::{decode_envelope, encode_envelope, mark_redelivered};

use super::fixtures::raw_envelopes;

#[test]
fn every_envelope_round_trips_byte_for_byte() {
    let all = raw_envelopes();
    assert!(
        all.len() > 900,
        "expected the fixtures to hold many envelopes, found {}",
        all.len()
    );
    for (at, raw) in &all {
        let env = decode_envelope(raw).unwrap_or_else(|e| panic!("{at}: {e}"));
        let text = String::from_utf8_lossy(raw);
        assert_eq!(String::from_utf8_lossy(&env.encode()), text, "{at}");
        if !env.redelivered {
            let tag = env
                .delivery_tag
                .as_deref()
                .unwrap_or_else(|| panic!("{at}: no delivery tag"));
            let fresh = encode_envelope(&env.message, &env.exchange, &env.routing_key, tag);
            assert_eq!(String::from_utf8_lossy(&fresh), text, "{at}");
        }
    }
}

#[test]
fn restored_messages_are_mark_redelivered_of_the_original() {
    let all = raw_envelopes();
    let mut originals = HashMap::new();
    let mut checked = 0;
    for (at, raw) in &all {
        let env = decode_envelope(raw).unwrap_or_else(|e| panic!("{at}: {e}"));
        let Some(tag) = env.delivery_tag.clone() else {
            continue;
        };
        if !env.redelivered {
            originals.entry(tag).or_insert_with(|| raw.clone());
            continue;
        }
        assert_eq!(
            env.message.headers.get("redelivered"),
            Some(&serde_json::Value::Bool(true)),
            "{at}"
        );
        let original = originals
            .get(&tag)
            .unwrap_or_else(|| panic!("{at}: no original for {tag}"));
        let marked = mark_redelivered(original).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&marked),
            String::from_utf8_lossy(raw),
            "{at}"
        );
        // Restoring twice changes nothing more.
        assert_eq!(mark_redelivered(&marked).unwrap(), marked, "{at}");
        checked += 1;
    }
    assert!(
        checked >= 6,
        "expected the crash/reject/retry captures to hold restored messages, found {checked}"
    );
}

#[test]
fn event_and_pidbox_properties_keep_their_shape() {
    let all = raw_envelopes();
    let event = all
        .iter()
        .find(|(at, _)| at.starts_with("celery/worker-default-pubsub-events.json"))
        .expect("an event envelope");
    let env = decode_envelope(&event.1).unwrap();
    assert_eq!(env.exchange, "celeryev");
    assert_eq!(env.message.properties.correlation_id, None);
    assert_eq!(env.message.properties.delivery_mode, Some(1));
    assert!(env.message.properties.extra.is_empty());
}
