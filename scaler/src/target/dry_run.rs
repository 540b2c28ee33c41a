//! The `dry-run` target: decides like the real thing, changes nothing. It
//! remembers the last count it was "set" to, so a running loop behaves as if
//! the workload had followed (the metrics show what would have happened).

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use super::{ReplicaTarget, ScalePlan};
use crate::Result;

pub struct DryRunTarget {
    replicas: AtomicU32,
}

impl DryRunTarget {
    /// `initial`: the replica count to assume at start.
    pub fn new(initial: u32) -> Self {
        DryRunTarget {
            replicas: AtomicU32::new(initial),
        }
    }
}

#[async_trait]
impl ReplicaTarget for DryRunTarget {
    fn kind(&self) -> &'static str {
        "dry-run"
    }

    async fn current(&self) -> Result<u32> {
        Ok(self.replicas.load(Ordering::Relaxed))
    }

    async fn set(&self, desired: u32, plan: &ScalePlan) -> Result<()> {
        tracing::info!(
            from = plan.current,
            to = desired,
            reason = plan.reason.as_str(),
            "dry-run: would scale"
        );
        self.replicas.store(desired, Ordering::Relaxed);
        Ok(())
    }
}
