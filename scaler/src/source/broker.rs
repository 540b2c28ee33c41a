//! Load from the broker itself: on Redis the four kombu priority lists of
//! each queue (ready) plus the queue's entries in the `unacked` hash
//! (prefetched or running with `acks_late`); on RabbitMQ the ready count of
//! a passive declare (AMQP 0-9-1 cannot see unacked messages: the workers
//! source covers prefetched work there).

use std::sync::Arc;

use async_trait::async_trait;
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::Transport;
use tokio::sync::Mutex;

use super::{Load, LoadSource, SourceKind};
use crate::{Error, Result};

#[derive(Clone)]
enum BrokerUrl {
    Redis(Box<RedisOptions>),
    Amqp(AmqpOptions),
}

pub struct BrokerSource {
    url: BrokerUrl,
    queues: Vec<String>,
    /// Connected on first use and dropped after an error, so a broker that
    /// was down at start or restarted since is reconnected on the next poll.
    transport: Mutex<Option<Arc<dyn Transport>>>,
}

impl BrokerSource {
    /// Validate the URL now (config errors surface at start); connect later.
    pub fn new(url: &str, queues: Vec<String>) -> Result<Self> {
        let url = if url.starts_with("amqp") || url.starts_with("pyamqp") {
            BrokerUrl::Amqp(AmqpOptions::from_url(url)?)
        } else {
            BrokerUrl::Redis(Box::new(RedisOptions::from_url(url)?))
        };
        Ok(BrokerSource {
            url,
            queues,
            transport: Mutex::new(None),
        })
    }

    async fn transport(&self) -> Result<Arc<dyn Transport>> {
        let mut slot = self.transport.lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let t: Arc<dyn Transport> = match &self.url {
            BrokerUrl::Redis(o) => Arc::new(RedisTransport::connect(o.as_ref().clone()).await?),
            BrokerUrl::Amqp(o) => Arc::new(AmqpTransport::connect(o.clone()).await?),
        };
        *slot = Some(t.clone());
        Ok(t)
    }

    async fn depths(&self, transport: &dyn Transport) -> Result<Load> {
        let mut load = Load::default();
        for queue in &self.queues {
            match transport.queue_depth(queue).await {
                Ok(d) => {
                    load.queued += d.ready;
                    load.running += d.unacked;
                }
                // A queue nobody declared yet holds nothing.
                Err(e) if is_queue_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(load)
    }
}

#[async_trait]
impl LoadSource for BrokerSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Broker
    }

    async fn observe(&self) -> Result<Load> {
        let transport = self.transport().await?;
        let result = self.depths(transport.as_ref()).await;
        if let Err(Error::Broker(e)) = &result {
            if e.is_transient() {
                *self.transport.lock().await = None;
            }
        }
        result
    }
}

/// RabbitMQ answers a passive declare of a missing queue with 404 NOT_FOUND.
fn is_queue_not_found(e: &broker_compat::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    match e {
        broker_compat::Error::Amqp(err) => matches!(
            err.kind(),
            lapin::ErrorKind::ProtocolError(p)
                if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
        ),
        _ => false,
    }
}
