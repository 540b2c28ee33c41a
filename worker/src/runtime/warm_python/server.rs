//! One fork server process: started with the Airflow environment, ready
//! once it printed `ready`, stopped when its stdin closes (this worker went
//! away) or when it is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdin, Command};

use crate::runtime::{RuntimeError, RuntimeErrorKind};

/// The fork server, run with `python -c`.
pub const SERVER_SCRIPT: &str = include_str!("../../../python/celeriac_forkserver.py");

/// Importing Airflow on a busy 2-core machine can take a while.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How to start a fork server.
#[derive(Debug, Clone)]
pub struct Launch {
    pub python: PathBuf,
    /// The servers' environment (Airflow reads its config at import time,
    /// so this must be the environment the tasks get).
    pub env: BTreeMap<String, String>,
    pub preload: Vec<String>,
}

pub(super) struct Server {
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: Option<ChildStdin>,
}

impl Server {
    pub(super) async fn spawn(launch: &Launch, socket: &Path) -> Result<Server, RuntimeError> {
        let mut cmd = Command::new(&launch.python);
        cmd.arg("-c")
            .arg(SERVER_SCRIPT)
            .arg(socket)
            .args(&launch.preload)
            .env_clear()
            .envs(&launch.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Terminal signals to the worker's group must not reach it.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                RuntimeErrorKind::NotFound
            } else {
                RuntimeErrorKind::Failed
            };
            RuntimeError::new(
                kind,
                format!(
                    "cannot start the warm Python server {}: {e}",
                    launch.python.display()
                ),
            )
        })?;
        let stdin = child.stdin.take();
        if let Some(err) = child.stderr.take() {
            tokio::spawn(relay(err, "stderr"));
        }
        let Some(out) = child.stdout.take() else {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Failed,
                "the warm Python server has no stdout",
            ));
        };
        let mut lines = BufReader::new(out).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, ready_line(&mut lines)).await;
        match ready {
            Ok(Ok(Some(line))) => {
                tracing::info!(socket = %socket.display(), pid = child.id().unwrap_or(0), import_seconds = line.trim_start_matches("ready").trim(), "warm Python server ready");
            }
            other => {
                let _ = child.start_kill();
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Failed,
                    format!("the warm Python server did not become ready: {other:?}"),
                ));
            }
        }
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(stream = "warm-python", "{line}");
            }
        });
        Ok(Server {
            child,
            _stdin: stdin,
        })
    }

    pub(super) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The `ready` line. What the preloaded modules print before it (Airflow
/// logs to stdout as it imports and warms up) is relayed to our log.
async fn ready_line<R: AsyncBufRead + Unpin>(
    lines: &mut Lines<R>,
) -> std::io::Result<Option<String>> {
    while let Some(line) = lines.next_line().await? {
        if line.starts_with("ready") {
            return Ok(Some(line));
        }
        tracing::info!(stream = "warm-python", "{line}");
    }
    Ok(None)
}

async fn relay<R: AsyncRead + Unpin>(reader: R, stream: &'static str) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(stream, "warm Python server: {line}");
    }
}

/// A private directory (mode 0700) for the servers' sockets, removed on drop.
pub(super) struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    pub(super) fn create() -> Result<Self, RuntimeError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "celeriac-warm-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Failed,
                    format!("creating {}: {e}", path.display()),
                )
            })?;
        Ok(SocketDir { path })
    }

    pub(super) fn socket(&self, n: usize) -> PathBuf {
        self.path.join(format!("s{n}.sock"))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
