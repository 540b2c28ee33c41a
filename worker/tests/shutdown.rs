//! Shutdown and broker loss (issue 3 §6): a warm SIGTERM lets the running
//! task finish and gives the waiting ones back; a second signal goes cold and
//! gives back the running one too (restored when acked late, republished
//! when acked early); a worker whose Redis restarts
//! resumes consuming (celery#8082 is the bug not to have).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use celeriac_tests::services::redis_conn;
use celeriac_tests::{wait_until, ChildGuard};
use nix::sys::signal::Signal;
use serde_json::json;
use support::http;
use support::worker::{free_port, Worker, WorkerSpec, BROKER_DB};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

async fn llen(broker_db: u8, queue: &str) -> i64 {
    let mut conn = redis_conn(broker_db).await;
    redis::cmd("LLEN")
        .arg(queue)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Until `/readyz` stops answering 200: the consumer loop has stopped.
async fn wait_not_consuming(worker: &Worker) {
    let admin = worker.admin;
    wait_until("the worker to stop consuming", Duration::from_secs(20), Duration::from_millis(20), || async move {
        Ok((!matches!(http::get(admin, "/readyz").await, Ok((200, _)))).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", worker.log_tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_running_task_and_gives_back_the_waiting_ones() {
    let spec = WorkerSpec::redis().concurrency(1);
    let mut worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let ids = client
        .send_many(&[
            ("celeriac.sleep", json!([4]), json!({})),
            ("celeriac.echo", json!(["a"]), json!({})),
            ("celeriac.echo", json!(["b"]), json!({})),
        ])
        .await
        .unwrap();
    let (running, waiting) = (&ids[0], &ids[1..]);
    worker
        .wait_metric("celeriac_worker_tasks_active", &[], 1.0)
        .await
        .unwrap();
    worker
        .wait_metric("celeriac_worker_tasks_reserved", &[], 2.0)
        .await
        .unwrap();

    worker.signal(Signal::SIGTERM).unwrap();
    let status = worker.wait_exit(EXIT_TIMEOUT).await.unwrap();
    assert_eq!(status, "exit status: 0", "{}", worker.log_tail());
    let out = client.wait(running, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        out["state"],
        json!("SUCCESS"),
        "the running task finished: {out}"
    );
    assert_eq!(
        llen(BROKER_DB, &spec.queue).await,
        2,
        "the waiting tasks are back in the queue\n{}",
        worker.log_tail()
    );

    let next = Worker::start(&spec).await.unwrap();
    for (id, word) in waiting.iter().zip(["a", "b"]) {
        let out = client.wait(id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(out["result"], json!(word), "{out}\n{}", next.log_tail());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_goes_cold_and_restores_the_running_task() {
    cold_shutdown_gives_back_the_running_task("true").await;
}

/// An early-acked task is no longer in `unacked`: cold shutdown republishes
/// its message instead (where Celery would lose it), so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_republishes_an_early_acked_running_task() {
    cold_shutdown_gives_back_the_running_task("false").await;
}

async fn cold_shutdown_gives_back_the_running_task(acks_late: &str) {
    let spec = WorkerSpec::redis()
        .concurrency(1)
        .arg("--acks-late")
        .arg(acks_late);
    let mut worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let id = client
        .send("celeriac.sleep", json!([4]), json!({}))
        .await
        .unwrap();
    worker
        .wait_metric("celeriac_worker_tasks_active", &[], 1.0)
        .await
        .unwrap();

    worker.signal(Signal::SIGTERM).unwrap();
    wait_not_consuming(&worker).await;
    worker.signal(Signal::SIGTERM).unwrap();
    let status = worker.wait_exit(EXIT_TIMEOUT).await.unwrap();
    assert_eq!(status, "exit status: 0", "{}", worker.log_tail());
    let meta = client.meta(&id).await.unwrap();
    assert_eq!(
        meta["status"],
        json!("PENDING"),
        "the interrupted task stored nothing: {meta}"
    );
    assert_eq!(
        llen(BROKER_DB, &spec.queue).await,
        1,
        "the running task's message is back\n{}",
        worker.log_tail()
    );

    let next = Worker::start(&spec).await.unwrap();
    let out = client.wait(&id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(out["state"], json!("SUCCESS"), "{out}\n{}", next.log_tail());
}

/// A private `redis-server` on `port` (no persistence): killed with the guard.
async fn redis_server(port: u16) -> ChildGuard {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let mut guard = ChildGuard::spawn("redis-server", cmd).expect("redis-server must be installed");
    let url = format!("redis://127.0.0.1:{port}/0");
    let up = wait_until(
        "the private redis-server to answer PING",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let exited = guard.exited();
            let url = url.clone();
            async move {
                if let Some(status) = exited {
                    anyhow::bail!("redis-server exited: {status}");
                }
                let client = redis::Client::open(url)?;
                let pong = match client.get_multiplexed_async_connection().await {
                    Ok(mut conn) => redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok(),
                    Err(_) => None,
                };
                Ok(pong.map(drop))
            }
        },
    )
    .await;
    if let Err(e) = up {
        panic!("{e}\n{}", guard.log_tail(20));
    }
    guard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_resumes_consuming_after_a_broker_restart() {
    let port = free_port().unwrap().port();
    let mut server = redis_server(port).await;
    let mut spec = WorkerSpec::redis();
    spec.broker = format!("redis://127.0.0.1:{port}/0");
    let worker = Worker::start(&spec).await.unwrap();
    let client = spec.client();
    let before = client
        .call("celeriac.echo", json!(["before"]), json!({}), json!({}))
        .await
        .unwrap();
    assert_eq!(
        before["result"],
        json!("before"),
        "{before}\n{}",
        worker.log_tail()
    );

    server.kill().unwrap();
    wait_not_consuming(&worker).await;
    let _server = redis_server(port).await;
    worker
        .wait_metric("celeriac_broker_reconnects_total", &[], 1.0)
        .await
        .unwrap();
    let ready = http::get(worker.admin, "/readyz").await.unwrap();
    assert_eq!(ready.0, 200, "{}", worker.log_tail());

    let (a, b) = tokio::join!(
        client.call("celeriac.echo", json!(["after-1"]), json!({}), json!({})),
        client.call("celeriac.echo", json!(["after-2"]), json!({}), json!({})),
    );
    assert_eq!(
        a.unwrap()["result"],
        json!("after-1"),
        "{}",
        worker.log_tail()
    );
    assert_eq!(
        b.unwrap()["result"],
        json!("after-2"),
        "{}",
        worker.log_tail()
    );
}
