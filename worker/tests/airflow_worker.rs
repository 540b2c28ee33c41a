//! celeriac-worker in Airflow mode, driven like Airflow's scheduler drives
//! it: captured `execute_workload` / `execute_command` messages pushed onto
//! Redis, results in a fresh PostgreSQL database with Celery 5.6's
//! `celery_taskmeta` (pickle `result` column, as Airflow 3.3 creates it),
//! and a fake Airflow package (`airflow_support/fake`) standing in for the
//! Task SDK. Also Airflow's worker log server and its JWT check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod airflow_support;

use std::time::Duration;

use airflow_support::*;
use celeriac_tests::wait_until;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const WORKLOAD: &str = "execute_workload";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_success_failure_and_duplicate() {
    let db = legacy_database().await;
    let worker = AirflowWorker::start(&db.celery_url(), 1).await.unwrap();

    // STARTED while the process runs; SUCCESS only once it exited; result NULL.
    let ok = workload("wait_ok");
    let ok_id = uuid::Uuid::new_v4().to_string();
    publish(&worker.queue, WORKLOAD, &ok_id, json!([ok.to_string()])).await;
    let started = wait_status(&db, &ok_id, "STARTED", &worker).await;
    assert!(
        started.1,
        "STARTED must not hold a pickle the scheduler could misread"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        row(&db, &ok_id).await.unwrap().unwrap().0,
        "STARTED",
        "terminal state written before the process exited"
    );
    worker.release(ok["ti"]["id"].as_str().unwrap());
    let done = wait_status(&db, &ok_id, "SUCCESS", &worker).await;
    assert!(done.1, "SUCCESS result must be NULL");
    let airflow_log = worker
        .home
        .path()
        .join("logs")
        .join(ok["log_path"].as_str().unwrap());
    assert!(airflow_log.exists(), "the task wrote its Airflow log");
    let copy = std::fs::read_to_string(worker.task_log(&ok_id)).unwrap();
    assert!(
        copy.contains("Workload finished"),
        "worker log copy: {copy}"
    );

    // Exit 1 → FAILURE with result NULL (never a pickle the scheduler chokes on).
    let fail_id = uuid::Uuid::new_v4().to_string();
    publish(
        &worker.queue,
        WORKLOAD,
        &fail_id,
        json!([workload("fail").to_string()]),
    )
    .await;
    let failed = wait_status(&db, &fail_id, "FAILURE", &worker).await;
    assert!(failed.1, "FAILURE result must be NULL");
    assert!(failed.2.unwrap_or_default().contains("Unhandled exception"));

    // TaskAlreadyRunningError: Celery's Ignore — STARTED stays, nothing terminal.
    let dup_id = uuid::Uuid::new_v4().to_string();
    publish(
        &worker.queue,
        WORKLOAD,
        &dup_id,
        json!([workload("dup").to_string()]),
    )
    .await;
    wait_status(&db, &dup_id, "STARTED", &worker).await;
    // Prove the duplicate was handled: its log copy is complete and the
    // next message is processed after it.
    let after_id = uuid::Uuid::new_v4().to_string();
    publish(
        &worker.queue,
        WORKLOAD,
        &after_id,
        json!([workload("ok").to_string()]),
    )
    .await;
    wait_status(&db, &after_id, "SUCCESS", &worker).await;
    wait_until(
        "the duplicate's log",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            Ok(std::fs::read_to_string(worker.task_log(&dup_id))
                .ok()
                .filter(|t| t.contains("TaskAlreadyRunningError")))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        row(&db, &dup_id).await.unwrap().unwrap().0,
        "STARTED",
        "{}",
        worker.log_tail()
    );
    assert!(
        worker.log_tail().contains("ignored"),
        "{}",
        worker.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow2_execute_command() {
    let db = legacy_database().await;
    let worker = AirflowWorker::start(&db.celery_url(), 0).await.unwrap();
    let captured = fixture("synthesized_airflow2_execute_command.json");
    let command = captured["messages"][0]["decoded"]["body"][0][0].clone();
    assert_eq!(command[0], json!("airflow"), "fixture shape: {command}");

    let id = uuid::Uuid::new_v4().to_string();
    publish(&worker.queue, "execute_command", &id, json!([command])).await;
    let done = wait_status(&db, &id, "SUCCESS", &worker).await;
    assert!(done.1);
    let out = std::fs::read_to_string(worker.task_log(&id)).unwrap();
    let printed: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(printed["external_executor_id"], json!(id), "{out}");
    assert_eq!(
        printed["argv"],
        json!(command.as_array().unwrap()[1..]),
        "{out}"
    );

    // Not `airflow tasks run`: FAILURE, and nothing was run.
    let bad_id = uuid::Uuid::new_v4().to_string();
    publish(
        &worker.queue,
        "execute_command",
        &bad_id,
        json!([["airflow", "db", "reset", "-y"]]),
    )
    .await;
    let refused = wait_status(&db, &bad_id, "FAILURE", &worker).await;
    assert!(refused.1);
    assert!(
        !worker.task_log(&bad_id).exists(),
        "a refused command must not run"
    );
    assert!(
        worker.log_tail().contains("must start with"),
        "{}",
        worker.log_tail()
    );
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    filename: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
}

fn token(secret: &str, filename: &str, aud: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        filename,
        aud,
        iat: now,
        nbf: now,
        exp: now + 30,
    };
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("not-used".into());
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_server_checks_the_token_like_airflow() {
    let db = legacy_database().await;
    let worker = AirflowWorker::start(&db.celery_url(), 0).await.unwrap();
    let rel = "dag_id=d/run_id=manual__2026-01-01T00:00:00+00:00/task_id=t/attempt=1.log";
    let file = worker.home.path().join("logs").join(rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "hello from the task\n").unwrap();
    std::fs::write(worker.home.path().join("secret.txt"), "not a log").unwrap();
    let url = format!("/log/{rel}");
    let addr = worker.log_server;

    let ok = token(SECRET, rel, "task-instance-logs");
    let (status, body) = http_get(addr, &url, Some(&ok)).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from the task\n"),
        "{}",
        worker.log_tail()
    );

    let refused = [
        ("no token", None),
        (
            "wrong key",
            Some(token("another-secret", rel, "task-instance-logs")),
        ),
        (
            "wrong audience",
            Some(token(SECRET, rel, "urn:airflow.apache.org:task")),
        ),
        (
            "other file",
            Some(token(SECRET, "dag_id=d/other.log", "task-instance-logs")),
        ),
        ("garbage", Some("not.a.jwt".to_owned())),
    ];
    for (what, auth) in refused {
        let (status, _) = http_get(addr, &url, auth.as_deref()).await.unwrap();
        assert_eq!(status, 403, "{what}");
    }
    // `..` never leaves the log folder, even with a token for exactly that path.
    for path in [
        "../secret.txt",
        "dag_id=d/../../secret.txt",
        "%2e%2e/secret.txt",
    ] {
        let auth = token(SECRET, &path.replace("%2e", "."), "task-instance-logs");
        let (status, body) = http_get(addr, &format!("/log/{path}"), Some(&auth))
            .await
            .unwrap();
        assert!(status == 403 || status == 404, "{path}: {status} {body}");
        assert!(!body.contains("not a log"), "{path} escaped the log folder");
    }
    let missing = token(SECRET, "nope.log", "task-instance-logs");
    assert_eq!(
        http_get(addr, "/log/nope.log", Some(&missing))
            .await
            .unwrap()
            .0,
        404
    );
}

/// A worker that starts before the scheduler creates `celery_taskmeta`
/// itself: with Celery 5.6's layout, which Airflow's scheduler reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_mode_creates_the_celery56_table() {
    use sqlx::Connection;
    let db = celeriac_tests::postgres::PgDatabase::create()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is not reachable");
    let worker = AirflowWorker::start(&db.celery_url(), 0).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    publish(
        &worker.queue,
        WORKLOAD,
        &id,
        json!([workload("ok").to_string()]),
    )
    .await;
    let done = wait_status(&db, &id, "SUCCESS", &worker).await;
    assert!(done.1, "result must be NULL");
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'celery_taskmeta' ORDER BY ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(columns.contains(&"result".to_owned()), "{columns:?}");
    assert!(
        !columns.contains(&"children".to_owned()),
        "Celery 5.7 layout created: {columns:?}"
    );
}

/// The scheduler revokes tasks stuck in queued (airflow.md §5.4) with
/// Celery's `control.revoke`; a revoked message that arrives afterwards is
/// discarded as Celery does: REVOKED (result NULL), acked, never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_workload_arriving_later_is_discarded() {
    let db = legacy_database().await;
    let worker = AirflowWorker::start(&db.celery_url(), 0).await.unwrap();
    let url = celeriac_tests::services::redis_url(BROKER_DB);
    let id = uuid::Uuid::new_v4().to_string();
    // The mailbox binds right after /readyz and a broadcast before that is
    // lost (Redis fan-out): repeat until the worker answers, as clients do.
    let celery = celeriac_tests::venv().join("bin").join("celery");
    let mut answer = String::new();
    for _ in 0..10 {
        let out = std::process::Command::new(&celery)
            .args([
                "-b",
                &url,
                "control",
                "revoke",
                &id,
                "-d",
                &worker.node,
                "-t",
                "3",
            ])
            .output()
            .expect("running celery control revoke");
        answer = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if answer.contains("flagged as revoked") {
            break;
        }
    }
    assert!(
        answer.contains("flagged as revoked"),
        "{answer}\n{}",
        worker.log_tail()
    );

    // Celery 5.7 also stores REVOKED at once for a task not running here.
    let revoked = wait_status(&db, &id, "REVOKED", &worker).await;
    assert!(
        revoked.1,
        "REVOKED result must be NULL in the Celery 5.6 layout"
    );

    publish(
        &worker.queue,
        WORKLOAD,
        &id,
        json!([workload("ok").to_string()]),
    )
    .await;
    let client = redis::Client::open(url).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let discarded = wait_until(
        "the revoked message to be discarded",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let mut conn = conn.clone();
            let (queue, log) = (worker.queue.clone(), worker.log_tail());
            async move {
                let left: i64 = redis::cmd("LLEN")
                    .arg(&queue)
                    .query_async(&mut conn)
                    .await?;
                Ok((left == 0 && log.contains("Discarding revoked task")).then_some(()))
            }
        },
    )
    .await;
    discarded.unwrap_or_else(|e| panic!("{e:#}\n{}", worker.log_tail()));
    assert!(
        !worker.task_log(&id).exists(),
        "a revoked workload must not run"
    );
    assert_eq!(row(&db, &id).await.unwrap().unwrap().0, "REVOKED");
}
