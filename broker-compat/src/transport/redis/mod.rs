//! Redis transport, kombu layout (spec §2): a Python Celery worker and this
//! transport can publish to and consume from the same queues at once.
//!
//! One concept per module: [`options`] (URL + kombu transport options),
//! [`keys`] (key/channel names, `global_keyprefix`), `routing` (binding
//! tables, direct/topic lookup), `publish` (LPUSH / PUBLISH, declare),
//! `consumer` (atomic pop loop, QoS), `acker` + `restore` (ack, requeue,
//! visibility-timeout sweep), `pubsub` (fanout subscriptions).
//!
//! Deliberate difference from kombu: kombu's BRPOP followed by a separate
//! MULTI (ZADD unacked_index + HSET unacked) loses the message if the worker
//! dies in between. Here the pop and the bookkeeping are one Lua script; as
//! scripts cannot block, idle consumers poll it with a short adaptive
//! back-off (see `consumer.rs`).
//!
//! Other choices, each compatible with kombu peers on the same Redis:
//! * `conn` (one multiplexed connection, re-opened after a connection error;
//!   the failed command is reported, never re-sent) and `source` (a fixed
//!   URL or the master Sentinel names, asked again on every reconnect).
//! * Deliveries are scored with the Redis server clock (`TIME` in the pop
//!   script) and the sweep compares against the same clock; kombu uses each
//!   client's clock. Only clock skew between hosts can make the two differ.
//! * reject(requeue)/restore are a compare-and-set script instead of kombu's
//!   WATCH/MULTI; the pushed bytes are the same.
//! * `global_keyprefix` is applied to every key and channel we touch,
//!   including `ZREM unacked_index` (kombu master prefixes it too; spec §2.6
//!   does not list it, but an unprefixed ZREM would leave the index stale).

mod acker;
mod conn;
mod consumer;
mod doorbell;
pub mod keys;
pub mod options;
mod publish;
mod pubsub;
mod qos;
mod restore;
mod routing;
mod scripts;
mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::batch::Batcher;
use crate::protocol::Message;
use crate::transport::{
    Consumer, ExchangeType, QueueDepth, QueueSpec, Route, Subscription, Transport,
};
use crate::Result;

pub use keys::Keys;

/// At most this many acks share one MULTI.
const ACK_BATCH_MAX: usize = 256;

pub use options::{FanoutPrefix, RedisOptions};
pub use routing::topic_matches;

/// kombu's Redis transport. Cheap to clone; all clones share connections.
#[derive(Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

/// What every part of the transport shares.
pub(crate) struct Inner {
    pub(crate) connector: Arc<conn::Connector>,
    /// Acks (and rejects without requeue), batched: see [`crate::batch`].
    pub(crate) acks: Batcher<String, ()>,
    pub(crate) keys: Keys,
    pub(crate) opts: RedisOptions,
    /// kombu's `Channel._expires`: queues declared with `x-expires` (ms).
    expires: Mutex<HashMap<String, u64>>,
    /// kombu's exchange state: the type each exchange was declared with
    /// (restore re-routes through it; unknown exchanges are direct, as kombu).
    exchange_types: Mutex<HashMap<String, ExchangeType>>,
}

impl Inner {
    /// The shared connection (re-opened after a connection error).
    pub(crate) async fn conn(&self) -> Result<conn::Conn> {
        self.connector.get().await
    }

    /// A client for a dedicated (pub/sub) connection.
    pub(crate) async fn client(&self) -> Result<redis::Client> {
        self.connector.client().await
    }

    pub(crate) fn queue_expires(&self, queue: &str) -> Option<u64> {
        let map = self.expires.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(queue).copied()
    }

    pub(crate) fn exchange_type(&self, exchange: &str) -> ExchangeType {
        let map = self
            .exchange_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(exchange).copied().unwrap_or(ExchangeType::Direct)
    }

    pub(crate) fn remember_exchange(&self, exchange: &str, kind: ExchangeType) {
        if exchange.is_empty() {
            return;
        }
        let mut map = self
            .exchange_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(exchange.to_owned(), kind);
    }

    pub(crate) fn remember_queue(&self, spec: &QueueSpec) {
        let mut map = self.expires.lock().unwrap_or_else(PoisonError::into_inner);
        // kombu forgets a previous TTL when the queue is redeclared without one.
        match spec.expires {
            Some(d) => map.insert(
                spec.name.clone(),
                d.as_millis().try_into().unwrap_or(u64::MAX),
            ),
            None => map.remove(&spec.name),
        };
    }
}

impl RedisTransport {
    /// Connect (fails fast with a transient error when Redis is down).
    pub async fn connect(opts: RedisOptions) -> Result<Self> {
        let connector = conn::Connector::new(source::Source::new(&opts)?);
        connector.get().await?;
        tracing::debug!(url = %opts.masked_url(), "redis transport connected");
        let keys = Keys::new(&opts);
        let acks = {
            let (connector, keys) = (connector.clone(), keys.clone());
            Batcher::spawn(ACK_BATCH_MAX, move |tags: Vec<String>| {
                let (connector, keys) = (connector.clone(), keys.clone());
                async move {
                    restore::remove_many(&connector, &keys, &tags).await?;
                    Ok(vec![(); tags.len()])
                }
            })
        };
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                connector,
                acks,
                keys,
                opts,
                expires: Mutex::new(HashMap::new()),
                exchange_types: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// kombu's `restore_visible`: under `unacked_mutex`, push every message
    /// unacked for longer than `visibility_timeout` back to the front of its
    /// queue (redelivered). `None` when another sweep holds the mutex,
    /// otherwise how many messages were restored.
    pub async fn restore_visible(&self) -> Result<Option<usize>> {
        restore::restore_visible(&self.inner).await
    }
}

#[async_trait]
impl Transport for RedisTransport {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        publish::declare(&self.inner, spec).await
    }

    async fn publish(&self, route: &Route, message: &Message) -> Result<()> {
        self.inner
            .remember_exchange(&route.exchange, route.exchange_type);
        publish::publish(&self.inner, route, message).await
    }

    async fn consume(&self, queues: &[QueueSpec], prefetch: u16) -> Result<Box<dyn Consumer>> {
        for spec in queues {
            self.declare_queue(spec).await?;
        }
        let consumer =
            consumer::RedisConsumer::start(self.inner.clone(), queues.to_vec(), prefetch);
        Ok(Box::new(consumer))
    }

    async fn subscribe(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>> {
        self.declare_queue(spec).await?;
        let sub = pubsub::RedisSubscription::open(self.inner.clone(), spec).await?;
        Ok(Box::new(sub))
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth> {
        publish::queue_depth(&self.inner, queue).await
    }
}
