//! Redis result backend: `celery-task-meta-<id>` SETEX + PUBLISH (spec §4.2).
//!
//! The SUCCESS check and the write run in one Lua script, so they are atomic
//! on the server: two workers storing the same id cannot interleave between
//! "read: not SUCCESS" and "write". Inside the script the same commands
//! Celery pipelines are issued (`SETEX`/`SET`, then `PUBLISH` of the same
//! bytes on the key's channel), so readers see exactly Celery's effects.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, RedisError, Script};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::url::BackendOptions;
use super::{ResultBackend, StoreOutcome, TaskResult};
use crate::protocol::pyjson;
use crate::url::mask_password;
use crate::{Error, Result};

const TASK_KEYPREFIX: &str = "celery-task-meta-";
const GROUP_KEYPREFIX: &str = "celery-taskset-meta-";
/// Celery refuses results larger than Redis' 512 MB string limit.
const MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;

/// ARGV[1] = JSON, ARGV[2] = TTL seconds (0 = no expiry). Returns 1 when
/// written, 0 when a SUCCESS was already stored. The stored value is decoded
/// with cjson; a value we cannot decode is not a SUCCESS we know of, and
/// Celery would overwrite it too.
const STORE_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, meta = pcall(cjson.decode, cur)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

/// Celery's Redis backend, over one multiplexed connection that is
/// re-opened on the next call after it broke (callers retry transient errors).
pub struct RedisBackend {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    expires_secs: u64,
    store_script: Script,
}

impl RedisBackend {
    pub async fn connect(url: &str, opts: &BackendOptions) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::InvalidUrl {
            url: mask_password(url),
            reason: e.to_string(),
        })?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(RedisBackend {
            client,
            conn: Mutex::new(Some(conn)),
            prefix: key_prefix(opts.global_keyprefix.as_deref()),
            expires_secs: opts.result_expires.map_or(0, |d| d.as_secs()),
            store_script: Script::new(STORE_LUA),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Pass a Redis result through, dropping the connection if it broke.
    async fn checked<T>(&self, r: Result<T, RedisError>) -> Result<T> {
        if let Err(e) = &r {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                *self.conn.lock().await = None;
            }
        }
        Ok(r?)
    }

    /// `celery-task-meta-<id>` with the global key prefix.
    pub fn task_key(&self, task_id: &str) -> String {
        format!("{}{TASK_KEYPREFIX}{task_id}", self.prefix)
    }

    /// `celery-taskset-meta-<id>` with the global key prefix.
    pub fn group_key(&self, group_id: &str) -> String {
        format!("{}{GROUP_KEYPREFIX}{group_id}", self.prefix)
    }

    /// `GroupResult.save()`: `{"result": [[gid, null], [[[id, null], null], …]]}`
    /// with the result TTL (no PUBLISH: Celery does not publish group saves).
    pub async fn save_group(&self, group_id: &str, member_ids: &[String]) -> Result<()> {
        let members: Vec<Value> = member_ids
            .iter()
            .map(|id| json!([[id, null], null]))
            .collect();
        let value = json!({"result": [[group_id, null], members]});
        let bytes = pyjson::to_vec(&value);
        let key = self.group_key(group_id);
        let mut conn = self.connection().await?;
        let r = if self.expires_secs > 0 {
            conn.set_ex::<_, _, ()>(key, bytes, self.expires_secs).await
        } else {
            conn.set::<_, _, ()>(key, bytes).await
        };
        self.checked(r).await
    }
}

/// §4.2.1: the prefix gets a `_` unless it already ends in a separator.
pub fn key_prefix(global_keyprefix: Option<&str>) -> String {
    match global_keyprefix {
        None | Some("") => String::new(),
        Some(p) if p.ends_with([':', '_', '-', '.']) => p.to_owned(),
        Some(p) => format!("{p}_"),
    }
}

#[async_trait]
impl ResultBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn store(&self, result: &TaskResult) -> Result<StoreOutcome> {
        let bytes = pyjson::to_vec(&result.to_meta());
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(Error::Encode(format!(
                "result of {} is {} bytes, over Redis' 512 MB limit",
                result.task_id,
                bytes.len()
            )));
        }
        let mut conn = self.connection().await?;
        let r = self
            .store_script
            .key(self.task_key(&result.task_id))
            .arg(bytes)
            .arg(self.expires_secs)
            .invoke_async::<i64>(&mut conn)
            .await;
        let written = self.checked(r).await?;
        Ok(if written == 1 {
            StoreOutcome::Stored
        } else {
            StoreOutcome::SuccessAlreadyStored
        })
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskResult>> {
        let mut conn = self.connection().await?;
        let r = conn.get::<_, Option<Vec<u8>>>(self.task_key(task_id)).await;
        let raw = self.checked(r).await?;
        let Some(raw) = raw else { return Ok(None) };
        let meta: serde_json::Map<String, Value> = serde_json::from_slice(&raw)
            .map_err(|e| Error::Protocol(format!("result {task_id} is not a JSON object: {e}")))?;
        TaskResult::from_meta(&meta)
            .map(Some)
            .ok_or_else(|| Error::Protocol(format!("result {task_id} is not Celery task meta")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::key_prefix;

    #[test]
    fn global_keyprefix_rule() {
        assert_eq!(key_prefix(None), "");
        assert_eq!(key_prefix(Some("app")), "app_");
        for p in ["app:", "app_", "app-", "app."] {
            assert_eq!(key_prefix(Some(p)), p);
        }
    }
}
