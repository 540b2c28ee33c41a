//! The consumer loop: owns the broker consumer, turns deliveries into
//! requests, applies prefetch changes, and reconnects with back-off after a
//! broker loss — and then **resumes consuming** (celery#8082 is the bug not
//! to have: a worker that reconnects but never consumes again).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use broker_compat::backend::{ExceptionInfo, TaskResult};
use broker_compat::error::Disposition;
use broker_compat::events::Event;
use broker_compat::protocol::{DecodeOptions, TaskMessage};
use broker_compat::transport::{Consumer, Delivery, QueueSpec, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Health;
use crate::execute::{Executor, LoopCommand};
use crate::metrics::TaskEvent;
use crate::request::{Request, Settle, Settlement};

/// Requests from remote control to the consumer.
#[derive(Debug)]
pub enum QueueCommand {
    Add(QueueSpec),
    Cancel(String),
}

pub struct ConsumeLoop {
    pub transport: Arc<dyn Transport>,
    pub queues: Vec<QueueSpec>,
    pub prefetch: u16,
    pub exec: Arc<Executor>,
    pub health: Arc<Health>,
    pub decode: DecodeOptions,
    pub commands: mpsc::Receiver<LoopCommand>,
    pub queue_commands: mpsc::Receiver<QueueCommand>,
    pub tracker: TaskTracker,
}

const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl ConsumeLoop {
    /// Consume until `stop` is cancelled (warm shutdown), reconnecting as needed.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        let mut extra: i32 = 0;
        let mut first = true;
        while !stop.is_cancelled() {
            let consumer = tokio::select! {
                c = self.transport.consume(&self.queues, self.effective(extra)) => c,
                _ = stop.cancelled() => break,
            };
            let mut consumer = match consumer {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "cannot consume from the broker");
                    sleep_or_stop(backoff, &stop).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            if !first {
                self.exec.metrics.broker_reconnects.inc();
                tracing::info!("reconnected to the broker; consuming again");
            }
            first = false;
            backoff = Duration::from_millis(250);
            self.set_ready(true);
            let lost = self.consume(consumer.as_mut(), &mut extra, &stop).await;
            self.set_ready(false);
            if let Err(e) = consumer.stop().await {
                tracing::debug!(error = %e, "stopping the consumer");
            }
            if !lost {
                break;
            }
            sleep_or_stop(backoff, &stop).await;
        }
        tracing::info!("stopped consuming");
    }

    fn effective(&self, extra: i32) -> u16 {
        if self.prefetch == 0 {
            return 0; // unlimited stays unlimited
        }
        let p = i32::from(self.prefetch) + extra.max(0);
        u16::try_from(p).unwrap_or(u16::MAX)
    }

    fn set_ready(&self, up: bool) {
        self.health.consuming.store(up, Ordering::Relaxed);
        self.exec.metrics.broker_connected.set(i64::from(up));
    }

    /// Returns true when the connection was lost (reconnect), false on stop.
    async fn consume(
        &mut self,
        consumer: &mut dyn Consumer,
        extra: &mut i32,
        stop: &CancellationToken,
    ) -> bool {
        self.exec
            .metrics
            .prefetch
            .set(i64::from(self.effective(*extra)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                Some(cmd) = self.commands.recv() => {
                    let LoopCommand::PrefetchDelta(d) = cmd;
                    *extra += d;
                    let p = self.effective(*extra);
                    self.exec.metrics.prefetch.set(i64::from(p));
                    if let Err(e) = consumer.set_prefetch(p).await {
                        tracing::warn!(error = %e, "could not change the prefetch");
                    }
                }
                Some(cmd) = self.queue_commands.recv() => self.apply(consumer, cmd).await,
                delivery = consumer.next() => match delivery {
                    Ok(d) => self.dispatch(d).await,
                    Err(e) if e.is_transient() => {
                        tracing::error!(error = %e, "lost the broker connection");
                        return true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "consumer error");
                        return true;
                    }
                },
            }
        }
    }

    async fn apply(&mut self, consumer: &mut dyn Consumer, cmd: QueueCommand) {
        let r = match &cmd {
            QueueCommand::Add(spec) => {
                if !self.queues.iter().any(|q| q.name == spec.name) {
                    self.queues.push(spec.clone());
                }
                consumer.add_queue(spec).await
            }
            QueueCommand::Cancel(name) => {
                self.queues.retain(|q| &q.name != name);
                consumer.cancel_queue(name).await
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %e, ?cmd, "could not change the consumed queues");
        }
    }

    async fn dispatch(&self, delivery: Delivery) {
        let (message, info, acker) = delivery.into_parts();
        let settle = Settle::new(acker);
        let queue = info.routing_key.clone();
        let msg = match TaskMessage::decode(&message, &self.decode) {
            Ok(m) => m,
            Err(e) => {
                self.exec
                    .metrics
                    .malformed_messages
                    .with_label_values(&[e.kind.as_str()])
                    .inc();
                let how = match e.kind.disposition() {
                    Disposition::Ack => Settlement::Ack,
                    Disposition::Reject => Settlement::Reject { requeue: false },
                };
                tracing::error!(error = %e, queue = %queue, disposition = ?how, "Received invalid task message");
                if let Err(e) = settle.settle(how).await {
                    tracing::error!(error = %e, "could not settle an invalid message");
                }
                return;
            }
        };
        match self.exec.registry.resolve(&msg.headers.task, &queue) {
            Some(kind) => {
                let req = Request {
                    msg,
                    delivery: info,
                    kind,
                    settle,
                    queue,
                };
                let claim = self.exec.claim_slot(&req).await;
                self.tracker.spawn(self.exec.clone().handle(req, claim));
            }
            None => self.unregistered(msg, settle, &queue).await,
        }
    }

    /// §7.9: log, reject without requeue, FAILURE NotRegistered, task-failed.
    async fn unregistered(&self, msg: TaskMessage, settle: Settle, queue: &str) {
        let (id, name) = (msg.headers.id.clone(), msg.headers.task.clone());
        tracing::error!(task_id = %id, "Received unregistered task of type '{}'. The message has been ignored and discarded.", name);
        if let Err(e) = settle.settle(Settlement::Reject { requeue: false }).await {
            tracing::error!(error = %e, "could not reject an unregistered task");
        }
        self.exec
            .metrics
            .task(TaskEvent::Failed, "unregistered", queue);
        let exc = ExceptionInfo::not_registered(&name);
        if let Some(backend) = &self.exec.backend {
            if let Err(e) = backend.store(&TaskResult::failure(&id, &exc, None)).await {
                self.exec.metrics.result_store_errors.inc();
                tracing::error!(task_id = %id, error = %e, "could not store NotRegistered");
            }
        }
        self.exec
            .events
            .task(|| Event::task_failed(&id, &exc.repr(), None))
            .await;
    }
}

/// Sleep, or return early when `stop` is cancelled.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}
