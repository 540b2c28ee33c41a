//! Rust writes task results with broker-compat's backends; real Python
//! Celery reads them with `AsyncResult(id).get()` (tests/python/get_results.py).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use broker_compat::backend::{self, BackendOptions, ExceptionInfo, TaskResult};
use broker_compat::protocol::kombu_json::KombuValue;
use celeriac_tests::postgres::PgDatabase;
use celeriac_tests::services::{redis_conn, redis_url, RedisKeys};
use celeriac_tests::{task_id, unique, PyApp};
use chrono::{FixedOffset, TimeZone};
use futures::StreamExt;
use serde_json::{json, Value};

const READ_TIMEOUT: &str = "20";

/// What a Python client got for each id, in order.
async fn python_reads(app: &PyApp, ids: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["--timeout", READ_TIMEOUT];
    args.extend_from_slice(ids);
    let out = app.run_script("get_results.py", &args).await?;
    out.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad line {l}")))
        .collect()
}

fn redis_app(keys: &mut RedisKeys, ids: &[&str]) -> PyApp {
    for id in ids {
        keys.also(format!("celery-task-meta-{id}"));
    }
    let mut app = PyApp::new(&redis_url(0), &unique("unused"));
    app.backend = Some(redis_url(1));
    app
}

fn value_error(message: &str) -> TaskResult {
    let exc = ExceptionInfo::new("builtins", "ValueError", vec![json!(message)]);
    let tb = "Traceback (most recent call last):\nValueError: ".to_owned() + message;
    TaskResult::failure(&task_id(), &exc, Some(tb))
}

/// datetime, UUID, Decimal and bytes built in Rust as kombu JSON.
fn typed_value() -> Result<Value> {
    let when = FixedOffset::east_opt(0)
        .context("utc offset")?
        .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
        .single()
        .context("valid date")?
        + chrono::Duration::microseconds(678_901);
    let v = KombuValue::Array(vec![
        KombuValue::DateTime(when),
        KombuValue::Uuid("12345678-1234-5678-1234-567812345678".parse()?),
        KombuValue::Decimal("1.10".into()),
        KombuValue::Bytes(b"hello bytes".to_vec()),
    ]);
    Ok(v.to_json())
}

const TYPED_REPR: &str = "[datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, \
    tzinfo=datetime.timezone.utc), UUID('12345678-1234-5678-1234-567812345678'), \
    Decimal('1.10'), b'hello bytes']";

fn check_value(doc: &Value, value: &Value) -> Result<()> {
    ensure!(
        doc["outcome"] == "value" && doc["state"] == "SUCCESS" && &doc["value"] == value,
        "expected SUCCESS {value}, Python got {doc}"
    );
    Ok(())
}

fn check_raised(doc: &Value, state: &str, class: &str, args: Value) -> Result<()> {
    ensure!(
        doc["outcome"] == "raised"
            && doc["state"] == state
            && doc["exc_class"] == class
            && doc["exc_args"] == args,
        "expected {state} raising {class}{args}, Python got {doc}"
    );
    Ok(())
}

#[tokio::test]
async fn redis_results_read_by_python() -> Result<()> {
    let _ = redis_conn(1).await;
    let be = backend::connect(&redis_url(1), &BackendOptions::default()).await?;
    let ok = TaskResult::success(&task_id(), json!({"sum": 5, "list": [1, "two"]}));
    let typed = TaskResult::success(&task_id(), typed_value()?);
    let failed = value_error("boom from rust");
    let revoked = TaskResult::revoked(&task_id(), "revoked");
    let ids = [&ok, &typed, &failed, &revoked].map(|r| r.task_id.as_str());
    let mut keys = RedisKeys::new(1, "");
    let app = redis_app(&mut keys, &ids);
    for r in [&ok, &typed, &failed, &revoked] {
        be.store(r).await?;
    }
    let docs = python_reads(&app, &ids).await?;
    check_value(&docs[0], &ok.result)?;
    ensure!(
        docs[1]["repr"] == TYPED_REPR,
        "typed value read as {}",
        docs[1]
    );
    let args = json!(["boom from rust"]);
    check_raised(&docs[2], "FAILURE", "builtins.ValueError", args)?;
    let args = json!(["revoked"]);
    check_raised(
        &docs[3],
        "REVOKED",
        "celery.exceptions.TaskRevokedError",
        args,
    )
}

/// `get()` subscribes, reads the key once, then only wakes on a PUBLISH: a
/// SETEX without PUBLISH would leave it waiting until its timeout.
#[tokio::test]
async fn redis_get_wakes_on_publish() -> Result<()> {
    let _ = redis_conn(1).await;
    let be = backend::connect(&redis_url(1), &BackendOptions::default()).await?;
    let result = TaskResult::success(&task_id(), json!("published"));
    let id = result.task_id.as_str();
    let mut keys = RedisKeys::new(1, "");
    let app = redis_app(&mut keys, &[id]);
    let mut spy = redis::Client::open(redis_url(1))?
        .get_async_pubsub()
        .await?;
    spy.subscribe(format!("celery-task-meta-{id}")).await?;
    let mut script = app.spawn_script("get_results.py", &["--announce-pending", id])?;
    let first = script.next_json(Duration::from_secs(30)).await?;
    ensure!(first["pending"] == id, "Python did not wait: {first}");
    be.store(&result).await?;
    let doc = script.next_json(Duration::from_secs(30)).await?;
    script.finish(Duration::from_secs(10)).await?;
    check_value(&doc, &json!("published"))?;
    let waited = doc["waited"].as_f64().unwrap_or(f64::MAX);
    ensure!(waited < 3.0, "get() took {waited}s after the write: {doc}");
    let msg = tokio::time::timeout(Duration::from_secs(5), spy.on_message().next())
        .await?
        .context("pubsub closed")?;
    let published: Value = serde_json::from_slice(msg.get_payload_bytes())?;
    ensure!(published["task_id"] == id && published["status"] == "SUCCESS");
    Ok(())
}

/// Rust creates the tables (fresh database) and writes; Python reads.
#[tokio::test]
async fn database_results_read_by_python() -> Result<()> {
    let db = PgDatabase::create().await?;
    let be = backend::connect(&db.celery_url(), &BackendOptions::default()).await?;
    let ok = TaskResult::success(&task_id(), json!([1, 2, {"three": 3}]));
    let failed = value_error("db boom");
    be.store(&ok).await?;
    be.store(&failed).await?;
    let mut app = PyApp::new(&redis_url(0), &unique("unused"));
    app.backend = Some(db.celery_url());
    let docs = python_reads(&app, &[ok.task_id.as_str(), failed.task_id.as_str()]).await?;
    check_value(&docs[0], &ok.result)?;
    check_raised(
        &docs[1],
        "FAILURE",
        "builtins.ValueError",
        json!(["db boom"]),
    )
}

/// Python's SQLAlchemy creates the tables (its first `get()`); Rust then
/// writes into them and the waiting `get()` sees the row.
#[tokio::test]
async fn database_tables_made_by_python() -> Result<()> {
    let db = PgDatabase::create().await?;
    let mut app = PyApp::new(&redis_url(0), &unique("unused"));
    app.backend = Some(db.celery_url());
    let ok = TaskResult::success(&task_id(), json!("into python's table"));
    let id = ok.task_id.as_str();
    let mut script = app.spawn_script("get_results.py", &["--announce-pending", id])?;
    let first = script.next_json(Duration::from_secs(30)).await?;
    ensure!(first["pending"] == id, "Python did not wait: {first}");
    let be = backend::connect(&db.celery_url(), &BackendOptions::default()).await?;
    be.store(&ok).await?;
    let doc = script.next_json(Duration::from_secs(30)).await?;
    script.finish(Duration::from_secs(10)).await?;
    check_value(&doc, &ok.result)
}
