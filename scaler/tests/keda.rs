//! KEDA external-scaler mode end to end: `App::run` with `--keda-grpc-addr`
//! and a real metastore, answered to the tonic client generated from the
//! same `externalscaler.proto` that KEDA uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_apiserver;
mod kubernetes_support;
mod support;

use std::time::Duration;

use celeriac_scaler::app::App;
use celeriac_scaler::config::{Cli, Config};
use celeriac_scaler::keda::proto::external_scaler_client::ExternalScalerClient;
use celeriac_scaler::keda::proto::{GetMetricsRequest, ScaledObjectRef};
use celeriac_scaler::keda::METRIC_NAME;
use clap::Parser;
use support::airflow::{create_task_instance, insert, Ti};
use support::{eventually, FreshDb, Server};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Running {
    client: ExternalScalerClient<Channel>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The scaler in KEDA mode over `metastore_url`, and a connected client.
async fn start(metastore_url: &str) -> Running {
    start_with(metastore_url, &[]).await
}

async fn start_with(metastore_url: &str, extra: &[&str]) -> Running {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "celeriac-scaler",
        "--metastore-url",
        metastore_url,
        "--concurrency",
        "4",
        "--polling-interval",
        "200ms",
        "--keda-grpc-addr",
        &addr,
        "--admin-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).unwrap();
    let app = App::build(Config::resolve(cli, &|_| None).unwrap()).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    let url = format!("http://{addr}");
    let client = eventually(Duration::from_secs(10), "the KEDA gRPC server", || {
        let url = url.clone();
        async move { ExternalScalerClient::connect(url).await.ok() }
    })
    .await;
    Running { client, stop, task }
}

fn scaled_object() -> ScaledObjectRef {
    ScaledObjectRef {
        name: "celeriac-worker".into(),
        namespace: "airflow".into(),
        scaler_metadata: Default::default(),
    }
}

async fn metric(client: &mut ExternalScalerClient<Channel>) -> Result<i64, tonic::Status> {
    let req = GetMetricsRequest {
        scaled_object_ref: Some(scaled_object()),
        metric_name: format!("s0-{METRIC_NAME}"),
    };
    let values = client.get_metrics(req).await?.into_inner().metric_values;
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].metric_name, format!("s0-{METRIC_NAME}"));
    assert_eq!(values[0].metric_value_float, values[0].metric_value as f64);
    Ok(values[0].metric_value)
}

#[tokio::test]
async fn keda_sees_activity_and_the_task_count() {
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    let mut s = start(&db.url()).await;

    let spec = s
        .client
        .get_metric_spec(scaled_object())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let spec = &spec.metric_specs[0];
    assert_eq!(
        (
            spec.metric_name.as_str(),
            spec.target_size,
            spec.target_size_float
        ),
        (METRIC_NAME, 4, 4.0)
    );

    let active = |c: &mut ExternalScalerClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.is_active(scaled_object())
                .await
                .unwrap()
                .into_inner()
                .result
        }
    };
    assert!(!active(&mut s.client).await, "no task: inactive");
    assert_eq!(metric(&mut s.client).await.unwrap(), 0);
    let mut stream = s
        .client
        .stream_is_active(scaled_object())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !stream.message().await.unwrap().unwrap().result,
        "the stream starts with the state now"
    );

    let mut rows = vec![(Some("queued"), "default", None) as Ti<'_>; 10];
    rows.extend([(Some("running"), "default", None); 3]);
    insert(&db, &rows).await;
    let flipped = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    assert!(
        flipped.unwrap().unwrap().unwrap().result,
        "the stream reports the change"
    );
    assert!(active(&mut s.client).await);
    assert_eq!(metric(&mut s.client).await.unwrap(), 13, "running + queued");

    s.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .is_ok(),
        "open streams end with the server"
    );
}

#[tokio::test]
async fn a_failing_metastore_is_an_error_never_zero() {
    let url = format!(
        "{}celeriac_scaler_no_such_db_{}",
        support::POSTGRES,
        uuid::Uuid::new_v4().simple()
    );
    let mut s = start(&url).await;
    let e = metric(&mut s.client).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().starts_with("metastore: "), "{e:?}");
    let e = s.client.is_active(scaled_object()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let e = s
        .client
        .stream_metric_spec(scaled_object())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Unimplemented,
        "KEDA then keeps pulling the spec"
    );
    s.stop.cancel();
}

#[tokio::test]
async fn with_a_kubernetes_target_keda_mode_keeps_deletion_costs_and_never_scales() {
    let fake = fake_apiserver::FakeApiServer::start().await;
    fake.add_deployment("airflow", "celeriac-worker", 2);
    let busy = kubernetes_support::Worker::start(2, 0).await;
    let idle = kubernetes_support::Worker::start(0, 0).await;
    fake.add_pod(
        "airflow",
        "celeriac-worker-a",
        "celeriac-worker",
        "127.0.0.1",
        busy.port,
    );
    fake.add_pod(
        "airflow",
        "celeriac-worker-b",
        "celeriac-worker",
        "127.0.0.1",
        idle.port,
    );
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    let token = fake.token_file.to_string_lossy().into_owned();
    let s = start_with(
        &db.url(),
        &[
            "--target",
            "kubernetes",
            "--namespace",
            "airflow",
            "--deployment",
            "celeriac-worker",
            "--kube-api-url",
            &fake.url,
            "--kube-token-file",
            &token,
        ],
    )
    .await;
    let costs = || {
        (
            fake.deletion_cost("airflow", "celeriac-worker-a"),
            fake.deletion_cost("airflow", "celeriac-worker-b"),
        )
    };
    let seen = eventually(Duration::from_secs(10), "deletion costs", || {
        let c = costs();
        async move { (c.0.is_some() && c.1.is_some()).then_some(c) }
    })
    .await;
    assert_eq!(
        seen,
        (Some(2), Some(0)),
        "the HPA's scale-in takes the idle pod first"
    );
    // The busy worker finishes; the next interval makes both equally cheap.
    busy.active.set(0);
    eventually(Duration::from_secs(10), "the cost to follow", || {
        let c = costs();
        async move { (c == (Some(0), Some(0))).then_some(()) }
    })
    .await;
    assert_eq!(fake.replicas("airflow", "celeriac-worker"), 2);
    assert!(fake
        .requests()
        .iter()
        .all(|r| !(r.method == "PATCH" && r.path.ends_with("/scale"))));
    s.stop.cancel();
}
