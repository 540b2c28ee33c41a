//! The metastore source on real PostgreSQL (directly and through a real
//! PgBouncer in transaction pooling mode) and MariaDB, on `task_instance`
//! tables created as Airflow 3.3 creates them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use celeriac_scaler::source::metastore::{
    executor_filter_from_airflow, CountQuery, ExecutorFilter, MetastoreQuery, MetastoreSource,
};
use celeriac_scaler::source::LoadSource;
use support::airflow::{create_task_instance, insert, Ti};
use support::pgbouncer::{spare_port, PgBouncer};
use support::{FreshDb, Server};

const K8S: Option<&str> = Some("KubernetesExecutor");
const CELERY: Option<&str> = Some("CeleryExecutor");

/// Rows in every state that matters, on three queues and three executors.
const ROWS: &[Ti<'static>] = &[
    (Some("queued"), "default", None),
    (Some("running"), "default", None),
    (Some("running"), "default", CELERY),
    (Some("queued"), "default", K8S),
    (Some("running"), "default", K8S),
    (Some("success"), "default", None),
    (Some("failed"), "default", None),
    (Some("scheduled"), "default", None),
    (Some("deferred"), "default", None),
    (Some("up_for_retry"), "default", None),
    (Some("up_for_reschedule"), "default", None),
    (None, "default", None),
    (Some("queued"), "other", None),
    (Some("running"), "high", None),
    (Some("queued"), "high", CELERY),
];

async fn seeded(server: Server) -> FreshDb {
    let db = FreshDb::create(server).await;
    create_task_instance(&db).await;
    insert(&db, ROWS).await;
    db
}

fn count(queues: &[&str], executors: ExecutorFilter) -> MetastoreQuery {
    MetastoreQuery::Count(CountQuery {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        executors,
    })
}

async fn observe(url: &str, query: MetastoreQuery) -> (u64, u64) {
    let source = MetastoreSource::new(url, query, Duration::from_secs(5)).unwrap();
    let load = source.observe().await.unwrap();
    (load.running, load.queued)
}

/// (queues, executor filter, running, queued) for the rows above.
fn filter_cases() -> Vec<(&'static [&'static str], ExecutorFilter, (u64, u64))> {
    let only = |include_null| ExecutorFilter::Only {
        names: vec!["CeleryExecutor".into()],
        include_null,
    };
    vec![
        (&["default"], ExecutorFilter::Any, (3, 2)),
        (&["default", "high"], ExecutorFilter::Any, (4, 3)),
        (&["other"], ExecutorFilter::Any, (0, 1)),
        (&["nobody"], ExecutorFilter::Any, (0, 0)),
        (
            &["default"],
            ExecutorFilter::Exclude(vec!["KubernetesExecutor".into()]),
            (2, 1),
        ),
        (&["default"], only(true), (2, 1)),
        (&["default"], only(false), (1, 0)),
        (&["default", "high"], only(false), (1, 1)),
        (
            &["default"],
            executor_filter_from_airflow("CeleryExecutor,KubernetesExecutor"),
            (2, 1),
        ),
        (
            &["default"],
            executor_filter_from_airflow("KubernetesExecutor,CeleryExecutor"),
            (1, 0),
        ),
    ]
}

#[tokio::test]
async fn postgres_counts_queued_and_running_by_queue_and_executor() {
    let db = seeded(Server::Postgres).await;
    for (queues, filter, want) in filter_cases() {
        let got = observe(&db.url(), count(queues, filter.clone())).await;
        assert_eq!(got, want, "queues {queues:?}, {filter:?}");
    }
}

#[tokio::test]
async fn mariadb_counts_queued_and_running_by_queue_and_executor() {
    let db = seeded(Server::MariaDb).await;
    for (queues, filter, want) in filter_cases() {
        let got = observe(&db.url(), count(queues, filter.clone())).await;
        assert_eq!(got, want, "queues {queues:?}, {filter:?}");
    }
}

#[tokio::test]
async fn sqlalchemy_url_from_airflow_is_accepted() {
    let db = seeded(Server::Postgres).await;
    let url = db.url().replace("postgres://", "postgresql+psycopg2://");
    assert_eq!(
        observe(&url, count(&["default"], ExecutorFilter::Any)).await,
        (3, 2)
    );
}

#[tokio::test]
async fn custom_queries_like_keda() {
    let db = seeded(Server::Postgres).await;
    // The chart's query shape, without the division (tasks, not replicas): numeric result.
    let chart = "SELECT ceil(COUNT(*)::decimal) FROM task_instance \
                 WHERE (state='running' OR state='queued') AND queue IN ('default')";
    assert_eq!(
        observe(&db.url(), MetastoreQuery::Custom(chart.into())).await,
        (0, 5)
    );
    let named = "SELECT 7 AS queued, 2::bigint AS running";
    assert_eq!(
        observe(&db.url(), MetastoreQuery::Custom(named.into())).await,
        (2, 7)
    );
    let maria = seeded(Server::MariaDb).await;
    let q = "SELECT COUNT(*) FROM task_instance WHERE state IN ('queued', 'running')";
    assert_eq!(
        observe(&maria.url(), MetastoreQuery::Custom(q.into())).await,
        (0, 8)
    );
}

#[tokio::test]
async fn the_transaction_is_read_only() {
    let db = seeded(Server::Postgres).await;
    let delete = MetastoreQuery::Custom("DELETE FROM task_instance RETURNING 1".into());
    let source = MetastoreSource::new(&db.url(), delete, Duration::from_secs(5)).unwrap();
    let err = source.observe().await.unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "{err}");
    assert_eq!(
        observe(&db.url(), count(&["default"], ExecutorFilter::Any)).await,
        (3, 2)
    );
}

#[tokio::test]
async fn the_statement_timeout_applies_server_side() {
    let db = seeded(Server::Postgres).await;
    let slow = MetastoreQuery::Custom("SELECT pg_sleep(10)".into());
    let source = MetastoreSource::new(&db.url(), slow, Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let err = source.observe().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("statement timeout"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_and_transiently() {
    let url = format!("postgres://postgres@127.0.0.1:{}/x", spare_port());
    let source = MetastoreSource::new(
        &url,
        count(&["default"], ExecutorFilter::Any),
        Duration::from_secs(1),
    )
    .unwrap();
    let started = Instant::now();
    let err = source.observe().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.is_transient(), "{err:?}");
}

/// Transaction pooling hands each transaction any server connection: named
/// prepared statements or session settings would break here. Two sources
/// (four client connections) share PgBouncer's two server connections.
#[tokio::test]
async fn works_through_pgbouncer_in_transaction_mode() {
    let db = seeded(Server::Postgres).await;
    let bouncer = PgBouncer::start();
    let url = bouncer.url(&db.name);
    let query = || {
        count(
            &["default"],
            ExecutorFilter::Exclude(vec!["KubernetesExecutor".into()]),
        )
    };
    let a = MetastoreSource::new(&url, query(), Duration::from_secs(5)).unwrap();
    let b = MetastoreSource::new(&url, query(), Duration::from_secs(5)).unwrap();
    for round in 0..25 {
        let (la, lb) = tokio::join!(a.observe(), b.observe());
        for load in [la, lb] {
            let load = load.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!((load.running, load.queued), (2, 1), "round {round}");
        }
    }
    let custom = MetastoreQuery::Custom("SELECT count(*) FROM task_instance".into());
    assert_eq!(observe(&url, custom).await, (0, ROWS.len() as u64));
}
