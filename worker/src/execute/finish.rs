//! Reporting an outcome the way Celery does (§7.2–7.8): store the state,
//! send the event, count it, and settle the message — ack, reject, requeue,
//! or restore — exactly once.

use std::time::Duration;

use broker_compat::backend::{ExceptionInfo, StoreOutcome, TaskResult};
use broker_compat::events::Event;
use broker_compat::protocol::pyjson;
use broker_compat::protocol::EncodeOptions;
use broker_compat::transport::Route;
use chrono::Utc;

use super::{Executor, Outcome};
use crate::metrics::TaskEvent;
use crate::request::{Request, Settlement};

/// Celery truncates reprs in events to this many characters.
const REPR_MAX: usize = 1024;

impl Executor {
    pub(super) async fn finish(&self, req: &Request, outcome: Outcome) {
        let id = req.id().to_owned();
        let name = self.metric_name(req).to_owned();
        let ignore = self.ignore_result(req);
        match outcome {
            Outcome::Success(value) => {
                tracing::info!(task_id = %id, "Task {}[{}] succeeded", req.display_name(), id);
                if !ignore {
                    self.store(req, TaskResult::success(&id, value.clone()))
                        .await;
                }
                self.settle(req, Settlement::Ack).await;
                self.metrics.task(TaskEvent::Succeeded, &name, &req.queue);
                self.events
                    .task(|| {
                        let repr = pyjson::truncate_repr(pyjson::repr(&value), REPR_MAX);
                        Event::task_succeeded(&id, &repr, 0.0)
                    })
                    .await;
            }
            Outcome::Failure { exc, traceback } => self.fail(req, &exc, traceback, ignore).await,
            Outcome::TimeLimit { hard } => {
                tracing::error!(task_id = %id, "Hard time limit ({hard}s) exceeded for {}[{}]", req.display_name(), id);
                self.fail(req, &ExceptionInfo::time_limit_exceeded(hard), None, ignore)
                    .await;
            }
            Outcome::Retry {
                exc,
                traceback,
                countdown,
            } => self.retry(req, &exc, traceback, countdown).await,
            Outcome::Revoked {
                reason,
                signum,
                expired,
            } => {
                if !ignore {
                    self.store(req, TaskResult::revoked(&id, reason)).await;
                }
                self.settle(req, Settlement::Ack).await;
                self.metrics.task(TaskEvent::Revoked, &name, &req.queue);
                let terminated = reason == "terminated";
                self.events
                    .task(|| Event::task_revoked(&id, terminated, signum, expired))
                    .await;
            }
            Outcome::Requeue { why } => {
                tracing::warn!(task_id = %id, "requeueing task: {why}");
                self.settle(req, Settlement::Reject { requeue: true }).await;
                self.metrics.task(TaskEvent::Rejected, &name, &req.queue);
                self.events.task(|| Event::task_rejected(&id, true)).await;
            }
            Outcome::Lost => self.lost(req).await,
            Outcome::Ignored { reason } => {
                tracing::info!(task_id = %id, "Task {}[{}] ignored: {reason}", req.display_name(), id);
                self.settle(req, Settlement::Ack).await;
            }
        }
    }

    async fn fail(
        &self,
        req: &Request,
        exc: &ExceptionInfo,
        traceback: Option<String>,
        ignore: bool,
    ) {
        let id = req.id();
        tracing::error!(task_id = %id, "Task {}[{}] raised unexpected: {}", req.display_name(), id, exc.repr());
        if !ignore {
            self.store(req, TaskResult::failure(id, exc, traceback.clone()))
                .await;
        }
        // acks_on_failure_or_timeout defaults to true: a failed task is acked.
        self.settle(req, Settlement::Ack).await;
        self.metrics
            .task(TaskEvent::Failed, self.metric_name(req), &req.queue);
        self.events
            .task(|| Event::task_failed(id, &exc.repr(), traceback.as_deref()))
            .await;
    }

    /// `Task.retry`: a new message with the same id, retries + 1, an ETA, and
    /// parent_id = this id; then RETRY is stored and the old message acked.
    async fn retry(
        &self,
        req: &Request,
        exc: &ExceptionInfo,
        traceback: Option<String>,
        countdown: Duration,
    ) {
        let id = req.id();
        let mut next = req.msg.clone();
        next.headers.retries += 1;
        next.headers.eta =
            Some(Utc::now() + chrono::Duration::from_std(countdown).unwrap_or_default());
        next.headers.parent_id = Some(id.to_owned());
        let published = match next.encode(&EncodeOptions::default()) {
            Ok(message) => {
                self.transport
                    .publish(&Route::queue(&req.delivery.routing_key), &message)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            // Without the new message the retry would be lost: fail instead.
            tracing::error!(task_id = %id, error = %e, "could not publish the retry; failing the task");
            return self
                .fail(req, exc, traceback, self.ignore_result(req))
                .await;
        }
        tracing::info!(task_id = %id, "Task {}[{}] retry: Retry in {}s", req.display_name(), id, countdown.as_secs_f64());
        let mut state = TaskResult::retry(id, exc, traceback.clone());
        // Celery counts the retry message it sent as a child of this task.
        state.children = Some(vec![serde_json::json!([[id, null], null])]);
        self.store(req, state).await;
        self.settle(req, Settlement::Ack).await;
        self.metrics
            .task(TaskEvent::Retried, self.metric_name(req), &req.queue);
        self.events
            .task(|| Event::task_retried(id, &exc.repr(), traceback.as_deref().unwrap_or("")))
            .await;
    }

    /// Cold shutdown interrupted it: give it back so it runs again. If it
    /// was acked early, republish the same message so nothing is lost.
    async fn lost(&self, req: &Request) {
        let id = req.id();
        match req.settle.settle(Settlement::Restore).await {
            Ok(true) => {
                tracing::warn!(task_id = %id, "task interrupted by shutdown; restored to the broker")
            }
            Ok(false) => {
                let published = match req.msg.encode(&EncodeOptions::default()) {
                    Ok(m) => {
                        self.transport
                            .publish(&Route::queue(&req.delivery.routing_key), &m)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match published {
                    Ok(()) => {
                        tracing::warn!(task_id = %id, "task interrupted by shutdown after its ack; republished")
                    }
                    Err(e) => {
                        tracing::error!(task_id = %id, error = %e, "task interrupted by shutdown and could not be republished: it is lost")
                    }
                }
            }
            Err(e) => {
                tracing::error!(task_id = %id, error = %e, "could not restore the interrupted task; the broker will redeliver it after its visibility timeout")
            }
        }
    }

    pub(super) async fn settle(&self, req: &Request, how: Settlement) {
        let started = std::time::Instant::now();
        match req.settle.settle(how).await {
            Ok(_) => self
                .metrics
                .ack_latency
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => {
                tracing::error!(task_id = %req.id(), error = %e, ?how, "could not settle the message with the broker; it will be redelivered")
            }
        }
    }

    /// Store a state, retrying transient backend errors a few times.
    pub(super) async fn store(&self, req: &Request, result: TaskResult) {
        let Some(backend) = &self.backend else {
            return;
        };
        let mut result = result;
        result.parent_id = req.msg.headers.parent_id.clone();
        result.group_id = req.msg.headers.group.clone();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match backend.store(&result).await {
                Ok(StoreOutcome::Stored) => return,
                Ok(StoreOutcome::SuccessAlreadyStored) => {
                    tracing::info!(task_id = %result.task_id, "SUCCESS already stored; not overwritten");
                    return;
                }
                Err(e) if e.is_transient() && attempt < 5 => {
                    tracing::warn!(task_id = %result.task_id, error = %e, attempt, "result backend error; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    self.metrics.result_store_errors.inc();
                    tracing::error!(task_id = %result.task_id, state = result.status.as_str(), error = %e, "could not store the task state");
                    return;
                }
            }
        }
    }
}
