//! Celery's consumption semantics (spec §6.4, §7) as a real Celery 5.7
//! client sees them: ETA/countdown, expires, soft and hard time limits,
//! revoke (+terminate), retry, unregistered names, malformed messages,
//! ignore_result and events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use celeriac_tests::services::redis_conn;
use celeriac_tests::{task_id, wait_until};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::worker::{Worker, WorkerSpec, BACKEND_DB, BROKER_DB};

const ECHO: &str = "celeriac.echo";

/// A task that sleeps 30 s as a process, writing its pid to `<dir>/<id>.pid`.
fn sleeper_routing(dir: &std::path::Path) -> String {
    format!(
        r#"
[profile.sleeper]
runtime = "process"
command = ["/bin/sh", "-c", 'echo $$ > "$PIDDIR/$CELERIAC_TASK_ID.pid"; exec sleep 30']
env = {{ PIDDIR = "{}" }}

[[route]]
task = "proc.sleep"
profile = "sleeper"
"#,
        dir.display()
    )
}

async fn llen(queue: &str) -> i64 {
    let mut conn = redis_conn(BROKER_DB).await;
    redis::cmd("LLEN")
        .arg(queue)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Whether kombu's `unacked` hash still holds a message of task `id`.
async fn unacked_holds(id: &str) -> bool {
    let mut conn = redis_conn(BROKER_DB).await;
    let held: Vec<String> = redis::cmd("HVALS")
        .arg("unacked")
        .query_async(&mut conn)
        .await
        .unwrap();
    held.iter().any(|m| m.contains(id))
}

fn queue_labels<'a>(name: &'a str, worker: &'a Worker) -> [(&'a str, &'a str); 2] {
    [("name", name), ("queue", worker.queue.as_str())]
}

fn assert_raised(out: &Value, exc: &str, worker: &Worker) {
    assert_eq!(out["raised"], json!(exc), "{out}\n{}", worker.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_is_held_listed_in_scheduled_and_raises_prefetch() {
    let spec = WorkerSpec::redis().concurrency(1);
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let base = worker
        .metric("celeriac_worker_prefetch_count", &[])
        .await
        .unwrap();
    assert_eq!(base, 4.0, "prefetch = concurrency 1 × multiplier 4");

    // 12 s: the prefetch and scheduled checks below must see it still held
    // even when Python is slow to start on a loaded machine.
    let sent = Instant::now();
    let id = client
        .send(ECHO, json!(["later"]), json!({"countdown": 12}))
        .await
        .unwrap();
    let prefetch = worker
        .wait_metric("celeriac_worker_prefetch_count", &[], base + 1.0)
        .await
        .unwrap();
    assert_eq!(
        prefetch,
        base + 1.0,
        "an ETA task held in memory raises the prefetch by one"
    );
    let scheduled = client.inspect("scheduled", &worker.node).await.unwrap();
    let held = scheduled[&worker.node]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        sent.elapsed() < Duration::from_secs(12),
        "too slow to see the task held; raise the countdown"
    );
    assert!(
        held.iter().any(|t| t["request"]["id"] == json!(id)),
        "inspect scheduled does not list {id}: {scheduled}"
    );

    let out = client.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        out["result"],
        json!("later"),
        "{out}\n{}",
        worker.log_tail()
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(12),
        "ran before its countdown"
    );
    wait_until(
        "the prefetch to go back down once it ran",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let p = worker.metric("celeriac_worker_prefetch_count", &[]).await?;
            Ok((p == base).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_task_is_revoked_and_never_runs() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let out = spec
        .client()
        .call(
            ECHO,
            json!(["stale"]),
            json!({}),
            json!({"expires_ago": 60}),
        )
        .await
        .unwrap();
    assert_raised(&out, "TaskRevokedError", &worker);
    assert_eq!(out["state"], json!("REVOKED"));
    let labels = queue_labels(ECHO, &worker);
    assert_eq!(
        worker
            .metric("celeriac_task_revoked_total", &labels)
            .await
            .unwrap(),
        1.0
    );
    assert_eq!(
        worker
            .metric("celeriac_task_started_total", &labels)
            .await
            .unwrap(),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_hard_time_limits_fail_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkerSpec::redis().routing(&sleeper_routing(dir.path()));
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let (soft, hard) = tokio::join!(
        client.call(
            "proc.sleep",
            json!([]),
            json!({}),
            json!({"soft_time_limit": 1})
        ),
        client.call("proc.sleep", json!([]), json!({}), json!({"time_limit": 1})),
    );
    let (soft, hard) = (soft.unwrap(), hard.unwrap());
    assert_raised(&soft, "SoftTimeLimitExceeded", &worker);
    assert_eq!(soft["state"], json!("FAILURE"));
    assert_raised(&hard, "TimeLimitExceeded", &worker);
    assert_eq!(hard["state"], json!("FAILURE"));
    // The stored meta exactly as Celery 5.7 writes it (worker-limits.json):
    // the hard limit as the message gave it (an int), no traceback.
    let mut conn = redis_conn(BACKEND_DB).await;
    let key = format!("celery-task-meta-{}", hard["id"].as_str().unwrap());
    let raw: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let meta: Value = serde_json::from_str(&raw).unwrap();
    let want = json!({"exc_type": "TimeLimitExceeded", "exc_message": [1], "exc_module": "billiard.exceptions"});
    assert_eq!(meta["result"], want, "{raw}");
    assert_eq!(
        meta["traceback"],
        Value::Null,
        "Celery stores no traceback for a hard limit"
    );
    let soft_key = format!("celery-task-meta-{}", soft["id"].as_str().unwrap());
    let raw: String = redis::cmd("GET")
        .arg(&soft_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let meta: Value = serde_json::from_str(&raw).unwrap();
    let want = json!({"exc_type": "SoftTimeLimitExceeded", "exc_message": [], "exc_module": "billiard.exceptions"});
    assert_eq!(meta["result"], want, "{raw}");
}

fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_terminate_stops_running_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorkerSpec::redis().routing(&sleeper_routing(dir.path()));
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let builtin = client
        .send("celeriac.sleep", json!([30]), json!({}))
        .await
        .unwrap();
    let process = client
        .send("proc.sleep", json!([]), json!({}))
        .await
        .unwrap();
    let pid_file = dir.path().join(format!("{process}.pid"));
    worker
        .wait_metric("celeriac_worker_tasks_active", &[], 2.0)
        .await
        .unwrap();
    let pid: i32 = wait_until(
        "the process task's pid file",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse().ok());
            async move { Ok(pid) }
        },
    )
    .await
    .unwrap();
    assert!(process_alive(pid));

    let started = Instant::now();
    client.revoke(&builtin, true).await.unwrap();
    client.revoke(&process, true).await.unwrap();
    for id in [&builtin, &process] {
        let out = client.wait(id, Duration::from_secs(20)).await.unwrap();
        assert_raised(&out, "TaskRevokedError", &worker);
        assert_eq!(out["state"], json!("REVOKED"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the tasks ran to their end"
    );
    wait_until(
        "the terminated process to be gone",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async move { Ok((!process_alive(pid)).then_some(())) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_countdown_task_never_runs() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let id = client
        .send(ECHO, json!(["never"]), json!({"countdown": 12}))
        .await
        .unwrap();
    let sent = Instant::now();
    worker
        .wait_metric("celeriac_worker_tasks_reserved", &[], 1.0)
        .await
        .unwrap();
    client.revoke(&id, false).await.unwrap();
    let labels = queue_labels(ECHO, &worker);
    // Celery 5.7 writes REVOKED at revoke time for a task it holds (§6.4),
    // long before the ETA fires and the task is discarded.
    let meta = client.meta(&id).await.unwrap();
    let discarded = worker
        .metric("celeriac_task_revoked_total", &labels)
        .await
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(12) && discarded == 0.0,
        "too slow to check before the ETA; raise the countdown"
    );
    assert_eq!(
        meta["status"],
        json!("REVOKED"),
        "not REVOKED at revoke time: {meta}"
    );
    // When the ETA fires the held task is discarded (task-revoked, acked).
    worker
        .wait_metric("celeriac_task_revoked_total", &labels, 1.0)
        .await
        .unwrap();
    let out = client.wait(&id, Duration::from_secs(10)).await.unwrap();
    assert_raised(&out, "TaskRevokedError", &worker);
    assert_eq!(
        worker
            .metric("celeriac_task_started_total", &labels)
            .await
            .unwrap(),
        0.0
    );
    assert!(
        !unacked_holds(&id).await,
        "the revoked message was not acked"
    );
}

const RETRY_ROUTING: &str = r#"
[profile.flaky]
runtime = "process"
command = ["/bin/sh", "-c", '''
case "$CELERIAC_TASK_ARGS" in *always*) exit 75;; esac
if [ -e "$MARKS/$CELERIAC_TASK_ID" ]; then echo "{\"retries\": $CELERIAC_TASK_RETRIES}"; else touch "$MARKS/$CELERIAC_TASK_ID"; exit 75; fi
''']
env = { MARKS = "@MARKS@" }
retry = { max_retries = 1, countdown = "1s" }

[[route]]
task = "proc.flaky"
profile = "flaky"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_republishes_with_retries_plus_one() {
    let marks = tempfile::tempdir().unwrap();
    let routing = RETRY_ROUTING.replace("@MARKS@", &marks.path().display().to_string());
    let spec = WorkerSpec::redis().routing(&routing);
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let (once, always) = tokio::join!(
        client.call("proc.flaky", json!(["once"]), json!({}), json!({})),
        client.call("proc.flaky", json!(["always"]), json!({}), json!({})),
    );
    let (once, always) = (once.unwrap(), always.unwrap());
    assert_eq!(
        once["state"],
        json!("SUCCESS"),
        "{once}\n{}",
        worker.log_tail()
    );
    assert_eq!(
        once["result"],
        json!({"retries": 1}),
        "the retry runs with retries + 1"
    );
    // max_retries exceeded: the task's own failure is final.
    assert_eq!(
        always["state"],
        json!("FAILURE"),
        "{always}\n{}",
        worker.log_tail()
    );
    assert_raised(&always, "RuntimeError", &worker);
    let labels = queue_labels("proc.flaky", &worker);
    assert_eq!(
        worker
            .metric("celeriac_task_retried_total", &labels)
            .await
            .unwrap(),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_task_raises_not_registered_and_is_dropped() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let out = spec
        .client()
        .call("no.such.task", json!([1]), json!({}), json!({}))
        .await
        .unwrap();
    assert_raised(&out, "NotRegistered", &worker);
    assert_eq!(out["state"], json!("FAILURE"));
    let id = out["id"].as_str().unwrap();
    assert_eq!(llen(&worker.queue).await, 0);
    assert!(
        !unacked_holds(id).await,
        "the unregistered message was left unacked"
    );
}

/// Protocol-2 headers for a raw message of `task`.
fn headers(task: &str, id: &str) -> Value {
    json!({"lang": "py", "task": task, "id": id, "retries": 0, "root_id": id, "ignore_result": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dropped_and_consumption_goes_on() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let (bad_json, pickle, bad_eta, no_embed) = (task_id(), task_id(), task_id(), task_id());
    let mut eta_header = headers(ECHO, &bad_eta);
    eta_header["eta"] = json!("next tuesday");
    let good_body = "[[\"x\"], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]";
    client
        .lpush(&[
            ("[[1], {", "application/json", headers(ECHO, &bad_json)),
            (
                "\u{80}\u{4}K\u{1}.",
                "application/x-python-serialize",
                headers(ECHO, &pickle),
            ),
            (good_body, "application/json", eta_header),
            (
                "[[\"no embed\"], {}]",
                "application/json",
                headers(ECHO, &no_embed),
            ),
        ])
        .await
        .unwrap();
    let out = client
        .wait(&no_embed, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        out["result"],
        json!("no embed"),
        "{out}\n{}",
        worker.log_tail()
    );

    let good = client
        .call(ECHO, json!(["still here"]), json!({}), json!({}))
        .await
        .unwrap();
    assert_eq!(
        good["result"],
        json!("still here"),
        "{good}\n{}",
        worker.log_tail()
    );
    let body = [("reason", "body")];
    assert_eq!(
        worker
            .metric("celeriac_malformed_messages_total", &body)
            .await
            .unwrap(),
        1.0
    );
    let pickled = [("reason", "content_disallowed")];
    assert_eq!(
        worker
            .metric("celeriac_malformed_messages_total", &pickled)
            .await
            .unwrap(),
        1.0
    );
    assert_eq!(llen(&worker.queue).await, 0);
    let eta = [("reason", "header")];
    assert_eq!(
        worker
            .metric("celeriac_malformed_messages_total", &eta)
            .await
            .unwrap(),
        1.0
    );
    for id in [&bad_json, &pickle, &bad_eta] {
        assert!(
            !unacked_holds(id).await,
            "malformed message {id} was left unacked"
        );
        let meta = client.meta(id).await.unwrap();
        assert_eq!(
            meta["status"],
            json!("PENDING"),
            "nothing is stored for {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_result_stores_nothing() {
    let spec = WorkerSpec::redis();
    let worker = Worker::start(&spec).await.unwrap();
    let id = spec
        .client()
        .send(ECHO, json!(["x"]), json!({"ignore_result": true}))
        .await
        .unwrap();
    worker
        .wait_metric(
            "celeriac_task_succeeded_total",
            &queue_labels(ECHO, &worker),
            1.0,
        )
        .await
        .unwrap();
    let mut conn = redis_conn(BACKEND_DB).await;
    let key = format!("celery-task-meta-{id}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        exists, 0,
        "{key} was written although the result is ignored"
    );
}

const FAILING_ROUTING: &str = r#"
[profile.fail]
runtime = "process"
command = ["/bin/sh", "-c", "echo boom >&2; exit 3"]

[[route]]
task = "proc.fail"
profile = "fail"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_celery_receiver() {
    let spec = WorkerSpec::redis().routing(FAILING_ROUTING);
    let client = spec.client();
    let file = tempfile::NamedTempFile::new().unwrap();
    let events = client.events(file.path()).await.unwrap();
    let mut worker = Worker::start(&spec).await.unwrap();
    let ok = client
        .call(ECHO, json!(["e"]), json!({}), json!({}))
        .await
        .unwrap();
    let failed = client
        .call("proc.fail", json!([]), json!({}), json!({}))
        .await
        .unwrap();
    assert_eq!(ok["state"], json!("SUCCESS"), "{ok}");
    assert_eq!(failed["state"], json!("FAILURE"), "{failed}");
    let (ok_id, failed_id) = (ok["id"].as_str().unwrap(), failed["id"].as_str().unwrap());
    let node_name = worker.node.clone();
    let node = node_name.as_str();
    let wanted = [
        ("worker-online", "hostname", node),
        ("worker-heartbeat", "hostname", node),
        ("task-received", "uuid", ok_id),
        ("task-started", "uuid", ok_id),
        ("task-succeeded", "uuid", ok_id),
        ("task-received", "uuid", failed_id),
        ("task-failed", "uuid", failed_id),
    ];
    let seen = wait_until(
        "every expected event",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            let missing: Vec<_> = wanted
                .iter()
                .filter(|(k, f, v)| events.find(k, f, v).is_empty())
                .collect();
            let done = missing.is_empty();
            async move { Ok(done.then_some(())) }
        },
    )
    .await;
    if let Err(e) = seen {
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(k, f, v)| events.find(k, f, v).is_empty())
            .collect();
        panic!("{e}: missing {missing:?}\n{}", worker.log_tail());
    }
    let succeeded = &events.find("task-succeeded", "uuid", ok_id)[0];
    assert_eq!(succeeded["hostname"], json!(node));
    assert_eq!(
        succeeded["result"],
        json!("'e'"),
        "the result's repr, as Celery sends it"
    );
    let received = &events.find("task-received", "uuid", ok_id)[0];
    assert_eq!(received["name"], json!(ECHO));
    let failure = &events.find("task-failed", "uuid", failed_id)[0];
    assert!(
        failure["exception"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with code 3"),
        "{failure}"
    );

    // A warm shutdown says goodbye: Flower marks the worker offline at once
    // instead of after its heartbeats stop.
    worker.signal(Signal::SIGTERM).unwrap();
    let status = worker.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status, "exit status: 0", "{}", worker.log_tail());
    wait_until(
        "worker-offline",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let seen = !events.find("worker-offline", "hostname", node).is_empty();
            async move { Ok(seen.then_some(())) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", events.all()));
}
