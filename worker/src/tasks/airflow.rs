//! Airflow's CeleryExecutor tasks (airflow.md): `execute_workload` (Airflow
//! 3, hands the workload to the Task SDK supervisor) and `execute_command`
//! (Airflow 2, `airflow tasks run …`). Both become one Python run — a module
//! executed as `python -m <module> <args>` would — in the process, warm
//! Python or Docker runtime; the outcome follows what the Python worker
//! reports (§3, §5): exit 0 → SUCCESS, otherwise FAILURE, and nothing at all
//! for a duplicate delivery (`TaskAlreadyRunningError`, Celery's `Ignore`).

pub mod command;
pub mod settings;
pub mod workload;

use serde_json::{json, Value};

use crate::routing::Profile;

pub use settings::AirflowSettings;

/// Task name of Airflow 3 (and of its callbacks, §2.4).
pub const EXECUTE_WORKLOAD: &str = "execute_workload";
/// Task name of Airflow 2.
pub const EXECUTE_COMMAND: &str = "execute_command";
/// Module the Airflow 3 workload runs in (§3).
pub const WORKLOAD_MODULE: &str = "airflow.sdk.execution_time.execute_workload";
/// Printed by the SDK when the TI already runs elsewhere (duplicate delivery).
pub const ALREADY_RUNNING: &str = "TaskAlreadyRunningError";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AirflowTaskName {
    ExecuteWorkload,
    ExecuteCommand,
}

impl AirflowTaskName {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            EXECUTE_WORKLOAD => Some(Self::ExecuteWorkload),
            EXECUTE_COMMAND => Some(Self::ExecuteCommand),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ExecuteWorkload => EXECUTE_WORKLOAD,
            Self::ExecuteCommand => EXECUTE_COMMAND,
        }
    }
}

/// A resolved Airflow task: which one, and the profile whose runtime runs it
/// (the routing file's, e.g. Docker with an Airflow image, or the default
/// local process with the configured Python).
#[derive(Debug, Clone)]
pub struct AirflowTask {
    pub name: AirflowTaskName,
    pub profile: Profile,
}

/// One Python run: `python -m <module> <argv[1..]>`, with `argv[0]` as the
/// module sees it, and the variables this task adds to the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonRun {
    pub module: String,
    pub argv: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// For logs: what is being run.
    pub what: String,
}

impl PythonRun {
    /// The document runtimes receive as the task's single argument; the
    /// bootstrap (cold runtimes) and the fork server (warm) read it.
    pub fn document(&self) -> Value {
        json!({"module": self.module, "argv": self.argv})
    }
}

/// Python that runs the document on stdin (`{"args": [PythonRun::document]}`)
/// exactly as `python -m` would. Arguments travel on stdin rather than argv so
/// nothing in them is ever substituted or limited by argv size.
pub const BOOTSTRAP: &str = "import json,runpy,sys\n\
d=json.load(sys.stdin)['args'][0]\n\
sys.argv=list(d['argv'])\n\
runpy.run_module(d['module'],run_name='__main__',alter_sys=True)\n";

impl AirflowTask {
    /// Decode the message arguments into the run, or say why it must fail
    /// without running.
    pub fn plan(
        &self,
        task_id: &str,
        args: &[Value],
        kwargs: &serde_json::Map<String, Value>,
    ) -> Result<PythonRun, PlanError> {
        match self.name {
            AirflowTaskName::ExecuteWorkload => {
                let w = workload::parse(args, kwargs).map_err(PlanError::type_error)?;
                Ok(PythonRun {
                    module: WORKLOAD_MODULE.into(),
                    argv: vec![
                        WORKLOAD_MODULE.into(),
                        "--json-string".into(),
                        w.json.clone(),
                    ],
                    extra_env: Vec::new(),
                    what: w.describe(),
                })
            }
            AirflowTaskName::ExecuteCommand => {
                let cmd = command::parse(args).map_err(PlanError::value_error)?;
                Ok(PythonRun {
                    // `airflow` is the console script of `python -m airflow`.
                    module: "airflow".into(),
                    what: cmd.join(" "),
                    argv: cmd,
                    extra_env: vec![("external_executor_id".into(), task_id.to_owned())],
                })
            }
        }
    }
}

/// Why a message cannot run, as the Python exception Celery would store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub exc_type: &'static str,
    pub message: String,
}

impl PlanError {
    fn type_error(message: String) -> Self {
        PlanError {
            exc_type: "TypeError",
            message,
        }
    }
    fn value_error(message: String) -> Self {
        PlanError {
            exc_type: "ValueError",
            message,
        }
    }
}

/// What the Celery task reports once the Python run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure(String),
    /// Duplicate delivery of a TI running elsewhere: store nothing, ack.
    Ignore,
}

/// The Python worker's mapping (§3): the supervisor's return value is
/// ignored, so any clean exit is SUCCESS (even for a failed TI); an
/// exception is FAILURE, except `TaskAlreadyRunningError`.
pub fn verdict(exit_code: Option<i64>, signal: Option<i32>, saw_already_running: bool) -> Verdict {
    match (exit_code, signal) {
        (Some(0), _) => Verdict::Success,
        _ if saw_already_running => Verdict::Ignore,
        (Some(c), _) => Verdict::Failure(format!("Airflow task process exited with code {c}")),
        (None, Some(s)) => Verdict::Failure(format!("Airflow task process killed by signal {s}")),
        (None, None) => {
            Verdict::Failure("Airflow task process ended without an exit status".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_python_worker() {
        assert_eq!(verdict(Some(0), None, true), Verdict::Success);
        assert_eq!(verdict(Some(1), None, true), Verdict::Ignore);
        assert!(matches!(verdict(Some(1), None, false), Verdict::Failure(_)));
        assert!(matches!(verdict(None, Some(9), false), Verdict::Failure(_)));
    }
}
