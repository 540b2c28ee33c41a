//! How the scaler reaches the API server: in the cluster (service account),
//! a kubeconfig file, or an explicit URL with a bearer-token file (tests,
//! `kubectl proxy`). All three end in the same `kube::Client`.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClusterAccess {
    /// `$KUBECONFIG`/`~/.kube/config`, else the in-cluster service account.
    #[default]
    Infer,
    Kubeconfig(PathBuf),
    /// The API server at `url`; `token_file` is re-read when it changes
    /// (projected service-account tokens rotate).
    Url {
        url: String,
        token_file: Option<PathBuf>,
    },
}

/// A slow API server must not stall the control loop past a few polls.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

fn config_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Target(format!("kubernetes client configuration ({what}): {e}"))
}

/// Build the client. Needs a Tokio runtime (the client spawns its buffer task).
pub async fn connect(access: &ClusterAccess) -> Result<kube::Client> {
    let mut config = match access {
        ClusterAccess::Infer => kube::Config::infer()
            .await
            .map_err(|e| config_error("in-cluster or default kubeconfig", e))?,
        ClusterAccess::Kubeconfig(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| config_error(&path.display().to_string(), e))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| config_error(&path.display().to_string(), e))?
        }
        ClusterAccess::Url { url, token_file } => {
            let uri = url.parse().map_err(|e| config_error("--kube-api-url", e))?;
            let mut config = kube::Config::new(uri);
            config.auth_info.token_file = token_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned());
            config
        }
    };
    config.read_timeout = Some(READ_TIMEOUT);
    kube::Client::try_from(config).map_err(|e| config_error("client", e))
}
