//! The Kubernetes target's flags (flattened into the scaler's CLI; each is
//! also a `CELERIAC_SCALER_*` variable). `--namespace` and `--deployment`
//! belong to the fixed interface and live in `config.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::{ClusterAccess, KubernetesSpec, WorkloadKind};

#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesArgs {
    /// Scale this StatefulSet instead of a Deployment.
    #[arg(
        long,
        env = "CELERIAC_SCALER_STATEFULSET",
        conflicts_with = "deployment"
    )]
    pub statefulset: Option<String>,
    /// Kubeconfig file (default: in-cluster service account, or $KUBECONFIG).
    #[arg(
        long,
        env = "CELERIAC_SCALER_KUBECONFIG",
        conflicts_with = "kube_api_url"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// API server URL, bypassing kubeconfig (with --kube-token-file).
    #[arg(long, env = "CELERIAC_SCALER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// Bearer token file for --kube-api-url (re-read when it rotates).
    #[arg(
        long,
        env = "CELERIAC_SCALER_KUBE_TOKEN_FILE",
        requires = "kube_api_url"
    )]
    pub kube_token_file: Option<PathBuf>,
    /// Label selector of the worker pods (default: the workload's own selector).
    #[arg(long, env = "CELERIAC_SCALER_POD_SELECTOR")]
    pub pod_selector: Option<String>,
    /// Workers' admin port, when their container has no port named `admin`.
    #[arg(
        long,
        env = "CELERIAC_SCALER_WORKER_ADMIN_PORT",
        default_value_t = 9808
    )]
    pub worker_admin_port: u16,
    /// Before lowering replicas: set pod-deletion-cost from each worker's busy
    /// count and keep every busy worker. `false` patches replicas directly.
    #[arg(long, env = "CELERIAC_SCALER_SAFE_SCALE_IN", default_value_t = true, action = clap::ArgAction::Set)]
    pub safe_scale_in: bool,
}

impl Default for KubernetesArgs {
    fn default() -> Self {
        KubernetesArgs {
            statefulset: None,
            kubeconfig: None,
            kube_api_url: None,
            kube_token_file: None,
            pod_selector: None,
            worker_admin_port: 9808,
            safe_scale_in: true,
        }
    }
}

impl KubernetesArgs {
    /// The workload: `--statefulset` if given, else the `--deployment` name.
    pub fn workload(&self, deployment: Option<&str>) -> Option<(WorkloadKind, String)> {
        match (&self.statefulset, deployment) {
            (Some(name), _) => Some((WorkloadKind::StatefulSet, name.clone())),
            (None, Some(name)) => Some((WorkloadKind::Deployment, name.to_owned())),
            (None, None) => None,
        }
    }

    pub fn spec(&self, namespace: String, kind: WorkloadKind, name: String) -> KubernetesSpec {
        KubernetesSpec {
            namespace,
            kind,
            name,
            pod_selector: self.pod_selector.clone().filter(|s| !s.trim().is_empty()),
            worker_admin_port: self.worker_admin_port,
            safe_scale_in: self.safe_scale_in,
            metrics_timeout: Duration::from_secs(2),
        }
    }

    pub fn access(&self) -> ClusterAccess {
        match (&self.kube_api_url, &self.kubeconfig) {
            (Some(url), _) => ClusterAccess::Url {
                url: url.clone(),
                token_file: self.kube_token_file.clone(),
            },
            (None, Some(path)) => ClusterAccess::Kubeconfig(path.clone()),
            (None, None) => ClusterAccess::Infer,
        }
    }
}
