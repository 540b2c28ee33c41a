//! Redis result backend: `celery-task-meta-<id>` SETEX + PUBLISH (spec §4.2).
//!
//! The SUCCESS check and the write run in one Lua script, so they are atomic
//! on the server: two workers storing the same id cannot interleave between
//! "read: not SUCCESS" and "write". Inside the script the same commands
//! Celery pipelines are issued (`SETEX`/`SET`, then `PUBLISH` of the same
//! bytes on the key's channel), so readers see exactly Celery's effects.

use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, RedisError, Script};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::url::BackendOptions;
use super::{ResultBackend, StoreOutcome, TaskResult};
use crate::batch::Batcher;
use crate::protocol::pyjson;
use crate::url::mask_password;
use crate::{Error, Result};

const TASK_KEYPREFIX: &str = "celery-task-meta-";
const GROUP_KEYPREFIX: &str = "celery-taskset-meta-";
/// Celery refuses results larger than Redis' 512 MB string limit.
const MAX_VALUE_BYTES: usize = 512 * 1024 * 1024;

/// Stores a batch of results: KEYS[i] is result i's key, ARGV[1] the TTL in
/// seconds (0 = no expiry), ARGV[i + 1] result i's JSON. Returns one 1
/// (written) or 0 (a SUCCESS was already stored) per key, in order, so a key
/// twice in a batch (STARTED then SUCCESS) ends as the later one. The stored
/// value is decoded with cjson; a value we cannot decode is not a SUCCESS we
/// know of, and Celery would overwrite it too.
const STORE_LUA: &str = r#"
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 1]
  local written = 1
  local cur = redis.call('GET', key)
  if cur then
    local ok, meta = pcall(cjson.decode, cur)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
      written = 0
    end
  end
  if written == 1 then
    if ttl > 0 then
      redis.call('SETEX', key, ttl, value)
    else
      redis.call('SET', key, value)
    end
    redis.call('PUBLISH', key, value)
  end
  out[i] = written
end
return out
"#;

/// At most this many results share one script call.
const STORE_BATCH_MAX: usize = 64;

/// Celery's Redis backend, over one multiplexed connection that is
/// re-opened on the next call after it broke (callers retry transient
/// errors). Result writes are batched ([`crate::batch`]): under load, the
/// results that queued up during one script call go out in the next.
pub struct RedisBackend {
    conn: Arc<Connection>,
    prefix: String,
    expires_secs: u64,
    stores: Batcher<(String, Vec<u8>), StoreOutcome>,
}

/// The backend's connection, shared with the store batcher.
struct Connection {
    client: redis::Client,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl Connection {
    async fn get(&self) -> Result<MultiplexedConnection> {
        let mut slot = self.current.lock().await;
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
                *self.current.lock().await = None;
            }
        }
        Ok(r?)
    }

    /// One script call for a batch of `(key, JSON)`; one outcome per item.
    async fn store_batch(
        &self,
        script: &Script,
        expires_secs: u64,
        items: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<StoreOutcome>> {
        let mut call = script.prepare_invoke();
        call.arg(expires_secs);
        for (key, bytes) in &items {
            call.key(key).arg(bytes);
        }
        let mut conn = self.get().await?;
        let r = call.invoke_async::<Vec<i64>>(&mut conn).await;
        let written = self.checked(r).await?;
        Ok(written
            .into_iter()
            .map(|w| {
                if w == 1 {
                    StoreOutcome::Stored
                } else {
                    StoreOutcome::SuccessAlreadyStored
                }
            })
            .collect())
    }
}

impl RedisBackend {
    pub async fn connect(url: &str, opts: &BackendOptions) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::InvalidUrl {
            url: mask_password(url),
            reason: e.to_string(),
        })?;
        let first = client.get_multiplexed_async_connection().await?;
        let conn = Arc::new(Connection {
            client,
            current: Mutex::new(Some(first)),
        });
        let expires_secs = opts.result_expires.map_or(0, |d| d.as_secs());
        let stores = {
            let (conn, script) = (conn.clone(), Arc::new(Script::new(STORE_LUA)));
            Batcher::spawn(STORE_BATCH_MAX, move |items| {
                let (conn, script) = (conn.clone(), script.clone());
                async move { conn.store_batch(&script, expires_secs, items).await }
            })
        };
        Ok(RedisBackend {
            conn,
            prefix: key_prefix(opts.global_keyprefix.as_deref()),
            expires_secs,
            stores,
        })
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
        let mut conn = self.conn.get().await?;
        let r = if self.expires_secs > 0 {
            conn.set_ex::<_, _, ()>(key, bytes, self.expires_secs).await
        } else {
            conn.set::<_, _, ()>(key, bytes).await
        };
        self.conn.checked(r).await
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
        self.stores
            .submit((self.task_key(&result.task_id), bytes))
            .await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskResult>> {
        let mut conn = self.conn.get().await?;
        let r = conn.get::<_, Option<Vec<u8>>>(self.task_key(task_id)).await;
        let raw = self.conn.checked(r).await?;
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
