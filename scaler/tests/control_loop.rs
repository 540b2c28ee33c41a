//! The control loop end to end: real metastore, workers' `/metrics` (served
//! with the worker's metric names and the same `prometheus` encoder; the
//! worker crate itself is not a dev-dependency so its lints stay its own),
//! the dry-run target and the scaler's admin endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use celeriac_scaler::app::App;
use celeriac_scaler::config::{Cli, Config};
use celeriac_scaler::policy::Reason;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::airflow::{create_task_instance, insert, Ti};
use support::{eventually, FreshDb, Server};
use tokio_util::sync::CancellationToken;

fn app(args: &[&str]) -> App {
    let cli = Cli::try_parse_from([&["celeriac-scaler"], args].concat()).unwrap();
    App::build(Config::resolve(cli, &|_| None).unwrap()).unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The gauges a celeriac-worker exports on its admin port.
struct WorkerMetrics {
    registry: prometheus::Registry,
    tasks_active: prometheus::IntGauge,
    tasks_reserved: prometheus::IntGauge,
}

impl WorkerMetrics {
    fn new() -> WorkerMetrics {
        let registry = prometheus::Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g
        };
        let tasks_active = gauge("celeriac_worker_tasks_active", "Tasks executing now");
        let tasks_reserved = gauge(
            "celeriac_worker_tasks_reserved",
            "Tasks received and not yet executing",
        );
        WorkerMetrics {
            registry,
            tasks_active,
            tasks_reserved,
        }
    }

    fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }
}

/// A worker admin server reporting `active`/`reserved` tasks.
struct Worker {
    url: String,
    metrics: Arc<WorkerMetrics>,
    stop: CancellationToken,
}

async fn worker(active: i64, reserved: i64) -> Worker {
    let metrics = Arc::new(WorkerMetrics::new());
    metrics.tasks_active.set(active);
    metrics.tasks_reserved.set(reserved);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let m = metrics.clone();
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = m.clone();
            async move { m.render() }
        }),
    );
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Worker { url, metrics, stop }
}

async fn running(n: usize) -> FreshDb {
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    insert(&db, &vec![(Some("running"), "default", None) as Ti<'_>; n]).await;
    db
}

#[tokio::test]
async fn busy_workers_hold_scale_in_and_reach_the_plan() {
    let db = running(2).await;
    let (a, b, c) = (worker(1, 0).await, worker(1, 0).await, worker(0, 0).await);
    let urls = [a.url.as_str(), b.url.as_str(), c.url.as_str()].join(",");
    let url = db.url();
    let args = [
        "--metastore-url",
        &url,
        "--concurrency",
        "4",
        "--current-replicas",
        "3",
        "--stabilization-window",
        "0",
        "--worker-metrics",
        &urls,
    ];
    // 2 running tasks fit one worker, but two workers are busy: keep two.
    let r = app(&args).once().await.unwrap();
    assert_eq!(
        (r.busy_workers, r.desired, r.reason),
        (Some(2), 2, Reason::ScaleDown),
        "{r:?}"
    );
    assert_eq!(r.sources["workers"].workers.len(), 3);
    // The idle worker gets a prefetched task: all three are busy, none goes.
    c.metrics.tasks_reserved.set(1);
    let r = app(&args).once().await.unwrap();
    assert_eq!(
        (r.busy_workers, r.desired, r.reason),
        (Some(3), 3, Reason::BusyWorkers),
        "{r:?}"
    );
    // A worker that cannot be asked might be busy: hold (fallback), never shrink.
    b.stop.cancel();
    let r = eventually(
        Duration::from_secs(5),
        "the workers source to fail",
        || async {
            let r = app(&args).once().await.unwrap();
            r.errors.contains_key("workers").then_some(r)
        },
    )
    .await;
    assert_eq!(
        (r.desired, r.reason),
        (3, Reason::SourceErrorFallback),
        "{r:?}"
    );
    a.stop.cancel();
}

#[tokio::test]
async fn the_loop_polls_acts_and_serves_metrics() {
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    insert(&db, &[(Some("queued"), "default", None); 5]).await;
    let url = db.url();
    let app = app(&[
        "--metastore-url",
        &url,
        "--concurrency",
        "2",
        "--polling-interval",
        "100ms",
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = celeriac_scaler::admin::serve(
        listener,
        app.metrics.clone(),
        app.health.clone(),
        stop.clone(),
    );
    let looping = tokio::spawn(
        app.control_loop()
            .run(Duration::from_millis(100), stop.clone()),
    );
    let metrics = |want: &'static str| {
        let base = base.clone();
        async move {
            let (_, text) = get(&format!("{base}/metrics")).await;
            text.contains(want).then_some(text)
        }
    };
    let text = eventually(Duration::from_secs(10), "desired 3", || {
        metrics("celeriac_scaler_desired_replicas 3")
    })
    .await;
    assert!(
        text.contains(r#"celeriac_scaler_load_tasks{source="metastore",state="queued"} 5"#),
        "{text}"
    );
    assert!(text.contains("celeriac_scaler_patches_total 1"), "{text}");
    assert!(
        text.contains("celeriac_scaler_poll_duration_seconds_count"),
        "{text}"
    );
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    // More work: the loop follows at once.
    insert(&db, &[(Some("queued"), "default", None); 6]).await;
    eventually(Duration::from_secs(10), "desired 6", || {
        metrics("celeriac_scaler_desired_replicas 6")
    })
    .await;
    // The metastore breaks: not ready, errors counted, replicas held.
    db.exec("DROP TABLE task_instance").await;
    let text = eventually(Duration::from_secs(10), "a metastore error", || {
        metrics(r#"source_errors_total{source="metastore"} 1"#)
    })
    .await;
    assert!(
        text.contains("celeriac_scaler_desired_replicas 6"),
        "{text}"
    );
    assert!(text.contains(r#"celeriac_scaler_decisions_total{reason="source_error_fallback"}"#));
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);
    stop.cancel();
    looping.await.unwrap();
    server.await.unwrap();
}
