//! Settling unacked messages: ack, kombu's `restore_by_tag` (requeue to the
//! back with LPUSH, restore to the front with RPUSH) and the
//! visibility-timeout sweep `restore_visible` (spec §2.5).

use std::sync::Arc;

use redis::AsyncCommands;
use serde_json::Value;
use uuid::Uuid;

use super::conn::Connector;
use super::publish::binding_table;
use super::routing::lookup;
use super::{scripts, Inner, Keys};
use crate::protocol::envelope::mark_redelivered;
use crate::protocol::pyjson;
use crate::Result;

/// Where a restored message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// LPUSH: back of the queue (`reject(requeue=True)`, kombu `leftmost=True`).
    Back,
    /// RPUSH: front of the queue, next to be popped (restore, visibility timeout).
    Front,
}

/// ack / reject(requeue=false): ZREM unacked_index + HDEL unacked in MULTI.
pub(crate) async fn remove(inner: &Inner, tag: &str) -> Result<()> {
    remove_many(&inner.connector, &inner.keys, &[tag]).await
}

/// Acks batched by `Inner::acks`: one MULTI for every tag, the same effect
/// as kombu's per-message MULTI (ZREM unacked_index + HDEL unacked).
pub(crate) async fn remove_many(
    connector: &Arc<Connector>,
    keys: &Keys,
    tags: &[impl AsRef<str>],
) -> Result<()> {
    let tags: Vec<&str> = tags.iter().map(AsRef::as_ref).collect();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .zrem(keys.unacked_index(), &tags)
        .ignore()
        .hdel(keys.unacked(), &tags)
        .ignore();
    let mut conn = connector.get().await?;
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// kombu's `restore_by_tag`: take the entry out of `unacked`/`unacked_index`
/// and push the envelope, marked redelivered, to every queue its stored
/// exchange + routing key route to. The read-then-push runs as a
/// compare-and-set script, retried if the entry changed in between (kombu
/// uses WATCH for the same purpose). Returns whether a message was pushed.
pub(crate) async fn restore_by_tag(inner: &Inner, tag: &str, push: Push) -> Result<bool> {
    let mut conn = inner.conn().await?;
    for _ in 0..8 {
        let current: Option<Vec<u8>> = conn.hget(inner.keys.unacked(), tag).await?;
        let Some(current) = current else {
            conn.zrem::<_, _, ()>(inner.keys.unacked_index(), tag)
                .await?;
            return Ok(false);
        };
        let (envelope, lists) = match restore_plan(inner, &current).await {
            Ok(plan) => plan,
            Err(detail) => {
                // kombu logs "Could not restore message" and drops it.
                tracing::error!(delivery_tag = tag, %detail, "could not restore message, dropped");
                (Vec::new(), Vec::new())
            }
        };
        let mut call = scripts::RESTORE.key(inner.keys.unacked());
        call.key(inner.keys.unacked_index());
        for list in &lists {
            call.key(list);
        }
        call.arg(tag).arg(&current).arg(&envelope);
        call.arg(if push == Push::Back { "L" } else { "R" });
        let outcome: i64 = call.invoke_async(&mut conn).await?;
        if outcome >= 0 {
            return Ok(outcome == 1);
        }
    }
    Err(crate::Error::Protocol(format!(
        "unacked entry {tag} kept changing while restoring it"
    )))
}

/// From an `unacked` value `[envelope, exchange, routing_key]`: the
/// redelivered envelope and the priority lists it must be pushed to.
async fn restore_plan(
    inner: &Inner,
    raw: &[u8],
) -> std::result::Result<(Vec<u8>, Vec<String>), String> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let (Some(env), Some(exchange), Some(rk)) = (
        value.get(0),
        value.get(1).and_then(Value::as_str),
        value.get(2).and_then(Value::as_str),
    ) else {
        return Err("unacked entry is not [envelope, exchange, routing_key]".into());
    };
    let envelope = mark_redelivered(&pyjson::to_vec(env)).map_err(|e| e.to_string())?;
    let priority = env
        .pointer("/properties/priority")
        .and_then(Value::as_u64)
        .map(|p| u8::try_from(p.min(9)).unwrap_or(9));
    let queues = if exchange.is_empty() {
        vec![rk.to_owned()]
    } else {
        let table = binding_table(inner, exchange)
            .await
            .map_err(|e| e.to_string())?;
        lookup(&table, inner.exchange_type(exchange), rk)
    };
    let step = inner.keys.step_for(priority);
    let lists = queues
        .iter()
        .map(|q| inner.keys.queue_list(q, step))
        .collect();
    Ok((envelope, lists))
}

/// kombu's `QoS.restore_visible` (see [`super::RedisTransport::restore_visible`]).
pub(crate) async fn restore_visible(inner: &Inner) -> Result<Option<usize>> {
    let mut conn = inner.conn().await?;
    let token = Uuid::new_v4().simple().to_string();
    let expire_ms = u64::try_from(inner.opts.unacked_mutex_expire.as_millis()).unwrap_or(u64::MAX);
    let acquired: Option<String> = redis::cmd("SET")
        .arg(inner.keys.unacked_mutex())
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(expire_ms.max(1))
        .query_async(&mut conn)
        .await?;
    if acquired.is_none() {
        return Ok(None);
    }
    let swept = sweep(inner).await;
    let released: Result<i64> = scripts::RELEASE_MUTEX
        .key(inner.keys.unacked_mutex())
        .arg(&token)
        .invoke_async(&mut conn)
        .await
        .map_err(Into::into);
    let restored = swept?;
    released?;
    Ok(Some(restored))
}

/// The body of the sweep, run while holding the mutex.
async fn sweep(inner: &Inner) -> Result<usize> {
    let mut conn = inner.conn().await?;
    // The server clock, the same clock the pop script scores deliveries with.
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    let now = secs as f64 + micros as f64 / 1e6;
    let ceil = now - inner.opts.visibility_timeout.as_secs_f64();
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(inner.keys.unacked_index())
        .arg(pyjson::float_repr(ceil))
        .arg(0)
        .arg("BYSCORE")
        .arg("REV");
    if let Some(limit) = inner.opts.unacked_restore_limit {
        cmd.arg("LIMIT").arg(0).arg(limit);
    }
    let tags: Vec<String> = cmd.query_async(&mut conn).await?;
    let mut restored = 0;
    for tag in tags {
        if restore_by_tag(inner, &tag, Push::Front).await? {
            restored += 1;
        }
    }
    Ok(restored)
}
