//! Settling one delivery: `basic_ack`, `basic_reject(requeue)`, and restore
//! as `basic_reject(requeue=true)` (spec §3.4).

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Channel;

use crate::transport::Acker;
use crate::{Error, Result};

/// Holds a clone of the consuming channel: an unacked delivery keeps its
/// channel (and connection) open even after the consumer was stopped and
/// dropped, because closing it would make RabbitMQ requeue the message.
pub struct AmqpAcker {
    acker: lapin::Acker,
    _channel: Channel,
}

impl AmqpAcker {
    pub fn new(acker: lapin::Acker, channel: Channel) -> Self {
        AmqpAcker {
            acker,
            _channel: channel,
        }
    }
}

/// lapin answers `false` when the channel is gone (or the acker was used,
/// which [`crate::transport::Delivery`] makes impossible): the broker has
/// requeued the message or will, so the settlement did not happen.
fn settled(done: bool, what: &str) -> Result<()> {
    if done {
        Ok(())
    } else {
        Err(Error::Closed(format!(
            "{what}: channel closed, the broker redelivers the message"
        )))
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        settled(self.acker.ack(BasicAckOptions::default()).await?, "ack")
    }

    async fn reject(&self, requeue: bool) -> Result<()> {
        let done = self.acker.reject(BasicRejectOptions { requeue }).await?;
        settled(done, "reject")
    }

    async fn restore(&self) -> Result<()> {
        let done = self
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await?;
        settled(done, "restore")
    }
}
