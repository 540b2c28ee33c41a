//! The `warm_python` runtime: a pool of pre-imported Python fork servers
//! (`python/celeriac_forkserver.py`), like Celery's prefork pool with
//! Airflow preloaded. Each task is a fresh `fork()` of a server that already
//! imported Airflow (1.7–2.8 s saved per task), running its module as
//! `python -m` would, in its own process group, with its stdout/stderr on
//! pipes this worker created and passed over the server's Unix socket.
//!
//! A task's single argument is the document `{"module", "argv"}`
//! (`tasks::airflow::PythonRun::document`); its environment is the profile's
//! `env` plus the `CELERIAC_TASK_*` variables, as in the process runtime.

mod server;

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Interest, Lines};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use super::{
    local, payload, Exit, LogLine, LogStream, Running, Runtime, RuntimeError, RuntimeErrorKind,
    TaskSpec,
};
pub use server::{Launch, SERVER_SCRIPT};
use server::{Server, SocketDir};

/// How long a fork server may take to answer with the child's pid.
const FORK_TIMEOUT: Duration = Duration::from_secs(30);
/// Output still in the pipes after the child exited (grandchildren may hold them).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct WarmPythonRuntime {
    launch: Launch,
    dir: SocketDir,
    servers: Vec<Mutex<Option<Server>>>,
    next: AtomicUsize,
}

impl WarmPythonRuntime {
    /// Start `size` fork servers and wait until each has imported its
    /// preload modules. Fails when the Python cannot start at all.
    pub async fn start(launch: Launch, size: usize) -> Result<Self, RuntimeError> {
        let dir = SocketDir::create()?;
        let mut servers = Vec::with_capacity(size.max(1));
        for n in 0..size.max(1) {
            let server = Server::spawn(&launch, &dir.socket(n)).await?;
            servers.push(Mutex::new(Some(server)));
        }
        Ok(WarmPythonRuntime {
            launch,
            dir,
            servers,
            next: AtomicUsize::new(0),
        })
    }

    /// Round-robin over the servers; a server that died is started again.
    async fn connect(&self) -> Result<UnixStream, RuntimeError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.servers.len();
        let mut slot = self.servers[n].lock().await;
        let alive = match slot.as_mut() {
            Some(s) => s.alive(),
            None => false,
        };
        if !alive {
            tracing::warn!(server = n, "warm Python server is gone; starting it again");
            *slot = Some(Server::spawn(&self.launch, &self.dir.socket(n)).await?);
        }
        let path = self.dir.socket(n);
        UnixStream::connect(&path).await.map_err(|e| {
            RuntimeError::new(
                RuntimeErrorKind::Failed,
                format!(
                    "connecting to the warm Python server {}: {e}",
                    path.display()
                ),
            )
        })
    }
}

#[async_trait]
impl Runtime for WarmPythonRuntime {
    fn kind(&self) -> &'static str {
        "warm_python"
    }

    async fn start(
        &self,
        spec: &TaskSpec,
        logs: mpsc::Sender<LogLine>,
    ) -> Result<Box<dyn Running>, RuntimeError> {
        let request = request(spec)?;
        let stream = self.connect().await?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        send_with_fds(&stream, &request, &[out_w, err_w]).await?;
        let readers = vec![
            tokio::spawn(local::forward(
                receiver(out_r)?,
                LogStream::Stdout,
                logs.clone(),
            )),
            tokio::spawn(local::forward(receiver(err_r)?, LogStream::Stderr, logs)),
        ];
        let mut lines = BufReader::new(stream).lines();
        let reply = tokio::time::timeout(FORK_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| failed("the warm Python server did not fork in time"))?
            .map_err(|e| failed(format!("reading the fork reply: {e}")))?
            .ok_or_else(|| failed("the warm Python server closed the connection before forking"))?;
        let reply: Value = serde_json::from_str(&reply)
            .map_err(|e| failed(format!("bad fork reply {reply:?}: {e}")))?;
        let Some(pid) = reply
            .get("pid")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
        else {
            return Err(failed(format!(
                "the warm Python server refused the task: {reply}"
            )));
        };
        Ok(Box::new(WarmUnit {
            lines,
            pid,
            readers,
            exit: None,
            workdir: spec.profile.workdir.as_ref().map(PathBuf::from),
        }))
    }
}

/// `{"module", "argv", "env", "cwd"}` for the fork server.
fn request(spec: &TaskSpec) -> Result<Vec<u8>, RuntimeError> {
    let doc = spec.args.first().cloned().unwrap_or(Value::Null);
    let (Some(module), Some(argv)) = (
        doc.get("module").and_then(Value::as_str),
        doc.get("argv").and_then(Value::as_array),
    ) else {
        return Err(RuntimeError::new(
            RuntimeErrorKind::NotFound,
            "the warm_python runtime runs Python modules: the task argument must be {\"module\", \"argv\"}",
        ));
    };
    let mut env = serde_json::Map::new();
    env.insert("LANG".into(), json!("C.UTF-8"));
    for (k, v) in spec
        .profile
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(payload::task_env(spec))
    {
        env.insert(k, Value::String(v));
    }
    let req = json!({"module": module, "argv": argv, "env": env, "cwd": spec.profile.workdir});
    let mut bytes =
        serde_json::to_vec(&req).map_err(|e| failed(format!("encoding the request: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn failed(detail: impl Into<String>) -> RuntimeError {
    RuntimeError::new(RuntimeErrorKind::Failed, detail)
}

/// A close-on-exec pipe: no other child (started concurrently) inherits it,
/// so EOF arrives exactly when this task's processes closed their ends.
fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failed(format!("pipe: {e}")))
}

fn receiver(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Receiver, RuntimeError> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| failed(format!("pipe reader: {e}")))
}

/// Send the request with the fds attached to its first bytes (SCM_RIGHTS);
/// our copies of the write ends are closed when `fds` drops.
async fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[OwnedFd],
) -> Result<(), RuntimeError> {
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let cmsg = [ControlMessage::ScmRights(&raw)];
            sendmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &cmsg,
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| failed(format!("sending the task to the warm Python server: {e}")))?;
    // A large request may go out in pieces; the fds went with the first.
    let mut rest = &bytes[sent.min(bytes.len())..];
    while !rest.is_empty() {
        stream
            .writable()
            .await
            .map_err(|e| failed(format!("socket: {e}")))?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(failed(format!("sending the task: {e}"))),
        }
    }
    Ok(())
}

struct WarmUnit {
    lines: Lines<BufReader<UnixStream>>,
    pid: i32,
    readers: Vec<JoinHandle<()>>,
    exit: Option<Exit>,
    workdir: Option<PathBuf>,
}

#[async_trait]
impl Running for WarmUnit {
    fn id(&self) -> String {
        format!("pid {}", self.pid)
    }

    async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        if self.exit.is_none() {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|e| failed(format!("waiting for the task: {e}")))?
                .ok_or_else(|| failed("the warm Python server went away while the task ran; its exit status is unknown"))?;
            let code = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v.get("exit").and_then(Value::as_i64))
                .ok_or_else(|| failed(format!("bad exit report {line:?}")))?;
            self.exit = Some(if code < 0 {
                Exit {
                    code: None,
                    signal: i32::try_from(-code).ok(),
                    oom_killed: false,
                }
            } else {
                Exit {
                    code: Some(code),
                    signal: None,
                    oom_killed: false,
                }
            });
        }
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, r).await;
        }
        self.exit.ok_or_else(|| failed("no exit status"))
    }

    async fn signal(&mut self, signal: i32) -> Result<(), RuntimeError> {
        local::signal_group(self.pid, signal)
    }

    async fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, RuntimeError> {
        local::read_task_file(self.workdir.as_deref(), path).await
    }

    async fn cleanup(&mut self) -> Result<(), RuntimeError> {
        // Whatever the task left running in its group goes with it.
        self.signal(Signal::SIGKILL as i32).await
    }
}
