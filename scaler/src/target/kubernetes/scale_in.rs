//! Safe scale-in. Before replicas go down, every worker pod is asked how
//! busy it is (its celeriac-worker `/metrics`), its
//! `controller.kubernetes.io/pod-deletion-cost` is set to that count (idle
//! pods cost 0, so the ReplicaSet deletes them first), and replicas go down
//! only as far as the busy pods allow.
//!
//! A pod whose metrics cannot be read counts as busy: an unknown worker may
//! be running a long task, and keeping one pod too many is the cheap mistake.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::WorkloadKind;
use crate::source::workers::WorkersSource;
use crate::source::LoadSource;

pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What a worker pod is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// No task active or reserved (or the pod is not running yet).
    Idle,
    /// Tasks active + reserved.
    Tasks(u64),
    /// Its metrics could not be read (why).
    Unknown(String),
}

impl Busy {
    pub fn is_busy(&self) -> bool {
        !matches!(self, Busy::Idle)
    }

    /// The deletion cost: the task count; unknown pods go last of all.
    pub fn deletion_cost(&self) -> i32 {
        match self {
            Busy::Idle => 0,
            Busy::Tasks(n) => i32::try_from(*n).unwrap_or(i32::MAX),
            Busy::Unknown(_) => i32::MAX,
        }
    }
}

/// One worker pod, probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPod {
    pub name: String,
    pub busy: Busy,
    /// The deletion-cost annotation it carries now.
    pub cost_now: Option<String>,
}

/// The replica count to patch when `desired` is below `current`: never
/// fewer than the busy pods, never more than `current`. A Deployment's ReplicaSet then removes
/// the cheapest (idle) pods. A StatefulSet always removes the highest
/// ordinals, so it may only shrink past its highest busy ordinal.
pub fn scale_in_to(
    kind: WorkloadKind,
    workload: &str,
    current: u32,
    desired: u32,
    pods: &[WorkerPod],
) -> u32 {
    let floor = match kind {
        WorkloadKind::Deployment => pods.iter().filter(|p| p.busy.is_busy()).count(),
        WorkloadKind::StatefulSet => pods
            .iter()
            .filter(|p| p.busy.is_busy())
            .map(|p| ordinal(workload, &p.name).map_or(usize::MAX, |o| o + 1))
            .max()
            .unwrap_or(0),
    };
    let floor = u32::try_from(floor).unwrap_or(u32::MAX);
    desired.max(floor).min(current.max(desired))
}

/// `worker-3` of StatefulSet `worker` → 3.
fn ordinal(workload: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(workload)?.strip_prefix('-')?.parse().ok()
}

/// Pods the ReplicaSet still counts: not terminating, not finished.
pub fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// How to reach each worker's admin `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsProbe {
    /// Used when the worker container declares no port named `admin`.
    pub default_port: u16,
    pub timeout: Duration,
}

impl MetricsProbe {
    /// The pod's metrics URL, when it is running with an IP.
    pub fn url(&self, pod: &Pod) -> Option<String> {
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let ip = status.pod_ip.as_deref()?;
        let port = admin_port(pod).unwrap_or(self.default_port);
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        Some(format!("http://{host}:{port}/metrics"))
    }

    /// Read one pod's busy count. A pod that is not running has no task.
    pub async fn probe(&self, pod: &Pod) -> WorkerPod {
        let busy = match self.url(pod) {
            None => Busy::Idle,
            Some(url) => {
                let source = WorkersSource::new(vec![url], self.timeout);
                match source.observe().await {
                    Ok(load) if load.total() == 0 => Busy::Idle,
                    Ok(load) => Busy::Tasks(load.total()),
                    Err(e) => Busy::Unknown(e.to_string()),
                }
            }
        };
        WorkerPod {
            name: pod.metadata.name.clone().unwrap_or_default(),
            busy,
            cost_now: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DELETION_COST).cloned()),
        }
    }
}

/// The `containerPort` named `admin` (the celeriac-worker manifests name it so).
fn admin_port(pod: &Pod) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(name: &str, busy: Busy) -> WorkerPod {
        WorkerPod {
            name: name.into(),
            busy,
            cost_now: None,
        }
    }

    #[test]
    fn a_deployment_keeps_its_busy_pods() {
        let pods = [
            pod("w-a", Busy::Tasks(2)),
            pod("w-b", Busy::Idle),
            pod("w-c", Busy::Unknown("timeout".into())),
        ];
        let d = WorkloadKind::Deployment;
        assert_eq!(scale_in_to(d, "w", 3, 0, &pods), 2);
        assert_eq!(scale_in_to(d, "w", 3, 3, &pods), 3);
        assert_eq!(scale_in_to(d, "w", 3, 1, &[]), 1);
    }

    #[test]
    fn a_statefulset_shrinks_only_past_its_highest_busy_ordinal() {
        let pods = [
            pod("w-0", Busy::Idle),
            pod("w-1", Busy::Tasks(1)),
            pod("w-2", Busy::Idle),
            pod("w-3", Busy::Idle),
        ];
        let s = WorkloadKind::StatefulSet;
        assert_eq!(scale_in_to(s, "w", 4, 0, &pods), 2);
        assert_eq!(scale_in_to(s, "w", 4, 3, &pods), 3);
        // A busy pod whose ordinal cannot be read holds the current count.
        let odd = [pod("other-1", Busy::Tasks(1))];
        assert_eq!(scale_in_to(s, "w", 4, 0, &odd), 4);
    }

    #[test]
    fn costs_order_idle_before_busy_before_unknown() {
        assert_eq!(Busy::Idle.deletion_cost(), 0);
        assert_eq!(Busy::Tasks(3).deletion_cost(), 3);
        assert_eq!(Busy::Unknown(String::new()).deletion_cost(), i32::MAX);
    }
}
