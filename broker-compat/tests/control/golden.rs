//! Remote control (spec §6): golden tests against the real Celery 5.7 captures.

use crate::support;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use broker_compat::control::{
    ok, reply_message, unknown_command, ControlReply, ControlRequest, ReplyTo,
};
use broker_compat::protocol::envelope::{decode_envelope, encode_envelope};
use broker_compat::protocol::{pyjson, Message, Properties};

/// A captured request: the message as our transports would hand it over,
/// plus what to compare against.
struct CapturedRequest {
    file: String,
    message: Message,
    /// The Redis envelope exactly as published (None for AMQP).
    envelope: Option<Value>,
}

fn amqp_message(m: &Value) -> Message {
    let p = &m["properties"];
    Message {
        body: m["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
        content_type: p["content_type"].as_str().unwrap().into(),
        content_encoding: p["content_encoding"].as_str().unwrap().into(),
        headers: p["application_headers"].as_object().unwrap().clone(),
        properties: Properties {
            delivery_mode: p["delivery_mode"].as_u64().map(|n| n as u8),
            priority: p["priority"].as_u64().map(|n| n as u8),
            ..Properties::default()
        },
    }
}

fn captured_requests() -> Vec<CapturedRequest> {
    let mut out = Vec::new();
    for label in ["default", "airflowlike", "db", "dbext"] {
        let file = format!("worker-{label}-pubsub-pidbox.json");
        for m in support::fixture_messages(&file) {
            let raw = pyjson::to_vec(&m["envelope"]);
            let env = decode_envelope(&raw).unwrap();
            out.push(CapturedRequest {
                file: file.clone(),
                message: env.message,
                envelope: Some(m["envelope"].clone()),
            });
        }
    }
    let amqp = support::fixture("amqp-pidbox.json");
    for m in amqp["requests"].as_array().unwrap() {
        out.push(CapturedRequest {
            file: "amqp-pidbox.json".into(),
            message: amqp_message(m),
            envelope: None,
        });
    }
    assert!(
        out.len() > 50,
        "expected the pidbox captures, found {}",
        out.len()
    );
    out
}

#[test]
fn every_captured_request_parses_and_reencodes_to_its_bytes() {
    let mut methods = std::collections::BTreeSet::new();
    for c in captured_requests() {
        let req =
            ControlRequest::from_message(&c.message).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        methods.insert(req.method.clone());
        assert_eq!(
            String::from_utf8(req.to_body()).unwrap(),
            String::from_utf8(c.message.body.clone()).unwrap(),
            "{}",
            c.file
        );
        let clock = req.clock.expect("captured requests carry a clock");
        let ours = req.to_message(clock, req.expires.filter(|e| *e > 0.0));
        assert_eq!(ours.headers, c.message.headers, "{}", c.file);
        assert_eq!(ours.properties.delivery_mode, Some(2));
        assert_eq!(ours.properties.priority, Some(0));
        if let Some(env) = &c.envelope {
            let tag = env["properties"]["delivery_tag"].as_str().unwrap();
            let bytes = encode_envelope(&ours, "celery.pidbox", "", tag);
            assert_eq!(String::from_utf8(bytes).unwrap(), pyjson::to_string(env));
        }
        // Every capture was a broadcast to all nodes.
        assert!(req.is_for("celery@vm") && req.is_for("celeriac@elsewhere"));
        assert_eq!(req.wants_reply(), req.ticket.is_some());
    }
    for m in [
        "ping",
        "hello",
        "active",
        "stats",
        "revoke",
        "shutdown",
        "add_consumer",
    ] {
        assert!(methods.contains(m), "no captured {m}");
    }
}

#[test]
fn a_request_without_reply_has_kombus_short_body() {
    let shutdown = support::fixture("amqp-pidbox.json")["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["body_utf8"].as_str().unwrap().contains("shutdown"))
        .map(amqp_message)
        .unwrap();
    let req = ControlRequest::from_message(&shutdown).unwrap();
    assert!(req.ticket.is_none() && !req.wants_reply());
    let ours = ControlRequest::new("shutdown", Map::new()).to_body();
    assert_eq!(ours, shutdown.body);
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        r#"{"method": "shutdown", "arguments": {}, "destination": null, "pattern": null, "matcher": null}"#
    );
}

#[test]
fn our_reply_request_body_has_celerys_shape() {
    let mut req = ControlRequest::new("ping", Map::new());
    req.ticket = Some("65fff561-fb1d-4b25-b8e0-e41fdba18946".into());
    req.reply_to = Some(ReplyTo {
        exchange: "reply.celery.pidbox".into(),
        routing_key: "9a687f17-6354-3f0e-9788-1f3eec60187b".into(),
    });
    let captured = &support::fixture_messages("worker-default-pubsub-pidbox.json")[0];
    let body = BASE64
        .decode(captured["envelope"]["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(req.to_body(), body);
}

#[test]
fn captured_worker_replies_parse_and_reencode_exactly() {
    let mut n = 0;
    for label in ["default", "airflowlike"] {
        let file = format!("worker-{label}-pidbox-replies.json");
        for r in support::fixture(&file)["replies"].as_array().unwrap() {
            let env = &r["envelope"];
            let decoded = decode_envelope(&pyjson::to_vec(env)).unwrap();
            let reply = ControlReply::from_message(&decoded.message).unwrap();
            assert_eq!(reply.node(), Some("celery@vm"));
            assert_eq!(Value::Object(reply.body.clone()), r["_derived_body_json"]);
            let ours = reply_message(
                reply.node().unwrap(),
                reply.value().unwrap().clone(),
                reply.ticket.as_deref(),
                reply.clock.unwrap(),
            );
            let rk = env["properties"]["delivery_info"]["routing_key"]
                .as_str()
                .unwrap();
            let tag = env["properties"]["delivery_tag"].as_str().unwrap();
            let bytes = encode_envelope(&ours, "reply.celery.pidbox", rk, tag);
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                pyjson::to_string(env),
                "{file}"
            );
            assert_eq!(
                r["key"].as_str().unwrap(),
                format!("{rk}.reply.celery.pidbox")
            );
            n += 1;
        }
    }
    for r in support::fixture("amqp-pidbox.json")["replies"]
        .as_array()
        .unwrap()
    {
        let captured = amqp_message(r);
        let reply = ControlReply::from_message(&captured).unwrap();
        let ours = reply_message(
            reply.node().unwrap(),
            reply.value().unwrap().clone(),
            reply.ticket.as_deref(),
            reply.clock.unwrap(),
        );
        assert_eq!(ours.body, captured.body);
        assert_eq!(ours.headers, captured.headers);
        assert_eq!(
            ours.properties.delivery_mode,
            captured.properties.delivery_mode
        );
        assert_eq!(ours.properties.priority, captured.properties.priority);
        n += 1;
    }
    assert!(n > 15);
}

#[test]
fn reply_helpers_match_captured_values() {
    let limits = support::fixture("worker-limits.json");
    assert_eq!(
        limits["unknown_control_command_replies"],
        json!([{"celery@vm": unknown_command("no_such_command")}])
    );
    let client = &support::fixture("worker-default-client.json")["client"];
    assert_eq!(client["ping_first"], json!([{"celery@vm": ok("pong")}]));
    assert_eq!(
        client["control_add_consumer"],
        json!([{"celery@vm": ok("add consumer extraq")}])
    );
}

fn request(
    destination: Option<&[&str]>,
    pattern: Option<&str>,
    matcher: Option<&str>,
) -> ControlRequest {
    let mut r = ControlRequest::new("ping", Map::new());
    r.destination = destination.map(|d| d.iter().map(|s| s.to_string()).collect());
    r.pattern = pattern.map(str::to_owned);
    r.matcher = matcher.map(str::to_owned);
    r
}

#[test]
fn is_for_follows_kombu_node_handle_message() {
    let me = "celeriac@test";
    assert!(request(None, None, None).is_for(me));
    assert!(request(Some(&[]), None, None).is_for(me));
    assert!(request(Some(&["x@y", me]), None, None).is_for(me));
    assert!(!request(Some(&["celery@vm"]), None, None).is_for(me));
    // destination wins over pattern
    assert!(!request(Some(&["celery@vm"]), Some("*"), Some("glob")).is_for(me));
    assert!(request(None, Some("celeriac@*"), Some("glob")).is_for(me));
    assert!(!request(None, Some("celery@*"), Some("glob")).is_for(me));
    assert!(request(None, Some("celeriac@t"), Some("pcre")).is_for(me));
    assert!(!request(None, Some("test"), Some("pcre")).is_for(me));
    // a pattern without a matcher (or vice versa) addresses everyone
    assert!(request(None, Some("nobody"), None).is_for(me));
    assert!(request(None, None, Some("glob")).is_for(me));
}
