//! KEDA mode with `--target kubernetes`: KEDA's HPA decides how many
//! replicas and the ReplicaSet picks which pods go, so the scaler cannot
//! hold busy workers back. It can still keep every worker pod's
//! `pod-deletion-cost` current each interval, so the ReplicaSet removes idle
//! workers first. Replicas are never patched in this mode.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::target::kubernetes::KubernetesTarget;

/// Re-annotate the worker pods every `interval` until `shutdown`.
pub async fn keep_deletion_costs(
    target: KubernetesTarget,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match target.annotate_workers().await {
            Ok(pods) => tracing::debug!(pods = pods.len(), "deletion costs current"),
            Err(e) => tracing::warn!(error = %e, "could not set the workers' deletion costs"),
        }
    }
}
