//! The real services on this machine, and guards that give each test fresh
//! resources and remove them afterwards. A service that is down fails the
//! test at once with a message naming it — never a skip.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::names::unique;

pub const REDIS_HOST: &str = "127.0.0.1:6379";
pub const AMQP_HOST: &str = "127.0.0.1:5672";
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/";

/// `redis://127.0.0.1:6379/<db>`.
pub fn redis_url(db: u8) -> String {
    format!("redis://{REDIS_HOST}/{db}")
}

/// `amqp://guest:guest@127.0.0.1:5672/<vhost>` (vhost names here need no escaping).
pub fn amqp_url(vhost: &str) -> String {
    format!("amqp://guest:guest@{AMQP_HOST}/{vhost}")
}

/// A connection to Redis db `db`, or a loud failure if Redis is down.
pub async fn redis_conn(db: u8) -> redis::aio::MultiplexedConnection {
    let url = redis_url(db);
    let conn = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match conn.await {
        Ok(c) => c,
        Err(e) => panic!("Redis at {url} is not reachable (start redis-server): {e}"),
    }
}

/// Deletes, on drop, every key of db `db` that starts with `prefix` plus the
/// extra keys registered with [`RedisKeys::also`] (e.g. result keys).
pub struct RedisKeys {
    db: u8,
    prefix: String,
    extra: Vec<String>,
}

impl RedisKeys {
    pub fn new(db: u8, prefix: &str) -> Self {
        RedisKeys {
            db,
            prefix: prefix.to_owned(),
            extra: Vec::new(),
        }
    }

    pub fn also(&mut self, key: impl Into<String>) {
        self.extra.push(key.into());
    }

    fn cleanup(&self) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url(self.db))?;
        let mut conn = client.get_connection()?;
        let mut keys: Vec<Vec<u8>> = if self.prefix.is_empty() {
            Vec::new()
        } else {
            redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut conn)?
        };
        keys.extend(self.extra.iter().map(|k| k.as_bytes().to_vec()));
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
        }
        Ok(())
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// A fresh RabbitMQ vhost (guest has full rights), deleted on drop.
pub struct RabbitVhost {
    pub name: String,
}

impl RabbitVhost {
    pub fn create() -> Result<Self> {
        let name = unique("celeriac-test");
        rabbitmqctl(&["add_vhost", &name]).context(
            "cannot create a RabbitMQ vhost: is RabbitMQ running on 127.0.0.1:5672 \
             (rabbitmq-server -detached)?",
        )?;
        let vhost = RabbitVhost { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }

    pub fn url(&self) -> String {
        amqp_url(&self.name)
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// Run `rabbitmqctl`; its output is the error when it fails.
pub fn rabbitmqctl(args: &[&str]) -> Result<String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("cannot run rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
