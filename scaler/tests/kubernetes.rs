//! The Kubernetes target through the production `kube` client against the
//! fake API server (built from captured kube-apiserver v1.28 exchanges):
//! the /scale subresource, clear RBAC/404 errors that never scale anything,
//! 409 retries, the control loop scaling up on metastore load, and safe
//! scale-in where busy workers survive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_apiserver;
mod kubernetes_support;
mod support;

use std::time::Duration;

use celeriac_scaler::app::App;
use celeriac_scaler::config::{Cli, Config};
use celeriac_scaler::policy::Reason;
use celeriac_scaler::target::kubernetes::{
    ClusterAccess, KubernetesSpec, KubernetesTarget, WorkloadKind,
};
use celeriac_scaler::target::{ReplicaTarget, ScalePlan};
use clap::Parser;
use fake_apiserver::FakeApiServer;
use kubernetes_support::{closed_port, Worker};
use support::airflow::{create_task_instance, insert, Ti};
use support::{FreshDb, Server};

const NS: &str = "airflow";
const DEPLOYMENT: &str = "celeriac-worker";

fn spec(name: &str) -> KubernetesSpec {
    KubernetesSpec {
        namespace: NS.into(),
        kind: WorkloadKind::Deployment,
        name: name.into(),
        pod_selector: None,
        worker_admin_port: 9808,
        safe_scale_in: true,
        metrics_timeout: Duration::from_secs(2),
    }
}

/// The target as `--kube-api-url URL --kube-token-file F` builds it.
fn target(fake: &FakeApiServer, name: &str) -> KubernetesTarget {
    let access = ClusterAccess::Url {
        url: fake.url.clone(),
        token_file: Some(fake.token_file.clone()),
    };
    KubernetesTarget::new(spec(name), access)
}

fn plan(current: u32, desired: u32) -> ScalePlan {
    ScalePlan {
        current,
        desired,
        reason: if desired > current {
            Reason::ScaleUp
        } else {
            Reason::ScaleDown
        },
        busy_workers: None,
        workers: Vec::new(),
    }
}

#[tokio::test]
async fn get_and_merge_patch_the_scale_subresource() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 2);
    let t = target(&fake, DEPLOYMENT);
    assert_eq!(t.current().await.unwrap(), 2);
    t.set(3, &plan(2, 3)).await.unwrap();
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 3);
    assert_eq!(t.current().await.unwrap(), 3);
    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        patch.path,
        "/apis/apps/v1/namespaces/airflow/deployments/celeriac-worker/scale"
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(patch.body, r#"{"spec":{"replicas":3}}"#);
    assert!(
        patch.query.contains("fieldManager=celeriac-scaler"),
        "{patch:?}"
    );
}

#[tokio::test]
async fn a_statefulset_scales_through_its_own_subresource() {
    let fake = FakeApiServer::start().await;
    fake.add_workload("statefulsets", NS, "workers", 1);
    let mut s = spec("workers");
    s.kind = WorkloadKind::StatefulSet;
    let t = KubernetesTarget::with_client(s, kube::Client::try_from(fake.kube_config()).unwrap());
    t.set(4, &plan(1, 4)).await.unwrap();
    assert_eq!(t.current().await.unwrap(), 4);
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths
            .iter()
            .all(|p| p.ends_with("/statefulsets/workers/scale")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn rbac_denials_and_a_missing_deployment_are_clear_errors() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 2);

    let missing = target(&fake, "does-not-exist").current().await.unwrap_err();
    assert_eq!(
        missing.to_string(),
        "target: deployment \"airflow/does-not-exist\" not found (get deployments/scale: \
         deployments/scale.apps \"does-not-exist\" not found)"
    );

    fake.deny("patch", "deployments/scale");
    let t = target(&fake, DEPLOYMENT);
    let e = t.set(5, &plan(2, 5)).await.unwrap_err().to_string();
    assert!(
        e.starts_with(
            "target: RBAC: the scaler may not patch deployments/scale in namespace \"airflow\""
        ),
        "{e}"
    );
    assert!(
        e.contains("cannot patch resource \\\"deployments/scale\\\"")
            || e.contains("cannot patch resource \"deployments/scale\""),
        "{e}"
    );
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 2);

    fake.deny("get", "deployments/scale");
    let e = t.current().await.unwrap_err().to_string();
    assert!(
        e.starts_with("target: RBAC: the scaler may not get deployments/scale"),
        "{e}"
    );
}

#[tokio::test]
async fn a_tick_whose_target_is_forbidden_scales_nothing() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 3);
    fake.deny("get", "deployments/scale");
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    let app = app(&fake, &db, &[]);
    let e = app.once().await.unwrap_err();
    assert!(format!("{e:#}").contains("RBAC"), "{e:#}");
    assert_eq!(
        fake.replicas(NS, DEPLOYMENT),
        3,
        "no load must not mean zero here"
    );
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn conflicts_are_retried_and_a_bad_token_is_named() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 1);
    fake.conflict_next_writes(2);
    target(&fake, DEPLOYMENT).set(2, &plan(1, 2)).await.unwrap();
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 2);
    let patches = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 3, "two 409s, then success");

    std::fs::write(&fake.token_file, "wrong").unwrap();
    let stale = KubernetesTarget::new(
        spec(DEPLOYMENT),
        ClusterAccess::Url {
            url: fake.url.clone(),
            token_file: Some(fake.token_file.clone()),
        },
    );
    let e = stale.current().await.unwrap_err().to_string();
    assert!(e.contains("rejected the scaler's credentials"), "{e}");
}

fn app(fake: &FakeApiServer, db: &FreshDb, extra: &[&str]) -> App {
    let (url, token) = (db.url(), fake.token_file.to_string_lossy().into_owned());
    let mut args = vec![
        "celeriac-scaler",
        "--metastore-url",
        &url,
        "--concurrency",
        "4",
        "--target",
        "kubernetes",
        "--namespace",
        NS,
        "--deployment",
        DEPLOYMENT,
        "--kube-api-url",
        &fake.url,
        "--kube-token-file",
        &token,
        "--cooldown-period",
        "0",
        "--stabilization-window",
        "0",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).unwrap();
    App::build(Config::resolve(cli, &|_| None).unwrap()).unwrap()
}

#[tokio::test]
async fn the_control_loop_patches_the_deployment_up_on_load() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 1);
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    let mut rows = vec![(Some("queued"), "default", None) as Ti<'_>; 9];
    rows.push((Some("running"), "default", None));
    insert(&db, &rows).await;
    let report = app(&fake, &db, &[]).once().await.unwrap();
    assert_eq!(
        (report.current, report.desired, report.applied),
        (1, 3, true),
        "{report:?}"
    );
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 3);
}

#[tokio::test]
async fn safe_scale_in_keeps_the_busy_workers() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 4);
    let busy_a = Worker::start(1, 0).await;
    let busy_b = Worker::start(1, 2).await;
    let idle = Worker::start(0, 0).await;
    let pods = [
        ("celeriac-worker-d5677449b-6mxjr", busy_a.port),
        ("celeriac-worker-d5677449b-9cxnj", busy_b.port),
        ("celeriac-worker-d5677449b-jf4rg", idle.port),
        ("celeriac-worker-d5677449b-zzzzz", closed_port()),
    ];
    for (name, port) in pods {
        fake.add_pod(NS, name, DEPLOYMENT, "127.0.0.1", port);
    }
    fake.add_pod(NS, "unrelated", "other-app", "127.0.0.1", idle.port);
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;

    // No load: the policy wants 0, but three pods may hold work.
    let report = app(&fake, &db, &[]).once().await.unwrap();
    assert_eq!((report.current, report.desired), (4, 0), "{report:?}");
    assert_eq!(
        fake.replicas(NS, DEPLOYMENT),
        3,
        "lowered by the one idle pod"
    );
    let cost = |i: usize| fake.deletion_cost(NS, pods[i].0).unwrap();
    assert_eq!(cost(0), 1);
    assert_eq!(cost(1), 3);
    assert_eq!(
        cost(2),
        0,
        "the idle pod is the cheapest: the ReplicaSet deletes it"
    );
    assert_eq!(
        cost(3),
        i64::from(i32::MAX),
        "unreadable metrics count as busy"
    );
    assert!(fake.deletion_cost(NS, "unrelated").is_none());
    // Annotations first, replicas last: the ReplicaSet must see the costs.
    let requests = fake.requests();
    let pod_patches: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].method == "PATCH" && requests[i].path.contains("/pods/"))
        .collect();
    let scale_patch = requests
        .iter()
        .rposition(|r| r.method == "PATCH" && r.path.ends_with("/scale"))
        .unwrap();
    assert_eq!(pod_patches.len(), 4);
    assert!(pod_patches.iter().all(|&i| i < scale_patch));
    let first = &requests[pod_patches[0]];
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert!(
        first.body.starts_with(
            r#"{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":""#
        ),
        "{first:?}"
    );
    let list = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/pods"))
        .unwrap();
    assert!(
        list.query.contains("labelSelector=app%3Dceleriac-worker"),
        "{list:?}"
    );

    // The work finishes: every pod is idle and the deployment may go to zero.
    for w in [&busy_a, &busy_b] {
        w.active.set(0);
        w.reserved.set(0);
    }
    fake.state()
        .pods
        .remove(&(NS.to_owned(), pods[3].0.to_owned()));
    let report = app(&fake, &db, &[]).once().await.unwrap();
    assert_eq!((report.current, report.desired), (3, 0), "{report:?}");
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 0);
    assert_eq!((cost(0), cost(1), cost(2)), (0, 0, 0));
}

#[tokio::test]
async fn forbidden_pod_access_blocks_scale_in_instead_of_guessing() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 2);
    fake.deny("list", "pods");
    let e = target(&fake, DEPLOYMENT)
        .set(0, &plan(2, 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("target: RBAC: the scaler may not list pods in namespace \"airflow\""),
        "{e}"
    );
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 2);
}

#[tokio::test]
async fn the_once_binary_scales_the_fake_deployment() {
    let fake = FakeApiServer::start().await;
    fake.add_deployment(NS, DEPLOYMENT, 0);
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    insert(&db, &[(Some("queued"), "default", None) as Ti<'_>; 5]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac-scaler"))
        .args(["--once", "--metastore-url", &db.url(), "--concurrency", "2"])
        .args([
            "--target",
            "kubernetes",
            "--namespace",
            NS,
            "--deployment",
            DEPLOYMENT,
        ])
        .args(["--kube-api-url", &fake.url])
        .env("CELERIAC_SCALER_KUBE_TOKEN_FILE", &fake.token_file)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (line["current"].as_u64(), line["desired"].as_u64()),
        (Some(0), Some(3)),
        "{line}"
    );
    assert_eq!(line["reason"], "scale_up");
    assert_eq!(fake.replicas(NS, DEPLOYMENT), 3);
}
