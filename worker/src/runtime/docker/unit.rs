//! One task's container once started: its exit, signals, result file and
//! removal.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{api_error, status};
use crate::runtime::{Exit, Running, RuntimeError, RuntimeErrorKind};

/// How long the log stream may lag behind the container's exit before it is
/// cut off (the daemon ends it at exit; this only guards against a hang).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Result files are small JSON documents; anything bigger is refused rather
/// than held in memory.
const MAX_RESULT_FILE: usize = 64 * 1024 * 1024;

/// The exit, watched by a task of its own so `wait` can be raced and dropped.
enum ExitState {
    Watching(JoinHandle<Result<Exit, RuntimeError>>),
    Done(Result<Exit, (RuntimeErrorKind, String)>),
}

pub(super) struct DockerUnit {
    docker: Docker,
    id: String,
    exit: ExitState,
    stdin: JoinHandle<()>,
    removed: bool,
}

impl DockerUnit {
    /// `logs` is the task following the container's output; the unit's exit
    /// is reported once it has drained.
    pub(super) fn new(
        docker: Docker,
        id: String,
        stdin: JoinHandle<()>,
        logs: JoinHandle<()>,
    ) -> Self {
        let watcher = tokio::spawn(watch_exit(docker.clone(), id.clone(), logs));
        DockerUnit {
            docker,
            id,
            exit: ExitState::Watching(watcher),
            stdin,
            removed: false,
        }
    }
}

async fn watch_exit(
    docker: Docker,
    id: String,
    mut logs: JoinHandle<()>,
) -> Result<Exit, RuntimeError> {
    let exited = exit_of(&docker, &id).await;
    if exited.is_err() {
        // No exit means no end of the log stream either: stop following so
        // the collector finishes.
        logs.abort();
    } else if tokio::time::timeout(DRAIN_TIMEOUT, &mut logs)
        .await
        .is_err()
    {
        tracing::warn!(container = %id, "the log stream did not end with the container; cut off");
        logs.abort();
    }
    exited
}

async fn exit_of(docker: &Docker, id: &str) -> Result<Exit, RuntimeError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let waited = docker.wait_container(id, Some(options)).next().await;
    let code = match waited {
        Some(Ok(r)) => r.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(api_error(&format!("wait for {id}"), e)),
        None => {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Failed,
                format!("wait for {id}: no answer"),
            ))
        }
    };
    let state = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| api_error(&format!("inspect {id}"), e))?
        .state
        .unwrap_or_default();
    Ok(Exit {
        code: Some(state.exit_code.unwrap_or(code)),
        // Docker reports a death by signal as exit code 128 + n.
        signal: None,
        oom_killed: state.oom_killed.unwrap_or(false),
    })
}

#[async_trait]
impl Running for DockerUnit {
    fn id(&self) -> String {
        format!("container {}", short(&self.id))
    }

    async fn wait(&mut self) -> Result<Exit, RuntimeError> {
        if let ExitState::Watching(watcher) = &mut self.exit {
            let result = watcher.await.unwrap_or_else(|e| {
                Err(RuntimeError::new(
                    RuntimeErrorKind::Failed,
                    format!("exit watcher: {e}"),
                ))
            });
            self.exit = ExitState::Done(result.map_err(|e| (e.kind, e.detail)));
        }
        match &self.exit {
            ExitState::Done(Ok(exit)) => Ok(*exit),
            ExitState::Done(Err((kind, detail))) => Err(RuntimeError::new(*kind, detail.clone())),
            ExitState::Watching(_) => Err(RuntimeError::new(
                RuntimeErrorKind::Failed,
                "exit not known",
            )),
        }
    }

    async fn signal(&mut self, signal: i32) -> Result<(), RuntimeError> {
        let options = KillContainerOptionsBuilder::new()
            .signal(&signal.to_string())
            .build();
        match self.docker.kill_container(&self.id, Some(options)).await {
            Ok(()) => Ok(()),
            // Already stopped (409) or gone (404): nothing left to signal.
            Err(e) if matches!(status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(api_error(
                &format!("signal {signal} to {}", short(&self.id)),
                e,
            )),
        }
    }

    async fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, RuntimeError> {
        let full = self.absolute(path).await?;
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(&full.to_string_lossy())
            .build();
        let mut body = self.docker.download_from_container(&self.id, Some(options));
        let mut tar = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) if tar.len() + bytes.len() <= MAX_RESULT_FILE => {
                    tar.extend_from_slice(&bytes)
                }
                Ok(_) => {
                    return Err(failed(format!(
                        "{} is larger than {MAX_RESULT_FILE} bytes",
                        full.display()
                    )))
                }
                Err(e) if status(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(api_error(&format!("read {}", full.display()), e)),
            }
        }
        single_file(&tar).map_err(|e| failed(format!("{}: {e}", full.display())))
    }

    async fn cleanup(&mut self) -> Result<(), RuntimeError> {
        self.stdin.abort();
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&self.id, Some(options)).await {
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(api_error(&format!("remove {}", short(&self.id)), e)),
        }
        self.removed = true;
        Ok(())
    }
}

impl DockerUnit {
    /// Relative paths are relative to the container's working directory.
    async fn absolute(&self, path: &Path) -> Result<PathBuf, RuntimeError> {
        if path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        let info = self
            .docker
            .inspect_container(&self.id, None)
            .await
            .map_err(|e| api_error(&format!("inspect {}", short(&self.id)), e))?;
        let workdir = info
            .config
            .and_then(|c| c.working_dir)
            .filter(|w| !w.is_empty());
        Ok(Path::new(workdir.as_deref().unwrap_or("/")).join(path))
    }
}

impl Drop for DockerUnit {
    /// A unit dropped without `cleanup` (its executor was cancelled) must not
    /// leave a container behind.
    fn drop(&mut self) {
        self.stdin.abort();
        if let ExitState::Watching(watcher) = &self.exit {
            watcher.abort();
        }
        if self.removed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (docker, id) = (self.docker.clone(), self.id.clone());
            handle.spawn(async move {
                let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
                if let Err(e) = docker.remove_container(&id, Some(options)).await {
                    tracing::warn!(container = %short(&id), error = %e, "could not remove an abandoned container");
                }
            });
        }
    }
}

/// The one regular file in a `GET /archive` tarball.
fn single_file(tar: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(tar);
    let Some(entry) = archive.entries()?.next() else {
        return Ok(None);
    };
    let mut entry = entry?;
    if !entry.header().entry_type().is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn failed(detail: String) -> RuntimeError {
    RuntimeError::new(RuntimeErrorKind::Failed, detail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::single_file;

    #[test]
    fn reads_the_one_file() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "r.json", &b"[1]\n"[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        assert_eq!(single_file(&tar).unwrap(), Some(b"[1]\n".to_vec()));
        assert_eq!(single_file(&[0u8; 1024]).unwrap(), None);
    }
}
