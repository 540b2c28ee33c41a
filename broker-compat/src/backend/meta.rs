//! The task meta Celery stores (`celery/backends/base.py::_get_result_meta`),
//! independent of where it is stored.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// `celery/states.py`. PENDING and RECEIVED are never written by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    Pending,
    Received,
    Started,
    Success,
    Failure,
    Revoked,
    Rejected,
    Retry,
    Ignored,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
            TaskState::Retry => "RETRY",
            TaskState::Ignored => "IGNORED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "REVOKED" => TaskState::Revoked,
            "REJECTED" => TaskState::Rejected,
            "RETRY" => TaskState::Retry,
            "IGNORED" => TaskState::Ignored,
            _ => return None,
        })
    }

    /// READY_STATES: a client's `get()` returns on these.
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// EXCEPTION_STATES: the result is an exception dict.
    pub fn is_exception(self) -> bool {
        matches!(
            self,
            TaskState::Retry | TaskState::Failure | TaskState::Revoked
        )
    }
}

/// Celery's serialized exception: `{"exc_type", "exc_message", "exc_module"}`.
/// `exc_message` is the exception's args list.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    pub exc_type: String,
    pub exc_message: Vec<Value>,
    pub exc_module: String,
}

impl ExceptionInfo {
    pub fn new(exc_module: &str, exc_type: &str, args: Vec<Value>) -> Self {
        ExceptionInfo {
            exc_type: exc_type.to_owned(),
            exc_message: args,
            exc_module: exc_module.to_owned(),
        }
    }

    /// `celery.exceptions.TaskRevokedError(reason)`; reason is `revoked`, `expired` or `terminated`.
    pub fn revoked(reason: &str) -> Self {
        Self::new("celery.exceptions", "TaskRevokedError", vec![json!(reason)])
    }

    /// `celery.exceptions.NotRegistered(name)`.
    pub fn not_registered(name: &str) -> Self {
        Self::new("celery.exceptions", "NotRegistered", vec![json!(name)])
    }

    /// `billiard.exceptions.TimeLimitExceeded(hard_seconds)`.
    pub fn time_limit_exceeded(hard_seconds: f64) -> Self {
        Self::new(
            "billiard.exceptions",
            "TimeLimitExceeded",
            vec![crate::protocol::pyjson::number(hard_seconds)],
        )
    }

    /// `billiard.exceptions.SoftTimeLimitExceeded()`.
    pub fn soft_time_limit_exceeded() -> Self {
        Self::new("billiard.exceptions", "SoftTimeLimitExceeded", vec![])
    }

    /// `billiard.exceptions.WorkerLostError(text)`.
    pub fn worker_lost(text: &str) -> Self {
        Self::new("billiard.exceptions", "WorkerLostError", vec![json!(text)])
    }

    pub fn to_value(&self) -> Value {
        json!({
            "exc_type": self.exc_type,
            "exc_message": self.exc_message,
            "exc_module": self.exc_module,
        })
    }

    pub fn from_value(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        Some(ExceptionInfo {
            exc_type: o.get("exc_type")?.as_str()?.to_owned(),
            exc_message: match o.get("exc_message")? {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            },
            exc_module: o
                .get("exc_module")
                .and_then(Value::as_str)
                .unwrap_or("builtins")
                .to_owned(),
        })
    }

    /// Python's `repr(exc)` as events carry it: `ValueError('boom')`.
    pub fn repr(&self) -> String {
        let args: Vec<String> = self
            .exc_message
            .iter()
            .map(crate::protocol::pyjson::repr)
            .collect();
        if args.len() == 1 && self.exc_type == "TimeLimitExceeded" {
            // billiard's TimeLimitExceeded repr keeps the tuple comma.
            return format!("{}({},)", self.exc_type, args[0]);
        }
        format!("{}({})", self.exc_type, args.join(", "))
    }
}

/// `result_extended=True` fields (§4.2.4), stored before `task_id`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtendedMeta {
    pub name: Option<String>,
    pub args: Option<Value>,
    pub kwargs: Option<Value>,
    pub worker: Option<String>,
    pub retries: Option<i64>,
    pub queue: Option<String>,
}

/// One stored task state.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub task_id: String,
    pub status: TaskState,
    /// Return value (SUCCESS), exception dict (exception states), `{pid, hostname}` (STARTED).
    pub result: Value,
    pub traceback: Option<String>,
    /// `None` is written as JSON null (control-revoke without a request); usually `Some(vec![])`.
    pub children: Option<Vec<Value>>,
    /// Set for ready states; None for STARTED/RETRY.
    pub date_done: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    pub parent_id: Option<String>,
    pub extended: Option<ExtendedMeta>,
}

impl TaskResult {
    fn base(task_id: &str, status: TaskState, result: Value) -> Self {
        TaskResult {
            task_id: task_id.to_owned(),
            status,
            result,
            traceback: None,
            children: Some(vec![]),
            date_done: status.is_ready().then(Utc::now),
            group_id: None,
            parent_id: None,
            extended: None,
        }
    }

    pub fn success(task_id: &str, value: Value) -> Self {
        Self::base(task_id, TaskState::Success, value)
    }

    pub fn failure(task_id: &str, exc: &ExceptionInfo, traceback: Option<String>) -> Self {
        let mut r = Self::base(task_id, TaskState::Failure, exc.to_value());
        r.traceback = traceback;
        r
    }

    pub fn revoked(task_id: &str, reason: &str) -> Self {
        Self::base(
            task_id,
            TaskState::Revoked,
            ExceptionInfo::revoked(reason).to_value(),
        )
    }

    pub fn retry(task_id: &str, exc: &ExceptionInfo, traceback: Option<String>) -> Self {
        let mut r = Self::base(task_id, TaskState::Retry, exc.to_value());
        r.traceback = traceback;
        r
    }

    /// STARTED with `{"pid": pid, "hostname": node}` as the prefork pool writes it.
    pub fn started(task_id: &str, pid: u32, hostname: &str) -> Self {
        Self::base(
            task_id,
            TaskState::Started,
            json!({"pid": pid, "hostname": hostname}),
        )
    }

    /// The exception, when the state carries one.
    pub fn exception(&self) -> Option<ExceptionInfo> {
        if self.status.is_exception() {
            ExceptionInfo::from_value(&self.result)
        } else {
            None
        }
    }

    /// The JSON object Celery stores, keys in Celery's order (§4.2.3).
    pub fn to_meta(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("status".into(), json!(self.status.as_str()));
        m.insert("result".into(), self.result.clone());
        m.insert("traceback".into(), json!(self.traceback));
        m.insert("children".into(), json!(self.children));
        m.insert(
            "date_done".into(),
            json!(self.date_done.map(crate::protocol::time::to_isoformat)),
        );
        if let Some(g) = &self.group_id {
            m.insert("group_id".into(), json!(g));
        }
        if let Some(p) = &self.parent_id {
            m.insert("parent_id".into(), json!(p));
        }
        if let Some(x) = &self.extended {
            m.insert("name".into(), json!(x.name));
            m.insert("args".into(), x.args.clone().unwrap_or(Value::Null));
            m.insert("kwargs".into(), x.kwargs.clone().unwrap_or(Value::Null));
            m.insert("worker".into(), json!(x.worker));
            m.insert("retries".into(), json!(x.retries));
            m.insert("queue".into(), json!(x.queue));
        }
        m.insert("task_id".into(), json!(self.task_id));
        m
    }

    /// Parse a stored meta object (the inverse of [`TaskResult::to_meta`]).
    pub fn from_meta(meta: &Map<String, Value>) -> Option<Self> {
        let status = TaskState::parse(meta.get("status")?.as_str()?)?;
        let extended = meta.contains_key("worker").then(|| ExtendedMeta {
            name: str_field(meta, "name"),
            args: meta.get("args").filter(|v| !v.is_null()).cloned(),
            kwargs: meta.get("kwargs").filter(|v| !v.is_null()).cloned(),
            worker: str_field(meta, "worker"),
            retries: meta.get("retries").and_then(Value::as_i64),
            queue: str_field(meta, "queue"),
        });
        Some(TaskResult {
            task_id: meta.get("task_id")?.as_str()?.to_owned(),
            status,
            result: meta.get("result").cloned().unwrap_or(Value::Null),
            traceback: str_field(meta, "traceback"),
            children: meta
                .get("children")
                .and_then(Value::as_array)
                .map(|a| a.to_vec()),
            date_done: meta
                .get("date_done")
                .and_then(Value::as_str)
                .and_then(|s| crate::protocol::time::parse_iso(s).ok()),
            group_id: str_field(meta, "group_id"),
            parent_id: str_field(meta, "parent_id"),
            extended,
        })
    }
}

fn str_field(meta: &Map<String, Value>, key: &str) -> Option<String> {
    meta.get(key).and_then(Value::as_str).map(str::to_owned)
}
