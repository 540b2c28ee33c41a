//! Field-by-field checks of the captured client calls (`redis-msg-*.json`,
//! worker sessions, AMQP, Airflow): what Celery meant is what we decode.

use broker_compat::protocol::time::parse_iso;
use broker_compat::protocol::{
    decode_envelope, pyjson, DecodeOptions, Envelope, KombuValue, Message, Properties,
    ProtocolVersion, TaskMessage,
};
use serde_json::{json, Value};

use super::fixtures::load;
use super::tasks::task_envelopes;

/// (queue list name, decoded task) for every message a `redis-msg-<case>.json` holds.
fn queued(case: &str) -> Vec<(String, TaskMessage)> {
    let doc = load(&format!("celery/redis-msg-{case}.json"));
    let broker = doc["snapshot"]["db0_broker"]
        .as_object()
        .expect("db0_broker");
    let mut out = Vec::new();
    for (key, entry) in broker.iter().filter(|(_, e)| e["type"] == "list") {
        for raw in entry["value"].as_array().expect("list value") {
            let env = decode_envelope(raw.as_str().expect("raw envelope").as_bytes()).expect(case);
            out.push((key.clone(), decode(&env)));
        }
    }
    assert!(!out.is_empty(), "{case}: no queued message");
    out
}

fn decode(env: &Envelope) -> TaskMessage {
    TaskMessage::decode(&env.message, &DecodeOptions::default()).expect("decodes")
}

fn only(case: &str) -> TaskMessage {
    let mut all = queued(case);
    assert_eq!(all.len(), 1, "{case}");
    all.remove(0).1
}

fn time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    Some(parse_iso(s).expect("valid time"))
}

#[test]
fn plain_apply_async() {
    let m = only("plain");
    assert_eq!(
        (m.protocol, m.task(), m.id()),
        (
            ProtocolVersion::V2,
            "capapp.add",
            "b446f242-27dd-462f-9dad-cf453f38f06e"
        )
    );
    assert_eq!(
        (m.args.clone(), Value::Object(m.kwargs.clone())),
        (vec![json!(2)], json!({"y": 3}))
    );
    let h = &m.headers;
    assert_eq!(
        (h.eta, h.expires, h.group.as_deref(), h.retries),
        (None, None, None, 0)
    );
    assert_eq!(h.root_id.as_deref(), Some(m.id()));
    assert_eq!(
        (h.argsrepr.as_deref(), h.kwargsrepr.as_deref()),
        (Some("(2,)"), Some("{'y': 3}"))
    );
    assert_eq!(h.origin.as_deref(), Some("gen28726@vm"));
    assert_eq!(
        (m.properties.priority, m.properties.delivery_mode),
        (Some(0), Some(2))
    );
    assert_eq!(m.properties.correlation_id.as_deref(), Some(m.id()));
    assert_eq!(m.embed, Default::default());
}

#[test]
fn eta_countdown_expires_and_time_limits() {
    assert_eq!(only("eta").headers.eta, time("2031-01-02T03:04:05+00:00"));
    assert_eq!(
        only("countdown").headers.eta,
        time("2026-11-21T22:45:09.646588+00:00")
    );
    let exp = only("expires");
    assert_eq!(
        exp.headers.expires,
        time("2026-11-21T22:46:10.436946+00:00")
    );
    assert_eq!(exp.properties.expiration.as_deref(), Some("120000"));
    assert_eq!(
        only("timelimit").headers.timelimit,
        (Some(30.0), Some(20.0))
    );
}

#[test]
fn priorities_land_in_kombu_priority_lists() {
    let mut seen: Vec<(String, u8)> = queued("priority")
        .into_iter()
        .map(|(q, m)| (q, m.properties.priority.expect("priority")))
        .collect();
    seen.sort_by_key(|(_, p)| *p);
    let want = [
        ("celery", 0),
        ("celery", 1),
        ("celery\u{6}\u{16}3", 3),
        ("celery\u{6}\u{16}3", 5),
        ("celery\u{6}\u{16}6", 6),
        ("celery\u{6}\u{16}9", 9),
    ];
    assert_eq!(seen, want.map(|(q, p)| (q.to_owned(), p)));
}

#[test]
fn shadow_ignore_result_and_unregistered_names() {
    let m = only("shadow_ignore_result");
    assert_eq!(
        (m.headers.display_name(), m.task()),
        ("custom.shadow.name", "capapp.add")
    );
    assert_eq!(m.headers.ignore_result, Some(true));
    let u = only("send_task_unregistered");
    assert_eq!((u.task(), u.headers.ignore_result), ("no.such.task", None));
}

#[test]
fn link_errback_chain_group_chord() {
    let l = only("link_errback");
    let callbacks = l.embed.callbacks.expect("callbacks");
    assert_eq!(
        (callbacks[0]["task"].as_str(), &callbacks[0]["args"]),
        (Some("capapp.add"), &json!([10]))
    );
    let errbacks = l.embed.errbacks.expect("errbacks");
    assert_eq!(
        (errbacks[0]["task"].as_str(), &errbacks[0]["immutable"]),
        (Some("capapp.fail"), &json!(true))
    );

    // chain(add(1,2), add(3), add(4)): remaining steps reversed, next = last.
    let c = only("chain");
    let chain = c.embed.chain.expect("chain");
    assert_eq!(
        chain.iter().map(|s| s["args"].clone()).collect::<Vec<_>>(),
        [json!([4]), json!([3])]
    );

    let mut group: Vec<_> = queued("group")
        .into_iter()
        .map(|(_, m)| m.headers)
        .collect();
    group.sort_by_key(|h| h.group_index);
    assert_eq!(
        group.iter().map(|h| h.group_index).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    assert_eq!(group[0].group, group[1].group);
    assert!(group[0].group.is_some());

    for (_, m) in queued("chord") {
        let body = m.embed.chord.expect("chord body");
        assert_eq!(body["task"], "capapp.xsum");
        assert_eq!(
            body["options"]["group_id"].as_str(),
            m.headers.group.as_deref()
        );
    }
}

#[test]
fn typed_args_and_compression() {
    let m = only("typed_args");
    let KombuValue::DateTime(t) = KombuValue::from_json(&m.args[0]).expect("typed") else {
        panic!("{:?}", m.args[0])
    };
    assert_eq!(t.to_rfc3339(), "2024-01-02T03:04:05+00:00");
    assert!(matches!(
        KombuValue::from_json(&m.args[1]),
        Ok(KombuValue::Uuid(_))
    ));
    assert_eq!(
        KombuValue::from_json(&m.args[4]).expect("bytes"),
        KombuValue::Bytes(vec![0xff, 0])
    );
    assert!(matches!(
        KombuValue::from_json(&m.kwargs["d"]),
        Ok(KombuValue::Date(_))
    ));

    let z = only("compression");
    assert_eq!(z.headers.compression.as_deref(), Some("application/x-gzip"));
    assert_eq!(z.args, vec![json!(1), json!(2)]);
}

#[test]
fn protocol_1_is_converted_to_the_v2_model() {
    let m = only("protocol1");
    assert_eq!(
        (m.protocol, m.task(), m.id()),
        (
            ProtocolVersion::V1,
            "capapp.add",
            "bad853b8-b5f4-4d0c-8b50-8b97f09269ac"
        )
    );
    assert_eq!(
        (m.args.clone(), Value::Object(m.kwargs.clone())),
        (vec![json!(2)], json!({"y": 3}))
    );
    assert!(m.utc);
    let c = only("protocol1_countdown");
    assert_eq!(c.headers.eta, time("2026-11-21T22:45:14.079624+00:00"));
    assert_eq!(c.headers.expires, time("2026-11-21T22:46:14.079624+00:00"));
    assert_eq!(c.properties.expiration.as_deref(), Some("120000"));
}

#[test]
fn worker_sent_retry_and_callback_messages() {
    let sent: Vec<TaskMessage> = task_envelopes()
        .iter()
        .filter(|(at, _, _)| at.starts_with("celery/worker-default-redis-monitor.jsonl"))
        .map(|(_, env, _)| decode(env))
        .collect();
    let retry = sent
        .iter()
        .find(|m| m.headers.retries == 1)
        .expect("the retry message");
    assert_eq!(retry.task(), "capapp.retry_once");
    assert_eq!(retry.headers.parent_id.as_deref(), Some(retry.id()));
    assert_eq!(retry.headers.eta, time("2026-11-21T22:45:50.348280+00:00"));
    assert_eq!(
        retry.properties.extra.get("origin"),
        Some(&json!("gen29715@vm"))
    );
    let child = sent
        .iter()
        .find(|m| m.args == [json!(10), json!(100)])
        .expect("the link callback");
    let parent = sent
        .iter()
        .find(|m| m.embed.callbacks.is_some())
        .expect("the linked parent");
    assert_eq!(child.headers.parent_id.as_deref(), Some(parent.id()));
    assert_eq!(child.headers.root_id, parent.headers.root_id);
}

/// A kombu message from a py-amqp `basic_get` capture.
fn amqp_message(props: &Value, body: Vec<u8>) -> Message {
    let s = |k: &str| props[k].as_str().map(str::to_owned);
    Message {
        body,
        content_type: s("content_type").unwrap_or_default(),
        content_encoding: s("content_encoding").unwrap_or_default(),
        headers: props["application_headers"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        properties: Properties {
            correlation_id: s("correlation_id"),
            reply_to: s("reply_to"),
            delivery_mode: props["delivery_mode"].as_u64().map(|d| d as u8),
            priority: props["priority"].as_u64().map(|p| p as u8),
            expiration: s("expiration"),
            extra: Default::default(),
        },
    }
}

#[test]
fn amqp_task_messages() {
    let doc = load("celery/amqp-task-messages.json");
    let msgs = doc["messages"].as_array().expect("messages");
    let decoded: Vec<TaskMessage> = msgs
        .iter()
        .map(|m| {
            let body = m["body_utf8"].as_str().expect("body").as_bytes().to_vec();
            let msg = amqp_message(&m["properties"], body.clone());
            let tm = TaskMessage::decode(&msg, &DecodeOptions::default()).expect("decodes");
            let again = tm.encode(&Default::default()).expect("encodes");
            assert_eq!(
                (pyjson::to_string(&again.headers), again.body),
                (pyjson::to_string(&msg.headers), body)
            );
            tm
        })
        .collect();
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[0].args, vec![json!(2)]);
    assert!(decoded[1].headers.eta.is_some() && decoded[1].headers.expires.is_some());
    assert_eq!(
        decoded[1].properties.expiration.as_deref(),
        msgs[1]["properties"]["expiration"].as_str()
    );
    assert_eq!(decoded[2].properties.priority, Some(7));
}
