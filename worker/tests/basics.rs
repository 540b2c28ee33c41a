//! celeriac-worker seen from a real Celery 5.7 client: results on Redis,
//! RabbitMQ and the database backend, `celery inspect ping`, the admin
//! server, the process runtime and its task logs, and invalid configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use celeriac_tests::postgres::PgDatabase;
use celeriac_tests::unique;
use serde_json::json;
use support::http;
use support::worker::{free_port, Worker, WorkerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_on_redis_with_metrics_and_readyz() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let out = spec
        .client()
        .call("celeriac.echo", json!(["hi"]), json!({}), json!({}))
        .await
        .unwrap();
    assert_eq!(out["result"], json!("hi"), "{out}\n{}", worker.log_tail());
    assert_eq!(out["state"], json!("SUCCESS"));

    let labels = [("name", "celeriac.echo"), ("queue", spec.queue.as_str())];
    let succeeded = worker
        .wait_metric("celeriac_task_succeeded_total", &labels, 1.0)
        .await
        .unwrap();
    assert_eq!(succeeded, 1.0);
    let text = worker.metrics().await.unwrap();
    let line = format!(
        "celeriac_task_succeeded_total{{name=\"celeriac.echo\",queue=\"{}\"}} 1",
        spec.queue
    );
    assert!(text.contains(&line), "no `{line}` in /metrics:\n{text}");
    assert_eq!(http::get(worker.admin, "/readyz").await.unwrap().0, 200);
    assert_eq!(http::get(worker.admin, "/healthz").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_on_rabbitmq() {
    let mut spec = WorkerSpec::redis();
    spec.broker = "amqp://guest:guest@127.0.0.1:5672//".to_owned();
    let worker = Worker::start(&spec).await.unwrap();
    let out = spec
        .client()
        .call("celeriac.echo", json!(["hi"]), json!({}), json!({}))
        .await
        .unwrap();
    assert_eq!(out["result"], json!("hi"), "{out}\n{}", worker.log_tail());
    let q = [("queue", spec.queue.as_str())];
    worker
        .wait_metric("celeriac_task_succeeded_total", &q, 1.0)
        .await
        .unwrap();
    // The queue is ours alone: delete it so RabbitMQ does not collect them.
    drop(worker);
    let _ = celeriac_tests::services::rabbitmqctl(&["delete_queue", &spec.queue]);
}

/// The Airflow Helm chart's liveness probe: `celery inspect ping -d <node>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_inspect_ping_gets_a_pong() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let mut cli = spec.client().command("celery");
    cli.args([
        "-A",
        "celeriac_client",
        "inspect",
        "ping",
        "-d",
        &worker.node,
        "-t",
        "5",
    ]);
    let out = tokio::time::timeout(Duration::from_secs(60), cli.output())
        .await
        .expect("celery inspect ping hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "celery inspect ping failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        worker.log_tail()
    );
    assert!(
        stdout.contains(&worker.node) && stdout.contains("pong"),
        "{stdout}"
    );
}

const PROCESS_ROUTING: &str = r#"
[profile.sh]
runtime = "process"
command = ["/bin/sh", "-c", 'read -r doc; echo "stdin: $doc"; echo "to stderr" >&2; echo "{\"stdin\": $doc, \"env\": $CELERIAC_TASK_ARGS, \"id\": \"$CELERIAC_TASK_ID\"}"']

[[route]]
task = "shell.*"
profile = "sh"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_task_gets_args_returns_last_line_and_keeps_its_log() {
    let spec = WorkerSpec::redis().routing(PROCESS_ROUTING);
    let worker = Worker::start(&spec).await.unwrap();
    let args = json!([1, "two", {"three": 3}]);
    let kwargs = json!({"x": [4.5], "y": null});
    let out = spec
        .client()
        .call("shell.report", args.clone(), kwargs.clone(), json!({}))
        .await
        .unwrap();
    assert_eq!(
        out["state"],
        json!("SUCCESS"),
        "{out}\n{}",
        worker.log_tail()
    );
    let doc = json!({"args": args, "kwargs": kwargs});
    let id = out["id"].as_str().unwrap();
    assert_eq!(out["result"], json!({"stdin": doc, "env": doc, "id": id}));

    let log = std::fs::read_to_string(worker.task_log(id))
        .unwrap_or_else(|e| panic!("{}: {e}", worker.task_log(id).display()));
    assert!(log.contains("stdin: {"), "{log}");
    assert!(log.contains("to stderr"), "{log}");
}

/// Exit 64 (EX_USAGE) and the offending setting named on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_exits_64_naming_the_setting() {
    let bad_routing = "[profile.p]\nruntime = \"docker\"\nimage = \"x\"\nmemory = \"lots\"\n";
    let cases = [
        (WorkerSpec::redis().routing(bad_routing), "profile.p.memory"),
        (
            WorkerSpec::redis().arg("--shutdown-grace").arg("soon"),
            "--shutdown-grace",
        ),
        (WorkerSpec::redis().concurrency(0), "--concurrency"),
    ];
    for (spec, setting) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cmd = Worker::command(&spec, &dir, "celeriac@bad", free_port().unwrap()).unwrap();
        let out = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out)
            .await
            .expect("the worker did not exit on an invalid setting")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{setting}: {stderr}");
        assert!(stderr.contains(setting), "{setting} not named in: {stderr}");
    }
}

/// `db+postgresql://` results: Python's SQLAlchemy backend reads our SUCCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_backend_result_read_by_python() {
    let db = PgDatabase::create().await.unwrap();
    let mut spec = WorkerSpec::redis();
    spec.backend = Some(db.celery_url());
    let worker = Worker::start(&spec).await.unwrap();
    let word = unique("hello");
    let out = spec
        .client()
        .call("celeriac.echo", json!([word]), json!({}), json!({}))
        .await
        .unwrap();
    assert_eq!(
        out["state"],
        json!("SUCCESS"),
        "{out}\n{}",
        worker.log_tail()
    );
    assert_eq!(out["result"], json!(word));
}
