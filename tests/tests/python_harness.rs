//! The Python side of the interop harness works on its own: the venv has
//! Celery 5.7.0, and a Python client + Python worker round-trip a task.
//! When this fails, the interop tests' failures are about the harness, not
//! about broker-compat.

use anyhow::{ensure, Result};
use celeriac_tests::services::{redis_conn, redis_url, RedisKeys};
use celeriac_tests::{key_prefix, unique, PyApp};
use serde_json::Value;

#[tokio::test]
async fn venv_has_celery_5_7() -> Result<()> {
    let out = tokio::process::Command::new(celeriac_tests::python_bin())
        .args([
            "-c",
            "import celery, kombu; print(celery.__version__, kombu.__version__)",
        ])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.trim() == "5.7.0 5.7.0",
        "unexpected versions: {text:?} {out:?}"
    );
    Ok(())
}

#[tokio::test]
async fn python_client_and_worker_round_trip() -> Result<()> {
    let _redis = redis_conn(0).await;
    let prefix = key_prefix();
    let _keys = RedisKeys::new(0, &prefix);
    let mut app = PyApp::new(&redis_url(0), &unique("harness"));
    app.backend = Some(redis_url(1));
    app.keyprefix = Some(prefix);
    let _worker = app.start_worker("solo", 1).await?;
    let id = app
        .run_script("send_task.py", &["interop.add", "[2, 3]"])
        .await?;
    let id = id.trim();
    let mut results = RedisKeys::new(1, "");
    results.also(format!("celery-task-meta-{id}"));
    let out = app
        .run_script("get_results.py", &["--timeout", "30", id])
        .await?;
    let doc: Value = serde_json::from_str(out.trim())?;
    ensure!(
        doc["value"] == 5 && doc["state"] == "SUCCESS",
        "unexpected result {doc}"
    );
    Ok(())
}
