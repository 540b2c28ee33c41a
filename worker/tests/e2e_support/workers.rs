//! The workers of a stack: celeriac-worker started exactly as an operator
//! swaps it in for `airflow celery worker` (same environment, nothing
//! Airflow-specific on the command line), or the Python worker for the
//! comparison measurements.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use celeriac_tests::unique;
use nix::sys::signal::Signal;

use super::http;
use super::proc::Proc;
use super::stack::{free_port, Stack};

pub struct Worker {
    pub proc: Proc,
    pub admin: Option<SocketAddr>,
}

impl Worker {
    pub fn tail(&self) -> String {
        self.proc.tail(60)
    }

    pub fn sigterm(&self) -> Result<()> {
        self.proc.signal(Signal::SIGTERM)
    }

    pub fn kill9(&mut self) {
        self.proc.kill9_group();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout).await
    }
}

impl Stack {
    /// `celeriac-worker` with the stack's `AIRFLOW__*` environment. Only the
    /// admin port (several stacks share this machine) and the log dir are
    /// celeriac's own settings; `python3` on PATH is the Airflow venv's, as
    /// in an Airflow image.
    pub async fn start_celeriac(&self, extra: &[(&str, &str)]) -> Result<Worker> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = self.command(env!("CARGO_BIN_EXE_celeriac-worker"));
        cmd.env("CELERIAC_ADMIN_ADDR", admin.to_string())
            .env("CELERIAC_LOG_DIR", self.dir.join("celeriac-task-logs"))
            .envs(extra.iter().copied());
        let proc = Proc::spawn(&unique("celeriac-worker"), cmd, &self.dir)?;
        let mut w = Worker {
            proc,
            admin: Some(admin),
        };
        let t = Instant::now();
        let deadline = t + Duration::from_secs(180);
        loop {
            if let Some(s) = w.proc.exited() {
                bail!("celeriac-worker exited during start-up: {s}\n{}", w.tail());
            }
            if matches!(http::get(admin, "/readyz").await, Ok((200, _))) {
                eprintln!(
                    "[e2e] celeriac-worker ready in {:.1}s (pid {})",
                    t.elapsed().as_secs_f64(),
                    w.proc.pid()
                );
                return Ok(w);
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "celeriac-worker not ready after 180s\n{}",
                    w.tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `airflow celery worker` (the Python prefork worker), for comparisons.
    pub async fn start_python_worker(&self, concurrency: usize) -> Result<Worker> {
        let mut cmd = self.airflow();
        cmd.args([
            "celery",
            "worker",
            "--concurrency",
            &concurrency.to_string(),
        ]);
        let proc = Proc::spawn(&unique("python-worker"), cmd, &self.dir)?;
        let mut w = Worker { proc, admin: None };
        let t = Instant::now();
        let deadline = t + Duration::from_secs(180);
        loop {
            if let Some(s) = w.proc.exited() {
                bail!(
                    "airflow celery worker exited during start-up: {s}\n{}",
                    w.tail()
                );
            }
            let log = std::fs::read_to_string(&w.proc.log).unwrap_or_default();
            if log.contains(" ready.") {
                eprintln!(
                    "[e2e] airflow celery worker ready in {:.1}s (pid {})",
                    t.elapsed().as_secs_f64(),
                    w.proc.pid()
                );
                return Ok(w);
            }
            if Instant::now() > deadline {
                bail!("airflow celery worker not ready after 180s\n{}", w.tail());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
