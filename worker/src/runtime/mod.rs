//! Runtimes run one task each, isolated: a local process, a Docker container
//! or (later) a Kubernetes pod. The executor owns time limits, revokes and
//! results; a runtime only starts, signals, waits for and cleans up its unit.

pub mod docker;
mod local;
pub mod payload;
pub mod process;
pub mod warm_python;

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::routing::{Profile, Routing, RuntimeKind};

/// What a runtime needs to start one task.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub task_id: String,
    pub task_name: String,
    pub queue: String,
    /// Node name of this worker (container labels, env).
    pub worker: String,
    pub args: Vec<Value>,
    pub kwargs: serde_json::Map<String, Value>,
    pub retries: u32,
    pub profile: Profile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line the task wrote. Lines are forwarded as they come so logs survive
/// the unit even when it dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub line: String,
}

/// How the unit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exit {
    /// Exit code when it exited normally.
    pub code: Option<i64>,
    /// Signal that ended it.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (Docker reports this).
    pub oom_killed: bool,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.oom_killed
    }
}

/// Failures of the runtime itself (not of the task). The label is a fixed
/// set so it can be a metric label.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct RuntimeError {
    pub kind: RuntimeErrorKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeErrorKind {
    /// The executable or image does not exist / cannot be pulled.
    NotFound,
    /// Docker daemon / API unreachable.
    Unavailable,
    /// Start, wait, signal or cleanup failed.
    Failed,
}

impl RuntimeErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeErrorKind::NotFound => "not_found",
            RuntimeErrorKind::Unavailable => "unavailable",
            RuntimeErrorKind::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RuntimeErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RuntimeError {
    pub fn new(kind: RuntimeErrorKind, detail: impl Into<String>) -> Self {
        RuntimeError {
            kind,
            detail: detail.into(),
        }
    }
}

#[async_trait]
pub trait Runtime: Send + Sync {
    /// `"process"`, `"docker"`, `"kubernetes"`.
    fn kind(&self) -> &'static str;
    /// Start the unit; its output lines go to `logs` until it ends.
    async fn start(
        &self,
        spec: &TaskSpec,
        logs: mpsc::Sender<LogLine>,
    ) -> Result<Box<dyn Running>, RuntimeError>;
}

#[async_trait]
pub trait Running: Send {
    /// Process id or container id, for logs and `inspect active`.
    fn id(&self) -> String;
    /// Wait for the unit to end. Cancellation-safe (can be raced with timers).
    async fn wait(&mut self) -> Result<Exit, RuntimeError>;
    /// Send a signal (SIGTERM for soft limits and terminate, SIGKILL for hard limits).
    async fn signal(&mut self, signal: i32) -> Result<(), RuntimeError>;
    /// Read a file the task wrote (result files), before cleanup.
    async fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, RuntimeError>;
    /// Remove what the unit left behind (containers are removed only after
    /// their logs were saved).
    async fn cleanup(&mut self) -> Result<(), RuntimeError>;
}

/// The Docker runtime, when a profile needs one: connected to the local
/// daemon, which must answer now (a worker that cannot run its tasks should
/// not start).
pub async fn docker_for(routing: &Routing) -> anyhow::Result<Option<std::sync::Arc<dyn Runtime>>> {
    use anyhow::Context as _;
    let needed = routing
        .profile
        .values()
        .any(|p| p.runtime == RuntimeKind::Docker);
    if !needed {
        return Ok(None);
    }
    let runtime = docker::DockerRuntime::connect(Default::default())
        .await
        .context("a profile uses runtime = \"docker\", but the Docker daemon does not answer")?;
    Ok(Some(std::sync::Arc::new(runtime)))
}
