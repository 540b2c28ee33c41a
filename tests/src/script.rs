//! A Python driver script that runs while the test acts, talking back one
//! JSON document per stdout line (e.g. "I am subscribed, write now").

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::python::PyApp;
use crate::venv::python_dir;

pub struct RunningScript {
    name: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PyApp {
    /// Start a driver script with piped stdout; killed if dropped.
    pub fn spawn_script(&self, script: &str, args: &[&str]) -> Result<RunningScript> {
        let mut cmd = self.command("python", &[]);
        cmd.arg(python_dir().join(script)).args(args);
        let mut child = tokio::process::Command::from(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start python {script}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        Ok(RunningScript {
            name: script.to_owned(),
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }
}

impl RunningScript {
    /// The next stdout line as JSON, waiting at most `timeout`.
    pub async fn next_json(&mut self, timeout: Duration) -> Result<Value> {
        let line = match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Err(_) => bail!("{} printed nothing within {timeout:?}", self.name),
            Ok(line) => line.with_context(|| format!("reading {}'s stdout", self.name))?,
        };
        match line {
            Some(l) => serde_json::from_str(&l)
                .with_context(|| format!("{} printed a non-JSON line: {l}", self.name)),
            None => {
                let err = self.stderr().await;
                Err(anyhow!("{} ended without printing more:\n{err}", self.name))
            }
        }
    }

    /// Wait for the script to exit successfully (at most `timeout`).
    pub async fn finish(mut self, timeout: Duration) -> Result<()> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow!("{} still running after {timeout:?}", self.name))??;
        if !status.success() {
            let err = self.stderr().await;
            bail!("{} failed ({status}):\n{err}", self.name);
        }
        Ok(())
    }

    async fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(err) = self.child.stderr.as_mut() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), err.read_to_string(&mut text)).await;
        }
        text
    }
}
