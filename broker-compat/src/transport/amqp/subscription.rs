//! Broadcast subscriptions (events on `celeryev`, pidbox on `celery.pidbox`):
//! an exclusive auto-delete queue bound to the exchange, consumed with
//! no_ack=true as kombu's event receiver and pidbox node do (spec §5.1, §6.1).

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};

use super::declare::{bind, declare_exchange, kombu_exchange_durable, queue_arguments};
use super::framing::to_message;
use super::names::short;
use crate::protocol::Message;
use crate::transport::{QueueSpec, Subscription};
use crate::{Error, Result};

pub struct AmqpSubscription {
    /// Kept so the channel (and the exclusive queue's consumer) stays open.
    _channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
}

impl AmqpSubscription {
    /// Declare the exchange as kombu does (`celeryev` topic durable,
    /// `*.pidbox` transient), the queue and the binding, then consume.
    /// The queue is always exclusive, auto-delete and transient: it lives
    /// only as long as this connection listens.
    pub async fn start(connection: &Connection, spec: &QueueSpec) -> Result<Self> {
        let channel = connection.create_channel().await?;
        let durable = kombu_exchange_durable(&spec.exchange);
        declare_exchange(&channel, &spec.exchange, spec.exchange_type, durable).await?;
        let queue = short("queue", &spec.name)?;
        channel
            .queue_declare(
                queue.clone(),
                QueueDeclareOptions {
                    durable: false,
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                queue_arguments(spec),
            )
            .await?;
        bind(&channel, spec).await?;
        let consumer = channel
            .basic_consume(
                queue,
                ShortString::default(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(AmqpSubscription {
            _channel: channel,
            consumer,
            queue: spec.name.clone(),
        })
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next(&mut self) -> Result<Message> {
        match self.consumer.next().await {
            Some(Ok(d)) => Ok(to_message(&d.properties, d.data)),
            Some(Err(e)) => Err(e.into()),
            None => Err(Error::Closed(format!(
                "subscription on queue {} was cancelled",
                self.queue
            ))),
        }
    }
}
