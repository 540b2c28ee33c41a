//! Consuming task queues: a background task per consumer pops messages
//! with the atomic `pop.lua` script and hands them over a channel.
//!
//! Why a background task: `Consumer::next` must be cancellation-safe. If the
//! caller's future popped the message itself and was dropped after the
//! script ran but before the reply was read, the message would sit in
//! `unacked` until the visibility timeout. The task never abandons a pop,
//! and it reserves a channel slot *before* popping, so a popped message
//! always has a place to go; messages still in the channel when the consumer
//! stops or is dropped are restored to the front of their queue.
//!
//! Why polling: kombu blocks in BRPOP, then records the delivery in a second
//! round trip (a crash in between loses the message). Blocking commands
//! cannot run inside Lua, so we poll the script: immediately again while
//! messages flow, then with a back-off doubling from 1 ms up to
//! `poll_max_interval` (50 ms default) while idle. Cost when idle: at most
//! ~20 cheap EVALSHA per second per consumer. The doorbell (`doorbell.rs`)
//! wakes an idle loop as soon as a message arrives, so the poll interval is
//! not added to a task's latency.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::acker::RedisAcker;
use super::doorbell::Doorbell;
use super::publish::{declare, touch_expiry};
use super::qos::Qos;
use super::restore::remove;
use super::{scripts, Inner};
use crate::protocol::envelope::decode_envelope;
use crate::transport::{Consumer, Delivery, QueueSpec};
use crate::{Error, Result};

/// Most messages taken in one pop script call (bounded by the free prefetch
/// slots): one round trip per batch instead of per message.
const BATCH_MAX: usize = 16;

/// Longest pause between retries while Redis is unreachable.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// State shared by the consumer handle and its pop task.
struct Shared {
    inner: Arc<Inner>,
    /// Consumed queues in round-robin order: the one that delivered last
    /// moves to the end (kombu's `round_robin_cycle`).
    queues: Mutex<Vec<QueueSpec>>,
    qos: Arc<Qos>,
    /// Woken when the queue list changes.
    wake: Notify,
    doorbell: Arc<Doorbell>,
    cancel: CancellationToken,
}

impl Shared {
    fn queues(&self) -> std::sync::MutexGuard<'_, Vec<QueueSpec>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct RedisConsumer {
    shared: Arc<Shared>,
    rx: Option<mpsc::Receiver<Result<Delivery>>>,
    task: Option<JoinHandle<()>>,
}

impl RedisConsumer {
    pub(crate) fn start(inner: Arc<Inner>, queues: Vec<QueueSpec>, prefetch: u16) -> Self {
        let cancel = CancellationToken::new();
        let doorbell = Doorbell::new(inner.clone(), cancel.clone());
        doorbell.listen(&queues);
        let shared = Arc::new(Shared {
            inner,
            queues: Mutex::new(queues),
            qos: Arc::new(Qos::new(prefetch)),
            wake: Notify::new(),
            doorbell,
            cancel,
        });
        let (tx, rx) = mpsc::channel(BATCH_MAX);
        let task = tokio::spawn(run(shared.clone(), tx));
        RedisConsumer {
            shared,
            rx: Some(rx),
            task: Some(task),
        }
    }
}

/// Restores every delivery left in the channel (front of its queue).
async fn drain(mut rx: mpsc::Receiver<Result<Delivery>>) {
    rx.close();
    while let Some(item) = rx.recv().await {
        if let Ok(delivery) = item {
            if let Err(e) = delivery.restore().await {
                tracing::warn!(error = %e, "could not restore an undelivered message; the visibility timeout will");
            }
        }
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        if let (Some(rx), Ok(handle)) = (self.rx.take(), tokio::runtime::Handle::try_current()) {
            handle.spawn(drain(rx));
        }
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        let rx = self
            .rx
            .as_mut()
            .ok_or_else(|| Error::Closed("consumer stopped".into()))?;
        rx.recv()
            .await
            .unwrap_or_else(|| Err(Error::Closed("consumer stopped".into())))
    }

    async fn set_prefetch(&mut self, prefetch: u16) -> Result<()> {
        self.shared.qos.set_prefetch(prefetch);
        Ok(())
    }

    async fn add_queue(&mut self, spec: &QueueSpec) -> Result<()> {
        declare(&self.shared.inner, spec).await?;
        {
            let mut queues = self.shared.queues();
            if !queues.iter().any(|q| q.name == spec.name) {
                queues.push(spec.clone());
            }
            self.shared.doorbell.listen(&queues);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    async fn cancel_queue(&mut self, name: &str) -> Result<()> {
        {
            let mut queues = self.shared.queues();
            queues.retain(|q| q.name != name);
            self.shared.doorbell.listen(&queues);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    fn queues(&self) -> Vec<QueueSpec> {
        self.shared.queues().clone()
    }

    async fn stop(&mut self) -> Result<()> {
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "redis consumer task failed");
            }
        }
        if let Some(rx) = self.rx.take() {
            drain(rx).await;
        }
        Ok(())
    }
}

/// The pop loop. Exits when cancelled or when the receiver is gone.
async fn run(shared: Arc<Shared>, tx: mpsc::Sender<Result<Delivery>>) {
    let mut pacing = Pacing::default();
    let mut next_sweep = Instant::now();
    while !shared.cancel.is_cancelled() {
        maybe_sweep(&shared, &mut next_sweep).await;
        if !shared.qos.can_consume() {
            tokio::select! {
                _ = shared.qos.changed.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
                _ = shared.cancel.cancelled() => {}
            }
            continue;
        }
        // Reserve the slots first: a popped message must never wait for one.
        let want = shared.qos.available(BATCH_MAX).max(1);
        let permits = tokio::select! {
            p = tx.reserve_many(want) => match p { Ok(p) => p, Err(_) => return },
            _ = shared.cancel.cancelled() => return,
        };
        match pop(&shared, want).await {
            Ok(items) if !items.is_empty() => {
                shared.doorbell.set_idle(false);
                pacing = Pacing::default();
                for (permit, item) in permits.zip(items) {
                    permit.send(item);
                }
            }
            Ok(_) => {
                drop(permits);
                shared.doorbell.set_idle(true);
                wait(&shared, pacing.empty(shared.inner.opts.poll_max_interval)).await;
            }
            Err(e) => {
                let (report, pause) = pacing.failed(e.is_transient());
                if report {
                    if let Some(permit) = permits.into_iter().next() {
                        permit.send(Err(e));
                    }
                }
                wait(&shared, pause).await;
            }
        }
    }
}

/// The visibility sweep when the consumer starts, then every `restore_interval`.
async fn maybe_sweep(shared: &Shared, next_sweep: &mut Instant) {
    if Instant::now() < *next_sweep {
        return;
    }
    *next_sweep = Instant::now() + shared.inner.opts.restore_interval;
    if let Err(e) = super::restore::restore_visible(&shared.inner).await {
        tracing::debug!(error = %e, "visibility sweep failed; retried next interval");
    }
}

/// Pauses between pops: none while messages flow, doubling from 1 ms to the
/// configured maximum while idle, and from 50 ms to 2 s while Redis fails.
#[derive(Default)]
struct Pacing {
    idle: Duration,
    error: Duration,
}

impl Pacing {
    fn empty(&mut self, max: Duration) -> Duration {
        self.error = Duration::ZERO;
        self.idle =
            (self.idle * 2).clamp(Duration::from_millis(1), max.max(Duration::from_millis(1)));
        self.idle
    }

    /// Whether to report this error to the caller (once per outage for
    /// transient errors, always otherwise) and how long to pause.
    fn failed(&mut self, transient: bool) -> (bool, Duration) {
        let report = self.error.is_zero() || !transient;
        self.error = (self.error * 2).clamp(Duration::from_millis(50), MAX_ERROR_BACKOFF);
        (report, self.error)
    }
}

async fn wait(shared: &Shared, pause: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shared.wake.notified() => {}
        _ = shared.doorbell.rang.notified() => {}
        _ = shared.cancel.cancelled() => {}
    }
}

/// One atomic pop of up to `max` messages over all consumed lists,
/// step-major. Empty when all are empty; an envelope that cannot be decoded
/// becomes `Err(Decode)` (it is removed from `unacked`, as Celery drops such
/// messages).
async fn pop(shared: &Arc<Shared>, max: usize) -> Result<Vec<Result<Delivery>>> {
    let inner = &shared.inner;
    let names: Vec<String> = shared.queues().iter().map(|q| q.name.clone()).collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = scripts::POP.key(inner.keys.unacked_index());
    call.key(inner.keys.unacked());
    call.arg(max);
    for step in inner.keys.steps() {
        for name in &names {
            call.key(inner.keys.queue_list(name, *step)).arg(name);
        }
    }
    for _ in 0..max {
        call.arg(Uuid::new_v4().to_string());
    }
    let mut conn = inner.conn().await?;
    let popped: Vec<(usize, Vec<u8>, String)> = call.invoke_async(&mut conn).await?;
    let mut out = Vec::with_capacity(popped.len());
    for (index, raw, tag) in popped {
        out.push(deliver(shared, &names, index, &raw, tag).await);
    }
    Ok(out)
}

/// Account for one popped message and turn it into a delivery.
async fn deliver(
    shared: &Arc<Shared>,
    names: &[String],
    index: usize,
    raw: &[u8],
    tag: String,
) -> Result<Delivery> {
    let inner = &shared.inner;
    shared.qos.delivered();
    let queue = &names[(index.saturating_sub(1)) % names.len()];
    rotate(shared, queue);
    if let Err(e) = touch_expiry(inner, queue).await {
        tracing::debug!(error = %e, queue, "could not refresh queue expiry");
    }
    let acker = RedisAcker::new(inner.clone(), tag.clone(), shared.qos.clone());
    match decode_envelope(raw) {
        Ok(env) => {
            let info = env.delivery_info();
            Ok(Delivery::new(env.message, info, Box::new(acker)))
        }
        Err(e) => {
            tracing::error!(error = %e, queue, delivery_tag = %tag, "undecodable envelope dropped");
            // Never abort the batch: a failed removal leaves the entry to
            // the visibility sweep, which drops it again.
            if let Err(re) = remove(inner, &tag).await {
                tracing::warn!(error = %re, delivery_tag = %tag, "could not remove an undecodable envelope from unacked");
            }
            drop(acker);
            Err(Error::Decode(e))
        }
    }
}

/// Move the queue that delivered to the end of the cycle.
fn rotate(shared: &Shared, queue: &str) {
    let mut queues = shared.queues();
    if let Some(pos) = queues.iter().position(|q| q.name == queue) {
        let q = queues.remove(pos);
        queues.push(q);
    }
}
