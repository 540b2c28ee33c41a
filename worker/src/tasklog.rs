//! Task output that outlives the task: every line is streamed to the
//! worker's log (with the task id) and appended to `<dir>/<queue>/<id>.log`,
//! which is synced before the runtime removes the container.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use tokio::fs::{self, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::runtime::{LogLine, LogStream};

/// Lines of stderr kept for the FAILURE traceback.
const STDERR_TAIL: usize = 30;

/// What the executor needs from the output once the task ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogSummary {
    pub last_stdout: Option<String>,
    pub stderr_tail: Vec<String>,
    pub path: Option<PathBuf>,
}

/// `<dir>/<queue>/<task_id>.log`, with path separators in names neutralised.
pub fn log_path(dir: &Path, queue: &str, task_id: &str) -> PathBuf {
    let clean = |s: &str| s.replace(['/', '\\'], "_").replace("..", "_");
    dir.join(clean(queue))
        .join(format!("{}.log", clean(task_id)))
}

/// Drain `rx` until every sender is gone; returns once the file is synced.
pub async fn collect(
    mut rx: mpsc::Receiver<LogLine>,
    path: PathBuf,
    task_id: String,
) -> LogSummary {
    let mut file = open(&path).await;
    let mut summary = LogSummary {
        path: file.is_some().then(|| path.clone()),
        ..LogSummary::default()
    };
    let mut tail = VecDeque::with_capacity(STDERR_TAIL);
    while let Some(LogLine { stream, line }) = rx.recv().await {
        match stream {
            LogStream::Stdout => {
                tracing::info!(task_id = %task_id, stream = "stdout", "{line}");
                summary.last_stdout = Some(line.clone());
            }
            LogStream::Stderr => {
                tracing::info!(task_id = %task_id, stream = "stderr", "{line}");
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
            }
        }
        if let Some(f) = file.as_mut() {
            let written = f.write_all(format!("{line}\n").as_bytes()).await;
            if let Err(e) = written {
                tracing::error!(task_id = %task_id, path = %path.display(), error = %e, "task log write failed; output continues in the worker log only");
                file = None;
            }
        }
    }
    if let Some(mut f) = file {
        if let Err(e) = f.flush().await.and(f.sync_all().await) {
            tracing::error!(task_id = %task_id, path = %path.display(), error = %e, "task log sync failed");
        }
    }
    summary.stderr_tail = tail.into();
    summary
}

async fn open(path: &Path) -> Option<fs::File> {
    if let Some(parent) = path.parent() {
        if let Err(e) = fs::create_dir_all(parent).await {
            tracing::error!(path = %parent.display(), error = %e, "cannot create the task log directory");
            return None;
        }
    }
    match OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the task log");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn persists_lines_and_keeps_what_results_need() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), "q/../x", "abc");
        assert!(path.starts_with(dir.path()));
        let (tx, rx) = mpsc::channel(8);
        let collector = tokio::spawn(collect(rx, path.clone(), "abc".into()));
        for (stream, line) in [
            (LogStream::Stdout, "hello"),
            (LogStream::Stderr, "warn"),
            (LogStream::Stdout, "{\"ok\": 1}"),
        ] {
            tx.send(LogLine {
                stream,
                line: line.into(),
            })
            .await
            .unwrap();
        }
        drop(tx);
        let s = collector.await.unwrap();
        assert_eq!(s.last_stdout.as_deref(), Some("{\"ok\": 1}"));
        assert_eq!(s.stderr_tail, vec!["warn"]);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "hello\nwarn\n{\"ok\": 1}\n"
        );
    }
}
