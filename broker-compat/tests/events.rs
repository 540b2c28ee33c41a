//! Events (spec §5): golden tests against the real Celery captures, and
//! integration tests that publish and receive on real Redis and RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "events/support.rs"]
mod support;

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

// ---- integration: real Redis and RabbitMQ -------------------------------

use std::sync::Arc;

use broker_compat::events::{EventDispatcher, EventReceiver, LamportClock, BATCH_LIMIT};
use support::{node_name, within, Broker, Namespace};

fn software() -> Software {
    Software {
        ident: "celeriac".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        system: "Linux".into(),
    }
}

fn status() -> WorkerStatus {
    WorkerStatus {
        freq: 2.0,
        active: 1,
        processed: 7,
        loadavg: [0.591, 1.4, 1.0],
    }
}

/// worker-online as one object, then a task.multi batch; a `#` receiver
/// gets them all in order with Celery's fields, and adjusts its clock.
async fn dispatch_and_receive(broker: Broker) {
    let ns = Namespace::new(broker);
    let node = node_name();
    let recv_clock = Arc::new(LamportClock::new(50));
    let mut all = EventReceiver::subscribe(&*ns.transport().await, "#", recv_clock.clone())
        .await
        .unwrap();
    let clock = Arc::new(LamportClock::default());
    let dispatcher = EventDispatcher::new(ns.transport().await, &*node, 4242, clock.clone(), 0.0);

    let online = dispatcher
        .send(Event::worker_online(&status(), &software()))
        .await
        .unwrap();
    assert_eq!(online.clock(), Some(1));
    assert_eq!(
        online.get("loadavg"),
        Some(&serde_json::json!([0.6, 1.4, 1.0]))
    );
    let sent = dispatcher
        .send_batch(vec![
            Event::task_received(&TaskReceived {
                uuid: "t1".into(),
                name: "tasks.add".into(),
                args: "(2,)".into(),
                kwargs: "{'y': 3}".into(),
                root_id: Some("t1".into()),
                ..TaskReceived::default()
            }),
            Event::task_started("t1"),
            Event::task_succeeded("t1", "5", 0.25),
        ])
        .await
        .unwrap();
    assert_eq!(
        sent.iter().map(|e| e.clock()).collect::<Vec<_>>(),
        [Some(2), Some(3), Some(4)]
    );

    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(within("events", all.next()).await.unwrap());
    }
    assert_eq!(got[0], online);
    assert_eq!(&got[1..], &sent[..]);
    let keys: Vec<&str> = got[0].fields().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "hostname",
            "utcoffset",
            "pid",
            "clock",
            "freq",
            "active",
            "processed",
            "loadavg",
            "sw_ident",
            "sw_ver",
            "sw_sys",
            "timestamp",
            "type"
        ]
    );
    assert_eq!(got[3].hostname(), Some(node.as_str()));
    // 50 → adjust(1)=51, adjust(2)=52, adjust(3)=53, adjust(4)=54
    assert_eq!(recv_clock.value(), 54);
}

#[tokio::test]
async fn dispatch_and_receive_redis() {
    dispatch_and_receive(Broker::Redis).await;
}

#[tokio::test]
async fn dispatch_and_receive_amqp() {
    dispatch_and_receive(Broker::Amqp).await;
}

/// A `worker.#` receiver (what gossip binds) does not see task events.
async fn binding_key_filters(broker: Broker) {
    let ns = Namespace::new(broker);
    let clock = Arc::new(LamportClock::default());
    let mut workers = EventReceiver::subscribe(&*ns.transport().await, "worker.#", clock.clone())
        .await
        .unwrap();
    let dispatcher = EventDispatcher::new(ns.transport().await, node_name(), 1, clock, 0.0);
    dispatcher.send(Event::task_started("t1")).await.unwrap();
    dispatcher
        .send_batch(vec![Event::task_started("t2")])
        .await
        .unwrap();
    let hb = dispatcher
        .send(Event::worker_heartbeat(&status(), &software()))
        .await
        .unwrap();
    let first = within("the heartbeat", workers.next()).await.unwrap();
    assert_eq!(first, hb);
}

#[tokio::test]
async fn binding_key_filters_redis() {
    binding_key_filters(Broker::Redis).await;
}

#[tokio::test]
async fn binding_key_filters_amqp() {
    binding_key_filters(Broker::Amqp).await;
}

/// The raw messages: headers `{"hostname"}`, transient, JSON lists of at
/// most 24 on `task.multi`.
async fn batch_messages_on_the_wire(broker: Broker) {
    let ns = Namespace::new(broker);
    let transport = ns.transport().await;
    let spec = EventReceiver::queue_spec(transport.kind(), "#");
    let mut raw = transport.subscribe(&spec).await.unwrap();
    let node = node_name();
    let clock = Arc::new(LamportClock::default());
    let dispatcher = EventDispatcher::new(ns.transport().await, &*node, 1, clock, 0.0);
    let events: Vec<Event> = (0..30)
        .map(|i| Event::task_started(&format!("t{i}")))
        .collect();
    let sent = dispatcher.send_batch(events).await.unwrap();

    let mut sizes = Vec::new();
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let m = within("task.multi messages", raw.next()).await.unwrap();
        assert_eq!(m.content_type, "application/json");
        assert_eq!(
            Value::Object(m.headers.clone()),
            serde_json::json!({ "hostname": node })
        );
        assert_eq!(m.properties.delivery_mode, Some(1));
        assert!(m.body.starts_with(b"[{\"hostname\": "));
        let batch = Event::parse_body(&m.body).unwrap();
        sizes.push(batch.len());
        received.extend(batch);
    }
    assert_eq!(sizes, [BATCH_LIMIT, 30 - BATCH_LIMIT]);
    assert_eq!(received, sent);
}

#[tokio::test]
async fn batch_messages_on_the_wire_redis() {
    batch_messages_on_the_wire(Broker::Redis).await;
}

#[tokio::test]
async fn batch_messages_on_the_wire_amqp() {
    batch_messages_on_the_wire(Broker::Amqp).await;
}

/// On RabbitMQ `celeryev` is Celery's durable topic exchange.
#[tokio::test]
async fn amqp_celeryev_is_a_durable_topic_exchange() {
    let ns = Namespace::new(Broker::Amqp);
    let clock = Arc::new(LamportClock::default());
    let _r = EventReceiver::subscribe(&*ns.transport().await, "#", clock.clone())
        .await
        .unwrap();
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_exchanges",
            "-p",
            ns.name(),
            "name",
            "type",
            "durable",
            "--quiet",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "celeryev\ttopic\ttrue"), "{text}");
}

/// On Redis events go out with PUBLISH on `/<db>.celeryev/<routing key>`
/// (after `global_keyprefix`), which is what Python monitors PSUBSCRIBE.
#[tokio::test]
async fn redis_event_channels_are_kombus() {
    use futures::StreamExt;
    let ns = Namespace::new(Broker::Redis);
    let client = redis::Client::open(support::REDIS_URL).unwrap();
    let mut pubsub = client.get_async_pubsub().await.expect("Redis is reachable");
    pubsub.psubscribe(format!("{}:*", ns.name())).await.unwrap();
    let mut stream = pubsub.into_on_message();
    let clock = Arc::new(LamportClock::default());
    let dispatcher = EventDispatcher::new(ns.transport().await, node_name(), 1, clock, 0.0);
    dispatcher
        .send(Event::worker_online(&status(), &software()))
        .await
        .unwrap();
    dispatcher
        .send_batch(vec![Event::task_started("t")])
        .await
        .unwrap();
    let mut channels = Vec::new();
    for _ in 0..2 {
        let msg = within("a PUBLISH", stream.next())
            .await
            .expect("pub/sub open");
        channels.push(msg.get_channel_name().to_owned());
    }
    let p = ns.name();
    assert_eq!(
        channels,
        [
            format!("{p}:/0.celeryev/worker.online"),
            format!("{p}:/0.celeryev/task.multi")
        ]
    );
}
