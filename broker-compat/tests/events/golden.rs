//! Events (spec §5): golden tests against the real Celery 5.7 captures.

use crate::support;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

use broker_compat::events::{
    event_message, Event, Software, Stamp, TaskReceived, WorkerStatus, MULTI_ROUTING_KEY,
};
use broker_compat::protocol::envelope::encode_envelope;
use broker_compat::protocol::pyjson;

/// One captured event message: its routing key, raw body and (Redis) envelope.
struct Captured {
    file: String,
    routing_key: String,
    body: Vec<u8>,
    envelope: Option<Value>,
    headers: Value,
    delivery_mode: Value,
    priority: Value,
}

fn captured_messages() -> Vec<Captured> {
    let mut out = Vec::new();
    for label in ["default", "airflowlike", "db", "dbext"] {
        let file = format!("worker-{label}-pubsub-events.json");
        for m in support::fixture_messages(&file) {
            let env = &m["envelope"];
            out.push(Captured {
                file: file.clone(),
                routing_key: env["properties"]["delivery_info"]["routing_key"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                body: BASE64.decode(env["body"].as_str().unwrap()).unwrap(),
                envelope: Some(env.clone()),
                headers: env["headers"].clone(),
                delivery_mode: env["properties"]["delivery_mode"].clone(),
                priority: env["properties"]["priority"].clone(),
            });
        }
    }
    for m in support::fixture_messages("amqp-events.json") {
        out.push(Captured {
            file: "amqp-events.json".into(),
            routing_key: m["delivery_info"]["routing_key"]
                .as_str()
                .unwrap()
                .to_owned(),
            body: m["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
            envelope: None,
            headers: m["properties"]["application_headers"].clone(),
            delivery_mode: m["properties"]["delivery_mode"].clone(),
            priority: m["properties"]["priority"].clone(),
        });
    }
    assert!(
        out.len() > 100,
        "expected the event captures, found {}",
        out.len()
    );
    out
}

#[test]
fn every_captured_event_parses_and_reserializes_to_its_bytes() {
    let mut seen = 0;
    for c in captured_messages() {
        let events = Event::parse_body(&c.body).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let again = if c.routing_key == MULTI_ROUTING_KEY {
            let list: Vec<&Map<String, Value>> = events.iter().map(Event::fields).collect();
            pyjson::to_vec(&list)
        } else {
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].routing_key(), c.routing_key);
            events[0].to_json()
        };
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&c.body),
            "{}",
            c.file
        );
        seen += events.len();
    }
    assert!(seen > 100);
}

/// Rebuild a captured event with our constructors, from its values.
fn rebuild(captured: &Event) -> Event {
    let f = captured.fields();
    let s = |k: &str| {
        f[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {f:?}"))
            .to_owned()
    };
    let opt = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
    let uuid = || s("uuid");
    let sw = Software {
        ident: f.get("sw_ident").map(|_| s("sw_ident")).unwrap_or_default(),
        version: f.get("sw_ver").map(|_| s("sw_ver")).unwrap_or_default(),
        system: f.get("sw_sys").map(|_| s("sw_sys")).unwrap_or_default(),
    };
    let status = || WorkerStatus {
        freq: f["freq"].as_f64().unwrap(),
        active: f["active"].as_u64().unwrap(),
        processed: f["processed"].as_u64().unwrap(),
        loadavg: [0.0; 3],
    };
    let event = match captured.event_type() {
        // loadavg is rounded by the constructor; the capture holds values
        // that were rounded already, so put them back verbatim.
        "worker-online" => {
            Event::worker_online(&status(), &sw).with("loadavg", f["loadavg"].clone())
        }
        "worker-heartbeat" => {
            Event::worker_heartbeat(&status(), &sw).with("loadavg", f["loadavg"].clone())
        }
        "worker-offline" => {
            Event::worker_offline(&status(), &sw).with("loadavg", f["loadavg"].clone())
        }
        "task-received" => Event::task_received(&TaskReceived {
            uuid: uuid(),
            name: s("name"),
            args: s("args"),
            kwargs: s("kwargs"),
            root_id: opt("root_id"),
            parent_id: opt("parent_id"),
            retries: f["retries"].as_u64().unwrap(),
            eta: opt("eta"),
            expires: opt("expires"),
        }),
        "task-started" => Event::task_started(&uuid()),
        "task-succeeded" => {
            Event::task_succeeded(&uuid(), &s("result"), f["runtime"].as_f64().unwrap())
        }
        "task-failed" => Event::task_failed(&uuid(), &s("exception"), opt("traceback").as_deref()),
        "task-retried" => Event::task_retried(&uuid(), &s("exception"), &s("traceback")),
        "task-revoked" => Event::task_revoked(
            &uuid(),
            f["terminated"].as_bool().unwrap(),
            f["signum"].as_i64().map(|n| n as i32),
            f["expired"].as_bool().unwrap(),
        ),
        other => panic!("no constructor for captured type {other}"),
    };
    event.stamp(&Stamp {
        hostname: captured.hostname().unwrap(),
        utcoffset: f["utcoffset"].as_f64().unwrap(),
        pid: captured.pid().unwrap() as u32,
        clock: captured.clock().unwrap(),
        timestamp: captured.timestamp().unwrap(),
    })
}

#[test]
fn constructors_reproduce_every_captured_event_byte_for_byte() {
    let mut types = std::collections::BTreeSet::new();
    let mut events: Vec<Event> = Vec::new();
    for c in captured_messages() {
        events.extend(Event::parse_body(&c.body).unwrap());
    }
    let limits = support::fixture("worker-limits.json");
    for e in limits["task_events"].as_array().unwrap() {
        events.push(Event::from_map(e.as_object().unwrap().clone()).unwrap());
    }
    for captured in &events {
        let ours = rebuild(captured);
        assert_eq!(
            String::from_utf8(ours.to_json()).unwrap(),
            String::from_utf8(captured.to_json()).unwrap()
        );
        types.insert(captured.event_type().to_owned());
    }
    for t in [
        "worker-online",
        "worker-heartbeat",
        "worker-offline",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-revoked",
    ] {
        assert!(types.contains(t), "no captured {t}");
    }
}

#[test]
fn event_messages_match_the_captured_envelopes_and_properties() {
    for c in captured_messages() {
        let hostname = c.headers["hostname"].as_str().unwrap();
        let message = event_message(hostname, c.body.clone());
        assert_eq!(Value::Object(message.headers.clone()), c.headers);
        assert_eq!(
            Value::from(message.properties.delivery_mode),
            c.delivery_mode
        );
        assert_eq!(Value::from(message.properties.priority), c.priority);
        assert_eq!(message.content_type, "application/json");
        if let Some(env) = &c.envelope {
            let tag = env["properties"]["delivery_tag"].as_str().unwrap();
            let ours = encode_envelope(&message, "celeryev", &c.routing_key, tag);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                pyjson::to_string(env),
                "{}",
                c.file
            );
        }
    }
}

#[test]
fn heartbeat_requested_by_control_has_celerys_fields() {
    let sw = Software {
        ident: "celeriac".into(),
        version: "0.1.0".into(),
        system: "Linux".into(),
    };
    let e = Event::worker_heartbeat_requested(&sw).stamp(&Stamp {
        hostname: "celeriac@h",
        utcoffset: -2.0,
        pid: 1,
        clock: 3,
        timestamp: 1.5,
    });
    assert_eq!(
        pyjson::to_string(e.fields()),
        r#"{"hostname": "celeriac@h", "utcoffset": -2.0, "pid": 1, "clock": 3, "freq": 5, "sw_ident": "celeriac", "sw_ver": "0.1.0", "sw_sys": "Linux", "timestamp": 1.5, "type": "worker-heartbeat"}"#
    );
    let rejected = Event::task_rejected("id", true);
    assert_eq!(
        rejected.fields().keys().collect::<Vec<_>>(),
        ["type", "uuid", "requeue"]
    );
}
