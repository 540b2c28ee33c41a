//! The `process` runtime: each task is a child process in its own process
//! group (so signals reach everything it started), with a clean environment
//! (PATH, LANG, the profile's `env` and the `CELERIAC_TASK_*` variables),
//! arguments as JSON on stdin, and stdout/stderr streamed line by line.
//!
//! CPU and memory limits are not enforced for local processes; use the
//! docker runtime where they matter.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    local, payload, Exit, LogLine, LogStream, Running, Runtime, RuntimeError, RuntimeErrorKind,
    TaskSpec,
};

/// How long to wait for output still buffered in the pipes after the
/// process exited (a grandchild may keep them open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct ProcessRuntime;

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn start(
        &self,
        spec: &TaskSpec,
        logs: mpsc::Sender<LogLine>,
    ) -> Result<Box<dyn Running>, RuntimeError> {
        let argv = payload::command(spec);
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                "the profile has no command",
            ));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("LANG", "C.UTF-8")
            .envs(payload::environment(spec))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.profile.workdir {
            cmd.current_dir(dir);
        }
        if let Some(user) = &spec.profile.user {
            let (uid, gid) = parse_user(user)?;
            cmd.uid(uid);
            if let Some(gid) = gid {
                cmd.gid(gid);
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                RuntimeErrorKind::NotFound
            } else {
                RuntimeErrorKind::Failed
            };
            RuntimeError::new(kind, format!("cannot start {program}: {e}"))
        })?;
        let pid = child.id().unwrap_or(0);
        if let Some(mut stdin) = child.stdin.take() {
            let doc = payload::args_document(spec);
            tokio::spawn(async move {
                // A task that does not read its stdin closes the pipe: not an error.
                let _ = stdin.write_all(doc.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(local::forward(
                out,
                LogStream::Stdout,
                logs.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(local::forward(err, LogStream::Stderr, logs)));
        }
        Ok(Box::new(ProcessUnit {
            child,
            pid,
            readers,
            workdir: spec.profile.workdir.as_ref().map(PathBuf::from),
        }))
    }
}

struct ProcessUnit {
    child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
    workdir: Option<PathBuf>,
}

#[async_trait]
impl Running for ProcessUnit {
    fn id(&self) -> String {
        format!("pid {}", self.pid)
    }

    async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| RuntimeError::new(RuntimeErrorKind::Failed, format!("wait: {e}")))?;
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, r).await;
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(Exit {
            code: status.code().map(i64::from),
            signal: status.signal(),
            oom_killed: false,
        })
    }

    async fn signal(&mut self, signal: i32) -> Result<(), RuntimeError> {
        local::signal_group(i32::try_from(self.pid).unwrap_or(0), signal)
    }

    async fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, RuntimeError> {
        local::read_task_file(self.workdir.as_deref(), path).await
    }

    async fn cleanup(&mut self) -> Result<(), RuntimeError> {
        // Whatever the task left running in its group goes with it.
        self.signal(Signal::SIGKILL as i32).await
    }
}

fn parse_user(user: &str) -> Result<(u32, Option<u32>), RuntimeError> {
    let bad = || {
        RuntimeError::new(
            RuntimeErrorKind::Failed,
            format!("user {user:?} is not uid[:gid]"),
        )
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse().map_err(|_| bad())?;
    let gid = g.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}
