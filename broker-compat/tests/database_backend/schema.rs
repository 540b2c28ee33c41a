//! The tables we create are the ones SQLAlchemy creates for Celery 5.7
//! (`db-schema-pg_dump.sql`), and an existing ≤ 5.6 table (Airflow 3.3) is
//! detected and written with a pickle or NULL `result`.

use super::*;

fn pg_dump() -> String {
    let path = format!(
        "{}/tests/fixtures/celery/db-schema-pg_dump.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

/// Column lines of `CREATE TABLE <schema>.<table> (…);` in the dump.
fn dump_columns(dump: &str, qualified: &str) -> Vec<String> {
    let head = format!("CREATE TABLE {qualified} (\n");
    let start = dump.find(&head).unwrap() + head.len();
    let body = &dump[start..start + dump[start..].find("\n);").unwrap()];
    body.lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .collect()
}

/// `<name> <definition>` of the constraints on a table, from the dump.
fn dump_constraints(dump: &str, qualified: &str) -> Vec<String> {
    let head = format!("ALTER TABLE ONLY {qualified}\n    ADD CONSTRAINT ");
    let mut out: Vec<String> = dump
        .match_indices(&head)
        .map(|(i, _)| {
            let rest = &dump[i + head.len()..];
            rest[..rest.find(";\n").unwrap()].to_owned()
        })
        .collect();
    out.sort();
    out
}

fn dump_indexes(dump: &str, schema: &str) -> Vec<String> {
    let mut out: Vec<String> = dump
        .lines()
        .filter(|l| l.starts_with("CREATE INDEX") && l.contains(&format!(" ON {schema}.")))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    out.sort();
    out
}

async fn strings(pool: &sqlx::AnyPool, sql: &str) -> Vec<String> {
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect()
}

async fn check_pg_schema(pool: &sqlx::AnyPool, schema: &str) {
    let dump = pg_dump();
    for table in ["celery_taskmeta", "celery_tasksetmeta"] {
        let q = format!("{schema}.{table}");
        let cols = strings(
            pool,
            &format!(
                "SELECT attname || ' ' || format_type(atttypid, atttypmod) || \
                 CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END FROM pg_attribute \
                 WHERE attrelid = '{q}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ),
        )
        .await;
        assert_eq!(cols, dump_columns(&dump, &q), "{q} columns");
        let cons = strings(
            pool,
            &format!(
                "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = '{q}'::regclass ORDER BY 1"
            ),
        )
        .await;
        assert_eq!(cons, dump_constraints(&dump, &q), "{q} constraints");
        let defaults = strings(
            pool,
            &format!(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = '{schema}' \
                 AND table_name = '{table}' AND column_default IS NOT NULL"
            ),
        )
        .await;
        assert!(
            defaults.is_empty(),
            "{q}: no DEFAULTs (id comes from nextval in the INSERT)"
        );
    }
    let idx = strings(
        pool,
        &format!("SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' AND indexname LIKE 'ix%' ORDER BY 1"),
    )
    .await;
    assert_eq!(idx, dump_indexes(&dump, schema));
    let seqs = strings(
        pool,
        &format!(
            "SELECT sequencename || ' ' || start_value || ' ' || increment_by || ' ' || cache_size || ' ' \
             || min_value || ' ' || max_value FROM pg_sequences WHERE schemaname = '{schema}' ORDER BY 1"
        ),
    )
    .await;
    let max = i64::MAX;
    assert_eq!(
        seqs,
        vec![
            format!("task_id_sequence 1 1 1 1 {max}"),
            format!("taskset_id_sequence 1 1 1 1 {max}")
        ]
    );
}

#[tokio::test]
async fn postgres_schema_matches_sqlalchemy() {
    let db = FreshDb::new(Server::Postgres).await;
    db.exec("CREATE SCHEMA ext").await;
    let public = backend(&db.url(), &BackendOptions::default()).await;
    check_pg_schema(public.pool(), "public").await;
    let ext = BackendOptions {
        task_schema: Some("ext".into()),
        group_schema: Some("ext".into()),
        ..BackendOptions::default()
    };
    let b = backend(&db.url(), &ext).await;
    check_pg_schema(b.pool(), "ext").await;
    // Connecting again finds the tables and changes nothing.
    let again = backend(&db.url(), &BackendOptions::default()).await;
    assert_eq!(again.layout(), ResultLayout::Celery57);
    check_pg_schema(again.pool(), "public").await;
}

#[tokio::test]
async fn mariadb_schema_uses_sequences_like_sqlalchemy() {
    let db = FreshDb::new(Server::MariaDb).await;
    let b = backend(&db.url(), &BackendOptions::default()).await;
    let mut seqs = strings(b.pool(), "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'SEQUENCE'").await;
    seqs.sort();
    assert_eq!(seqs, vec!["task_id_sequence", "taskset_id_sequence"]);
    let ddl: String = sqlx::query("SHOW CREATE TABLE celery_taskmeta")
        .fetch_one(b.pool())
        .await
        .unwrap()
        .try_get(1)
        .unwrap();
    for part in [
        "`id` int(11) NOT NULL,",
        "`result` blob",
        "`date_done` datetime",
        "`children` blob",
        "`stamps` blob",
        "PRIMARY KEY (`id`)",
        "UNIQUE KEY `task_id` (`task_id`)",
        "KEY `ix_celery_taskmeta_date_done` (`date_done`)",
    ] {
        assert!(ddl.contains(part), "{part} not in {ddl}");
    }
    assert!(!ddl.contains("AUTO_INCREMENT"), "{ddl}");
    let id = uuid::Uuid::new_v4().to_string();
    b.store(&TaskResult::success(&id, json!(1))).await.unwrap();
    let n: i64 = sqlx::query("SELECT id FROM celery_taskmeta")
        .fetch_one(b.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn sqlite_schema_is_autoincrement() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("db+sqlite:///{}/s.db", dir.path().display());
    let b = backend(&url, &BackendOptions::default()).await;
    let ddl = strings(
        b.pool(),
        "SELECT sql FROM sqlite_master WHERE name = 'celery_taskmeta'",
    )
    .await;
    assert!(
        ddl[0].contains("id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT"),
        "{}",
        ddl[0]
    );
    assert!(ddl[0].contains("children BLOB"));
    let idx = strings(
        b.pool(),
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix%' ORDER BY 1",
    )
    .await;
    assert_eq!(
        idx,
        vec![
            "ix_celery_taskmeta_date_done",
            "ix_celery_tasksetmeta_date_done"
        ]
    );
}

/// The table Airflow 3.3's Celery 5.6 created (columns from `celery_taskmeta_rows.json`).
const LEGACY_DDL: [&str; 2] = [
    "CREATE SEQUENCE task_id_sequence",
    "CREATE TABLE celery_taskmeta (id INTEGER NOT NULL, task_id VARCHAR(155), status VARCHAR(50), \
     result BYTEA, date_done TIMESTAMP WITHOUT TIME ZONE, traceback TEXT, name VARCHAR(155), \
     args BYTEA, kwargs BYTEA, worker VARCHAR(155), retries INTEGER, queue VARCHAR(155), \
     PRIMARY KEY (id), UNIQUE (task_id))",
];

async fn legacy_row(pool: &sqlx::AnyPool, id: &str) -> (String, Option<Vec<u8>>, Option<String>) {
    let r = sqlx::query(
        "SELECT status, result, CAST(date_done AS TEXT) FROM celery_taskmeta WHERE task_id = $1",
    )
    .bind(id.to_owned())
    .fetch_one(pool)
    .await
    .unwrap();
    (
        r.try_get(0).unwrap(),
        r.try_get(1).unwrap(),
        r.try_get(2).unwrap(),
    )
}

#[tokio::test]
async fn legacy_layout_is_detected_and_written_as_pickle_or_null() {
    let db = FreshDb::new(Server::Postgres).await;
    for stmt in LEGACY_DDL {
        db.exec(stmt).await;
    }
    let pickled = BackendOptions {
        legacy_result: LegacyResult::Pickle,
        ..BackendOptions::default()
    };
    let b = backend(&db.url(), &pickled).await;
    assert_eq!(b.layout(), ResultLayout::Celery56);
    // The STARTED row Airflow's Celery 5.6 wrote, byte for byte.
    let fx = fixture("airflow", "redis_unacked_while_running.json");
    let captured = &fx["celery_taskmeta_started_rows"][0];
    let id = captured["task_id"].as_str().unwrap();
    b.store(&TaskResult::started(id, 1139, "celery@vm"))
        .await
        .unwrap();
    let (status, result, date) = legacy_row(b.pool(), id).await;
    assert_eq!(status, "STARTED");
    assert_eq!(
        hex(&result.unwrap()),
        captured["result_hex"].as_str().unwrap()
    );
    assert_eq!(date, None);

    // Airflow mode: NULL result, also over the STARTED pickle (a FAILURE row
    // keeping it would crash Airflow's scheduler).
    let b = backend(&db.url(), &BackendOptions::default()).await;
    let exc = ExceptionInfo::new("builtins", "RuntimeError", vec![json!("exit 1")]);
    b.store(&TaskResult::failure(id, &exc, None)).await.unwrap();
    let (status, result, date) = legacy_row(b.pool(), id).await;
    assert_eq!((status.as_str(), result), ("FAILURE", None));
    let naive = NaiveDateTime::parse_from_str(&date.unwrap(), "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let age = chrono::Utc::now().naive_utc() - naive;
    assert!(
        age.num_seconds().abs() < 60,
        "date_done is naive UTC: {naive}"
    );
    let got = b.get(id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.result),
        (broker_compat::backend::TaskState::Failure, Value::Null)
    );
    let other = uuid::Uuid::new_v4().to_string();
    b.store(&TaskResult::success(&other, Value::Null))
        .await
        .unwrap();
    assert_eq!(legacy_row(b.pool(), &other).await.1, None);
}

#[tokio::test]
async fn group_save_matches_celery_row() {
    let db = FreshDb::new(Server::Postgres).await;
    let b = backend(&db.url(), &BackendOptions::default()).await;
    let fx = fixture("celery", "db-rows-public.json");
    let want = &fx["tables"]["celery_tasksetmeta"]["rows"][0];
    let gid = want["taskset_id"].as_str().unwrap();
    let members = vec![
        "aaaaaaaa-0000-0000-0000-000000000001".to_owned(),
        "aaaaaaaa-0000-0000-0000-000000000002".to_owned(),
    ];
    b.save_group(gid, &members).await.unwrap();
    let r = sqlx::query("SELECT id, taskset_id, result FROM celery_tasksetmeta")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(r.try_get::<i64, _>(0).unwrap(), 1);
    assert_eq!(r.try_get::<String, _>(1).unwrap(), gid);
    let result: Vec<u8> = r.try_get(2).unwrap();
    assert_eq!(hex(&result), want["result"]["hex"].as_str().unwrap());
}

#[tokio::test]
async fn new_tables_in_legacy_layout_on_request_and_connect_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("db+sqlite:///{}/legacy.db", dir.path().display());
    let opts = BackendOptions {
        create_layout: ResultLayout::Celery56,
        legacy_result: LegacyResult::Pickle,
        ..BackendOptions::default()
    };
    let b = backend(&url, &opts).await;
    assert_eq!(b.layout(), ResultLayout::Celery56);
    let cols = strings(
        b.pool(),
        "SELECT name FROM pragma_table_info('celery_taskmeta')",
    )
    .await;
    assert!(
        !cols.iter().any(|c| c == "children" || c == "stamps"),
        "{cols:?}"
    );
    // Through the URL-level entry point, the existing table is detected.
    let any = broker_compat::backend::connect(&url, &BackendOptions::default())
        .await
        .unwrap();
    assert_eq!(any.kind(), "database");
    any.store(&TaskResult::success("t1", json!({"a": [1]})))
        .await
        .unwrap();
    let r = sqlx::query("SELECT result FROM celery_taskmeta WHERE task_id = 't1'")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(
        r.try_get::<Option<Vec<u8>>, _>(0).unwrap(),
        None,
        "default legacy_result is NULL"
    );
    b.store(&TaskResult::success("t2", json!({"a": [1]})))
        .await
        .unwrap();
    let r = sqlx::query("SELECT result FROM celery_taskmeta WHERE task_id = 't2'")
        .fetch_one(b.pool())
        .await
        .unwrap();
    let pickled: Vec<u8> = r.try_get(0).unwrap();
    assert_eq!(
        hex(&pickled),
        "8005950d000000000000007d948c0161945d944b0161732e"
    );
    let redis =
        broker_compat::backend::connect("redis://127.0.0.1:6379/0", &BackendOptions::default())
            .await
            .unwrap_or_else(|e| panic!("Redis is required for this test: {e}"));
    assert_eq!(redis.kind(), "redis");
}
