//! observe → decide → act, once per polling interval. Every step updates the
//! metrics; a failed source does not stop the loop (the policy falls back),
//! a failed target read skips acting for this tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::admin::Health;
use crate::metrics::Metrics;
use crate::policy::{decide, History, PolicyConfig, PolicyInput, Reason};
use crate::source::{Load, LoadSource, SourceKind};
use crate::target::{ReplicaTarget, ScalePlan};
use crate::{Error, Result};

pub struct ControlLoop {
    sources: Vec<Arc<dyn LoadSource>>,
    target: Arc<dyn ReplicaTarget>,
    policy: PolicyConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    history: Option<History>,
}

/// One tick, as `--once` prints it (key order is the output order).
#[derive(Debug, Clone, Serialize)]
pub struct TickReport {
    pub running: u64,
    pub queued: u64,
    pub current: u32,
    pub desired: u32,
    pub reason: Reason,
    pub busy_workers: Option<u32>,
    /// The target was changed this tick.
    pub applied: bool,
    pub sources: BTreeMap<&'static str, Load>,
    pub errors: BTreeMap<&'static str, String>,
    pub poll_seconds: f64,
    pub decision_seconds: f64,
}

impl ControlLoop {
    pub fn new(
        sources: Vec<Arc<dyn LoadSource>>,
        target: Arc<dyn ReplicaTarget>,
        policy: PolicyConfig,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        ControlLoop {
            sources,
            target,
            policy,
            metrics,
            health,
            history: None,
        }
    }

    /// Poll every `interval` until `shutdown` is cancelled.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.tick().await {
                Ok(r) => tracing::debug!(
                    running = r.running,
                    queued = r.queued,
                    current = r.current,
                    desired = r.desired,
                    reason = r.reason.as_str(),
                    "tick"
                ),
                Err(e) => tracing::warn!(error = %e, "tick failed; retrying next interval"),
            }
        }
    }

    /// One observe → decide → act cycle.
    pub async fn tick(&mut self) -> Result<TickReport> {
        let started = Instant::now();
        let observations = futures::future::join_all(
            self.sources
                .iter()
                .map(|s| async move { (s.kind(), s.observe().await) }),
        );
        let (observations, current) = tokio::join!(observations, self.target.current());
        let polled = Instant::now();
        self.metrics
            .poll_duration
            .observe((polled - started).as_secs_f64());
        // The loop still turns (healthz), but it is not ready without its target.
        let current = current.inspect_err(|_| {
            self.metrics.target_errors.inc();
            self.health.ticked(false);
        })?;
        let mut report = self.merge(observations, current);
        let input = PolicyInput {
            running: report.running,
            queued: report.queued,
            busy_workers: report.busy_workers,
            current,
            source_error: !report.errors.is_empty(),
        };
        let history = self
            .history
            .get_or_insert_with(|| History::new(polled, current));
        let decision = decide(&self.policy, &input, history, polled);
        history.record(&self.policy, &input, &decision, polled);
        report.desired = decision.desired;
        report.reason = decision.reason;
        self.metrics
            .decisions
            .with_label_values(&[report.reason.as_str()])
            .inc();
        let acted = self.act(&report).await;
        report.decision_seconds = polled.elapsed().as_secs_f64();
        report.poll_seconds = (polled - started).as_secs_f64();
        self.metrics
            .decision_duration
            .observe(report.decision_seconds);
        self.metrics.desired.set(i64::from(report.desired));
        self.health
            .ticked(report.errors.is_empty() && acted.is_ok());
        report.applied = acted?;
        Ok(report)
    }

    /// Apply the decision; `Ok(true)` when the target was changed.
    async fn act(&self, report: &TickReport) -> Result<bool> {
        if report.desired == report.current {
            return Ok(false);
        }
        let plan = ScalePlan {
            current: report.current,
            desired: report.desired,
            reason: report.reason,
            busy_workers: report.busy_workers,
            workers: report
                .sources
                .get("workers")
                .map(|l| l.workers.clone())
                .unwrap_or_default(),
        };
        match self.target.set(report.desired, &plan).await {
            Ok(()) => {
                self.metrics.patches.inc();
                self.metrics.current.set(i64::from(report.desired));
                Ok(true)
            }
            Err(e) => {
                self.metrics.target_errors.inc();
                tracing::warn!(target = self.target.kind(), error = %e, "could not scale");
                Err(e)
            }
        }
    }

    /// Keep the most pessimistic source (largest total); errors are reported, not merged.
    fn merge(&self, observations: Vec<(SourceKind, Result<Load>)>, current: u32) -> TickReport {
        let mut report = TickReport {
            running: 0,
            queued: 0,
            current,
            desired: current,
            reason: Reason::Steady,
            busy_workers: None,
            applied: false,
            sources: BTreeMap::new(),
            errors: BTreeMap::new(),
            poll_seconds: 0.0,
            decision_seconds: 0.0,
        };
        self.metrics.current.set(i64::from(current));
        for (kind, result) in observations {
            match result {
                Ok(load) => {
                    self.record_load(kind, &load);
                    if load.total() > report.running + report.queued {
                        (report.running, report.queued) = (load.running, load.queued);
                    }
                    if let Some(busy) = load.busy_workers() {
                        report.busy_workers = Some(busy);
                        self.metrics.busy_workers.set(i64::from(busy));
                    }
                    report.sources.insert(kind.as_str(), load);
                }
                Err(e) => {
                    self.metrics
                        .source_errors
                        .with_label_values(&[kind.as_str()])
                        .inc();
                    log_source_error(kind, &e);
                    report.errors.insert(kind.as_str(), e.to_string());
                }
            }
        }
        report
    }

    fn record_load(&self, kind: SourceKind, load: &Load) {
        let gauge = |state: &str, v: u64| {
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            self.metrics
                .load
                .with_label_values(&[kind.as_str(), state])
                .set(v);
        };
        gauge("running", load.running);
        gauge("queued", load.queued);
    }
}

fn log_source_error(kind: SourceKind, e: &Error) {
    if e.is_transient() {
        tracing::warn!(source = kind.as_str(), error = %e, "source unavailable: holding at fallback");
    } else {
        tracing::error!(source = kind.as_str(), error = %e, "source failed: holding at fallback");
    }
}
