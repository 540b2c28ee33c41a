//! The life of one request after it was decoded (spec §7.1): revoked/expired
//! check, task-received, ETA hold, a concurrency slot, early or late ack,
//! STARTED, run, result, events. Every path settles the delivery exactly once
//! or restores it to the broker: nothing is left unacked by accident.

mod airflow;
mod finish;
mod outcome;
mod profile;
mod run;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use broker_compat::backend::ResultBackend;
use broker_compat::events::{Event, TaskReceived};
use broker_compat::protocol::time::to_isoformat;
use broker_compat::transport::Transport;
use chrono::Utc;
use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use outcome::Outcome;

use crate::events::Events;
use crate::metrics::{Metrics, TaskEvent};
use crate::request::{Request, Settlement};
use crate::runtime::Runtime;
use crate::state::WorkerState;
use crate::tasks::Registry;

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request's place in the queue for a concurrency slot.
pub enum SlotClaim {
    Granted(OwnedSemaphorePermit),
    Waiting(Acquire),
    /// Not claimed yet (ETA tasks claim theirs when due).
    Later,
}

/// Requests to the consumer loop, which owns the broker consumer.
#[derive(Debug)]
pub enum LoopCommand {
    /// ETA tasks held in memory raise the prefetch by one each (Celery's
    /// `qos.increment_eventually`), so they never block a slot.
    PrefetchDelta(i32),
}

/// Per-task defaults from the configuration.
#[derive(Debug, Clone)]
pub struct TaskDefaults {
    pub acks_late: bool,
    pub track_started: bool,
    pub reject_on_worker_lost: bool,
}

/// Everything the executor needs, shared by all requests.
pub struct Executor {
    pub state: Arc<WorkerState>,
    pub defaults: TaskDefaults,
    pub backend: Option<Arc<dyn ResultBackend>>,
    pub transport: Arc<dyn Transport>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub process: Arc<dyn Runtime>,
    pub docker: Option<Arc<dyn Runtime>>,
    /// Warm Python pool for Airflow tasks (`--airflow-warm-pool`).
    pub warm_python: Option<Arc<dyn Runtime>>,
    pub slots: Arc<Semaphore>,
    pub loop_tx: mpsc::Sender<LoopCommand>,
    /// Warm shutdown: stop starting tasks; restore what did not start.
    pub warm: CancellationToken,
    /// Cold shutdown: stop running tasks too; restore everything unacked.
    pub cold: CancellationToken,
    pub log_dir: PathBuf,
}

impl Executor {
    /// Take a place in the queue for a concurrency slot now, while messages
    /// are dispatched one by one, so tasks start in delivery order (FIFO) as
    /// in a Celery pool, whatever order the spawned handlers run in. ETA
    /// tasks claim theirs when due.
    pub async fn claim_slot(&self, req: &Request) -> SlotClaim {
        if req.msg.headers.eta.is_some_and(|eta| eta > Utc::now()) {
            return SlotClaim::Later;
        }
        let mut acquire: Acquire = Box::pin(self.slots.clone().acquire_owned());
        match futures::poll!(acquire.as_mut()) {
            std::task::Poll::Ready(Ok(permit)) => SlotClaim::Granted(permit),
            std::task::Poll::Ready(Err(_)) => SlotClaim::Later,
            std::task::Poll::Pending => SlotClaim::Waiting(acquire),
        }
    }

    /// Handle a decoded request to its end. Spawned once per message.
    pub async fn handle(self: Arc<Self>, req: Request, claim: SlotClaim) {
        let id = req.id().to_owned();
        if self.discard_if_revoked(&req).await {
            return;
        }
        self.metrics
            .task(TaskEvent::Received, self.metric_name(&req), &req.queue);
        tracing::info!(task_id = %id, task_name = req.display_name(), "Task {}[{}] received", req.display_name(), id);
        self.events
            .task(|| Event::task_received(&received(&req)))
            .await;

        if !self.hold_until_eta(&req).await {
            return;
        }
        let Some(slot) = self.wait_for_slot(&req, claim).await else {
            return;
        };
        let outcome = self.execute(&req, slot).await;
        self.finish(&req, outcome).await;
    }

    fn metric_name<'a>(&self, req: &'a Request) -> &'a str {
        self.registry.metric_name(&req.msg.headers.task, &req.queue)
    }

    /// Expired or revoked before running (§7.5, §6.4): REVOKED, task-revoked, ack.
    async fn discard_if_revoked(&self, req: &Request) -> bool {
        let expired = req.msg.headers.expires.is_some_and(|e| Utc::now() > e);
        if !expired && !self.state.is_revoked(req.id()) {
            return false;
        }
        let reason = if expired { "expired" } else { "revoked" };
        tracing::info!(task_id = %req.id(), "Discarding {reason} task {}[{}]", req.display_name(), req.id());
        self.state.tasks().revoked.insert(req.id());
        self.finish(
            req,
            Outcome::Revoked {
                reason,
                signum: None,
                expired,
            },
        )
        .await;
        true
    }

    /// Hold an ETA task in memory without taking a slot; false when it must
    /// not run (revoked while held, or shutdown restored it).
    async fn hold_until_eta(&self, req: &Request) -> bool {
        let Some(eta) = req.msg.headers.eta.filter(|eta| *eta > Utc::now()) else {
            return true;
        };
        let info = req.info(&self.state.hostname, None, false);
        self.state
            .tasks()
            .scheduled
            .insert(req.id().to_owned(), (to_isoformat(eta), info));
        self.metrics.tasks_reserved.inc();
        let _ = self.loop_tx.send(LoopCommand::PrefetchDelta(1)).await;
        let wait = (eta - Utc::now()).to_std().unwrap_or_default();
        let due = tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.warm.cancelled() => false,
        };
        self.state.tasks().scheduled.remove(req.id());
        self.metrics.tasks_reserved.dec();
        let _ = self.loop_tx.send(LoopCommand::PrefetchDelta(-1)).await;
        if !due {
            self.restore(req).await;
            return false;
        }
        !self.discard_if_revoked(req).await
    }

    /// Wait for a concurrency slot; at warm shutdown give the message back.
    async fn wait_for_slot(&self, req: &Request, claim: SlotClaim) -> Option<OwnedSemaphorePermit> {
        // A request granted its slot at dispatch never waits: it is not
        // listed as reserved (no request-info JSON built only to be dropped).
        let waits = !matches!(claim, SlotClaim::Granted(_));
        if waits {
            let info = req.info(&self.state.hostname, None, false);
            self.state
                .tasks()
                .reserved
                .insert(req.id().to_owned(), info);
            self.metrics.tasks_reserved.inc();
        }
        let acquire = match claim {
            SlotClaim::Granted(permit) => Box::pin(std::future::ready(Ok(permit))),
            SlotClaim::Waiting(acquire) => acquire,
            SlotClaim::Later => Box::pin(self.slots.clone().acquire_owned()) as Acquire,
        };
        // Shutdown first: once warm shutdown began no new task may start,
        // even if a slot happens to be free at the same moment.
        let permit = tokio::select! {
            biased;
            _ = self.warm.cancelled() => None,
            p = acquire => p.ok(),
        };
        if waits {
            self.state.tasks().reserved.remove(req.id());
            self.metrics.tasks_reserved.dec();
        }
        if permit.is_none() {
            self.restore(req).await;
        }
        permit
    }

    /// Put an unstarted message back at the front of its queue (warm shutdown).
    async fn restore(&self, req: &Request) {
        match req.settle.settle(Settlement::Restore).await {
            Ok(_) => tracing::info!(task_id = %req.id(), "restored unstarted task to the broker"),
            Err(e) => {
                tracing::error!(task_id = %req.id(), error = %e, "could not restore task; the broker will redeliver it after its visibility timeout")
            }
        }
    }
}

fn received(req: &Request) -> TaskReceived {
    let h = &req.msg.headers;
    TaskReceived {
        uuid: h.id.clone(),
        name: req.display_name().to_owned(),
        args: h.argsrepr.clone().unwrap_or_default(),
        kwargs: h.kwargsrepr.clone().unwrap_or_default(),
        root_id: h.root_id.clone(),
        parent_id: h.parent_id.clone(),
        retries: u64::from(h.retries),
        eta: h.eta.map(to_isoformat),
        expires: h.expires.map(to_isoformat),
    }
}
