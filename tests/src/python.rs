//! Running the real Python Celery side: `tests/python/interop_app.py`, its
//! driver scripts and `celery worker`, configured through `INTEROP_*`
//! environment variables (documented at the top of interop_app.py).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::names::unique;
use crate::process::ChildGuard;
use crate::venv::{python_bin, python_dir, venv};
use crate::wait::wait_until;

/// How the Python app is configured for one test.
#[derive(Debug, Clone, Default)]
pub struct PyApp {
    pub broker: String,
    pub backend: Option<String>,
    pub queue: String,
    /// Task protocol the client sends (1 or 2); None = Celery's default 2.
    pub protocol: Option<u8>,
    /// Redis broker `global_keyprefix`.
    pub keyprefix: Option<String>,
    /// Redis broker `visibility_timeout` (seconds), with a 1 s restore sweep.
    pub visibility_timeout: Option<u32>,
    pub acks_late: bool,
    pub prefetch_multiplier: Option<u32>,
    /// `interop.mark` target: Redis URL and set key.
    pub mark_redis: Option<String>,
    pub mark_set: Option<String>,
}

impl PyApp {
    pub fn new(broker: &str, queue: &str) -> Self {
        PyApp {
            broker: broker.to_owned(),
            queue: queue.to_owned(),
            ..PyApp::default()
        }
    }

    /// A command for `program` (inside the venv) with this app's environment.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(venv().join("bin").join(program));
        cmd.args(args)
            .current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("INTEROP_BROKER_URL", &self.broker)
            .env("INTEROP_QUEUE", &self.queue);
        let optional = [
            ("INTEROP_RESULT_BACKEND", self.backend.clone()),
            (
                "INTEROP_TASK_PROTOCOL",
                self.protocol.map(|p| p.to_string()),
            ),
            ("INTEROP_GLOBAL_KEYPREFIX", self.keyprefix.clone()),
            (
                "INTEROP_VISIBILITY_TIMEOUT",
                self.visibility_timeout.map(|v| v.to_string()),
            ),
            ("INTEROP_ACKS_LATE", self.acks_late.then(|| "1".to_owned())),
            (
                "INTEROP_PREFETCH_MULTIPLIER",
                self.prefetch_multiplier.map(|v| v.to_string()),
            ),
            ("INTEROP_MARK_REDIS_URL", self.mark_redis.clone()),
            ("INTEROP_MARK_SET", self.mark_set.clone()),
        ];
        for (k, v) in optional {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Run a driver script to completion; its stdout, or an error with stderr.
    pub async fn run_script(&self, script: &str, args: &[&str]) -> Result<String> {
        let mut cmd = self.command("python", &[]);
        cmd.arg(python_dir().join(script)).args(args);
        let shown = format!("python {script} {}", args.join(" "));
        let out = tokio::process::Command::from(cmd)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("cannot start {shown}"))?;
        if !out.status.success() {
            bail!(
                "{shown} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start `celery worker` on this app's queue and wait until it is ready.
    /// `pool` is `solo` or `prefork` (with `concurrency` processes).
    pub async fn start_worker(&self, pool: &str, concurrency: u16) -> Result<ChildGuard> {
        let _ = python_bin();
        let node = format!("py@{}", unique("w"));
        let c = concurrency.to_string();
        let args = [
            "-A",
            "interop_app",
            "worker",
            "-l",
            "INFO",
            "-P",
            pool,
            "-c",
            &c,
            "-Q",
            &self.queue,
            "-n",
            &node,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ];
        let mut worker = ChildGuard::spawn("python-worker", self.command("celery", &args))?;
        let ready = wait_until(
            "the Python worker to log `ready.`",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let state = match worker.exited() {
                    Some(status) => Err(anyhow::anyhow!("worker exited: {status}")),
                    None => Ok(worker.log_tail(200).contains(" ready.").then_some(())),
                };
                async move { state }
            },
        )
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\n{}", worker.log_tail(60));
        }
        Ok(worker)
    }
}
