//! How a request ended, before it is reported. One value per path so that
//! `finish` can store, emit and settle each the way Celery does (§7.2–7.9).

use std::time::Duration;

use broker_compat::backend::ExceptionInfo;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    /// The task failed (exit code, exception, soft time limit, OOM…).
    Failure {
        exc: ExceptionInfo,
        traceback: Option<String>,
    },
    /// Killed at the hard time limit: FAILURE `TimeLimitExceeded`, no traceback.
    TimeLimit {
        hard: f64,
    },
    /// Republish with `retries + 1` after `countdown`, store RETRY.
    Retry {
        exc: ExceptionInfo,
        traceback: Option<String>,
        countdown: Duration,
    },
    /// Revoked, expired or terminated: REVOKED with the reason.
    Revoked {
        reason: &'static str,
        signum: Option<i32>,
        expired: bool,
    },
    /// The runtime could not run it (Docker down…): give the message back so
    /// this or another worker runs it later.
    Requeue {
        why: String,
    },
    /// Cold shutdown stopped it mid-run: the message goes back to the broker.
    Lost,
    /// Celery's `Ignore`: no state stored, no event, the message acked
    /// (Airflow's duplicate delivery, `TaskAlreadyRunningError`).
    Ignored {
        reason: String,
    },
}
