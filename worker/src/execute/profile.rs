//! Running a task in its profile's runtime: start the unit, stream its logs,
//! enforce soft (SIGTERM) and hard (SIGKILL) limits, forward terminate
//! signals, read the result, then clean up — only after the logs are saved.

use broker_compat::backend::ExceptionInfo;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::run::{sleep_opt, wait_terminate, Limits, SIGKILL, SIGTERM};
use super::{Executor, Outcome};
use crate::request::Request;
use crate::routing::{Profile, ResultSource, RuntimeKind};
use crate::runtime::{payload, Exit, Running, RuntimeError, RuntimeErrorKind, TaskSpec};
use crate::tasklog::{self, LogSummary};
use crate::tasks::TaskKind;

/// What happened while the unit ran, besides its exit.
#[derive(Debug, Default)]
pub(super) struct Interventions {
    pub soft: bool,
    pub hard: bool,
    pub terminated: Option<i32>,
    pub lost: bool,
}

impl Interventions {
    /// The outcome our own action decided, whatever the exit: cold shutdown
    /// (lost), revoke with terminate, or the hard time limit.
    pub(super) fn overriding(&self, limits: Limits) -> Option<Outcome> {
        if self.lost {
            return Some(Outcome::Lost);
        }
        if let Some(sig) = self.terminated {
            return Some(Outcome::Revoked {
                reason: "terminated",
                signum: Some(sig),
                expired: false,
            });
        }
        self.hard.then(|| Outcome::TimeLimit {
            hard: limits.hard.map_or(0.0, |d| d.as_secs_f64()),
        })
    }
}

impl Executor {
    pub(super) async fn run_profile(
        &self,
        req: &Request,
        limits: Limits,
        mut terminate: watch::Receiver<Option<i32>>,
    ) -> Outcome {
        let TaskKind::Profile { profile, .. } = &req.kind else {
            return Outcome::Requeue {
                why: "not a runtime task".into(),
            };
        };
        let runtime = match profile.runtime {
            RuntimeKind::Process => self.process.clone(),
            RuntimeKind::Docker => match &self.docker {
                Some(d) => d.clone(),
                None => {
                    return self.runtime_failed(
                        req,
                        RuntimeError::new(
                            RuntimeErrorKind::Unavailable,
                            "the docker runtime is not configured on this worker",
                        ),
                    )
                }
            },
            RuntimeKind::Kubernetes => {
                return self.runtime_failed(
                    req,
                    RuntimeError::new(
                        RuntimeErrorKind::Unavailable,
                        "the kubernetes runtime is not available in this version",
                    ),
                )
            }
        };
        let spec = TaskSpec {
            task_id: req.id().to_owned(),
            task_name: req.msg.headers.task.clone(),
            queue: req.queue.clone(),
            worker: self.state.hostname.clone(),
            args: req.msg.args.clone(),
            kwargs: req.msg.kwargs.clone(),
            retries: req.msg.headers.retries,
            profile: profile.clone(),
        };
        let (log_tx, log_rx) = mpsc::channel(1024);
        let path = tasklog::log_path(&self.log_dir, &req.queue, req.id());
        let logs = tokio::spawn(tasklog::collect(log_rx, path, req.id().to_owned()));
        let mut unit = match runtime.start(&spec, log_tx).await {
            Ok(u) => u,
            Err(e) => return self.runtime_failed(req, e),
        };
        tracing::info!(task_id = %req.id(), runtime = runtime.kind(), unit = %unit.id(), "task started");
        let (exit, did) = self.supervise(unit.as_mut(), limits, &mut terminate).await;
        let summary = logs.await.unwrap_or_default();
        let result = read_result(unit.as_mut(), profile, &summary).await;
        if let Err(e) = unit.cleanup().await {
            self.metrics
                .runtime_errors
                .with_label_values(&[e.kind.as_str()])
                .inc();
            tracing::warn!(task_id = %req.id(), error = %e, "runtime cleanup failed");
        }
        match exit {
            Ok(exit) => classify(req, profile, exit, did, limits, result, &summary),
            Err(e) => self.runtime_failed(req, e),
        }
    }

    pub(super) async fn supervise(
        &self,
        unit: &mut dyn Running,
        limits: Limits,
        terminate: &mut watch::Receiver<Option<i32>>,
    ) -> (Result<Exit, RuntimeError>, Interventions) {
        let mut did = Interventions::default();
        let soft = sleep_opt(limits.soft);
        let hard = sleep_opt(limits.hard);
        tokio::pin!(soft, hard);
        loop {
            let signal = tokio::select! {
                exit = unit.wait() => return (exit, did),
                _ = &mut soft, if !did.soft => { did.soft = true; SIGTERM }
                _ = &mut hard, if !did.hard => { did.hard = true; SIGKILL }
                sig = wait_terminate(terminate), if did.terminated.is_none() => { did.terminated = Some(sig); sig }
                _ = self.cold.cancelled(), if !did.lost => { did.lost = true; SIGKILL }
            };
            if let Err(e) = unit.signal(signal).await {
                tracing::warn!(unit = %unit.id(), signal, error = %e, "could not signal the task");
            }
        }
    }

    pub(super) fn runtime_failed(&self, req: &Request, e: RuntimeError) -> Outcome {
        self.metrics
            .runtime_errors
            .with_label_values(&[e.kind.as_str()])
            .inc();
        tracing::error!(task_id = %req.id(), error = %e, "runtime error");
        match e.kind {
            // Nothing will make a missing image or binary appear: fail the task.
            RuntimeErrorKind::NotFound => Outcome::Failure {
                exc: ExceptionInfo::new("builtins", "RuntimeError", vec![json!(e.to_string())]),
                traceback: None,
            },
            // The runtime may come back (daemon restart): let the task run later.
            RuntimeErrorKind::Unavailable | RuntimeErrorKind::Failed => {
                Outcome::Requeue { why: e.to_string() }
            }
        }
    }
}

async fn read_result(
    unit: &mut dyn Running,
    profile: &Profile,
    logs: &LogSummary,
) -> serde_json::Value {
    match &profile.result {
        ResultSource::StdoutLastLine => logs
            .last_stdout
            .as_deref()
            .map_or(serde_json::Value::Null, payload::parse_result),
        ResultSource::None => serde_json::Value::Null,
        ResultSource::File(path) => match unit.read_file(path).await {
            Ok(Some(bytes)) => payload::parse_result(&String::from_utf8_lossy(&bytes)),
            Ok(None) => serde_json::Value::Null,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "could not read the result file");
                serde_json::Value::Null
            }
        },
    }
}

fn classify(
    req: &Request,
    profile: &Profile,
    exit: Exit,
    did: Interventions,
    limits: Limits,
    result: serde_json::Value,
    logs: &LogSummary,
) -> Outcome {
    let traceback = (!logs.stderr_tail.is_empty()).then(|| logs.stderr_tail.join("\n"));
    if let Some(outcome) = did.overriding(limits) {
        return outcome;
    }
    if exit.success() {
        return Outcome::Success(result);
    }
    if did.soft {
        return Outcome::Failure {
            exc: ExceptionInfo::soft_time_limit_exceeded(),
            traceback,
        };
    }
    if exit.oom_killed {
        let limit = profile.memory.as_deref().unwrap_or("unset");
        return Outcome::Failure {
            exc: ExceptionInfo::new(
                "builtins",
                "MemoryError",
                vec![json!(format!(
                    "task killed by the OOM killer (memory limit {limit})"
                ))],
            ),
            traceback,
        };
    }
    let what = match (exit.code, exit.signal) {
        (Some(c), _) => format!("task exited with code {c}"),
        (None, Some(s)) => format!("task killed by signal {s}"),
        (None, None) => "task ended without an exit status".to_owned(),
    };
    let exc = ExceptionInfo::new("builtins", "RuntimeError", vec![json!(what)]);
    match &profile.retry {
        Some(r)
            if exit.code.is_some_and(|c| r.on_exit_codes.contains(&c))
                && req.msg.headers.retries < r.max_retries =>
        {
            Outcome::Retry {
                exc,
                traceback,
                countdown: r.countdown,
            }
        }
        _ => Outcome::Failure { exc, traceback },
    }
}
