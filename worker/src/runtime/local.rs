//! What the `process` and `warm_python` runtimes share: a task there is a
//! local process group whose output arrives on pipes and whose result file,
//! if any, lies in its working directory.

use std::path::Path;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::{LogLine, LogStream, RuntimeError, RuntimeErrorKind};

/// Signal the task's whole process group; a group already gone is fine.
pub(super) fn signal_group(pgid: i32, signal: i32) -> Result<(), RuntimeError> {
    let sig = Signal::try_from(signal).map_err(|e| failed(format!("signal {signal}: {e}")))?;
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(failed(format!("killpg {pgid}: {e}"))),
    }
}

/// A file the task wrote (relative paths are in its working directory);
/// `None` when it wrote none.
pub(super) async fn read_task_file(
    workdir: Option<&Path>,
    path: &Path,
) -> Result<Option<Vec<u8>>, RuntimeError> {
    let full = match workdir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    };
    match tokio::fs::read(&full).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(format!("{}: {e}", full.display()))),
    }
}

/// Send each line of `reader` to `logs` until EOF or nobody listens.
pub(super) async fn forward<R: AsyncRead + Unpin>(
    reader: R,
    stream: LogStream,
    logs: mpsc::Sender<LogLine>,
) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if logs.send(LogLine { stream, line }).await.is_err() {
            break;
        }
    }
}

fn failed(detail: String) -> RuntimeError {
    RuntimeError::new(RuntimeErrorKind::Failed, detail)
}
