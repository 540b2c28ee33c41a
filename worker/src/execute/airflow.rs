//! Running an Airflow task (`execute_workload`, `execute_command`): plan
//! the Python run, start it in the warm pool, a local process or the
//! profile's Docker image, watch its output for `TaskAlreadyRunningError`,
//! and report only once the process exited (airflow.md §0, §5): exit 0 →
//! SUCCESS, otherwise FAILURE, a duplicate delivery → nothing (Ignore).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use broker_compat::backend::ExceptionInfo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::profile::Interventions;
use super::run::Limits;
use super::{Executor, Outcome};
use crate::request::Request;
use crate::routing::{Profile, RuntimeKind};
use crate::runtime::{LogLine, Runtime, RuntimeError, RuntimeErrorKind, TaskSpec};
use crate::tasklog;
use crate::tasks::airflow::{self, AirflowSettings, AirflowTask, PythonRun, Verdict};

/// Lines of output kept for the FAILURE traceback.
const TAIL: usize = 20;
/// How long output may keep coming after the process exited before the
/// unit's process group is cleaned up.
const LOG_TAIL: Duration = Duration::from_secs(5);

/// What the output showed, besides the copy in the worker's log dir.
#[derive(Debug, Default)]
struct Seen {
    already_running: bool,
    tail: VecDeque<String>,
}

impl Executor {
    pub(super) async fn run_airflow(
        &self,
        req: &Request,
        task: &AirflowTask,
        limits: Limits,
        mut terminate: watch::Receiver<Option<i32>>,
    ) -> Outcome {
        let Some(settings) = self.registry.airflow().cloned() else {
            return Outcome::Requeue {
                why: "Airflow mode is off on this worker".into(),
            };
        };
        let run = match task.plan(req.id(), &req.msg.args, &req.msg.kwargs) {
            Ok(run) => run,
            Err(e) => {
                tracing::error!(task_id = %req.id(), "refusing to run {}: {}", task.name.name(), e.message);
                return Outcome::Failure {
                    exc: ExceptionInfo::new("builtins", e.exc_type, vec![json!(e.message)]),
                    traceback: None,
                };
            }
        };
        let (runtime, profile) = match self.airflow_runtime(&settings, &task.profile, &run) {
            Ok(r) => r,
            Err(e) => return self.runtime_failed(req, e),
        };
        let spec = self.airflow_spec(req, &run, profile);
        let (scan_tx, scan_rx) = mpsc::channel(1024);
        let (log_tx, log_rx) = mpsc::channel(1024);
        let path = tasklog::log_path(&self.log_dir, &req.queue, req.id());
        let mut logs = tokio::spawn(tasklog::collect(log_rx, path, req.id().to_owned()));
        let scan = tokio::spawn(scan(scan_rx, log_tx));
        let mut unit = match runtime.start(&spec, scan_tx).await {
            Ok(u) => u,
            Err(e) => return self.runtime_failed(req, e),
        };
        tracing::info!(task_id = %req.id(), runtime = runtime.kind(), unit = %unit.id(), "Airflow task started: {}", run.what);
        let (exit, did) = self.supervise(unit.as_mut(), limits, &mut terminate).await;
        // Normally the output ends with the process; a stray grandchild
        // holding the pipes is cleaned up first, then the rest is read.
        let early = tokio::time::timeout(LOG_TAIL, &mut logs).await.is_ok();
        if let Err(e) = unit.cleanup().await {
            tracing::warn!(task_id = %req.id(), error = %e, "runtime cleanup failed");
        }
        if !early {
            let _ = logs.await;
        }
        let seen = scan.await.unwrap_or_default();
        match exit {
            Ok(exit) => outcome(req, exit.code, exit.signal, &did, limits, seen),
            Err(e) => self.runtime_failed(req, e),
        }
    }

    fn airflow_spec(&self, req: &Request, run: &PythonRun, profile: Profile) -> TaskSpec {
        TaskSpec {
            task_id: req.id().to_owned(),
            task_name: req.msg.headers.task.clone(),
            queue: req.queue.clone(),
            worker: self.state.hostname.clone(),
            args: vec![run.document()],
            kwargs: serde_json::Map::new(),
            retries: req.msg.headers.retries,
            profile,
        }
    }

    /// The runtime and the concrete profile (command and environment) of one run.
    fn airflow_runtime(
        &self,
        settings: &AirflowSettings,
        base: &Profile,
        run: &PythonRun,
    ) -> Result<(Arc<dyn Runtime>, Profile), RuntimeError> {
        let mut profile = base.clone();
        let python = base.command.first().cloned();
        let runtime = match base.runtime {
            RuntimeKind::Docker => {
                let docker = self.docker.clone().ok_or_else(|| {
                    RuntimeError::new(
                        RuntimeErrorKind::Unavailable,
                        "the docker runtime is not configured on this worker",
                    )
                })?;
                profile.env = docker_env(settings, &base.env);
                profile.command = vec![
                    python.unwrap_or_else(|| "python".into()),
                    "-c".into(),
                    airflow::BOOTSTRAP.into(),
                ];
                docker
            }
            RuntimeKind::Process => {
                let mut env = settings.task_env();
                env.extend(base.env.clone());
                profile.env = env;
                let python = python.unwrap_or_else(|| settings.python.display().to_string());
                let warm = self
                    .warm_python
                    .clone()
                    .filter(|_| python == settings.python.display().to_string());
                profile.command = vec![python, "-c".into(), airflow::BOOTSTRAP.into()];
                warm.unwrap_or_else(|| self.process.clone())
            }
            RuntimeKind::Kubernetes => {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Unavailable,
                    "the kubernetes runtime is not available in this version",
                ))
            }
        };
        profile.env.extend(run.extra_env.iter().cloned());
        Ok((runtime, profile))
    }
}

/// In a container only Airflow's own settings make sense (the image has its
/// own PATH, HOME and Python); the profile's `env` is added on top.
fn docker_env(
    settings: &AirflowSettings,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = settings
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("AIRFLOW_"))
        .cloned()
        .collect();
    env.extend(extra.clone());
    env
}

/// Forward every line to the task log, noting what decides the outcome.
async fn scan(mut rx: mpsc::Receiver<LogLine>, out: mpsc::Sender<LogLine>) -> Seen {
    let mut seen = Seen::default();
    while let Some(line) = rx.recv().await {
        if line.line.contains(airflow::ALREADY_RUNNING) {
            seen.already_running = true;
        }
        if seen.tail.len() == TAIL {
            seen.tail.pop_front();
        }
        seen.tail.push_back(line.line.clone());
        // The log collector outlives us; a send error only means it gave up.
        let _ = out.send(line).await;
    }
    seen
}

/// How long a redelivered duplicate waits before it tries again.
const REDELIVERED_RETRY: Duration = Duration::from_secs(15);

fn outcome(
    req: &Request,
    code: Option<i64>,
    signal: Option<i32>,
    did: &Interventions,
    limits: Limits,
    seen: Seen,
) -> Outcome {
    if let Some(outcome) = did.overriding(limits) {
        return outcome;
    }
    match airflow::verdict(code, signal, seen.already_running) {
        Verdict::Success => Outcome::Success(Value::Null),
        // A redelivered message means the worker that started it is
        // presumably gone (kill -9, lost connection): ignoring it would leave
        // its STARTED row without a terminal state. Try again later instead
        // (Airflow never retries through Celery, so `retries > 0` marks our
        // own retry); once the scheduler has failed the orphaned task
        // instance (heartbeat timeout) the rerun is refused and FAILURE
        // (result NULL) is written.
        Verdict::Ignore if req.delivery.redelivered || req.msg.headers.retries > 0 => {
            Outcome::Retry {
                exc: ExceptionInfo::new(
                    "celery.exceptions",
                    "Retry",
                    vec![json!(format!(
                        "{}: the task instance still runs; retrying in {}s",
                        airflow::ALREADY_RUNNING,
                        REDELIVERED_RETRY.as_secs()
                    ))],
                ),
                traceback: None,
                countdown: REDELIVERED_RETRY,
            }
        }
        Verdict::Ignore => Outcome::Ignored {
            reason: format!(
                "{} (the task instance already runs elsewhere)",
                airflow::ALREADY_RUNNING
            ),
        },
        Verdict::Failure(what) => {
            tracing::warn!(task_id = %req.id(), "{what}");
            let traceback = (!seen.tail.is_empty()).then(|| Vec::from(seen.tail).join("\n"));
            Outcome::Failure {
                exc: ExceptionInfo::new("builtins", "RuntimeError", vec![json!(what)]),
                traceback,
            }
        }
    }
}
