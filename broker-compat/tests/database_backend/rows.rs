//! Rows written for the captured Celery 5.7 session equal Celery's rows, on
//! every dialect; SUCCESS is final; concurrent writers of one id are safe.

use super::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dialect {
    Postgres,
    MariaDb,
    Sqlite,
}

fn bytes_field(row: &Value, col: &str) -> Option<Value> {
    row[col]
        .get("_derived_text")
        .map(|t| serde_json::from_str(t.as_str().unwrap()).unwrap())
}

/// The TaskResult a worker would have stored to produce this fixture row.
fn result_for(row: &Value) -> TaskResult {
    let status = row["status"].as_str().unwrap();
    let id = row["task_id"].as_str().unwrap();
    let value = bytes_field(row, "result").unwrap_or(Value::Null);
    let mut r = TaskResult::success(id, value);
    r.status = broker_compat::backend::TaskState::parse(status).unwrap();
    r.traceback = row["traceback"].as_str().map(Into::into);
    r.children = Some(match bytes_field(row, "children") {
        Some(Value::Array(a)) => a,
        _ => vec![],
    });
    let date =
        NaiveDateTime::parse_from_str(row["date_done"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f");
    r.date_done = Some(date.unwrap().and_utc());
    let has_request = row["args"].is_object();
    r.extended = has_request.then(|| ExtendedMeta {
        name: row["name"].as_str().map(Into::into),
        args: bytes_field(row, "args").filter(|v| !v.is_null()),
        kwargs: bytes_field(row, "kwargs").filter(|v| !v.is_null()),
        worker: row["worker"].as_str().map(Into::into),
        retries: row["retries"].as_i64(),
        queue: row["queue"].as_str().map(Into::into),
    });
    r
}

/// Fixture row → comparable shape (bytea as hex only).
fn normalise(row: &Value, dialect: Dialect) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in row.as_object().unwrap() {
        let v = match v.get("hex") {
            Some(h) => h.clone(),
            None => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if dialect == Dialect::MariaDb {
        // SQLAlchemy's DATETIME on MySQL has no fractional seconds.
        let d = out["date_done"].as_str().unwrap()[..19].to_owned();
        out.insert("date_done".into(), json!(d));
    }
    Value::Object(out)
}

async fn read_rows(sqlx_url: &str, table: &str, dialect: Dialect) -> Vec<Value> {
    let date = match dialect {
        Dialect::Postgres => r#"to_char(date_done, 'YYYY-MM-DD"T"HH24:MI:SS.US')"#,
        Dialect::MariaDb => "DATE_FORMAT(date_done, '%Y-%m-%dT%H:%i:%s')",
        Dialect::Sqlite => "replace(date_done, ' ', 'T')",
    };
    let sql = format!(
        "SELECT id, task_id, status, result, {date}, traceback, children, name, args, kwargs, \
         worker, retries, queue, stamps FROM {table} ORDER BY id"
    );
    let mut c = sqlx::AnyConnection::connect(sqlx_url).await.unwrap();
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut c)
        .await
        .unwrap();
    let b = |r: &sqlx::any::AnyRow, i: usize| -> Value {
        json!(r.try_get::<Option<Vec<u8>>, _>(i).unwrap().map(|v| hex(&v)))
    };
    let s = |r: &sqlx::any::AnyRow, i: usize| json!(r.try_get::<Option<String>, _>(i).unwrap());
    rows.iter()
        .map(|r| {
            json!({
                "id": r.try_get::<i64, _>(0).unwrap(), "task_id": s(r, 1), "status": s(r, 2),
                "result": b(r, 3), "date_done": s(r, 4), "traceback": s(r, 5),
                "children": b(r, 6), "name": s(r, 7), "args": b(r, 8), "kwargs": b(r, 9),
                "worker": s(r, 10), "retries": r.try_get::<Option<i64>, _>(11).unwrap(),
                "queue": s(r, 12), "stamps": b(r, 13),
            })
        })
        .collect()
}

/// Store the rows of a `db-rows-*.json` capture and compare the table with it.
async fn check_rows(
    b: &DatabaseBackend,
    fixture_file: &str,
    sqlx_url: &str,
    table: &str,
    dialect: Dialect,
) {
    let fx = fixture("celery", fixture_file);
    let rows = fx["tables"]["celery_taskmeta"]["rows"].as_array().unwrap();
    for row in rows {
        let r = result_for(row);
        // A STARTED first, as with track_started: the final row must not keep any of it.
        if r.status.is_ready() {
            let started = TaskResult::started(&r.task_id, 4242, "celery@vm");
            assert_eq!(b.store(&started).await.unwrap(), StoreOutcome::Stored);
        }
        assert_eq!(
            b.store(&r).await.unwrap(),
            StoreOutcome::Stored,
            "{}",
            r.task_id
        );
        let got = b.get(&r.task_id).await.unwrap().unwrap();
        let mut want = r.clone();
        if dialect == Dialect::MariaDb {
            want.date_done = got.date_done; // second precision, checked below
        }
        if want.extended.is_none() && got.extended.is_some() {
            want.extended = Some(ExtendedMeta::default());
        }
        assert_eq!(got, want, "get({})", r.task_id);
    }
    let ours = read_rows(sqlx_url, table, dialect).await;
    let want: Vec<Value> = rows.iter().map(|r| normalise(r, dialect)).collect();
    assert_eq!(ours.len(), want.len());
    for (o, w) in ours.iter().zip(&want) {
        assert_eq!(o, w);
    }
}

#[tokio::test]
async fn postgres_rows_match_celery_public() {
    let db = FreshDb::new(Server::Postgres).await;
    let b = backend(&db.url(), &BackendOptions::default()).await;
    assert_eq!(b.layout(), ResultLayout::Celery57);
    check_rows(
        &b,
        "db-rows-public.json",
        &db.sqlx_url(),
        "celery_taskmeta",
        Dialect::Postgres,
    )
    .await;
}

#[tokio::test]
async fn postgres_rows_match_celery_extended_in_schema() {
    let db = FreshDb::new(Server::Postgres).await;
    db.exec("CREATE SCHEMA ext").await;
    let opts = BackendOptions {
        task_schema: Some("ext".into()),
        group_schema: Some("ext".into()),
        ..extended_opts()
    };
    let b = backend(&db.url(), &opts).await;
    check_rows(
        &b,
        "db-rows-ext.json",
        &db.sqlx_url(),
        "ext.celery_taskmeta",
        Dialect::Postgres,
    )
    .await;
}

#[tokio::test]
async fn mariadb_rows_match_celery() {
    let db = FreshDb::new(Server::MariaDb).await;
    let b = backend(&db.url(), &extended_opts()).await;
    check_rows(
        &b,
        "db-rows-ext.json",
        &db.sqlx_url(),
        "celery_taskmeta",
        Dialect::MariaDb,
    )
    .await;
}

#[tokio::test]
async fn sqlite_rows_match_celery() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("db+sqlite:///{}/results.db", dir.path().display());
    let b = backend(&url, &extended_opts()).await;
    let sqlx_url = format!("sqlite://{}/results.db", dir.path().display());
    check_rows(
        &b,
        "db-rows-ext.json",
        &sqlx_url,
        "celery_taskmeta",
        Dialect::Sqlite,
    )
    .await;
}

async fn check_success_is_final(b: &DatabaseBackend) {
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        b.store(&TaskResult::success(&id, json!(1))).await.unwrap(),
        StoreOutcome::Stored
    );
    let before = b.get(&id).await.unwrap();
    for later in [
        TaskResult::failure(&id, &ExceptionInfo::worker_lost("lost"), None),
        TaskResult::revoked(&id, "terminated"),
        TaskResult::success(&id, json!(2)),
    ] {
        assert_eq!(
            b.store(&later).await.unwrap(),
            StoreOutcome::SuccessAlreadyStored
        );
    }
    assert_eq!(b.get(&id).await.unwrap(), before);
}

/// Many writers, one new id: no unique-constraint error escapes, one row,
/// and exactly one of the SUCCESS writers wins.
async fn check_concurrent_writers(b: DatabaseBackend) {
    let b = Arc::new(b);
    let id = uuid::Uuid::new_v4().to_string();
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let (b, id) = (b.clone(), id.clone());
            tokio::spawn(async move {
                let r = if n % 2 == 0 {
                    TaskResult::started(&id, n, "celery@vm")
                } else {
                    TaskResult::success(&id, json!(n))
                };
                (r.status, b.store(&r).await)
            })
        })
        .collect();
    let mut success_stored = 0;
    for t in tasks {
        let (status, outcome) = t.await.unwrap();
        let outcome = outcome.unwrap_or_else(|e| panic!("concurrent store failed: {e}"));
        if status == broker_compat::backend::TaskState::Success && outcome == StoreOutcome::Stored {
            success_stored += 1;
        }
    }
    assert_eq!(success_stored, 1);
    let got = b.get(&id).await.unwrap().unwrap();
    assert_eq!(got.status, broker_compat::backend::TaskState::Success);
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM celery_taskmeta")
        .fetch_one(b.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 1);
}

fn concurrent_opts() -> BackendOptions {
    BackendOptions {
        max_connections: 8,
        ..BackendOptions::default()
    }
}

#[tokio::test]
async fn postgres_success_final_and_concurrency() {
    let db = FreshDb::new(Server::Postgres).await;
    check_success_is_final(&backend(&db.url(), &BackendOptions::default()).await).await;
    let db = FreshDb::new(Server::Postgres).await;
    check_concurrent_writers(backend(&db.url(), &concurrent_opts()).await).await;
}

#[tokio::test]
async fn mariadb_success_final_and_concurrency() {
    let db = FreshDb::new(Server::MariaDb).await;
    check_success_is_final(&backend(&db.url(), &BackendOptions::default()).await).await;
    let db = FreshDb::new(Server::MariaDb).await;
    check_concurrent_writers(backend(&db.url(), &concurrent_opts()).await).await;
}

#[tokio::test]
async fn sqlite_success_final_and_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("db+sqlite:///{}/a.db", dir.path().display());
    check_success_is_final(&backend(&url, &BackendOptions::default()).await).await;
    let url = format!("db+sqlite:///{}/b.db", dir.path().display());
    check_concurrent_writers(backend(&url, &concurrent_opts()).await).await;
}
