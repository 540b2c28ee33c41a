//! Tasks in Docker containers, sent by a real Celery 5.7 client to a real
//! worker on the real engine, with the FROM-scratch busybox test image:
//! args in and result out, exit codes, OOM, logs kept after the container
//! is removed, and a missing image with `pull = "never"`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use celeriac_tests::wait_until;
use serde_json::{json, Value};
use support::images::{busybox, docker};
use support::worker::{Worker, WorkerSpec};

/// Containers of one worker node, running or not.
fn containers(label: &str, value: &str) -> Vec<String> {
    let filter = format!("label={label}={value}");
    let out =
        docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The worker under test, and on drop whatever containers it left behind.
struct DockerWorker {
    spec: WorkerSpec,
    worker: Worker,
}

impl Drop for DockerWorker {
    fn drop(&mut self) {
        let left = containers("celeriac.worker", &self.worker.node);
        if !left.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(left.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

fn routing() -> String {
    let image = busybox();
    format!(
        r#"
[profile.ok]
runtime = "docker"
image = "{image}"
pull = "never"
command = ["/bin/busybox", "sh", "-c", 'read -r doc; echo "log line on stdout"; echo "log line on stderr" >&2; echo "{{\"got\": $doc, \"id\": \"$CELERIAC_TASK_ID\"}}"']

[profile.exit]
runtime = "docker"
image = "{image}"
pull = "never"
command = ["/bin/busybox", "sh", "-c", "echo failing >&2; exit 7"]

[profile.oom]
runtime = "docker"
image = "{image}"
pull = "never"
memory = "8Mi"
command = ["/bin/busybox", "sh", "-c", "/bin/busybox head -c 64m /dev/zero | /bin/busybox tail"]

[profile.missing]
runtime = "docker"
image = "celeriac-test-no-such-image:404"
pull = "never"
command = ["/bin/sh", "-c", "true"]

[[route]]
task = "docker.ok"
profile = "ok"

[[route]]
task = "docker.exit"
profile = "exit"

[[route]]
task = "docker.oom"
profile = "oom"

[[route]]
task = "docker.missing"
profile = "missing"
"#
    )
}

async fn start() -> DockerWorker {
    let spec = WorkerSpec::redis().routing(&routing());
    let worker = Worker::start(&spec).await.unwrap();
    DockerWorker { spec, worker }
}

async fn call(w: &DockerWorker, task: &str, args: Value, kwargs: Value) -> Value {
    w.spec
        .client()
        .call(task, args, kwargs, json!({"timeout": 60}))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_in_result_out_and_logs_outlive_the_container() {
    let w = start().await;
    let (args, kwargs) = (json!([1, "two"]), json!({"three": [3]}));
    let out = call(&w, "docker.ok", args.clone(), kwargs.clone()).await;
    assert_eq!(
        out["state"],
        json!("SUCCESS"),
        "{out}\n{}",
        w.worker.log_tail()
    );
    let id = out["id"].as_str().unwrap();
    assert_eq!(
        out["result"],
        json!({"got": {"args": args, "kwargs": kwargs}, "id": id})
    );

    let log = std::fs::read_to_string(w.worker.task_log(id))
        .unwrap_or_else(|e| panic!("{}: {e}", w.worker.task_log(id).display()));
    assert!(
        log.contains("log line on stdout") && log.contains("log line on stderr"),
        "{log}"
    );
    // The result is stored after cleanup, so the container is gone by now.
    assert_eq!(
        containers("celeriac.task_id", id),
        Vec::<String>::new(),
        "the container was not removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_is_a_failure_naming_the_code() {
    let w = start().await;
    let out = call(&w, "docker.exit", json!([]), json!({})).await;
    assert_eq!(
        out["state"],
        json!("FAILURE"),
        "{out}\n{}",
        w.worker.log_tail()
    );
    let message = out["raised_args"].to_string();
    assert!(
        message.contains("code 7"),
        "the exit code is not in {message}"
    );
    assert!(
        out["traceback"]
            .as_str()
            .unwrap_or_default()
            .contains("failing"),
        "stderr is the traceback: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_a_memory_error() {
    let w = start().await;
    let out = call(&w, "docker.oom", json!([]), json!({})).await;
    assert_eq!(
        out["state"],
        json!("FAILURE"),
        "{out}\n{}",
        w.worker.log_tail()
    );
    assert_eq!(out["raised"], json!("MemoryError"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_with_pull_never_fails_clearly() {
    let w = start().await;
    let out = call(&w, "docker.missing", json!([]), json!({})).await;
    assert_eq!(
        out["state"],
        json!("FAILURE"),
        "{out}\n{}",
        w.worker.log_tail()
    );
    let message = out["raised_args"].to_string();
    assert!(
        message.contains("celeriac-test-no-such-image:404") && message.contains("never"),
        "the message should name the image and the pull policy: {message}"
    );
    // Nothing was created for it, and the worker goes on serving tasks.
    let id = out["id"].as_str().unwrap();
    assert!(containers("celeriac.task_id", id).is_empty());
    let ok = call(&w, "celeriac.echo", json!(["alive"]), json!({})).await;
    assert_eq!(ok["result"], json!("alive"));
    let errors = wait_until(
        "the runtime error metric",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let text = w.worker.metrics().await?;
            Ok(text
                .contains("celeriac_runtime_errors_total")
                .then_some(text))
        },
    )
    .await
    .unwrap();
    assert!(
        errors.contains("celeriac_runtime_errors_total{kind="),
        "{errors}"
    );
}
