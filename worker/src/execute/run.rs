//! Running an accepted request: early ack, task-started, STARTED, then the
//! built-in or the runtime under its time limits, revokes and shutdown.

use std::time::{Duration, Instant};

use broker_compat::backend::{ExceptionInfo, TaskResult};
use broker_compat::events::Event;
use broker_compat::protocol::time::unix_seconds;
use chrono::Utc;
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::{Executor, Outcome};
use crate::metrics::TaskEvent;
use crate::request::{Request, Settlement};
use crate::state::ActiveTask;
use crate::tasks::builtin::BuiltinOutcome;
use crate::tasks::TaskKind;

/// Hard and soft limits: the message's `timelimit` header wins over the profile.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limits {
    pub hard: Option<Duration>,
    pub soft: Option<Duration>,
}

impl Executor {
    pub(super) fn acks_late(&self, req: &Request) -> bool {
        match &req.kind {
            TaskKind::Profile { profile, .. } => {
                profile.acks_late.unwrap_or(self.defaults.acks_late)
            }
            TaskKind::Airflow(a) => a.profile.acks_late.unwrap_or(self.defaults.acks_late),
            TaskKind::Builtin(_) => self.defaults.acks_late,
        }
    }

    pub(super) fn ignore_result(&self, req: &Request) -> bool {
        req.msg.headers.ignore_result.unwrap_or(match &req.kind {
            TaskKind::Profile { profile, .. } => profile.ignore_result.unwrap_or(false),
            TaskKind::Airflow(a) => a.profile.ignore_result.unwrap_or(false),
            TaskKind::Builtin(_) => false,
        })
    }

    fn limits(&self, req: &Request) -> Limits {
        let (hard, soft) = req.msg.headers.timelimit;
        let secs = |s: Option<f64>| {
            s.filter(|s| *s > 0.0 && s.is_finite())
                .map(Duration::from_secs_f64)
        };
        let (p_hard, p_soft) = match &req.kind {
            TaskKind::Profile { profile, .. } => (profile.time_limit, profile.soft_time_limit),
            TaskKind::Airflow(a) => (a.profile.time_limit, a.profile.soft_time_limit),
            TaskKind::Builtin(_) => (None, None),
        };
        Limits {
            hard: secs(hard).or(p_hard),
            soft: secs(soft).or(p_soft),
        }
    }

    /// From accepted to ended. The request is `active` for exactly this span.
    /// `slot` is released as soon as the task stops running: the ack's
    /// reply, storing the result and settling the message need none, so the
    /// next task starts meanwhile.
    pub(super) async fn execute(&self, req: &Request, slot: OwnedSemaphorePermit) -> Outcome {
        let acks_late = self.acks_late(req);
        let (term_tx, term_rx) = watch::channel(None);
        let started = Instant::now();
        self.mark_active(req, acks_late, term_tx);
        // The early ack is sent before anything else happens, but the task
        // does not wait for Redis' reply: `biased` polls the ack first, which
        // puts it on the connection, then the task runs while it completes.
        // Waiting would hold the concurrency slot for a round trip per task.
        let early_ack = async {
            if !acks_late {
                if let Err(e) = req.settle.settle(Settlement::Ack).await {
                    tracing::error!(task_id = %req.id(), error = %e, "early ack failed; the broker may deliver the task again");
                }
            }
        };
        let task = async {
            let outcome = match &req.kind {
                TaskKind::Builtin(b) => self.run_builtin(*b, req, term_rx).await,
                TaskKind::Profile { .. } => self.run_profile(req, self.limits(req), term_rx).await,
                TaskKind::Airflow(a) => self.run_airflow(req, a, self.limits(req), term_rx).await,
            };
            drop(slot);
            outcome
        };
        // STARTED is stored while the task starts, not before: a database
        // backend's commit took ~10 ms of every Airflow task's queued→running.
        // It is stored before the result all the same: `execute` returns, and
        // the result is stored, only once all three are done.
        let ((), (), outcome) = tokio::join!(biased; early_ack, self.announce_started(req), task);
        self.state.tasks().active.remove(req.id());
        self.metrics.tasks_active.dec();
        self.metrics
            .task_runtime
            .with_label_values(&[self.metric_name(req), &req.queue])
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Listed in `inspect active`, counted as started.
    fn mark_active(&self, req: &Request, acks_late: bool, terminate: watch::Sender<Option<i32>>) {
        let time_start = unix_seconds(Utc::now());
        {
            let mut tasks = self.state.tasks();
            tasks.active.insert(
                req.id().to_owned(),
                ActiveTask {
                    info: req.info(&self.state.hostname, Some(time_start), !acks_late),
                    name: req.msg.headers.task.clone(),
                    terminate,
                },
            );
            *tasks
                .totals
                .entry(req.msg.headers.task.clone())
                .or_default() += 1;
        }
        self.state
            .processed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.tasks_active.inc();
        self.metrics
            .task(TaskEvent::Started, self.metric_name(req), &req.queue);
    }

    /// task-started, and STARTED when track_started is on.
    async fn announce_started(&self, req: &Request) {
        self.events.task(|| Event::task_started(req.id())).await;
        let track = match &req.kind {
            TaskKind::Profile { profile, .. } => {
                profile.track_started.unwrap_or(self.defaults.track_started)
            }
            TaskKind::Airflow(a) => a
                .profile
                .track_started
                .unwrap_or(self.defaults.track_started),
            TaskKind::Builtin(_) => self.defaults.track_started,
        };
        if track && !self.ignore_result(req) {
            let started = TaskResult::started(req.id(), self.state.pid, &self.state.hostname);
            self.store(req, started).await;
        }
    }

    async fn run_builtin(
        &self,
        b: crate::tasks::Builtin,
        req: &Request,
        mut terminate: watch::Receiver<Option<i32>>,
    ) -> Outcome {
        let limits = self.limits(req);
        let stop = tokio_util::sync::CancellationToken::new();
        let run = b.run(&req.msg.args, &stop);
        tokio::pin!(run);
        let hard = sleep_opt(limits.hard);
        let soft = sleep_opt(limits.soft);
        tokio::pin!(hard, soft);
        tokio::select! {
            out = &mut run => match out {
                BuiltinOutcome::Returned(v) => Outcome::Success(v),
                BuiltinOutcome::TypeError(m) => Outcome::Failure {
                    exc: ExceptionInfo::new("builtins", "TypeError", vec![json!(m)]),
                    traceback: None,
                },
                BuiltinOutcome::Interrupted => Outcome::Lost,
            },
            _ = &mut soft => Outcome::Failure { exc: ExceptionInfo::soft_time_limit_exceeded(), traceback: None },
            _ = &mut hard => Outcome::TimeLimit { hard: limits.hard.map_or(0.0, |d| d.as_secs_f64()) },
            sig = wait_terminate(&mut terminate) => Outcome::Revoked { reason: "terminated", signum: Some(sig), expired: false },
            _ = self.cold.cancelled() => Outcome::Lost,
        }
    }
}

/// A timer that never fires when there is no limit.
pub(super) async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves with the signal number once a terminate was requested.
pub(super) async fn wait_terminate(rx: &mut watch::Receiver<Option<i32>>) -> i32 {
    loop {
        if let Some(sig) = *rx.borrow_and_update() {
            return sig;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

pub(super) const SIGTERM: i32 = Signal::SIGTERM as i32;
pub(super) const SIGKILL: i32 = Signal::SIGKILL as i32;
