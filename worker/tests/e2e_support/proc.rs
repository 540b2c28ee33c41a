//! The stack's processes: each in its own process group with its output in
//! the run directory, SIGKILLed (whole group) on drop. Processes that left
//! their group (the warm Python servers and their task children) are found
//! by the run's unique `AIRFLOW_HOME` in their environment and killed too.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            log,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// A signal to the process itself (not its group), as `kill -s` would.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid()), sig).with_context(|| format!("kill -{sig} {}", self.name))
    }

    /// `kill -9 -<pgid>`: the process and everything still in its group.
    pub fn kill9_group(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// The exit status once exited; a killed-and-reaped child counts as
    /// exited by SIGKILL.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten(),
            None => Some(ExitStatus::from_raw(Signal::SIGKILL as i32)),
        }
    }

    /// Poll for the exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Running (not exited, not a zombie), without needing `&mut`.
    pub fn alive(&self) -> bool {
        self.child.is_some() && alive(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9_group();
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    format!(
        "--- last {} lines of {} ---\n{}\n",
        all.len() - from,
        path.display(),
        all[from..].join("\n")
    )
}

/// Pids of processes whose environment holds `marker` (e.g.
/// `AIRFLOW_HOME=/run/dir/home`), this test process excluded.
pub fn pids_with_env(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILL every process of the run that is still around.
pub fn sweep(marker: &str) {
    for pid in pids_with_env(marker) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}
