//! The worker's side of celeryev: task events when `-E` is on (sent like the
//! captured Python worker: 1-element lists on `task.multi`), and the worker
//! heartbeat (online / every 2 s / offline) that Flower and celery-exporter
//! use to see this worker. Events are best effort: a failed publish is logged
//! and counted, never fails a task.

use std::sync::Arc;
use std::time::Duration;

use broker_compat::events::{Event, EventDispatcher, Software, WorkerStatus};
use tokio_util::sync::CancellationToken;

use crate::state::WorkerState;

/// Heartbeat interval, Celery's `Heart` default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Events {
    dispatcher: Arc<EventDispatcher>,
    state: Arc<WorkerState>,
}

pub fn software() -> Software {
    Software {
        ident: "celeriac".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        system: std::env::consts::OS
            .get(..1)
            .map(|f| f.to_uppercase() + &std::env::consts::OS[1..])
            .unwrap_or_default(),
    }
}

impl Events {
    pub fn new(dispatcher: Arc<EventDispatcher>, state: Arc<WorkerState>) -> Self {
        Events { dispatcher, state }
    }

    /// Send a task event; `make` runs only when events are on (`-E`), so a
    /// worker without events does not build them.
    pub async fn task(&self, make: impl FnOnce() -> Event) {
        if !self.state.task_events_enabled() {
            return;
        }
        if let Err(e) = self.dispatcher.send_batch(vec![make()]).await {
            tracing::warn!(error = %e, "could not publish a task event");
        }
    }

    async fn worker(&self, make: fn(&WorkerStatus, &Software) -> Event) {
        let status = WorkerStatus {
            freq: HEARTBEAT_INTERVAL.as_secs_f64(),
            active: self.state.active_count() as u64,
            processed: self
                .state
                .processed
                .load(std::sync::atomic::Ordering::Relaxed),
            loadavg: loadavg(),
        };
        if let Err(e) = self.dispatcher.send(make(&status, &software())).await {
            tracing::warn!(error = %e, "could not publish a worker event");
        }
    }

    /// worker-online, a heartbeat every 2 s until `stop`, then worker-offline.
    pub async fn heartbeat_loop(self, stop: CancellationToken) {
        self.worker(Event::worker_online).await;
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.worker(Event::worker_heartbeat).await,
            }
        }
        self.worker(Event::worker_offline).await;
    }

    /// Reply to the `heartbeat` control command.
    pub async fn heartbeat_requested(&self) {
        if let Err(e) = self
            .dispatcher
            .send(Event::worker_heartbeat_requested(&software()))
            .await
        {
            tracing::warn!(error = %e, "could not publish a worker event");
        }
    }
}

/// `/proc/loadavg`, rounded up to two decimals as Celery does.
fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, v) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = (v.parse::<f64>().unwrap_or(0.0) * 100.0).ceil() / 100.0;
    }
    out
}
