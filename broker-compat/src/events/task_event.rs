//! `task-*` events (§5.4) with the fields `celery/worker/strategy.py` and
//! `celery/worker/request.py` send, in their order. Values that Celery
//! sends as `repr()` strings (args, kwargs, result, exception) are taken
//! already rendered: the caller owns the Python-repr of its values.

use serde_json::Value;

use super::event::Event;

pub const TASK_RECEIVED: &str = "task-received";
pub const TASK_STARTED: &str = "task-started";
pub const TASK_SUCCEEDED: &str = "task-succeeded";
pub const TASK_FAILED: &str = "task-failed";
pub const TASK_RETRIED: &str = "task-retried";
pub const TASK_REVOKED: &str = "task-revoked";
pub const TASK_REJECTED: &str = "task-rejected";

/// The fields of `task-received`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskReceived {
    pub uuid: String,
    /// Shadow name if set, else the task name.
    pub name: String,
    /// `argsrepr`, e.g. `(2,)`.
    pub args: String,
    /// `kwargsrepr`, e.g. `{'y': 3}`.
    pub kwargs: String,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub retries: u64,
    /// ISO-8601 (`datetime.isoformat()`), or None.
    pub eta: Option<String>,
    pub expires: Option<String>,
}

impl Event {
    pub fn task_received(t: &TaskReceived) -> Event {
        Event::new(TASK_RECEIVED)
            .with("uuid", t.uuid.as_str())
            .with("name", t.name.as_str())
            .with("args", t.args.as_str())
            .with("kwargs", t.kwargs.as_str())
            .with("root_id", opt(&t.root_id))
            .with("parent_id", opt(&t.parent_id))
            .with("retries", t.retries)
            .with("eta", opt(&t.eta))
            .with("expires", opt(&t.expires))
    }

    pub fn task_started(uuid: &str) -> Event {
        Event::new(TASK_STARTED).with("uuid", uuid)
    }

    /// `result` is the repr of the return value (at most 1024 chars in Celery).
    pub fn task_succeeded(uuid: &str, result: &str, runtime: f64) -> Event {
        Event::new(TASK_SUCCEEDED)
            .with("uuid", uuid)
            .with("result", result)
            .with("runtime", runtime)
    }

    /// `exception` is e.g. `ValueError('boom')`. Celery omits `traceback`
    /// for unregistered tasks (`NotRegistered('<name>')`): pass None then.
    pub fn task_failed(uuid: &str, exception: &str, traceback: Option<&str>) -> Event {
        let event = Event::new(TASK_FAILED)
            .with("uuid", uuid)
            .with("exception", exception);
        match traceback {
            Some(tb) => event.with("traceback", tb),
            None => event,
        }
    }

    pub fn task_retried(uuid: &str, exception: &str, traceback: &str) -> Event {
        Event::new(TASK_RETRIED)
            .with("uuid", uuid)
            .with("exception", exception)
            .with("traceback", traceback)
    }

    /// `signum` is set when the task was terminated by a signal (15 for SIGTERM).
    pub fn task_revoked(uuid: &str, terminated: bool, signum: Option<i32>, expired: bool) -> Event {
        Event::new(TASK_REVOKED)
            .with("uuid", uuid)
            .with("terminated", terminated)
            .with("signum", signum.map(Value::from).unwrap_or(Value::Null))
            .with("expired", expired)
    }

    pub fn task_rejected(uuid: &str, requeue: bool) -> Event {
        Event::new(TASK_REJECTED)
            .with("uuid", uuid)
            .with("requeue", requeue)
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_deref().map(Value::from).unwrap_or(Value::Null)
}
