//! Where the decision goes. A target knows the replica count now and applies
//! a new one; how it scales in safely (e.g. pod-deletion-cost from the busy
//! workers in the plan) is its own business.
//!
//! Targets: `dry_run` (logs and exports only). The Kubernetes `/scale`
//! target lives in `kubernetes.rs`.

pub mod dry_run;
pub mod kubernetes;

use async_trait::async_trait;

use crate::policy::Reason;
use crate::source::WorkerLoad;
use crate::Result;

/// Everything a target may need to act on a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePlan {
    /// The replica count read from the target before deciding.
    pub current: u32,
    pub desired: u32,
    pub reason: Reason,
    /// Busy workers, when known: scale-in must keep this many.
    pub busy_workers: Option<u32>,
    /// Per-worker occupation from the workers source (may be empty).
    pub workers: Vec<WorkerLoad>,
}

#[async_trait]
pub trait ReplicaTarget: Send + Sync {
    /// `"dry-run"`, `"kubernetes"`: for logs.
    fn kind(&self) -> &'static str;
    /// Replicas the workload has (spec.replicas of the scale subresource).
    async fn current(&self) -> Result<u32>;
    /// Apply `desired`. Called only when it differs from `plan.current`.
    async fn set(&self, desired: u32, plan: &ScalePlan) -> Result<()>;
}
