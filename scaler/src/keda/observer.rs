//! The KEDA mode's one poller: every polling interval it asks all load
//! sources (as the control loop does), keeps the most pessimistic answer,
//! and publishes it on a watch channel. KEDA's calls read the latest
//! observation, so however many ScaledObjects poll the scaler, the
//! metastore sees one query per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::Health;
use crate::metrics::Metrics;
use crate::source::LoadSource;

/// One poll of all sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub running: u64,
    pub queued: u64,
    /// Workers with a task, when the workers source is configured.
    pub busy_workers: Option<u32>,
    /// `source: error` for each source that failed.
    pub errors: Vec<String>,
}

impl Observation {
    /// The metric KEDA's HPA divides by the concurrency: the tasks, but
    /// never less than what keeps every busy worker.
    pub fn tasks(&self, concurrency: u32) -> u64 {
        let busy = u64::from(self.busy_workers.unwrap_or(0)) * u64::from(concurrency);
        self.running.saturating_add(self.queued).max(busy)
    }
}

/// Poll every source once.
pub async fn observe(sources: &[Arc<dyn LoadSource>], metrics: &Metrics) -> Observation {
    let started = Instant::now();
    let results = futures::future::join_all(
        sources
            .iter()
            .map(|s| async move { (s.kind(), s.observe().await) }),
    )
    .await;
    metrics
        .poll_duration
        .observe(started.elapsed().as_secs_f64());
    let mut seen = Observation::default();
    for (kind, result) in results {
        match result {
            Ok(load) => {
                for (state, v) in [("running", load.running), ("queued", load.queued)] {
                    let v = i64::try_from(v).unwrap_or(i64::MAX);
                    metrics
                        .load
                        .with_label_values(&[kind.as_str(), state])
                        .set(v);
                }
                if load.total() > seen.running.saturating_add(seen.queued) {
                    (seen.running, seen.queued) = (load.running, load.queued);
                }
                if let Some(busy) = load.busy_workers() {
                    seen.busy_workers = Some(busy);
                    metrics.busy_workers.set(i64::from(busy));
                }
            }
            Err(e) => {
                metrics
                    .source_errors
                    .with_label_values(&[kind.as_str()])
                    .inc();
                tracing::warn!(source = kind.as_str(), error = %e, "source failed: KEDA gets an error");
                seen.errors.push(format!("{}: {e}", kind.as_str()));
            }
        }
    }
    seen
}

/// Start polling; the receiver holds `None` until the first poll is done.
pub fn spawn_poller(
    sources: Vec<Arc<dyn LoadSource>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> watch::Receiver<Option<Observation>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let seen = observe(&sources, &metrics).await;
            health.ticked(seen.errors.is_empty());
            tx.send_replace(Some(seen));
        }
    });
    rx
}
