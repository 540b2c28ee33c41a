//! `celeriac-worker` as a real process for the integration tests: unique
//! queue and node name, a free admin port, its own log directory and
//! routing file, killed (with its process group) when the test ends.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use celeriac_tests::services::redis_url;
use celeriac_tests::{unique, wait_until, ChildGuard};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::client::Client;
use super::http;

/// Redis dbs of these tests: kombu's `unacked` bookkeeping is per db, so the
/// worker's restore sweeps never touch other test suites' messages.
pub const BROKER_DB: u8 = 11;
pub const BACKEND_DB: u8 = 12;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn worker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_celeriac-worker")
}

/// What to start.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub broker: String,
    pub backend: Option<String>,
    pub queue: String,
    pub concurrency: usize,
    /// The routing file's TOML (profiles and routes), if any.
    pub routing: Option<String>,
    pub extra_args: Vec<String>,
}

impl WorkerSpec {
    /// Redis broker and backend, a fresh queue, concurrency 2.
    pub fn redis() -> Self {
        WorkerSpec {
            broker: redis_url(BROKER_DB),
            backend: Some(redis_url(BACKEND_DB)),
            queue: unique("celeriac-wt"),
            concurrency: 2,
            routing: None,
            extra_args: Vec::new(),
        }
    }

    pub fn routing(mut self, toml: &str) -> Self {
        self.routing = Some(toml.to_owned());
        self
    }

    pub fn concurrency(mut self, c: usize) -> Self {
        self.concurrency = c;
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_owned());
        self
    }

    /// A Celery client sending to this worker's queue.
    pub fn client(&self) -> Client {
        Client {
            broker: self.broker.clone(),
            backend: self.backend.clone(),
            queue: self.queue.clone(),
        }
    }
}

pub struct Worker {
    pub node: String,
    pub queue: String,
    pub admin: SocketAddr,
    pub dir: TempDir,
    child: ChildGuard,
}

impl Worker {
    /// The command line for `spec` in `dir` (routing file written there).
    pub fn command(
        spec: &WorkerSpec,
        dir: &TempDir,
        node: &str,
        admin: SocketAddr,
    ) -> Result<Command> {
        let mut cmd = Command::new(worker_bin());
        cmd.args([
            "--broker",
            &spec.broker,
            "-Q",
            &spec.queue,
            "-n",
            node,
            "-E",
        ])
        .args(["-c", &spec.concurrency.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(&spec.extra_args)
        .env("RUST_LOG", "info")
        .env_remove("AIRFLOW__CELERY__BROKER_URL");
        if let Some(b) = &spec.backend {
            cmd.args(["--result-backend", b]);
        }
        if let Some(toml) = &spec.routing {
            let path = dir.path().join("routing.toml");
            std::fs::write(&path, toml).context("writing the routing file")?;
            cmd.arg("--config").arg(path);
        }
        Ok(cmd)
    }

    /// Start the worker and wait until `/readyz` says it consumes.
    pub async fn start(spec: &WorkerSpec) -> Result<Worker> {
        let dir = tempfile::tempdir().context("creating the worker's temp dir")?;
        let node = format!("celeriac@{}", unique("wt"));
        let admin = free_port()?;
        let cmd = Worker::command(spec, &dir, &node, admin)?;
        let child = ChildGuard::spawn("celeriac-worker", cmd)?;
        let mut worker = Worker {
            node,
            queue: spec.queue.clone(),
            admin,
            dir,
            child,
        };
        worker.wait_ready().await?;
        Ok(worker)
    }

    pub async fn wait_ready(&mut self) -> Result<()> {
        let admin = self.admin;
        let ready = wait_until(
            "the worker's /readyz to be 200",
            READY_TIMEOUT,
            Duration::from_millis(50),
            || {
                let exited = self.child.exited();
                async move {
                    if let Some(status) = exited {
                        bail!("the worker exited: {status}");
                    }
                    Ok(matches!(http::get(admin, "/readyz").await, Ok((200, _))).then_some(()))
                }
            },
        )
        .await;
        ready.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.log_tail()))
    }

    pub fn log_tail(&self) -> String {
        self.child.log_tail(60)
    }

    /// `<log-dir>/<queue>/<task_id>.log`.
    pub fn task_log(&self, task_id: &str) -> PathBuf {
        self.dir
            .path()
            .join("logs")
            .join(&self.queue)
            .join(format!("{task_id}.log"))
    }

    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = http::get(self.admin, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// One sample of `/metrics` (0 when the series does not exist yet).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(http::sample(&self.metrics().await?, name, labels).unwrap_or(0.0))
    }

    /// Poll `/metrics` until the sample reaches `at_least`.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        at_least: f64,
    ) -> Result<f64> {
        let what = format!("{name}{labels:?} >= {at_least}");
        wait_until(
            &what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                let v = self.metric(name, labels).await?;
                Ok((v >= at_least).then_some(v))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.log_tail()))
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = self.child.pid().context("the worker was already reaped")?;
        kill(Pid::from_raw(i32::try_from(pid)?), sig).context("signalling the worker")
    }

    /// Wait for the worker to exit; its status text (`exit status: 0`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<String> {
        let status = wait_until(
            "the worker to exit",
            timeout,
            Duration::from_millis(50),
            || {
                let exited = self.child.exited();
                async move { Ok(exited) }
            },
        )
        .await;
        status.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.log_tail()))
    }
}

/// A port nothing listens on right now (bound, read, released).
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?)
}
