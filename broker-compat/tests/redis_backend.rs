//! Redis result backend against the real Redis on 127.0.0.1:6379, compared
//! byte for byte with what Celery 5.7 wrote (fixtures `worker-*-results-redis.json`,
//! `worker-*-result-writes.json`, `redis-taskset-meta.json`). Each test uses its
//! own random `global_keyprefix`, so tests never see each other's keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use broker_compat::backend::redis::RedisBackend;
use broker_compat::backend::{
    BackendOptions, ExceptionInfo, ExtendedMeta, ResultBackend, StoreOutcome, TaskResult,
};
use broker_compat::protocol::{pyjson, time::parse_iso};
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{json, Map, Value};

const URL: &str = "redis://127.0.0.1:6379/0";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/celery/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// `(raw value, parsed meta)` of one entry in a `worker-*-results-redis.json`.
fn stored(file: &str, entry: &str) -> (String, Map<String, Value>) {
    let raw = fixture(file)["results"][entry]["raw"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: no {entry}"))
        .to_owned();
    let meta = serde_json::from_str(&raw).unwrap();
    (raw, meta)
}

struct Env {
    prefix: String,
    backend: RedisBackend,
    conn: redis::aio::MultiplexedConnection,
}

async fn env_with(mut opts: BackendOptions) -> Env {
    let prefix = format!("rbtest-{}:", uuid::Uuid::new_v4().simple());
    opts.global_keyprefix = Some(prefix.clone());
    let backend = RedisBackend::connect(URL, &opts)
        .await
        .unwrap_or_else(|e| panic!("Redis at {URL} is required for this test: {e}"));
    let client = redis::Client::open(URL).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    Env {
        prefix,
        backend,
        conn,
    }
}

async fn env() -> Env {
    env_with(BackendOptions::default()).await
}

impl Env {
    /// Delete this test's keys (they would otherwise live for a day).
    async fn cleanup(mut self) {
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = self.conn.del(keys).await.unwrap();
        }
    }

    async fn raw(&mut self, task_id: &str) -> String {
        let key = format!("{}celery-task-meta-{task_id}", self.prefix);
        let v: Option<String> = self.conn.get(&key).await.unwrap();
        v.unwrap_or_else(|| panic!("{key} missing"))
    }

    async fn ttl(&mut self, task_id: &str) -> i64 {
        let key = format!("{}celery-task-meta-{task_id}", self.prefix);
        self.conn.ttl(key).await.unwrap()
    }

    /// Store and return (stored bytes, published payload) for one result.
    async fn store_and_capture(&mut self, r: &TaskResult) -> (String, String) {
        let client = redis::Client::open(URL).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        let channel = format!("{}celery-task-meta-{}", self.prefix, r.task_id);
        pubsub.subscribe(&channel).await.unwrap();
        assert_eq!(self.backend.store(r).await.unwrap(), StoreOutcome::Stored);
        let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .expect("no PUBLISH within 5 s")
            .expect("pubsub closed");
        assert_eq!(msg.get_channel_name(), channel);
        let payload: String = msg.get_payload().unwrap();
        (self.raw(&r.task_id).await, payload)
    }
}

fn at(r: TaskResult, meta: &Map<String, Value>) -> TaskResult {
    let mut r = r;
    r.date_done = meta["date_done"].as_str().map(|s| parse_iso(s).unwrap());
    r
}

/// Builds the result a worker stores, from the task id and the captured meta.
type Build = Box<dyn Fn(&str, &Map<String, Value>) -> TaskResult>;

#[tokio::test]
async fn success_failure_revoked_bytes_match_celery() {
    let mut env = env().await;
    let file = "worker-default-results-redis.json";
    let valueerror = ExceptionInfo::new("builtins", "ValueError", vec![json!("boom")]);
    let cases: Vec<(&str, Build)> = vec![
        (
            "add_success",
            Box::new(|id, _| TaskResult::success(id, json!(5))),
        ),
        (
            "fail_valueerror",
            Box::new(move |id, m| {
                TaskResult::failure(id, &valueerror, m["traceback"].as_str().map(Into::into))
            }),
        ),
        (
            "expired",
            Box::new(|id, _| TaskResult::revoked(id, "expired")),
        ),
        (
            "sleep_terminated",
            Box::new(|id, _| TaskResult::revoked(id, "terminated")),
        ),
        (
            "scheduled_countdown",
            Box::new(|id, _| {
                let mut r = TaskResult::revoked(id, "revoked");
                r.children = None; // control-revoke: no request, children null
                r
            }),
        ),
        (
            "unregistered",
            Box::new(|id, _| {
                TaskResult::failure(id, &ExceptionInfo::not_registered("no.such.task"), None)
            }),
        ),
    ];
    for (entry, build) in cases {
        let (raw, meta) = stored(file, entry);
        let id = meta["task_id"].as_str().unwrap();
        let r = at(build(id, &meta), &meta);
        let (value, published) = env.store_and_capture(&r).await;
        assert_eq!(value, raw, "{entry}: stored value");
        assert_eq!(published, raw, "{entry}: PUBLISH payload");
        let ttl = env.ttl(id).await;
        assert!((86_390..=86_400).contains(&ttl), "{entry}: ttl {ttl}");
        assert_eq!(env.backend.get(id).await.unwrap(), Some(r), "{entry}: get");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn every_captured_value_round_trips_byte_exact() {
    let mut env = env().await;
    for file in [
        "worker-default-results-redis.json",
        "worker-airflowlike-results-redis.json",
    ] {
        let entries = fixture(file)["results"].as_object().unwrap().clone();
        for (entry, v) in entries {
            let raw = v["raw"].as_str().unwrap();
            let meta: Map<String, Value> = serde_json::from_str(raw).unwrap();
            let r = TaskResult::from_meta(&meta).unwrap();
            let (value, published) = env.store_and_capture(&r).await;
            assert_eq!(value, raw, "{file} {entry}");
            assert_eq!(published, raw, "{file} {entry}");
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn retry_and_started_writes_match_celery() {
    let mut env = env().await;
    let writes = fixture("worker-airflowlike-result-writes.json");
    let setex: Vec<&Value> = writes["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["cmd"][0] == "SETEX")
        .map(|w| &w["value_json"])
        .collect();
    let retry = setex.iter().find(|v| v["status"] == "RETRY").unwrap();
    let started = setex
        .iter()
        .find(|v| v["status"] == "STARTED" && v["name"] == "capapp.add")
        .unwrap();

    let id = retry["task_id"].as_str().unwrap();
    let exc = ExceptionInfo::new("builtins", "RuntimeError", vec![json!("transient")]);
    let mut r = TaskResult::retry(id, &exc, retry["traceback"].as_str().map(Into::into));
    r.extended = Some(extended(retry));
    // Celery lists the retry message it just sent (same id) as a child.
    r.children = Some(vec![json!([[id, null], null])]);
    let (value, published) = env.store_and_capture(&r).await;
    let expected = String::from_utf8(pyjson::to_vec(retry)).unwrap();
    assert_eq!(value, expected, "RETRY");
    assert_eq!(published, expected);

    let id = started["task_id"].as_str().unwrap();
    let mut r = TaskResult::started(id, 31730, "celery@vm");
    r.extended = Some(extended(started));
    let (value, _) = env.store_and_capture(&r).await;
    assert_eq!(
        value,
        String::from_utf8(pyjson::to_vec(started)).unwrap(),
        "STARTED"
    );
    env.cleanup().await;
}

fn extended(v: &Value) -> ExtendedMeta {
    ExtendedMeta {
        name: v["name"].as_str().map(Into::into),
        args: Some(v["args"].clone()),
        kwargs: Some(v["kwargs"].clone()),
        worker: v["worker"].as_str().map(Into::into),
        retries: v["retries"].as_i64(),
        queue: v["queue"].as_str().map(Into::into),
    }
}

#[tokio::test]
async fn extended_meta_matches_airflowlike_capture_after_normalising() {
    let mut env = env().await;
    let (raw, meta) = stored("worker-airflowlike-results-redis.json", "add_success");
    let id = uuid::Uuid::new_v4().to_string();
    let mut r = TaskResult::success(&id, json!(5));
    r.extended = Some(extended(&Value::Object(meta.clone())));
    let (value, _) = env.store_and_capture(&r).await;
    // Normalise what legitimately differs: the task id and the time.
    let captured_id = meta["task_id"].as_str().unwrap();
    let captured_date = meta["date_done"].as_str().unwrap();
    let ours_date = r
        .date_done
        .map(broker_compat::protocol::time::to_isoformat)
        .unwrap();
    let normalised = value
        .replace(&id, captured_id)
        .replace(&ours_date, captured_date);
    assert_eq!(normalised, raw);
    env.cleanup().await;
}

#[tokio::test]
async fn success_is_never_overwritten() {
    let mut env = env().await;
    let id = uuid::Uuid::new_v4().to_string();
    let b = &env.backend;
    assert_eq!(
        b.store(&TaskResult::started(&id, 1, "celery@vm"))
            .await
            .unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(
        b.store(&TaskResult::success(&id, json!(1))).await.unwrap(),
        StoreOutcome::Stored
    );
    let before = env.raw(&id).await;
    for later in [
        TaskResult::revoked(&id, "terminated"),
        TaskResult::failure(&id, &ExceptionInfo::worker_lost("lost"), None),
        TaskResult::success(&id, json!(2)),
    ] {
        let outcome = env.backend.store(&later).await.unwrap();
        assert_eq!(outcome, StoreOutcome::SuccessAlreadyStored);
    }
    assert_eq!(env.raw(&id).await, before);
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_success_writes_store_exactly_once() {
    let env = env().await;
    let id = uuid::Uuid::new_v4().to_string();
    let (prefix, mut conn) = (env.prefix.clone(), env.conn.clone());
    let backend = std::sync::Arc::new(env.backend);
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (b, id) = (backend.clone(), id.clone());
            tokio::spawn(async move { b.store(&TaskResult::success(&id, json!(n))).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() == StoreOutcome::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    let _: () = conn
        .del(format!("{prefix}celery-task-meta-{id}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn no_expiry_writes_plain_set() {
    let mut env = env_with(BackendOptions {
        result_expires: None,
        ..BackendOptions::default()
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    env.backend
        .store(&TaskResult::success(&id, json!(null)))
        .await
        .unwrap();
    assert_eq!(env.ttl(&id).await, -1);
    env.cleanup().await;
}

#[tokio::test]
async fn global_keyprefix_and_missing_result() {
    let mut env = env().await;
    assert!(env.prefix.ends_with(':'));
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        env.backend.task_key(&id),
        format!("{}celery-task-meta-{id}", env.prefix)
    );
    assert_eq!(env.backend.get(&id).await.unwrap(), None);
    env.backend
        .store(&TaskResult::success(&id, json!(3)))
        .await
        .unwrap();
    let bare: Option<String> = env
        .conn
        .get(format!("celery-task-meta-{id}"))
        .await
        .unwrap();
    assert_eq!(bare, None, "the unprefixed key must not be written");
    // Without a separator at the end, Celery adds `_`.
    let plain = RedisBackend::connect(
        URL,
        &BackendOptions {
            global_keyprefix: Some("myapp".into()),
            ..BackendOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(plain.task_key("x"), "myapp_celery-task-meta-x");
    env.cleanup().await;
}

#[tokio::test]
async fn group_save_matches_celery() {
    let mut env = env().await;
    let f = fixture("redis-taskset-meta.json");
    let gid = "11111111-2222-3333-4444-555555555555";
    let members = vec![
        "aaaaaaaa-0000-0000-0000-000000000001".to_owned(),
        "aaaaaaaa-0000-0000-0000-000000000002".to_owned(),
    ];
    env.backend.save_group(gid, &members).await.unwrap();
    let key = format!("{}{}", env.prefix, f["key"].as_str().unwrap());
    let v: String = env.conn.get(&key).await.unwrap();
    assert_eq!(v, f["raw"].as_str().unwrap());
    let ttl: i64 = env.conn.ttl(&key).await.unwrap();
    assert!((86_390..=86_400).contains(&ttl));
    env.cleanup().await;
}
