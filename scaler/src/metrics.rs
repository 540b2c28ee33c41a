//! Prometheus metrics of the control loop. Labels come from fixed enums
//! (`SourceKind`, `Reason`), never from free text.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::policy::Reason;
use crate::source::SourceKind;

pub struct Metrics {
    registry: Registry,
    pub desired: IntGauge,
    pub current: IntGauge,
    pub busy_workers: IntGauge,
    /// `{source, state="running"|"queued"}`.
    pub load: IntGaugeVec,
    pub poll_duration: Histogram,
    /// Time from the end of the poll to the target having been acted on.
    pub decision_duration: Histogram,
    pub source_errors: IntCounterVec,
    pub target_errors: IntCounter,
    pub patches: IntCounter,
    pub decisions: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let desired = gauge(
            "celeriac_scaler_desired_replicas",
            "Replicas the policy wants",
        )?;
        let current = gauge(
            "celeriac_scaler_current_replicas",
            "Replicas the target has",
        )?;
        let busy_workers = gauge(
            "celeriac_scaler_busy_workers",
            "Workers with tasks active or reserved",
        )?;
        let load = IntGaugeVec::new(
            Opts::new("celeriac_scaler_load_tasks", "Tasks seen by each source"),
            &["source", "state"],
        )?;
        let poll_duration = Histogram::with_opts(
            HistogramOpts::new(
                "celeriac_scaler_poll_duration_seconds",
                "Time to observe all sources",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.5, 12)?),
        )?;
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new(
                "celeriac_scaler_decision_duration_seconds",
                "Time from the end of a poll to the target having been acted on",
            )
            .buckets(prometheus::exponential_buckets(0.00001, 4.0, 10)?),
        )?;
        let source_errors = IntCounterVec::new(
            Opts::new(
                "celeriac_scaler_source_errors_total",
                "Failed observations by source",
            ),
            &["source"],
        )?;
        let target_errors = IntCounter::new(
            "celeriac_scaler_target_errors_total",
            "Failed target reads or writes",
        )?;
        let patches = IntCounter::new(
            "celeriac_scaler_patches_total",
            "Replica changes applied to the target",
        )?;
        let decisions = IntCounterVec::new(
            Opts::new("celeriac_scaler_decisions_total", "Decisions by reason"),
            &["reason"],
        )?;
        for c in [
            Box::new(load.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(poll_duration.clone()),
            Box::new(decision_duration.clone()),
            Box::new(source_errors.clone()),
            Box::new(target_errors.clone()),
            Box::new(patches.clone()),
            Box::new(decisions.clone()),
        ] {
            registry.register(c)?;
        }
        // Pre-create every label value so dashboards see zeros, not gaps.
        for s in SourceKind::ALL {
            source_errors.with_label_values(&[s.as_str()]);
        }
        for r in Reason::ALL {
            decisions.with_label_values(&[r.as_str()]);
        }
        Ok(Metrics {
            registry,
            desired,
            current,
            busy_workers,
            load,
            poll_duration,
            decision_duration,
            source_errors,
            target_errors,
            patches,
            decisions,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
