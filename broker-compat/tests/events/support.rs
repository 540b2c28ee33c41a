//! Shared by tests/events.rs and tests/control.rs: fixtures and brokers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::Transport;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/celery")
        .join(name)
}

pub fn fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The `messages` list of a capture file.
pub fn fixture_messages(name: &str) -> Vec<Value> {
    fixture(name)["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no messages"))
        .clone()
}

pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Redis,
    Amqp,
}

/// A private namespace on one broker: a fresh RabbitMQ vhost, or a fresh
/// `global_keyprefix` on Redis (which also prefixes PUB/SUB channels).
/// Removed on drop.
pub struct Namespace {
    broker: Broker,
    name: String,
}

impl Namespace {
    pub fn new(broker: Broker) -> Self {
        let name = format!("celeriac-evctl-{}", uuid::Uuid::new_v4().simple());
        if broker == Broker::Amqp {
            rabbitmqctl(&["add_vhost", &name]);
            rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        }
        Namespace { broker, name }
    }

    /// A new connection (each call is a separate client, like another process).
    pub async fn transport(&self) -> Arc<dyn Transport> {
        match self.broker {
            Broker::Redis => {
                let mut opts = RedisOptions::from_url(REDIS_URL).unwrap();
                opts.global_keyprefix = format!("{}:", self.name);
                match RedisTransport::connect(opts).await {
                    Ok(t) => Arc::new(t),
                    Err(e) => {
                        panic!("Redis at {REDIS_URL} is not reachable (start redis-server): {e}")
                    }
                }
            }
            Broker::Amqp => {
                let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name);
                match AmqpTransport::connect(AmqpOptions::from_url(&url).unwrap()).await {
                    Ok(t) => Arc::new(t),
                    Err(e) => panic!("RabbitMQ at 127.0.0.1:5672 is not reachable: {e}"),
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        match self.broker {
            Broker::Amqp => {
                let _ = Command::new("rabbitmqctl")
                    .args(["delete_vhost", &self.name])
                    .output();
            }
            Broker::Redis => {
                let Ok(client) = redis::Client::open(REDIS_URL) else {
                    return;
                };
                let Ok(mut conn) = client.get_connection() else {
                    return;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}:*", self.name))
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
                }
            }
        }
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl (is RabbitMQ installed?): {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed — is RabbitMQ running on 127.0.0.1:5672? {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node name no other test uses.
pub fn node_name() -> String {
    format!(
        "celeriac@test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Await `fut` for at most [`WAIT`], failing the test loudly otherwise.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}
