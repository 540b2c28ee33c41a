//! Admin HTTP server: `/metrics` (Prometheus), `/healthz` (the loop turns),
//! `/readyz` (the last tick saw every source and the target).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the probes report; written by the control loop.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// A loop that has not ticked for this long is considered stuck.
    stale_after: Duration,
    last_tick: Mutex<Option<Instant>>,
    ready: AtomicBool,
}

impl Health {
    pub fn new(stale_after: Duration) -> Self {
        Health {
            started: Instant::now(),
            stale_after,
            last_tick: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }

    pub fn ticked(&self, all_ok: bool) {
        *self
            .last_tick
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.set_ready(all_ok);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn alive(&self) -> bool {
        let last = *self
            .last_tick
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.unwrap_or(self.started).elapsed() <= self.stale_after
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .route("/readyz", get(ready_handler))
        .with_state(AdminState { metrics, health })
}

/// Serve on an already bound listener until `shutdown` is cancelled.
pub fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = router(metrics, health);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server stopped");
        }
    })
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn health_handler(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "control loop stalled\n")
    }
}

async fn ready_handler(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "last tick had errors (or none yet)\n",
        )
    }
}
