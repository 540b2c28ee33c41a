//! Worker admin servers for the Kubernetes tests: each serves `/metrics`
//! with the celeriac-worker gauge names through the same `prometheus` text
//! encoder (the worker crate is not a dev-dependency of the scaler).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

pub struct Worker {
    pub port: u16,
    pub active: IntGauge,
    pub reserved: IntGauge,
    stop: CancellationToken,
}

impl Worker {
    pub async fn start(active: i64, reserved: i64) -> Worker {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, v: i64| {
            let g = IntGauge::new(name, help).unwrap();
            g.set(v);
            registry.register(Box::new(g.clone())).unwrap();
            g
        };
        let active = gauge(
            "celeriac_worker_tasks_active",
            "Tasks executing now",
            active,
        );
        let reserved = gauge(
            "celeriac_worker_tasks_reserved",
            "Tasks received and not yet executing",
            reserved,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut buf = Vec::new();
                    TextEncoder::new()
                        .encode(&registry.gather(), &mut buf)
                        .unwrap();
                    String::from_utf8(buf).unwrap()
                }
            }),
        );
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        });
        Worker {
            port,
            active,
            reserved,
            stop,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
