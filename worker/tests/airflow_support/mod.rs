//! Helpers of the Airflow tests: the fake Airflow package (`fake/`), the
//! captured fixtures turned into fresh messages, a celeriac-worker in Airflow
//! mode on Redis + a PostgreSQL result backend with Celery 5.6's
//! `celery_taskmeta` layout (what Airflow 3.3 creates), and row polling.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use broker_compat::backend::database::ResultLayout;
use broker_compat::backend::{self, BackendOptions};
use celeriac_tests::postgres::PgDatabase;
use celeriac_tests::services::redis_url;
use celeriac_tests::{unique, wait_until, ChildGuard};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Redis db of these tests' broker queues (fresh queue names per test).
pub const BROKER_DB: u8 = 13;
/// The throw-away key of the log-server tests.
pub const SECRET: &str = "celeriac-airflow-test-secret";

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../broker-compat/tests/fixtures/airflow")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Directory holding the fake `airflow` package (for PYTHONPATH).
pub fn fake_airflow() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/airflow_support/fake")
}

/// The captured Airflow 3 workload (afcap_simple.echo) with a new TI id,
/// task id (selects the fake's behaviour) and log path.
pub fn workload(task_id: &str) -> Value {
    let captured = fixture("redis_queue_afcap_simple_echo.json");
    let mut w = captured["messages"][0]["decoded"]["workload"].clone();
    let ti_id = uuid::Uuid::new_v4().to_string();
    w["ti"]["id"] = json!(ti_id);
    w["ti"]["task_id"] = json!(task_id);
    w["log_path"] = json!(format!(
        "dag_id=celeriac_test/run_id=r1/task_id={task_id}/attempt=1-{ti_id}.log"
    ));
    w
}

/// The captured kombu envelope re-addressed: new Celery id, queue and body.
pub fn envelope(task: &str, id: &str, queue: &str, args: Value) -> String {
    let captured = fixture("redis_queue_afcap_simple_echo.json");
    let mut env: Value =
        serde_json::from_str(captured["messages"][0]["raw"].as_str().unwrap()).unwrap();
    let body =
        json!([args, {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    env["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body.to_string()));
    env["headers"]["task"] = json!(task);
    env["headers"]["id"] = json!(id);
    env["headers"]["root_id"] = json!(id);
    env["headers"]["argsrepr"] = json!("(...)");
    env["properties"]["correlation_id"] = json!(id);
    env["properties"]["delivery_info"]["routing_key"] = json!(queue);
    env["properties"]["delivery_tag"] = json!(uuid::Uuid::new_v4().to_string());
    env.to_string()
}

/// LPUSH like the scheduler's kombu does (consumers pop the other end).
pub async fn publish(queue: &str, task: &str, id: &str, args: Value) {
    let client = redis::Client::open(redis_url(BROKER_DB)).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379 is not reachable");
    let _: i64 = redis::cmd("LPUSH")
        .arg(queue)
        .arg(envelope(task, id, queue, args))
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A fresh database with `celery_taskmeta` as Celery 5.6 creates it.
pub async fn legacy_database() -> PgDatabase {
    let db = PgDatabase::create()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is not reachable");
    let opts = BackendOptions {
        create_layout: ResultLayout::Celery56,
        ..BackendOptions::default()
    };
    backend::connect(&db.celery_url(), &opts)
        .await
        .expect("creating the Celery 5.6 tables");
    db
}

/// `(status, result IS NULL, traceback)` of a task's row, if any.
pub async fn row(db: &PgDatabase, task_id: &str) -> Result<Option<(String, bool, Option<String>)>> {
    let mut conn = PgConnection::connect(&db.url()).await?;
    let r = sqlx::query("SELECT status, result IS NULL AS null_result, traceback FROM celery_taskmeta WHERE task_id = $1")
        .bind(task_id)
        .fetch_optional(&mut conn)
        .await?;
    Ok(r.map(|r| (r.get("status"), r.get("null_result"), r.get("traceback"))))
}

/// Poll until the row has `status`.
pub async fn wait_status(
    db: &PgDatabase,
    task_id: &str,
    status: &str,
    worker: &AirflowWorker,
) -> (String, bool, Option<String>) {
    let what = format!("task {task_id} to be {status}");
    let r = wait_until(
        &what,
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { Ok(row(db, task_id).await?.filter(|r| r.0 == status)) },
    )
    .await;
    r.unwrap_or_else(|e| panic!("{e:#}\n{}", worker.log_tail()))
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// celeriac-worker in Airflow mode with the fake Airflow.
pub struct AirflowWorker {
    pub node: String,
    pub queue: String,
    pub home: TempDir,
    pub admin: SocketAddr,
    pub log_server: SocketAddr,
    pub log_dir: PathBuf,
    child: ChildGuard,
}

impl AirflowWorker {
    pub async fn start(backend: &str, warm_pool: usize) -> Result<Self> {
        let home = tempfile::tempdir()?;
        let queue = unique("celeriac-af");
        let admin = free_port();
        let log_server = free_port();
        let log_dir = home.path().join("worker-logs");
        let node = format!("celeriac@{}", unique("af"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-worker"));
        cmd.args([
            "--airflow",
            "--broker",
            &redis_url(BROKER_DB),
            "--result-backend",
            backend,
            "-Q",
            &queue,
            "-c",
            "2",
        ])
        .args(["-n", &node, "--admin-addr", &admin.to_string()])
        .args([
            "--log-server-port",
            &log_server.port().to_string(),
            "--airflow-python",
            "python3",
        ])
        .args([
            "--airflow-warm-pool",
            &warm_pool.to_string(),
            "--airflow-preload",
            "airflow.sdk.execution_time.execute_workload",
        ])
        .arg("--log-dir")
        .arg(&log_dir)
        .env_remove("AIRFLOW__CELERY__BROKER_URL")
        .env("RUST_LOG", "info")
        .env("PYTHONPATH", fake_airflow())
        .env("AIRFLOW_HOME", home.path())
        .env("AIRFLOW__API__SECRET_KEY", SECRET)
        .env(
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "http://127.0.0.1:9/execution/",
        );
        let child = ChildGuard::spawn("celeriac-worker-airflow", cmd)?;
        let mut w = AirflowWorker {
            node,
            queue,
            home,
            admin,
            log_server,
            log_dir,
            child,
        };
        w.wait_ready().await?;
        Ok(w)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let admin = self.admin;
        let r = wait_until(
            "the worker's /readyz",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                let exited = self.child.exited();
                async move {
                    if let Some(status) = exited {
                        bail!("the worker exited: {status}");
                    }
                    Ok(
                        matches!(http_get(admin, "/readyz", None).await, Ok((200, _)))
                            .then_some(()),
                    )
                }
            },
        )
        .await;
        r.map_err(|e| anyhow!("{e:#}\n{}", self.log_tail()))
    }

    pub fn log_tail(&self) -> String {
        self.child.log_tail(80)
    }

    /// Let a `wait*` fake task finish.
    pub fn release(&self, ti_id: &str) {
        std::fs::write(self.home.path().join(format!("release-{ti_id}")), b"").unwrap();
    }

    /// The worker's own copy of a task's output.
    pub fn task_log(&self, task_id: &str) -> PathBuf {
        self.log_dir
            .join(&self.queue)
            .join(format!("{task_id}.log"))
    }
}

/// `(status, body)` of an HTTP/1.0 GET, with an optional Authorization header.
pub async fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Result<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {head:?}"))?;
    Ok((status, body.to_owned()))
}
