//! The broker source on real Redis (kombu's four priority lists + the
//! `unacked` hash) and real RabbitMQ (ready counts; unacked is invisible to
//! AMQP 0-9-1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use broker_compat::protocol::Message;
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::{QueueSpec, Route, Transport};
use celeriac_scaler::source::broker::BrokerSource;
use celeriac_scaler::source::{Load, LoadSource};
use serde_json::{json, Value};
use support::{eventually, unique, AMQP, REDIS};

/// Scaler tests keep to their own Redis database.
const DB: u8 = 12;

fn redis_url() -> String {
    format!("{REDIS}{DB}")
}

fn redis() -> redis::Connection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    client
        .get_connection()
        .unwrap_or_else(|e| panic!("Redis at {url} is not reachable (start redis-server): {e}"))
}

/// Removes a queue's lists and its `unacked` entries on drop.
struct RedisQueue(String);

impl Drop for RedisQueue {
    fn drop(&mut self) {
        let mut c = redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg("unacked")
            .query(&mut c)
            .unwrap_or_default();
        for (tag, v) in all {
            if v.contains(&format!("\"{}\"]", self.0)) {
                let _: redis::RedisResult<()> =
                    redis::cmd("HDEL").arg("unacked").arg(&tag).query(&mut c);
                let _: redis::RedisResult<()> = redis::cmd("ZREM")
                    .arg("unacked_index")
                    .arg(&tag)
                    .query(&mut c);
            }
        }
    }
}

/// The envelope a real Airflow scheduler put on Redis, re-routed to `queue`.
fn airflow_envelope(queue: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../broker-compat/tests/fixtures/airflow/redis_queue_afcap_simple_echo.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let raw = fixture["messages"][0]["raw"].as_str().unwrap();
    let mut env: Value = serde_json::from_str(raw).unwrap();
    env["properties"]["delivery_info"]["routing_key"] = json!(queue);
    env
}

async fn observe(url: &str, queues: &[&str]) -> Load {
    let source = BrokerSource::new(url, queues.iter().map(|q| q.to_string()).collect()).unwrap();
    source.observe().await.unwrap()
}

#[tokio::test]
async fn redis_counts_all_priority_lists_and_unacked_of_the_queue() {
    let q = unique("scaler_q");
    let other = unique("scaler_other");
    let _guards = (RedisQueue(q.clone()), RedisQueue(other.clone()));
    let mut c = redis();
    let env = airflow_envelope(&q).to_string();
    // kombu's layout: `q` (priority 0) and `q\x06\x16{3,6,9}`.
    for (list, n) in [
        (q.clone(), 2),
        (format!("{q}\x06\x163"), 1),
        (format!("{q}\x06\x166"), 1),
        (format!("{q}\x06\x169"), 3),
    ] {
        for _ in 0..n {
            let _: () = redis::cmd("LPUSH")
                .arg(&list)
                .arg(&env)
                .query(&mut c)
                .unwrap();
        }
    }
    let _: () = redis::cmd("LPUSH")
        .arg(&other)
        .arg(&env)
        .query(&mut c)
        .unwrap();
    // What `airflow celery worker` leaves while running two tasks (fixture), plus one of another queue.
    for (tag, rk) in [(unique("t"), &q), (unique("t"), &q), (unique("t"), &other)] {
        let value = json!([airflow_envelope(rk), "", rk]).to_string();
        let _: () = redis::cmd("HSET")
            .arg("unacked")
            .arg(&tag)
            .arg(value)
            .query(&mut c)
            .unwrap();
    }
    let load = observe(&redis_url(), &[&q]).await;
    assert_eq!((load.running, load.queued), (2, 7));
    let load = observe(&redis_url(), &[&q, &other]).await;
    assert_eq!((load.running, load.queued), (3, 8));
    let load = observe(&redis_url(), &[&unique("nobody")]).await;
    assert_eq!((load.running, load.queued), (0, 0));
}

fn message(priority: u8) -> Message {
    let mut m = Message {
        body:
            b"[[], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]"
                .to_vec(),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        ..Message::default()
    };
    let id = uuid::Uuid::new_v4().to_string();
    m.headers.insert("lang".into(), json!("py"));
    m.headers.insert("task".into(), json!("scaler.test"));
    m.headers.insert("id".into(), json!(id));
    m.headers.insert("root_id".into(), json!(id));
    m.properties.correlation_id = Some(id);
    m.properties.delivery_mode = Some(2);
    m.properties.priority = Some(priority);
    m
}

/// Publish 5 messages at different priorities, let a real consumer hold 2
/// (prefetched, unacked): the source sees 3 ready + 2 unacked.
#[tokio::test]
async fn redis_sees_messages_a_consumer_prefetched() {
    let q = unique("scaler_pf");
    let _guard = RedisQueue(q.clone());
    let transport = RedisTransport::connect(RedisOptions::from_url(&redis_url()).unwrap())
        .await
        .unwrap();
    let spec = QueueSpec::task_queue(&q);
    transport.declare_queue(&spec).await.unwrap();
    for p in [0, 3, 6, 9, 9] {
        transport
            .publish(&Route::queue(&q), &message(p))
            .await
            .unwrap();
    }
    assert_eq!(observe(&redis_url(), &[&q]).await.queued, 5);
    let mut consumer = transport.consume(&[spec], 2).await.unwrap();
    let held = (
        consumer.next().await.unwrap(),
        consumer.next().await.unwrap(),
    );
    let load = eventually(Duration::from_secs(5), "2 unacked + 3 ready", || async {
        let l = observe(&redis_url(), &[&q]).await;
        ((l.running, l.queued) == (2, 3)).then_some(l)
    })
    .await;
    assert_eq!(load.total(), 5);
    held.0.ack().await.unwrap();
    held.1.ack().await.unwrap();
    consumer.stop().await.unwrap();
}

/// A fresh RabbitMQ vhost (guest has full rights), deleted on drop.
struct Vhost(String);

impl Vhost {
    fn create() -> Vhost {
        let name = unique("scaler");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost(name)
    }

    fn url(&self) -> String {
        format!("{AMQP}{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.0])
            .status();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} (is RabbitMQ running?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rabbitmq_counts_ready_messages_and_missing_queues_as_empty() {
    let vhost = Vhost::create();
    let transport = AmqpTransport::connect(AmqpOptions::from_url(&vhost.url()).unwrap())
        .await
        .unwrap();
    let spec = QueueSpec::task_queue("default");
    transport.declare_queue(&spec).await.unwrap();
    for p in [0, 5, 9, 0, 0] {
        transport
            .publish(&Route::queue("default"), &message(p))
            .await
            .unwrap();
    }
    let load = observe(&vhost.url(), &["default", "never_declared"]).await;
    assert_eq!((load.running, load.queued), (0, 5));
    let mut consumer = transport.consume(&[spec], 2).await.unwrap();
    let held = (
        consumer.next().await.unwrap(),
        consumer.next().await.unwrap(),
    );
    // Prefetched messages leave the ready count; AMQP cannot see them as unacked.
    eventually(Duration::from_secs(5), "3 ready", || async {
        (observe(&vhost.url(), &["default"]).await.queued == 3).then_some(())
    })
    .await;
    held.0.ack().await.unwrap();
    held.1.ack().await.unwrap();
}

#[tokio::test]
async fn a_broker_that_is_down_is_a_transient_error() {
    let url = format!("redis://127.0.0.1:{}/0", support::pgbouncer::spare_port());
    let source = BrokerSource::new(&url, vec!["default".into()]).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), source.observe())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}
