//! Producing side: queue/binding declaration, publish routing (LPUSH to
//! queues, PUBLISH for fanout) and queue depth (spec §2.2–§2.4).

use redis::AsyncCommands;
use uuid::Uuid;

use super::routing::{binding_pattern, lookup, Binding};
use super::Inner;
use crate::protocol::envelope::encode_envelope;
use crate::protocol::Message;
use crate::transport::{ExchangeType, QueueDepth, QueueSpec, Route};
use crate::Result;

/// kombu's `queue_declare` + `queue_bind` on Redis: remember the queue TTL
/// and exchange type, SADD the binding to `_kombu.binding.<exchange>` and,
/// for queues without `x-expires`, to `_kombu.binding_permanent.<exchange>`.
pub(super) async fn declare(inner: &Inner, spec: &QueueSpec) -> Result<()> {
    inner.remember_queue(spec);
    inner.remember_exchange(&spec.exchange, spec.exchange_type);
    if spec.exchange.is_empty() {
        return Ok(());
    }
    let keys = &inner.keys;
    let pattern = binding_pattern(spec.exchange_type, &spec.routing_key);
    let member = keys.binding_member(&spec.routing_key, &pattern, &spec.name);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .sadd(keys.binding(&spec.exchange), &member)
        .ignore();
    if spec.expires.is_none() {
        pipe.sadd(keys.binding_permanent(&spec.exchange), &member)
            .ignore();
    }
    let mut conn = inner.conn().await?;
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// kombu's `basic_publish`: a fresh uuid4 delivery tag, the kombu envelope,
/// then routing by exchange type. Unroutable messages are dropped with a
/// warning, as kombu does without a `deadletter_queue`.
pub(super) async fn publish(inner: &Inner, route: &Route, message: &Message) -> Result<()> {
    let tag = Uuid::new_v4().to_string();
    let envelope = encode_envelope(message, &route.exchange, &route.routing_key, &tag);
    if route.exchange.is_empty() {
        return put(
            inner,
            std::slice::from_ref(&route.routing_key),
            message.properties.priority,
            &envelope,
        )
        .await;
    }
    if route.exchange_type == ExchangeType::Fanout {
        let channel = inner
            .keys
            .fanout_channel(&route.exchange, &route.routing_key);
        let mut conn = inner.conn().await?;
        conn.publish::<_, _, ()>(channel, envelope).await?;
        return Ok(());
    }
    let table = binding_table(inner, &route.exchange).await?;
    let queues = lookup(&table, route.exchange_type, &route.routing_key);
    if queues.is_empty() {
        tracing::warn!(exchange = %route.exchange, routing_key = %route.routing_key,
            "message could not be routed: no queue bound, dropped");
        return Ok(());
    }
    put(inner, &queues, message.properties.priority, &envelope).await
}

/// The parsed `_kombu.binding.<exchange>` table (kombu's `get_table`).
pub(super) async fn binding_table(inner: &Inner, exchange: &str) -> Result<Vec<Binding>> {
    let mut conn = inner.conn().await?;
    let members: Vec<String> = conn.smembers(inner.keys.binding(exchange)).await?;
    let sep = inner.keys.sep();
    Ok(members
        .iter()
        .filter_map(|m| Binding::parse(m, sep))
        .collect())
}

/// kombu's `_put`: LPUSH onto the priority list of each queue, and PEXPIRE
/// all of a queue's lists when it was declared with `x-expires`.
async fn put(
    inner: &Inner,
    queues: &[String],
    priority: Option<u8>,
    envelope: &[u8],
) -> Result<()> {
    let keys = &inner.keys;
    let step = keys.step_for(priority);
    let mut pipe = redis::pipe();
    for queue in queues {
        pipe.lpush(keys.queue_list(queue, step), envelope).ignore();
        if let Some(ms) = inner.queue_expires(queue) {
            for list in keys.queue_lists(queue) {
                pipe.pexpire(list, ms.try_into().unwrap_or(i64::MAX))
                    .ignore();
            }
        }
    }
    let mut conn = inner.conn().await?;
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// PEXPIRE a queue's lists if it has a TTL (kombu does it on every get too).
pub(super) async fn touch_expiry(inner: &Inner, queue: &str) -> Result<()> {
    let Some(ms) = inner.queue_expires(queue) else {
        return Ok(());
    };
    let mut pipe = redis::pipe();
    for list in inner.keys.queue_lists(queue) {
        pipe.pexpire(list, ms.try_into().unwrap_or(i64::MAX))
            .ignore();
    }
    let mut conn = inner.conn().await?;
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Ready = LLEN of the queue's lists; unacked = entries of the `unacked`
/// hash whose recorded routing key is the queue.
pub(super) async fn queue_depth(inner: &Inner, queue: &str) -> Result<QueueDepth> {
    let mut pipe = redis::pipe();
    for list in inner.keys.queue_lists(queue) {
        pipe.llen(list);
    }
    pipe.hvals(inner.keys.unacked());
    let mut conn = inner.conn().await?;
    let (lens, vals): (Vec<u64>, Vec<Vec<u8>>) = {
        let mut all: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let vals = all
            .pop()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(redis::RedisError::from)?
            .unwrap_or_default();
        let lens = all
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(redis::RedisError::from)?;
        (lens, vals)
    };
    let unacked = vals
        .iter()
        .filter(|v| unacked_routing_key(v).as_deref() == Some(queue))
        .count();
    Ok(QueueDepth {
        ready: lens.iter().sum(),
        unacked: unacked as u64,
    })
}

/// The routing key of an `unacked` value `[envelope, exchange, routing_key]`.
fn unacked_routing_key(raw: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    v.get(2)?.as_str().map(str::to_owned)
}
