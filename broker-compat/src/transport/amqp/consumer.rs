//! Task consumption: one channel, one `basic_consume` (no_ack=false) per
//! queue, QoS as Celery sets it (spec §3.3).
//!
//! Each lapin consumer is a stream; they are merged with `SelectAll`, whose
//! `next()` only takes an item out when it returns it, so [`Consumer::next`]
//! is cancellation-safe. Each stream ends with a marker so a consumer the
//! broker cancelled (queue deleted) is noticed instead of silently dropped.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, SelectAll, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};

use super::acker::AmqpAcker;
use super::declare::declare_scratch;
use super::framing::to_message;
use super::names::short;
use crate::protocol::DeliveryInfo;
use crate::transport::{Consumer, Delivery, QueueSpec};
use crate::{Error, Result};

enum Item {
    /// Boxed: a delivery is large next to the end marker.
    Delivery(Box<lapin::Result<lapin::message::Delivery>>),
    /// The consumer with this tag has ended (cancelled by us or the broker).
    Ended(ShortString),
}

struct Active {
    spec: QueueSpec,
    tag: ShortString,
}

pub struct AmqpConsumer {
    connection: Arc<Connection>,
    channel: Channel,
    active: Vec<Active>,
    streams: SelectAll<BoxStream<'static, Item>>,
    prefetch: u16,
    /// `basic_qos(global=…)`: shared by the channel (RabbitMQ 3.x) or per consumer.
    global: bool,
    stopped: bool,
}

impl AmqpConsumer {
    /// Open the channel, set QoS and start consuming `queues`.
    pub async fn start(
        connection: Arc<Connection>,
        queues: &[QueueSpec],
        prefetch: u16,
        global: bool,
    ) -> Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global })
            .await?;
        let mut consumer = AmqpConsumer {
            connection,
            channel,
            active: Vec::new(),
            streams: SelectAll::new(),
            prefetch,
            global,
            stopped: false,
        };
        for spec in queues {
            consumer.add_queue(spec).await?;
        }
        Ok(consumer)
    }

    /// The global flag this consumer's QoS was set with.
    pub fn global_qos(&self) -> bool {
        self.global
    }

    /// The prefetch count last set.
    pub fn prefetch(&self) -> u16 {
        self.prefetch
    }

    fn wrap(&self, d: lapin::message::Delivery) -> Delivery {
        let info = DeliveryInfo {
            exchange: d.exchange.as_str().to_owned(),
            routing_key: d.routing_key.as_str().to_owned(),
            redelivered: d.redelivered,
        };
        let message = to_message(&d.properties, d.data);
        let acker = AmqpAcker::new(d.acker, self.channel.clone());
        Delivery::new(message, info, Box::new(acker))
    }

    /// Handle a stream's end marker: an error if the broker cancelled a
    /// consumer we still count as active, nothing if we cancelled it.
    fn ended(&mut self, tag: &ShortString) -> Option<Error> {
        let pos = self.active.iter().position(|a| &a.tag == tag)?;
        let gone = self.active.remove(pos);
        Some(Error::Closed(format!(
            "the broker cancelled the consumer of queue {}",
            gone.spec.name
        )))
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if self.stopped {
                return Err(Error::Closed("consumer stopped".into()));
            }
            if self.streams.is_empty() {
                // Nothing consumed (all queues cancelled): wait for the caller
                // to add a queue or drop this future.
                std::future::pending::<()>().await;
            }
            match self.streams.next().await {
                Some(Item::Delivery(d)) => return (*d).map(|d| self.wrap(d)).map_err(Into::into),
                Some(Item::Ended(tag)) => {
                    if let Some(e) = self.ended(&tag) {
                        return Err(e);
                    }
                }
                None => {}
            }
        }
    }

    async fn set_prefetch(&mut self, prefetch: u16) -> Result<()> {
        let global = self.global;
        self.channel
            .basic_qos(prefetch, BasicQosOptions { global })
            .await?;
        self.prefetch = prefetch;
        Ok(())
    }

    async fn add_queue(&mut self, spec: &QueueSpec) -> Result<()> {
        if self.active.iter().any(|a| a.spec.name == spec.name) {
            return Ok(());
        }
        if spec.quorum && self.global {
            return Err(Error::Config {
                setting: "worker_detect_quorum_queues".into(),
                reason: format!(
                    "quorum queue {} cannot join a consumer with global QoS; \
                     list it when the consumer starts",
                    spec.name
                ),
            });
        }
        // kombu declares before consuming; a failed declare closes its
        // channel, so never do it on the consuming one.
        declare_scratch(&self.connection, spec).await?;
        let consumer = self
            .channel
            .basic_consume(
                short("queue", &spec.name)?,
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let tag = consumer.tag();
        let end = stream::once(std::future::ready(Item::Ended(tag.clone())));
        self.streams.push(
            consumer
                .map(|d| Item::Delivery(Box::new(d)))
                .chain(end)
                .boxed(),
        );
        self.active.push(Active {
            spec: spec.clone(),
            tag,
        });
        Ok(())
    }

    async fn cancel_queue(&mut self, name: &str) -> Result<()> {
        let Some(pos) = self.active.iter().position(|a| a.spec.name == name) else {
            return Ok(());
        };
        let gone = self.active.remove(pos);
        self.channel
            .basic_cancel(gone.tag, BasicCancelOptions::default())
            .await?;
        Ok(())
    }

    fn queues(&self) -> Vec<QueueSpec> {
        self.active.iter().map(|a| a.spec.clone()).collect()
    }

    async fn stop(&mut self) -> Result<()> {
        self.stopped = true;
        let mut first_error = None;
        for gone in self.active.drain(..) {
            let cancelled = self
                .channel
                .basic_cancel(gone.tag, BasicCancelOptions::default())
                .await;
            if let Err(e) = cancelled {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}
