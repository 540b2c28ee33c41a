//! Events (spec §5): integration tests on real Redis and RabbitMQ.

use serde_json::Value;

use crate::support;
use broker_compat::events::{Event, Software, TaskReceived, WorkerStatus};
use std::sync::Arc;

use crate::support::{node_name, within, Broker, Namespace};
use broker_compat::events::{EventDispatcher, EventReceiver, LamportClock, BATCH_LIMIT};

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
