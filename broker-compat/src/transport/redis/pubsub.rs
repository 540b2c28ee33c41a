//! Fanout subscriptions (events, pidbox) over Redis PUB/SUB (spec §2.4):
//! a dedicated connection PSUBSCRIBEd to `<prefix><exchange>[/<key>]`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::PubSubStream;
use tokio::time::Instant;

use super::Inner;
use crate::protocol::envelope::decode_envelope;
use crate::protocol::Message;
use crate::transport::{QueueSpec, Subscription};
use crate::{Error, Result};

const RECONNECT_DELAY: Duration = Duration::from_millis(200);

pub(crate) struct RedisSubscription {
    inner: Arc<Inner>,
    pattern: String,
    stream: Option<PubSubStream>,
    /// No reconnect attempt before this instant (back-off after a failure).
    retry_at: Option<Instant>,
}

impl RedisSubscription {
    pub(crate) async fn open(inner: Arc<Inner>, spec: &QueueSpec) -> Result<Self> {
        let pattern = inner.keys.fanout_pattern(&spec.exchange, &spec.routing_key);
        let mut sub = RedisSubscription {
            inner,
            pattern,
            stream: None,
            retry_at: None,
        };
        sub.connect().await?;
        Ok(sub)
    }

    /// The channel pattern subscribed to (with `global_keyprefix`).
    async fn connect(&mut self) -> Result<()> {
        let mut pubsub = self.inner.client().await?.get_async_pubsub().await?;
        pubsub.psubscribe(&self.pattern).await?;
        self.stream = Some(pubsub.into_on_message());
        self.retry_at = None;
        Ok(())
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    /// Cancellation-safe: polling a stream loses nothing when dropped, and a
    /// reconnect dropped half-way is simply redone on the next call.
    async fn next(&mut self) -> Result<Message> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                self.retry_at = Some(Instant::now() + RECONNECT_DELAY);
                self.connect().await?;
                continue;
            };
            let Some(msg) = stream.next().await else {
                // Messages published while disconnected are lost, as on kombu.
                self.stream = None;
                return Err(Error::Closed("redis pub/sub connection lost".into()));
            };
            let payload = msg.get_payload_bytes();
            if payload.is_empty() {
                continue;
            }
            return decode_envelope(payload)
                .map(|env| env.message)
                .map_err(Error::Decode);
        }
    }
}
