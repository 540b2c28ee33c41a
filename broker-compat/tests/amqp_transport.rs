//! The AMQP transport against the real RabbitMQ at 127.0.0.1:5672 (guest/guest).
//!
//! Isolation: this binary recreates one vhost (`celeriac-amqp-transport-test`)
//! once, then every test uses random queue names inside it. The fixtures are
//! the py-amqp captures in `tests/fixtures/celery/amqp-*.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod amqp_support;

use std::time::{Duration, Instant};

use amqp_support::*;
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::{Consumer, ExchangeType, QueueSpec, Route, Transport};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};

#[tokio::test]
async fn captured_messages_round_trip_with_py_amqp_types() {
    let t = transport().await;
    let queue = unique("roundtrip");
    t.declare_queue(&QueueSpec::task_queue(&queue))
        .await
        .unwrap();
    let mut captures: Vec<Value> = Vec::new();
    for (file, key) in [
        ("amqp-task-messages.json", "messages"),
        ("amqp-pidbox.json", "requests"),
        ("amqp-pidbox.json", "replies"),
        ("amqp-events.json", "messages"),
    ] {
        let all = fixture(file);
        captures.extend(all[key].as_array().into_iter().flatten().take(3).cloned());
    }
    assert!(captures.len() >= 9, "fixtures not found");

    // On the wire: exactly the types py-amqp writes for these headers.
    let raw = raw_channel().await;
    for m in &captures {
        let message = captured(m);
        t.publish(&Route::queue(&queue), &message).await.unwrap();
        let got = raw
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("published message not in the queue");
        let headers = got
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let wire = AMQPValue::FieldTable(headers);
        assert_py_amqp_types(&m["properties"]["application_headers"], &wire, "headers");
    }

    // Through our consumer: body, properties and headers come back unchanged.
    for m in &captures {
        t.publish(&Route::queue(&queue), &captured(m))
            .await
            .unwrap();
    }
    let mut consumer = t
        .consume(&[QueueSpec::task_queue(&queue)], 16)
        .await
        .unwrap();
    for m in &captures {
        let d = next(&mut consumer).await;
        assert_eq!(d.message, captured(m), "{}", m["body_utf8"]);
        assert_eq!(d.info.exchange, "");
        assert_eq!(d.info.routing_key, queue);
        assert!(!d.info.redelivered);
        d.ack().await.unwrap();
    }
}

#[tokio::test]
async fn declares_what_the_python_worker_declared() {
    let fx = fixture("amqp-worker-entities.json");
    let idle = &fx["idle"];
    let t = transport().await;
    let task_queue = unique("celery");
    t.declare_queue(&QueueSpec::task_queue(&task_queue))
        .await
        .unwrap();
    let node = unique("celery@vm");
    let _pidbox = t.subscribe(&pidbox_spec(&node)).await.unwrap();
    let gossip = event_spec("worker.#");
    let _gossip = t.subscribe(&gossip).await.unwrap();

    let q_keys = ["durable", "auto_delete", "exclusive", "arguments"];
    let queues = rabbitmqctl_json(&[
        "list_queues",
        "-p",
        vhost(),
        "name",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
    ]);
    let want = |name: &str| entity(idle["queues"].as_array().unwrap(), name, &q_keys);
    assert_eq!(entity(&queues, &task_queue, &q_keys), want("celery"));
    assert_eq!(
        entity(&queues, &format!("{node}.celery.pidbox"), &q_keys),
        want("celery@vm.celery.pidbox")
    );
    assert_eq!(
        entity(&queues, &gossip.name, &q_keys),
        want("celeryev.f148b2b7-f68e-49f7-99b8-9a2f731ad8ed")
    );

    let x_keys = ["type", "durable", "auto_delete", "internal", "arguments"];
    let exchanges = rabbitmqctl_json(&[
        "list_exchanges",
        "-p",
        vhost(),
        "name",
        "type",
        "durable",
        "auto_delete",
        "internal",
        "arguments",
    ]);
    let want = |name: &str| entity(idle["exchanges"].as_array().unwrap(), name, &x_keys);
    assert_eq!(entity(&exchanges, &task_queue, &x_keys), want("celery"));
    assert_eq!(
        entity(&exchanges, "celery.pidbox", &x_keys),
        want("celery.pidbox")
    );
    assert_eq!(entity(&exchanges, "celeryev", &x_keys), want("celeryev"));

    // A queue declared with the Python worker's exact flags and typed
    // arguments accepts our declaration (no PRECONDITION_FAILED) ...
    let py = &idle["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "celery@vm.celery.pidbox")
        .unwrap();
    let raw = raw_channel().await;
    let shared = unique("py-declared");
    let options = QueueDeclareOptions {
        durable: false,
        auto_delete: true,
        ..Default::default()
    };
    raw.queue_declare(
        shared.as_str().into(),
        options,
        typed_arguments(&py["arguments"]),
    )
    .await
    .unwrap();
    let spec = QueueSpec {
        name: shared.clone(),
        exchange: String::new(),
        exclusive: false,
        ..pidbox_spec(&node)
    };
    t.declare_queue(&spec)
        .await
        .expect("same flags and arguments as py-amqp");
    // ... while a different value would have been refused.
    let mut other = typed_arguments(&py["arguments"]);
    other.insert("x-expires".into(), AMQPValue::LongInt(20_000));
    let refused = raw
        .queue_declare(shared.as_str().into(), options, other)
        .await;
    assert!(refused.unwrap_err().to_string().contains("PRECONDITION"));
    // Through the transport that refusal is permanent, and harmless to it.
    let conflicting = QueueSpec {
        expires: Some(Duration::from_secs(20)),
        ..spec
    };
    let err = t.declare_queue(&conflicting).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    t.publish(&Route::queue(&shared), &simple("still usable"))
        .await
        .unwrap();
}

#[tokio::test]
async fn global_qos_holds_back_beyond_prefetch() {
    let t = transport().await;
    assert_eq!(t.server().product, "RabbitMQ");
    let queue = unique("qos");
    let spec = QueueSpec::task_queue(&queue);
    t.declare_queue(&spec).await.unwrap();
    for i in 0..5 {
        t.publish(&Route::queue(&queue), &simple(&i.to_string()))
            .await
            .unwrap();
    }
    let consumer = t.consume_amqp(&[spec], 2).await.unwrap();
    assert!(
        consumer.global_qos(),
        "RabbitMQ 3.x: Celery uses global QoS"
    );
    let mut consumer: Box<dyn Consumer> = Box::new(consumer);
    let first = next(&mut consumer).await;
    let _second = next(&mut consumer).await;
    // The broker keeps the other three: nothing more arrives until an ack.
    wait_ready(&t, &queue, 3).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), consumer.next())
            .await
            .is_err()
    );
    assert_eq!(ready(&t, &queue).await, 3);
    first.ack().await.unwrap();
    let _third = next(&mut consumer).await;
    wait_ready(&t, &queue, 2).await;
    // Raising the prefetch (an ETA task held) lets one more through without an ack.
    consumer.set_prefetch(3).await.unwrap();
    let _fourth = next(&mut consumer).await;
    wait_ready(&t, &queue, 1).await;

    let channels = rabbitmqctl_json(&[
        "list_channels",
        "vhost",
        "global_prefetch_count",
        "prefetch_count",
    ]);
    let ours: Vec<_> = channels
        .iter()
        .filter(|c| c["vhost"] == vhost() && c["global_prefetch_count"] == 3)
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one channel with global prefetch 3: {channels:?}"
    );
}

#[tokio::test]
async fn quorum_queue_consumes_with_per_consumer_qos() {
    let t = transport().await;
    let queue = unique("quorum");
    let spec = QueueSpec {
        quorum: true,
        ..QueueSpec::task_queue(&queue)
    };
    t.declare_queue(&spec).await.unwrap();
    t.publish(&Route::queue(&queue), &simple("q"))
        .await
        .unwrap();
    let consumer = t.consume_amqp(&[spec], 4).await.unwrap();
    assert!(!consumer.global_qos());
    let mut consumer: Box<dyn Consumer> = Box::new(consumer);
    let d = next(&mut consumer).await;
    assert_eq!(d.message.body, b"q");
    d.ack().await.unwrap();
    wait_ready(&t, &queue, 0).await;
}

#[tokio::test]
async fn priority_queue_delivers_nine_before_zero() {
    let t = transport().await;
    let queue = unique("priority");
    let spec = QueueSpec {
        max_priority: Some(9),
        ..QueueSpec::task_queue(&queue)
    };
    t.declare_queue(&spec).await.unwrap();
    for priority in [0u8, 9, 5] {
        let mut m = simple(&priority.to_string());
        m.properties.priority = Some(priority);
        t.publish(&Route::queue(&queue), &m).await.unwrap();
    }
    let mut consumer = t.consume(&[spec], 1).await.unwrap();
    for want in [9u8, 5, 0] {
        let d = next(&mut consumer).await;
        assert_eq!(d.message.properties.priority, Some(want));
        d.ack().await.unwrap();
    }
}

#[tokio::test]
async fn reject_requeues_or_drops() {
    let t = transport().await;
    let queue = unique("reject");
    let spec = QueueSpec::task_queue(&queue);
    t.declare_queue(&spec).await.unwrap();
    t.publish(&Route::queue(&queue), &simple("again"))
        .await
        .unwrap();
    let mut consumer = t.consume(std::slice::from_ref(&spec), 4).await.unwrap();
    let d = next(&mut consumer).await;
    assert!(!d.info.redelivered);
    d.reject(true).await.unwrap();
    let d = next(&mut consumer).await;
    assert!(
        d.info.redelivered,
        "requeued message comes back redelivered"
    );
    assert_eq!(d.message.body, b"again");
    d.restore().await.unwrap();
    let d = next(&mut consumer).await;
    assert!(d.info.redelivered);
    d.reject(false).await.unwrap();
    // Dropped, not merely unacked: closing the connection brings nothing back.
    drop(consumer);
    t.close().await.unwrap();
    let t = transport().await;
    assert_eq!(t.queue_depth(&queue).await.unwrap(), Default::default());
}

#[tokio::test]
async fn publisher_confirms_and_unroutable_messages() {
    let t = transport().await;
    // A direct route no queue takes is an error, not a silent loss.
    let err = t
        .publish(&Route::queue(&unique("nobody")), &simple("x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("NO_ROUTE") || err.to_string().contains("NOROUTE"),
        "{err}"
    );
    assert!(!err.is_transient(), "{err}");
    // A broadcast nobody listens to is fine.
    let events = Route {
        exchange: "celeryev".into(),
        exchange_type: ExchangeType::Topic,
        routing_key: "worker.heartbeat".into(),
    };
    t.publish(&events, &simple("{}")).await.unwrap();
    // A nack (queue full, reject-publish) is an error.
    let full = unique("full");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    let raw = raw_channel().await;
    raw.queue_declare(full.as_str().into(), options, args)
        .await
        .unwrap();
    let nacked = t
        .publish(&Route::queue(&full), &simple("x"))
        .await
        .unwrap_err();
    assert!(nacked.is_transient(), "{nacked}");
    // The confirm channel survives both errors.
    let queue = unique("confirmed");
    t.declare_queue(&QueueSpec::task_queue(&queue))
        .await
        .unwrap();
    t.publish(&Route::queue(&queue), &simple("x"))
        .await
        .unwrap();
    assert_eq!(ready(&t, &queue).await, 1, "confirmed means stored");
}

#[tokio::test]
async fn connection_loss_requeues_unacked_deliveries() {
    let first = transport().await;
    let queue = unique("crash");
    let spec = QueueSpec::task_queue(&queue);
    first.declare_queue(&spec).await.unwrap();
    first
        .publish(&Route::queue(&queue), &simple("held"))
        .await
        .unwrap();
    let mut consumer = first.consume(std::slice::from_ref(&spec), 4).await.unwrap();
    let held = next(&mut consumer).await;
    assert!(!held.info.redelivered);
    first.close().await.unwrap();
    assert!(!first.is_connected());
    let err = held.ack().await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    let second = transport().await;
    let mut consumer = second.consume(&[spec], 4).await.unwrap();
    let again = next(&mut consumer).await;
    assert!(again.info.redelivered);
    assert_eq!(again.message.body, b"held");
    again.ack().await.unwrap();
}

#[tokio::test]
async fn add_cancel_and_stop() {
    let t = transport().await;
    let (a, b) = (unique("a"), unique("b"));
    let (spec_a, spec_b) = (QueueSpec::task_queue(&a), QueueSpec::task_queue(&b));
    let mut consumer = t.consume(std::slice::from_ref(&spec_a), 8).await.unwrap();
    consumer.add_queue(&spec_b).await.unwrap();
    assert_eq!(consumer.queues(), vec![spec_a.clone(), spec_b.clone()]);
    t.publish(&Route::queue(&b), &simple("b")).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.info.routing_key, b);
    d.ack().await.unwrap();

    consumer.cancel_queue(&b).await.unwrap();
    assert_eq!(consumer.queues(), vec![spec_a.clone()]);
    t.publish(&Route::queue(&b), &simple("b2")).await.unwrap();
    t.publish(&Route::queue(&a), &simple("a")).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(d.message.body, b"a", "the cancelled queue is not consumed");
    assert_eq!(ready(&t, &b).await, 1);

    consumer.stop().await.unwrap();
    t.delete_queue(&spec_b).await.unwrap();
    assert!(t.queue_depth(&b).await.is_err(), "deleted");
    t.delete_queue(&spec_b).await.unwrap();
    assert!(
        consumer.next().await.is_err(),
        "a stopped consumer delivers nothing"
    );
    t.publish(&Route::queue(&a), &simple("a2")).await.unwrap();
    assert_eq!(ready(&t, &a).await, 1);
    // A delivery received before stop is still ackable.
    d.ack().await.unwrap();
}

#[tokio::test]
async fn broadcasts_reach_fanout_and_topic_subscribers() {
    let t = transport().await;
    let mut pidbox = t.subscribe(&pidbox_spec(&unique("node"))).await.unwrap();
    let mut gossip = t.subscribe(&event_spec("worker.#")).await.unwrap();
    let request = captured(&fixture("amqp-pidbox.json")["requests"][0]);
    let fanout = Route {
        exchange: "celery.pidbox".into(),
        exchange_type: ExchangeType::Fanout,
        routing_key: String::new(),
    };
    t.publish(&fanout, &request).await.unwrap();
    let got = tokio::time::timeout(WAIT, pidbox.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, request);

    let events = fixture("amqp-events.json");
    let topic = |rk: &str| Route {
        exchange: "celeryev".into(),
        exchange_type: ExchangeType::Topic,
        routing_key: rk.into(),
    };
    let task_event = json!({"type": "task-received"}).to_string();
    // Published first but not matching `worker.#`: the heartbeat arrives first.
    t.publish(&topic("task.multi"), &simple(&task_event))
        .await
        .unwrap();
    let online = captured(&events["messages"][0]);
    t.publish(&topic("worker.online"), &online).await.unwrap();
    let got = tokio::time::timeout(WAIT, gossip.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, online);
}

#[tokio::test]
async fn kombu_url_spelling_connects_to_the_default_vhost() {
    let options = AmqpOptions::from_url("amqp://guest:guest@127.0.0.1:5672//").unwrap();
    assert_eq!(options.vhost, "/");
    let t = AmqpTransport::connect(options)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at 127.0.0.1:5672 is not usable: {e}"));
    assert!(t.is_connected());
    let missing = t.queue_depth(&unique("missing")).await.unwrap_err();
    assert!(
        missing.to_string().contains("NOT_FOUND") || missing.to_string().contains("NOTFOUND"),
        "{missing}"
    );
    assert!(!missing.is_transient(), "{missing}");

    // With QoS decided by the caller, no server probe is made.
    let forced = AmqpOptions::from_url(&url())
        .unwrap()
        .with_global_qos(false);
    let t = AmqpTransport::connect(forced).await.unwrap();
    assert_eq!(t.server().version, "");
    let queue = unique("no-probe");
    let consumer = t
        .consume_amqp(&[QueueSpec::task_queue(&queue)], 1)
        .await
        .unwrap();
    assert!(!consumer.global_qos());
}

#[tokio::test]
async fn broker_forced_close_is_transient_and_requeues() {
    let name = unique("celeriac-forced");
    let options = AmqpOptions::from_url(&url())
        .unwrap()
        .with_vhost(forced_vhost())
        .with_connection_name(&name);
    let first = AmqpTransport::connect(options.clone()).await.unwrap();
    let queue = unique("forced");
    let spec = QueueSpec::task_queue(&queue);
    first.declare_queue(&spec).await.unwrap();
    first
        .publish(&Route::queue(&queue), &simple("held"))
        .await
        .unwrap();
    let mut consumer = first.consume(std::slice::from_ref(&spec), 4).await.unwrap();
    let held = next(&mut consumer).await;

    let connections =
        rabbitmqctl_json(&["list_connections", "pid", "client_properties", "timeout"]);
    let ours = connections
        .iter()
        .find(|c| c["client_properties"].to_string().contains(&name))
        .unwrap_or_else(|| panic!("connection {name} not listed: {connections:?}"));
    let heartbeat = ours["timeout"].as_u64().unwrap();
    assert!(
        (1..=120).contains(&heartbeat),
        "heartbeat {heartbeat} s negotiated"
    );
    let out = rabbitmqctl(&[
        "close_all_connections",
        "--vhost",
        forced_vhost(),
        "celeriac test",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lost = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(lost.is_transient(), "{lost}");
    let publish = first
        .publish(&Route::queue(&queue), &simple("x"))
        .await
        .unwrap_err();
    assert!(publish.is_transient(), "{publish}");
    assert!(held.ack().await.unwrap_err().is_transient());

    // The documented recovery: a fresh connect + consume gets it back.
    let second = AmqpTransport::connect(options).await.unwrap();
    let mut consumer = second.consume(&[spec], 4).await.unwrap();
    let again = next(&mut consumer).await;
    assert!(again.info.redelivered);
    assert_eq!(again.message.body, b"held");
    again.ack().await.unwrap();
}

#[tokio::test]
async fn next_is_cancellation_safe() {
    let t = transport().await;
    let queue = unique("cancel-safe");
    let spec = QueueSpec::task_queue(&queue);
    t.declare_queue(&spec).await.unwrap();
    let mut consumer = t.consume(&[spec], 50).await.unwrap();
    for i in 0..50 {
        t.publish(&Route::queue(&queue), &simple(&i.to_string()))
            .await
            .unwrap();
    }
    // Drop the `next()` future again and again, mostly mid-wait: nothing is lost.
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 50 {
        assert!(
            Instant::now() < deadline,
            "only {} of 50 received",
            got.len()
        );
        if let Ok(d) = tokio::time::timeout(Duration::from_micros(50), consumer.next()).await {
            let d = d.unwrap();
            got.push(String::from_utf8(d.message.body.clone()).unwrap());
            d.ack().await.unwrap();
        }
    }
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    wait_ready(&t, &queue, 0).await;
}
