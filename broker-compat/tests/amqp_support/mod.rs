//! Helpers of `amqp_transport.rs`: the test vhost, connections, fixture
//! messages and what `rabbitmqctl` lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use broker_compat::protocol::{Message, Properties};
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::{Consumer, Delivery, ExchangeType, QueueSpec, Transport};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};

/// Prefix of the vhosts this binary creates. nextest runs every test in its
/// own process, so each process gets its own pair of vhosts (named after its
/// pid) and removes the pairs of processes that are gone.
const PREFIX: &str = "celeriac-amqp-test-";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl {args:?}: {e}"))
}

fn names() -> &'static (String, String) {
    static NAMES: OnceLock<(String, String)> = OnceLock::new();
    NAMES.get_or_init(|| {
        let pid = std::process::id();
        (format!("{PREFIX}{pid}"), format!("{PREFIX}{pid}-forced"))
    })
}

/// The vhost of this test process, created once (rabbitmqctl is slow).
pub fn vhost() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        remove_stale_vhosts();
        let (main, forced) = names();
        for args in [
            vec!["add_vhost", main.as_str()],
            vec![
                "set_permissions",
                "-p",
                main.as_str(),
                "guest",
                ".*",
                ".*",
                ".*",
            ],
            vec!["add_vhost", forced.as_str()],
            vec![
                "set_permissions",
                "-p",
                forced.as_str(),
                "guest",
                ".*",
                ".*",
                ".*",
            ],
        ] {
            let out = rabbitmqctl(&args);
            assert!(
                out.status.success(),
                "rabbitmqctl {args:?} failed (is RabbitMQ running?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    &names().0
}

/// Only the forced-close test connects here: the broker closes every
/// connection of this vhost at once.
pub fn forced_vhost() -> &'static str {
    vhost();
    &names().1
}

/// Delete the vhosts of earlier test processes that no longer run.
fn remove_stale_vhosts() {
    let out = rabbitmqctl(&["list_vhosts", "--silent"]);
    for name in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.trim_end_matches("-forced");
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = rabbitmqctl(&["delete_vhost", name]);
        }
    }
}

pub fn url() -> String {
    format!("amqp://guest:guest@127.0.0.1:5672/{}", vhost())
}

pub async fn transport() -> AmqpTransport {
    let options = AmqpOptions::from_url(&url())
        .unwrap()
        .with_connection_name("celeriac-amqp-test");
    AmqpTransport::connect(options)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at 127.0.0.1:5672 is not usable: {e}"))
}

pub async fn raw_channel() -> lapin::Channel {
    let conn = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at 127.0.0.1:5672 is not usable: {e}"));
    // The channel keeps the connection open for as long as the test holds it.
    conn.create_channel().await.unwrap()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("no delivery within 10 s")
        .expect("consumer failed")
}

pub async fn ready(t: &AmqpTransport, queue: &str) -> u64 {
    t.queue_depth(queue).await.unwrap().ready
}

pub async fn wait_ready(t: &AmqpTransport, queue: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = ready(t, queue).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {queue}: ready {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/celery/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A captured message (properties + body) as a kombu [`Message`].
pub fn captured(m: &Value) -> Message {
    let p = &m["properties"];
    let text = |k: &str| p[k].as_str().map(str::to_owned);
    Message {
        body: m["body_utf8"].as_str().unwrap().as_bytes().to_vec(),
        content_type: text("content_type").unwrap(),
        content_encoding: text("content_encoding").unwrap(),
        headers: p["application_headers"].as_object().unwrap().clone(),
        properties: Properties {
            correlation_id: text("correlation_id"),
            reply_to: text("reply_to"),
            delivery_mode: p["delivery_mode"].as_u64().map(|v| v as u8),
            priority: p["priority"].as_u64().map(|v| v as u8),
            expiration: text("expiration"),
            extra: Map::new(),
        },
    }
}

pub fn simple(body: &str) -> Message {
    Message {
        body: body.as_bytes().to_vec(),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        properties: Properties {
            delivery_mode: Some(2),
            priority: Some(0),
            ..Properties::default()
        },
        ..Message::default()
    }
}

/// The AMQP type letter py-amqp's `_write_item` uses for a JSON value.
pub fn py_amqp_type(v: &Value) -> char {
    match v {
        Value::Null => 'V',
        Value::Bool(_) => 't',
        Value::Number(n) if n.is_f64() => 'd',
        Value::Number(n) if n.as_i64().is_some_and(|i| i.abs() <= 2147483647) => 'I',
        Value::Number(_) => 'l',
        Value::String(_) => 'S',
        Value::Array(_) => 'A',
        Value::Object(_) => 'F',
    }
}

pub fn assert_py_amqp_types(json: &Value, amqp: &AMQPValue, path: &str) {
    assert_eq!(
        amqp.get_type().get_id(),
        py_amqp_type(json),
        "type of {path}"
    );
    match (json, amqp) {
        (Value::Array(items), AMQPValue::FieldArray(arr)) => {
            for (i, (j, a)) in items.iter().zip(arr.as_slice()).enumerate() {
                assert_py_amqp_types(j, a, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(map), AMQPValue::FieldTable(table)) => {
            assert_eq!(map.len(), table.inner().len(), "size of {path}");
            for (k, j) in map {
                let a = table
                    .inner()
                    .get(k.as_str())
                    .unwrap_or_else(|| panic!("{path}.{k}"));
                assert_py_amqp_types(j, a, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

pub fn rabbitmqctl_json(args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--formatter", "json", "--quiet"]);
    let out = rabbitmqctl(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rabbitmqctl {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn pidbox_spec(node: &str) -> QueueSpec {
    QueueSpec {
        name: format!("{node}.celery.pidbox"),
        exchange: "celery.pidbox".into(),
        exchange_type: ExchangeType::Fanout,
        routing_key: String::new(),
        durable: false,
        exclusive: true,
        auto_delete: true,
        max_priority: None,
        message_ttl: Some(Duration::from_secs(300)),
        expires: Some(Duration::from_secs(10)),
        quorum: false,
    }
}

pub fn event_spec(binding: &str) -> QueueSpec {
    QueueSpec {
        name: unique("celeryev"),
        exchange: "celeryev".into(),
        exchange_type: ExchangeType::Topic,
        routing_key: binding.into(),
        durable: false,
        exclusive: true,
        auto_delete: true,
        max_priority: None,
        message_ttl: Some(Duration::from_secs(5)),
        expires: Some(Duration::from_secs(60)),
        quorum: false,
    }
}

/// What `rabbitmqctl` shows for an entity, in the fixture's shape.
pub fn entity(list: &[Value], name: &str, keys: &[&str]) -> Value {
    let found = list
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not declared"));
    keys.iter()
        .map(|k| (k.to_string(), found[*k].clone()))
        .collect::<Map<_, _>>()
        .into()
}

/// The fixture's `arguments` ([[name, type, value]]) as an AMQP table.
pub fn typed_arguments(args: &Value) -> FieldTable {
    let mut table = FieldTable::default();
    for arg in args.as_array().unwrap() {
        let value = match arg[1].as_str().unwrap() {
            "signedint" => AMQPValue::LongInt(arg[2].as_i64().unwrap() as i32),
            "long" => AMQPValue::LongLongInt(arg[2].as_i64().unwrap()),
            other => panic!("argument type {other} not handled by this test"),
        };
        table.insert(arg[0].as_str().unwrap().into(), value);
    }
    table
}
