//! Result backends: where task states and return values go, exactly as
//! Celery's Redis (`celery-task-meta-<id>`) and database (`celery_taskmeta`)
//! backends store them, so Python `AsyncResult` and Airflow read them.

pub mod database;
pub mod meta;
pub mod redis;
pub mod url;

use async_trait::async_trait;

pub use meta::{ExceptionInfo, ExtendedMeta, TaskResult, TaskState};
pub use url::{connect, BackendOptions};

use crate::Result;

/// What happened to a store request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    /// A SUCCESS was already stored for this id: Celery never overwrites it.
    SuccessAlreadyStored,
}

#[async_trait]
pub trait ResultBackend: Send + Sync {
    /// `"redis"` or `"database"`, for logs and metric labels.
    fn kind(&self) -> &'static str;
    /// Store a state. Never overwrites a stored SUCCESS.
    async fn store(&self, result: &TaskResult) -> Result<StoreOutcome>;
    /// Read what is stored (None = PENDING: Celery never writes PENDING).
    async fn get(&self, task_id: &str) -> Result<Option<TaskResult>>;
}
