//! The Kubernetes target: a Deployment's (or StatefulSet's) `/scale`
//! subresource, read with GET and changed with a JSON merge patch
//! (`{"spec":{"replicas":N}}`), so the scaler's Role needs only `get` and
//! `patch` on `deployments/scale`. Scale-in goes through [`scale_in`]: pods
//! are listed and annotated first (`list`/`patch` on pods), and replicas go
//! down only as far as the busy workers allow.
//!
//! Errors from the API server never turn into a decision: a 403 or 404 on
//! the read fails the tick (the loop retries next poll), it does not scale
//! anything to zero.

mod args;
mod client;
mod errors;
pub mod scale_in;

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use tokio::sync::OnceCell;

pub use args::KubernetesArgs;
pub use client::{connect, ClusterAccess};
use errors::{api_code, retry_conflicts, target_error, Call};
use scale_in::{MetricsProbe, WorkerPod, DELETION_COST};

use super::{ReplicaTarget, ScalePlan};
use crate::{Error, Result};

/// The kind of workload whose `/scale` is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    /// The RBAC resource of the scale subresource.
    pub fn scale_resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments/scale",
            WorkloadKind::StatefulSet => "statefulsets/scale",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        }
    }
}

/// What to scale and how to find its workers.
#[derive(Debug, Clone)]
pub struct KubernetesSpec {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
    /// Label selector of the worker pods; default: the scale subresource's
    /// `status.selector`.
    pub pod_selector: Option<String>,
    /// Worker admin port when the container declares none named `admin`.
    pub worker_admin_port: u16,
    /// Annotate pods and hold busy ones before lowering replicas.
    pub safe_scale_in: bool,
    /// Budget for one worker's `/metrics`.
    pub metrics_timeout: Duration,
}

/// The `field_manager` the API server records for the scaler's writes.
const FIELD_MANAGER: &str = "celeriac-scaler";

pub struct KubernetesTarget {
    spec: KubernetesSpec,
    access: ClusterAccess,
    client: OnceCell<kube::Client>,
}

impl KubernetesTarget {
    /// The client is built on first use (building it may read files and
    /// needs the runtime), so a bad kubeconfig shows on the first tick.
    pub fn new(spec: KubernetesSpec, access: ClusterAccess) -> Self {
        KubernetesTarget {
            spec,
            access,
            client: OnceCell::new(),
        }
    }

    /// With a client built by the caller.
    pub fn with_client(spec: KubernetesSpec, client: kube::Client) -> Self {
        KubernetesTarget {
            spec,
            access: ClusterAccess::Infer,
            client: OnceCell::new_with(Some(client)),
        }
    }

    async fn client(&self) -> Result<kube::Client> {
        self.client
            .get_or_try_init(|| connect(&self.access))
            .await
            .cloned()
    }

    async fn scale_api(&self) -> Result<Api<DynamicObject>> {
        let resource = self.spec.kind.api_resource();
        Ok(Api::namespaced_with(
            self.client().await?,
            &self.spec.namespace,
            &resource,
        ))
    }

    fn scale_call(&self, verb: &'static str) -> Call<'_> {
        Call {
            verb,
            resource: self.spec.kind.scale_resource(),
            namespace: &self.spec.namespace,
            name: Some(&self.spec.name),
        }
    }

    /// GET the scale subresource.
    pub async fn scale(&self) -> Result<Scale> {
        self.scale_api()
            .await?
            .get_scale(&self.spec.name)
            .await
            .map_err(|e| target_error(self.scale_call("get"), e))
    }

    async fn patch_replicas(&self, replicas: u32) -> Result<()> {
        let api = self.scale_api().await?;
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        retry_conflicts(|| api.patch_scale(&self.spec.name, &params, &patch))
            .await
            .map_err(|e| target_error(self.scale_call("patch"), e))?;
        Ok(())
    }

    /// Probe every live worker pod and set its deletion cost to its busy
    /// count, so the ReplicaSet removes idle workers first on any scale-in
    /// (also the HPA's, in KEDA mode).
    pub async fn annotate_workers(&self) -> Result<Vec<WorkerPod>> {
        let selector = match &self.spec.pod_selector {
            Some(s) => s.clone(),
            None => self
                .scale()
                .await?
                .status
                .and_then(|s| s.selector)
                .ok_or_else(|| {
                    Error::Target(format!(
                        "{} {:?} reports no pod selector: set --pod-selector",
                        self.spec.kind.scale_resource(),
                        self.spec.name
                    ))
                })?,
        };
        let pods = self.list_pods(&selector).await?;
        let probe = MetricsProbe {
            default_port: self.spec.worker_admin_port,
            timeout: self.spec.metrics_timeout,
        };
        let live = pods.iter().filter(|p| scale_in::is_live(p));
        let probed = futures::future::join_all(live.map(|p| probe.probe(p))).await;
        for pod in &probed {
            if let scale_in::Busy::Unknown(why) = &pod.busy {
                tracing::warn!(
                    pod = pod.name,
                    reason = why.as_str(),
                    "worker metrics unreadable: counting it busy"
                );
            }
        }
        futures::future::try_join_all(probed.iter().map(|p| self.set_deletion_cost(p))).await?;
        Ok(probed)
    }

    /// Annotate, then the replica count that keeps every busy pod.
    async fn prepare_scale_in(&self, current: u32, desired: u32) -> Result<u32> {
        let probed = self.annotate_workers().await?;
        let (kind, name) = (self.spec.kind, &self.spec.name);
        Ok(scale_in::scale_in_to(kind, name, current, desired, &probed))
    }

    async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client().await?, &self.spec.namespace);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                let call = Call {
                    verb: "list",
                    resource: "pods",
                    namespace: &self.spec.namespace,
                    name: None,
                };
                target_error(call, e)
            })?;
        Ok(list.items)
    }

    /// Merge-patch the deletion-cost annotation, unless it is already right.
    async fn set_deletion_cost(&self, pod: &WorkerPod) -> Result<()> {
        let cost = pod.busy.deletion_cost().to_string();
        if pod.cost_now.as_deref() == Some(cost.as_str()) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client().await?, &self.spec.namespace);
        let patch = Patch::Merge(serde_json::json!({
            "metadata": { "annotations": { DELETION_COST: cost } }
        }));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match retry_conflicts(|| api.patch(&pod.name, &params, &patch)).await {
            Ok(_) => Ok(()),
            // Gone since the list: the ReplicaSet no longer counts it.
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => {
                let call = Call {
                    verb: "patch",
                    resource: "pods",
                    namespace: &self.spec.namespace,
                    name: Some(&pod.name),
                };
                Err(target_error(call, e))
            }
        }
    }
}

#[async_trait]
impl ReplicaTarget for KubernetesTarget {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn current(&self) -> Result<u32> {
        let scale = self.scale().await?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    async fn set(&self, desired: u32, plan: &ScalePlan) -> Result<()> {
        let replicas = if desired < plan.current && self.spec.safe_scale_in {
            self.prepare_scale_in(plan.current, desired).await?
        } else {
            desired
        };
        if replicas != desired {
            tracing::info!(
                desired,
                to = replicas,
                "scale-in limited by busy workers (they keep running)"
            );
        }
        if replicas == plan.current {
            return Ok(());
        }
        tracing::info!(
            workload = self.spec.name.as_str(),
            from = plan.current,
            to = replicas,
            reason = plan.reason.as_str(),
            "scaling"
        );
        self.patch_replicas(replicas).await
    }
}
