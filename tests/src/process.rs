//! Child processes (Python workers, the Rust consumer) that die with the test.
//!
//! Each child runs in its own process group so `kill -9` also takes its
//! descendants (Celery's prefork pool processes), and its output goes to a
//! log file whose tail failure messages can quote.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::names::unique;
use crate::venv::target_dir;

/// A running child; SIGKILLed (whole process group) and reaped on drop.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildGuard {
    /// Start `cmd` in a new process group, stdout+stderr to a log file.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let dir = target_dir().join("celeriac-test-logs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(format!("{}.log", unique(name)));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning the log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` the whole process group and reap the leader.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let group = format!("-{}", child.id());
        // The group may already be gone (the child exited): not an error.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        Ok(())
    }

    /// `Some(status)` if the child already exited (it should not have).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Whether the child's output so far contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle))
    }

    /// The last `lines` lines of the child's output, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of {} ({}) ---\n{}",
            all.len() - from,
            self.name,
            self.log.display(),
            all[from..].join("\n")
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
