//! AMQP 0-9-1 transport via lapin, as kombu/py-amqp declare and consume (spec §3).
//!
//! One [`AmqpTransport`] is one AMQP connection. Publishing uses one
//! confirm-mode channel; each [`Consumer`] and [`Subscription`] has its own
//! channel; declarations that may be refused (declares, passive declares)
//! run on throwaway channels, because a refused method closes its channel.
//!
//! Connection loss: every operation then fails with [`Error::Amqp`]
//! (transient); `Consumer::next` and `Subscription::next` return it once and
//! then `Error::Closed`. The transport does not reconnect by itself (lapin's
//! auto-recovery is left off so nothing is replayed behind the caller's back):
//! the caller drops it and calls [`AmqpTransport::connect`] + `consume` again,
//! with backoff, while [`Error::is_transient`] holds. Deliveries that were not
//! acked on the lost connection are requeued by RabbitMQ and redelivered with
//! `redelivered=true` (AMQP's guarantee; there is no visibility timeout).
//!
//! `queue_depth` reports `ready` from a passive `queue.declare`; `unacked` is
//! not observable over AMQP 0-9-1 (only the management API knows it) and is
//! reported as 0.

mod acker;
mod consumer;
mod declare;
mod framing;
pub mod headers;
mod names;
mod options;
mod publish;
mod server;
mod subscription;

use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

pub use consumer::AmqpConsumer;
pub use framing::{to_basic_properties, to_message};
pub use options::{AmqpOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT};
pub use server::ServerInfo;
pub use subscription::AmqpSubscription;

use super::{Consumer, QueueDepth, QueueSpec, Route, Subscription, Transport};
use crate::protocol::Message;
use crate::{Error, Result};
use names::short;
use publish::Publisher;

pub struct AmqpTransport {
    connection: Arc<Connection>,
    options: AmqpOptions,
    server: ServerInfo,
    publisher: Publisher,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("options", &self.options)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl AmqpTransport {
    /// Connect. Unless [`AmqpOptions::global_qos`] is set, first read the
    /// server's product and version for the QoS decision (a short extra
    /// socket that hangs up before authenticating: RabbitMQ logs it as
    /// "client unexpectedly closed TCP connection"; set `global_qos` to skip it).
    pub async fn connect(options: AmqpOptions) -> Result<Self> {
        let uri = options.to_uri();
        let server = match options.global_qos {
            Some(_) => ServerInfo::default(),
            None => server::probe(&uri, options.connect_timeout).await?,
        };
        let mut properties = ConnectionProperties::default();
        if let Some(name) = &options.connection_name {
            properties = properties.with_connection_name(name.as_str().into());
        }
        let connection = tokio::time::timeout(
            options.connect_timeout,
            Connection::connect_uri(uri, properties),
        )
        .await
        .map_err(|_| Error::Timeout(format!("connecting to {}", options.masked_url())))??;
        tracing::debug!(url = %options.masked_url(), product = %server.product,
            version = %server.version, "amqp connected");
        let connection = Arc::new(connection);
        Ok(AmqpTransport {
            publisher: Publisher::new(connection.clone()),
            connection,
            options,
            server,
        })
    }

    pub fn options(&self) -> &AmqpOptions {
        &self.options
    }

    /// The broker's `product` and `version` (empty when not probed).
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Whether a consumer of `queues` uses global (per-channel) QoS, as Celery decides.
    pub fn global_qos_for(&self, queues: &[QueueSpec]) -> bool {
        let by_server = self.server.global_qos_is_per_channel();
        self.options.global_qos.unwrap_or(by_server) && !queues.iter().any(|q| q.quorum)
    }

    /// Start consuming, with the concrete type (for [`AmqpConsumer::global_qos`]).
    pub async fn consume_amqp(&self, queues: &[QueueSpec], prefetch: u16) -> Result<AmqpConsumer> {
        let global = self.global_qos_for(queues);
        AmqpConsumer::start(self.connection.clone(), queues, prefetch, global).await
    }

    /// Close the connection. Unacked deliveries go back to their queues.
    pub async fn close(&self) -> Result<()> {
        self.connection.close(200, "OK".into()).await?;
        Ok(())
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        declare::declare_scratch(&self.connection, spec).await
    }

    async fn publish(&self, route: &Route, message: &Message) -> Result<()> {
        self.publisher.publish(route, message).await
    }

    async fn consume(&self, queues: &[QueueSpec], prefetch: u16) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(self.consume_amqp(queues, prefetch).await?))
    }

    async fn subscribe(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(
            AmqpSubscription::start(&self.connection, spec).await?,
        ))
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth> {
        let channel = self.connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                short("queue", queue)?,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(QueueDepth {
            ready: u64::from(declared.message_count()),
            unacked: 0,
        })
    }

    /// `queue.delete` (bindings go with the queue); a missing queue is fine.
    async fn delete_queue(&self, spec: &QueueSpec) -> Result<()> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_delete(short("queue", &spec.name)?, QueueDeleteOptions::default())
            .await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(())
    }
}
