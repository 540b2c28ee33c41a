//! The fixed interface: `celeriac-scaler --once … --target dry-run` prints one
//! JSON line; invalid configuration exits 64 naming the setting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::airflow::{create_task_instance, insert, Ti};
use support::{FreshDb, Server};

const BIN: &str = env!("CARGO_BIN_EXE_celeriac-scaler");

/// The binary with a clean environment plus `env`.
fn scaler(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run celeriac-scaler")
}

/// Exactly one JSON line on stdout, exit 0.
fn json_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got {stdout:?}");
    serde_json::from_str(lines[0]).unwrap()
}

/// spec §8: 22 queued TIs and no worker.
async fn twenty_two_queued() -> FreshDb {
    let db = FreshDb::create(Server::Postgres).await;
    create_task_instance(&db).await;
    let mut rows: Vec<Ti<'_>> = vec![(Some("queued"), "default", None); 22];
    rows.push((Some("running"), "other", None));
    rows.push((Some("success"), "default", None));
    insert(&db, &rows).await;
    db
}

#[tokio::test]
async fn once_prints_the_decision_as_one_json_line() {
    let db = twenty_two_queued().await;
    let url = db.url();
    let base = [
        "--once",
        "--metastore-url",
        &url,
        "--queues",
        "default",
        "--concurrency",
        "2",
        "--target",
        "dry-run",
    ];
    let v = json_line(&scaler(&base, &[]));
    for key in ["running", "queued", "current", "desired", "reason"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(
        (v["running"].as_u64(), v["queued"].as_u64()),
        (Some(0), Some(22))
    );
    assert_eq!(
        (v["current"].as_u64(), v["desired"].as_u64()),
        (Some(0), Some(10)),
        "{v}"
    );
    assert_eq!(v["reason"], "scale_up");
    // KEDA's number with a higher ceiling: ceil(22 / 2) = 11.
    let wide = [&base[..], &["--max-replica-count", "20"]].concat();
    assert_eq!(json_line(&scaler(&wide, &[]))["desired"], 11);
}

#[tokio::test]
async fn once_reads_airflow_settings() {
    let db = twenty_two_queued().await;
    let conn = db.url().replace("postgres://", "postgresql+psycopg2://");
    let env = [
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", conn.as_str()),
        ("AIRFLOW__CELERY__WORKER_CONCURRENCY", "4"),
        ("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default"),
    ];
    let v = json_line(&scaler(&["--once"], &env));
    assert_eq!(
        (v["queued"].as_u64(), v["desired"].as_u64()),
        (Some(22), Some(6)),
        "{v}"
    );
    let v = json_line(&scaler(
        &["--once"],
        &[
            env[0],
            ("CELERIAC_SCALER_QUEUES", "other"),
            ("CELERIAC_SCALER_CONCURRENCY", "1"),
        ],
    ));
    assert_eq!(
        (v["running"].as_u64(), v["desired"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
}

#[tokio::test]
async fn a_broken_metastore_holds_the_fallback() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/x",
        support::pgbouncer::spare_port()
    );
    let args = [
        "--once",
        "--metastore-url",
        &url,
        "--concurrency",
        "2",
        "--current-replicas",
        "3",
        "--fallback-replicas",
        "2",
        "--metastore-timeout",
        "1s",
    ];
    let v = json_line(&scaler(&args, &[]));
    assert_eq!(v["reason"], "source_error_fallback", "{v}");
    assert_eq!(
        v["desired"], 3,
        "never below the current count on error: {v}"
    );
    assert!(v["errors"]["metastore"].is_string(), "{v}");
}

#[tokio::test]
async fn with_a_broker_both_sources_are_reported() {
    let db = twenty_two_queued().await;
    let url = db.url();
    let q = support::unique("scaler_once");
    let args = [
        "--once",
        "--metastore-url",
        &url,
        "--queues",
        &q,
        "--concurrency",
        "2",
        "--broker",
        "redis://127.0.0.1:6379/12",
    ];
    let v = json_line(&scaler(&args, &[]));
    assert_eq!(v["sources"]["broker"]["queued"], 0, "{v}");
    assert_eq!(v["sources"]["metastore"]["queued"], 0, "{v}");
    assert!(v["errors"].as_object().unwrap().is_empty(), "{v}");
}

fn config_error(args: &[&str], env: &[(&str, &str)], setting: &str) {
    let out = scaler(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(
        stderr.contains(setting),
        "{args:?}: stderr does not name {setting}: {stderr}"
    );
}

#[test]
fn invalid_configuration_exits_64_naming_the_setting() {
    let pg = "postgres://postgres@127.0.0.1:5432/postgres";
    config_error(&["--once"], &[], "--metastore-url");
    config_error(
        &["--once", "--metastore-url", pg, "--concurrency", "0"],
        &[],
        "--concurrency",
    );
    config_error(
        &["--once", "--metastore-url", "sqlite:///x.db"],
        &[],
        "--metastore-url",
    );
    config_error(
        &[
            "--once",
            "--metastore-url",
            pg,
            "--min-replica-count",
            "5",
            "--max-replica-count",
            "2",
        ],
        &[],
        "--max-replica-count",
    );
    config_error(
        &["--once", "--metastore-url", pg, "--idle-replica-count", "1"],
        &[],
        "--idle-replica-count",
    );
    config_error(
        &[
            "--once",
            "--metastore-url",
            pg,
            "--polling-interval",
            "soon",
        ],
        &[],
        "--polling-interval",
    );
    config_error(
        &["--once", "--metastore-url", pg, "--target", "kubernetes"],
        &[],
        "--namespace",
    );
    config_error(
        &["--once", "--metastore-url", pg, "--broker", "ftp://x"],
        &[],
        "--broker",
    );
    config_error(&["--once", "--no-such-flag"], &[], "--no-such-flag");
    config_error(
        &["--once", "--metastore-url", pg],
        &[("AIRFLOW__CELERY__WORKER_CONCURRENCY", "lots")],
        "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    );
    config_error(
        &["--once"],
        &[("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "oracle://x")],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    );
}

#[test]
fn an_unreachable_api_server_fails_the_tick() {
    let pg = "postgres://postgres@127.0.0.1:5432/postgres";
    let out = scaler(
        &[
            "--once",
            "--metastore-url",
            pg,
            "--target",
            "kubernetes",
            "--namespace",
            "airflow",
            "--deployment",
            "worker",
            "--kube-api-url",
            "http://127.0.0.1:1",
        ],
        &[],
    );
    // No decision without the replica count (tests/kubernetes.rs has the rest).
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("get deployments/scale"));
}
