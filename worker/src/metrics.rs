//! Prometheus metrics, named after celery-exporter's so existing dashboards
//! translate (`celery_task_*` → `celeriac_task_*`). Labels are bounded: task
//! names come from the registry (unknown names count as `unregistered`), queues
//! from the configuration, reasons from fixed enums.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Task lifecycle events counted per task name and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    Received,
    Started,
    Succeeded,
    Failed,
    Retried,
    Revoked,
    Rejected,
}

impl TaskEvent {
    fn metric(self) -> &'static str {
        match self {
            TaskEvent::Received => "received",
            TaskEvent::Started => "started",
            TaskEvent::Succeeded => "succeeded",
            TaskEvent::Failed => "failed",
            TaskEvent::Retried => "retried",
            TaskEvent::Revoked => "revoked",
            TaskEvent::Rejected => "rejected",
        }
    }

    const ALL: [TaskEvent; 7] = [
        TaskEvent::Received,
        TaskEvent::Started,
        TaskEvent::Succeeded,
        TaskEvent::Failed,
        TaskEvent::Retried,
        TaskEvent::Revoked,
        TaskEvent::Rejected,
    ];
}

pub struct Metrics {
    registry: Registry,
    task_events: Vec<(TaskEvent, IntCounterVec)>,
    pub task_runtime: HistogramVec,
    pub tasks_active: IntGauge,
    pub tasks_reserved: IntGauge,
    pub prefetch: IntGauge,
    pub broker_reconnects: IntCounter,
    /// Labelled by `DecodeErrorKind::as_str()`.
    pub malformed_messages: IntCounterVec,
    /// Labelled by a fixed runtime-error kind.
    pub runtime_errors: IntCounterVec,
    pub result_store_errors: IntCounter,
    pub broker_connected: IntGauge,
    pub ack_latency: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let mut task_events = Vec::new();
        for ev in TaskEvent::ALL {
            let c = IntCounterVec::new(
                Opts::new(
                    format!("celeriac_task_{}_total", ev.metric()),
                    format!("Tasks {} by this worker", ev.metric()),
                ),
                &["name", "queue"],
            )?;
            registry.register(Box::new(c.clone()))?;
            task_events.push((ev, c));
        }
        let task_runtime = HistogramVec::new(
            HistogramOpts::new("celeriac_task_runtime_seconds", "Task run time")
                .buckets(prometheus::exponential_buckets(0.005, 2.5, 14)?),
            &["name", "queue"],
        )?;
        let m = Metrics {
            task_events,
            tasks_active: gauge(
                &registry,
                "celeriac_worker_tasks_active",
                "Tasks executing now",
            )?,
            tasks_reserved: gauge(
                &registry,
                "celeriac_worker_tasks_reserved",
                "Tasks received and not yet executing (incl. ETA)",
            )?,
            prefetch: gauge(
                &registry,
                "celeriac_worker_prefetch_count",
                "Current prefetch limit",
            )?,
            broker_connected: gauge(
                &registry,
                "celeriac_broker_connected",
                "1 while the broker connection is up and consuming",
            )?,
            broker_reconnects: counter(
                &registry,
                "celeriac_broker_reconnects_total",
                "Reconnections to the broker",
            )?,
            malformed_messages: counter_vec(
                &registry,
                "celeriac_malformed_messages_total",
                "Messages that could not be decoded, by reason",
                "reason",
            )?,
            runtime_errors: counter_vec(
                &registry,
                "celeriac_runtime_errors_total",
                "Failures of the task runtime itself (not of the task), by kind",
                "kind",
            )?,
            result_store_errors: counter(
                &registry,
                "celeriac_result_store_errors_total",
                "Failed writes to the result backend",
            )?,
            ack_latency: {
                let h = Histogram::with_opts(HistogramOpts::new(
                    "celeriac_broker_ack_seconds",
                    "Time to settle a delivery with the broker",
                ))?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            task_runtime,
            registry,
        };
        m.registry.register(Box::new(m.task_runtime.clone()))?;
        Ok(m)
    }

    pub fn task(&self, event: TaskEvent, name: &str, queue: &str) {
        if let Some((_, c)) = self.task_events.iter().find(|(e, _)| *e == event) {
            c.with_label_values(&[name, queue]).inc();
        }
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

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_celery_exporter_like_names() {
        let m = Metrics::new().unwrap();
        m.task(TaskEvent::Succeeded, "celeriac.echo", "celery");
        m.malformed_messages.with_label_values(&["body"]).inc();
        let text = m.render();
        assert!(text
            .contains(r#"celeriac_task_succeeded_total{name="celeriac.echo",queue="celery"} 1"#));
        assert!(text.contains(r#"celeriac_malformed_messages_total{reason="body"} 1"#));
        assert!(text.contains("celeriac_worker_tasks_active 0"));
    }
}
