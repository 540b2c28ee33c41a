//! Settling one Redis delivery (kombu's `QoS.ack/reject` and `_restore`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::qos::Qos;
use super::restore::{restore_by_tag, Push};
use super::Inner;
use crate::transport::Acker;
use crate::Result;

pub(crate) struct RedisAcker {
    inner: Arc<Inner>,
    tag: String,
    qos: Arc<Qos>,
    settled: AtomicBool,
}

impl RedisAcker {
    pub(crate) fn new(inner: Arc<Inner>, tag: String, qos: Arc<Qos>) -> Self {
        RedisAcker {
            inner,
            tag,
            qos,
            settled: AtomicBool::new(false),
        }
    }

    /// Frees the QoS slot once, whatever the outcome: a failed settle leaves
    /// the message in `unacked`, where the visibility sweep finds it again.
    fn release_slot(&self) {
        if !self.settled.swap(true, Ordering::SeqCst) {
            self.qos.settled();
        }
    }
}

impl Drop for RedisAcker {
    fn drop(&mut self) {
        // A delivery dropped unsettled stays unacked in Redis (restored after
        // the visibility timeout, like a crashed kombu worker) but must not
        // hold a prefetch slot forever.
        self.release_slot();
    }
}

#[async_trait]
impl Acker for RedisAcker {
    async fn ack(&self) -> Result<()> {
        // The prefetch slot is free as soon as the ack is sent, not when
        // Redis confirms it: the message is no longer waiting to be
        // processed, which is what prefetch limits. Holding the slot for the
        // round trip would cap throughput at prefetch / round-trip time.
        self.release_slot();
        self.inner.acks.submit(self.tag.clone()).await
    }

    async fn reject(&self, requeue: bool) -> Result<()> {
        let r = if requeue {
            restore_by_tag(&self.inner, &self.tag, Push::Back)
                .await
                .map(drop)
        } else {
            self.inner.acks.submit(self.tag.clone()).await
        };
        self.release_slot();
        r
    }

    async fn restore(&self) -> Result<()> {
        let r = restore_by_tag(&self.inner, &self.tag, Push::Front)
            .await
            .map(drop);
        self.release_slot();
        r
    }
}
