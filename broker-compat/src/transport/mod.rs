//! Broker transports: kombu's Redis layout and AMQP 0-9-1 (RabbitMQ) via lapin.
//!
//! The traits are deliberately narrow: no transport-specific method leaks into
//! them. A [`Delivery`] owns its acknowledgement, so a worker can move it to
//! whatever task runs it and ack/reject from there.

pub mod amqp;
pub mod reconnect;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::protocol::{DeliveryInfo, Message};
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    Direct,
    Topic,
    Fanout,
}

impl ExchangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Topic => "topic",
            ExchangeType::Fanout => "fanout",
        }
    }
}

/// A queue with its exchange and binding, as kombu's `Queue(...)` declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub exchange: String,
    pub exchange_type: ExchangeType,
    pub routing_key: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// `x-max-priority` (AMQP only; Redis always has its four priority lists).
    pub max_priority: Option<u8>,
    /// `x-message-ttl`.
    pub message_ttl: Option<Duration>,
    /// `x-expires`: on Redis kombu PEXPIREs the lists on every put/get.
    pub expires: Option<Duration>,
    /// `x-queue-type: quorum` (AMQP): global QoS is refused on such queues.
    pub quorum: bool,
}

impl QueueSpec {
    /// A Celery task queue with the defaults of `task_default_*`: a durable
    /// direct exchange named like the queue, routing key = queue name.
    pub fn task_queue(name: &str) -> Self {
        QueueSpec {
            name: name.to_owned(),
            exchange: name.to_owned(),
            exchange_type: ExchangeType::Direct,
            routing_key: name.to_owned(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            max_priority: None,
            message_ttl: None,
            expires: None,
            quorum: false,
        }
    }
}

/// Where to publish: Celery sends tasks to the default exchange `""` with the
/// queue name as routing key; events and pidbox go to named exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub exchange: String,
    pub exchange_type: ExchangeType,
    pub routing_key: String,
}

impl Route {
    /// The default (anonymous) exchange straight to a queue — how Celery publishes tasks.
    pub fn queue(name: &str) -> Self {
        Route {
            exchange: String::new(),
            exchange_type: ExchangeType::Direct,
            routing_key: name.to_owned(),
        }
    }
}

/// Messages waiting in a queue, for the scaler and `inspect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to be delivered (all priority lists on Redis).
    pub ready: u64,
    /// Delivered to some consumer and not yet acknowledged.
    pub unacked: u64,
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// `"redis"` or `"amqp"`: for logs, metric labels and `inspect stats`.
    fn kind(&self) -> &'static str;
    /// Declare a queue, its exchange and the binding (idempotent).
    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()>;
    /// Publish one message. On AMQP this waits for the publisher confirm.
    async fn publish(&self, route: &Route, message: &Message) -> Result<()>;
    /// Start consuming task queues with at most `prefetch` unacked deliveries.
    async fn consume(&self, queues: &[QueueSpec], prefetch: u16) -> Result<Box<dyn Consumer>>;
    /// Broadcast subscription without acks (events, pidbox): the queue is
    /// bound to a fanout/topic exchange; nothing is stored when nobody listens.
    async fn subscribe(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>>;
    /// How many messages a task queue holds.
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth>;
    /// Delete a private queue and its binding, as kombu's
    /// `after_reply_message_received` does for a control client's reply queue
    /// (Redis: SREM the binding members, DEL the lists; AMQP: `queue.delete`).
    /// The default does nothing: AMQP deletes exclusive/auto-delete queues
    /// with their consumer, and Redis lists with `x-expires` lapse.
    async fn delete_queue(&self, spec: &QueueSpec) -> Result<()> {
        let _ = spec;
        Ok(())
    }
}

#[async_trait]
pub trait Consumer: Send {
    /// The next delivery. Cancellation-safe: dropping the future loses nothing.
    async fn next(&mut self) -> Result<Delivery>;
    /// Change the prefetch limit (ETA tasks raise it by one while held).
    async fn set_prefetch(&mut self, prefetch: u16) -> Result<()>;
    /// Start consuming one more queue (`add_consumer`).
    async fn add_queue(&mut self, spec: &QueueSpec) -> Result<()>;
    /// Stop consuming a queue (`cancel_consumer`).
    async fn cancel_queue(&mut self, name: &str) -> Result<()>;
    /// The queues currently consumed.
    fn queues(&self) -> Vec<QueueSpec>;
    /// Stop taking new messages; messages already delivered stay valid.
    async fn stop(&mut self) -> Result<()>;
}

#[async_trait]
pub trait Subscription: Send {
    /// The next broadcast message. Cancellation-safe.
    async fn next(&mut self) -> Result<Message>;
}

/// How a delivery is settled. Implemented per transport.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<()>;
    /// `requeue=false` drops the message (kombu: same as ack on Redis).
    async fn reject(&self, requeue: bool) -> Result<()>;
    /// Give the message back untouched so it is delivered again as soon as
    /// possible (kombu's restore on shutdown: RPUSH on Redis, nack on AMQP).
    async fn restore(&self) -> Result<()>;
}

/// One message handed to a consumer, with its delivery information and the
/// means to settle it exactly once.
pub struct Delivery {
    pub message: Message,
    pub info: DeliveryInfo,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(message: Message, info: DeliveryInfo, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            info,
            acker,
        }
    }

    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    pub async fn reject(self, requeue: bool) -> Result<()> {
        self.acker.reject(requeue).await
    }

    pub async fn restore(self) -> Result<()> {
        self.acker.restore().await
    }

    /// Split into the message and a handle that settles it later, so the
    /// message can be decoded and moved independently of the ack.
    pub fn into_parts(self) -> (Message, DeliveryInfo, Box<dyn Acker>) {
        (self.message, self.info, self.acker)
    }
}
