//! The `docker` runtime: each task is a container of its profile's image,
//! named `celeriac-<task id>` and labelled with the task, worker and queue.
//! Arguments arrive as JSON on stdin and in `CELERIAC_TASK_ARGS`; stdout and
//! stderr are followed line by line. The container stays after it exits so
//! its logs and result file can be read; `cleanup` removes it (never Docker's
//! AutoRemove, which could take the logs with it).

mod config;
mod image;
mod logs;
mod unit;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{payload, LogLine, Running, Runtime, RuntimeError, RuntimeErrorKind, TaskSpec};
use unit::DockerUnit;

pub use config::{DEFAULT_USER, PIDS_LIMIT};

/// Starts task containers on one Docker daemon.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    labels: BTreeMap<String, String>,
}

impl DockerRuntime {
    /// Connect to the local daemon (`DOCKER_HOST` or the default socket),
    /// agree on an API version and check it answers. `labels` go on every
    /// container, next to the `celeriac.*` ones.
    pub async fn connect(labels: BTreeMap<String, String>) -> Result<Self, RuntimeError> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| api_error("connect to Docker", e))?;
        // The daemon may speak an older API than bollard's default.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| api_error("connect to Docker", e))?;
        docker
            .ping()
            .await
            .map_err(|e| api_error("ping Docker", e))?;
        Ok(Self::new(docker, labels))
    }

    /// Use an existing client.
    pub fn new(docker: Docker, labels: BTreeMap<String, String>) -> Self {
        DockerRuntime { docker, labels }
    }

    /// The client, e.g. to inspect what a task left behind.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn create(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        let body = config::container_body(spec, &self.labels)?;
        let name = config::container_name(&spec.task_id);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(created) => return Ok(created.id),
            Err(e) if status(&e) == Some(409) => self.remove_stale(&name).await?,
            Err(e) => return Err(create_error(&name, e)),
        }
        // Once more, now that the name is free.
        self.docker
            .create_container(Some(options), body)
            .await
            .map(|created| created.id)
            .map_err(|e| create_error(&name, e))
    }

    /// A container of the same task left by an earlier delivery: remove it if
    /// it has ended, but never a running one (another delivery is running).
    async fn remove_stale(&self, name: &str) -> Result<(), RuntimeError> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| api_error(&format!("inspect {name}"), e))?;
        if info.state.and_then(|s| s.running).unwrap_or(false) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Failed,
                format!("container {name} of this task is still running"),
            ));
        }
        tracing::warn!(container = %name, "removing a stopped container left by an earlier run of this task");
        self.remove(name).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_error(&format!("remove {id}"), e)),
        }
    }

    /// Attach stdin (before start, so nothing is missed), start, then write
    /// the arguments and close stdin.
    async fn launch(&self, id: &str, document: String) -> Result<JoinHandle<()>, RuntimeError> {
        let options = AttachContainerOptionsBuilder::new()
            .stdin(true)
            .stream(true)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| api_error("attach stdin", e))?;
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| start_error(id, e))?;
        let mut input = attached.input;
        Ok(tokio::spawn(async move {
            // A task that does not read its stdin: not an error.
            let _ = input.write_all(document.as_bytes()).await;
            let _ = input.shutdown().await;
        }))
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn start(
        &self,
        spec: &TaskSpec,
        logs: mpsc::Sender<LogLine>,
    ) -> Result<Box<dyn Running>, RuntimeError> {
        let image_name = spec.profile.image.as_deref().ok_or_else(|| {
            RuntimeError::new(RuntimeErrorKind::NotFound, "the profile names no image")
        })?;
        image::ensure(&self.docker, image_name, spec.profile.pull).await?;
        let id = self.create(spec).await?;
        let stdin = match self.launch(&id, payload::args_document(spec)).await {
            Ok(stdin) => stdin,
            Err(e) => {
                if let Err(rm) = self.remove(&id).await {
                    tracing::warn!(container = %id, error = %rm, "could not remove a container that failed to start");
                }
                return Err(e);
            }
        };
        let follower = tokio::spawn(logs::follow(self.docker.clone(), id.clone(), logs));
        Ok(Box::new(DockerUnit::new(
            self.docker.clone(),
            id,
            stdin,
            follower,
        )))
    }
}

/// The HTTP status of a daemon's answer, if it answered.
fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A daemon that does not answer is `Unavailable` (it may come back); one
/// that says "no such thing" is `NotFound`; anything else `Failed`.
fn api_error(what: &str, e: DockerError) -> RuntimeError {
    let kind = match &e {
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => RuntimeErrorKind::Unavailable,
        DockerError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeErrorKind::NotFound,
        _ => RuntimeErrorKind::Failed,
    };
    RuntimeError::new(kind, format!("{what}: {e}"))
}

/// The daemon refuses the configuration (400: bad mount, user, network):
/// retrying cannot help, so the task fails rather than being requeued.
fn create_error(name: &str, e: DockerError) -> RuntimeError {
    let refused = status(&e) == Some(400);
    let mut err = api_error(&format!("create container {name}"), e);
    if refused {
        err.kind = RuntimeErrorKind::NotFound;
    }
    err
}

/// A command that does not exist in the image fails at start.
fn start_error(id: &str, e: DockerError) -> RuntimeError {
    let missing = matches!(status(&e), Some(400 | 404))
        || ["executable file not found", "no such file or directory"]
            .iter()
            .any(|m| e.to_string().contains(m));
    let mut err = api_error(&format!("start container {id}"), e);
    if missing && err.kind != RuntimeErrorKind::Unavailable {
        err.kind = RuntimeErrorKind::NotFound;
    }
    err
}
