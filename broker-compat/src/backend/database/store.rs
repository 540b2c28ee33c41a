//! The write algorithm of `celery/backends/database/__init__.py::_store_result`
//! (trace in `db-sql-trace.txt`), made safe for concurrent writers.
//!
//! One transaction: lock the row (`SELECT … FOR UPDATE`; SQLite takes the
//! database write lock up front with `BEGIN IMMEDIATE`), stop if it is
//! SUCCESS, else UPDATE it, or INSERT it when missing. Celery inserts a
//! PENDING row and UPDATEs it in the same transaction; we INSERT the final
//! values directly — no other session can see the difference, the committed
//! row is the same. Two writers inserting the same new id: the loser gets a
//! unique violation (or a deadlock on MySQL's gap locks), rolls back and
//! retries, and then finds the row.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row, Transaction};
use sqlx::{AnyPool, AssertSqlSafe};

use super::row::RowValues;
use super::sql::Statements;
use super::ResultLayout;
use crate::backend::url::DbDialect;
use crate::backend::StoreOutcome;
use crate::{Error, Result};

/// Attempts before giving up on a contended id (each loss means another
/// writer committed, so the next attempt normally succeeds).
const MAX_ATTEMPTS: usize = 5;

enum Attempt {
    Done(StoreOutcome),
    /// Lost a race with another writer: retry from the read.
    Retry(sqlx::Error),
}

pub async fn store(
    pool: &AnyPool,
    dialect: DbDialect,
    sql: &Statements,
    layout: ResultLayout,
    task_id: &str,
    row: &RowValues,
) -> Result<StoreOutcome> {
    let mut last = None;
    for _ in 0..MAX_ATTEMPTS {
        match attempt(pool, dialect, sql, layout, task_id, row).await? {
            Attempt::Done(outcome) => return Ok(outcome),
            Attempt::Retry(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || Error::Timeout("result store contention".into()),
        Error::Database,
    ))
}

async fn begin(pool: &AnyPool, dialect: DbDialect) -> sqlx::Result<Transaction<'static, Any>> {
    match dialect {
        DbDialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        DbDialect::Postgres | DbDialect::MySql => pool.begin().await,
    }
}

async fn attempt(
    pool: &AnyPool,
    dialect: DbDialect,
    sql: &Statements,
    layout: ResultLayout,
    task_id: &str,
    row: &RowValues,
) -> Result<Attempt> {
    let mut tx = match begin(pool, dialect).await {
        Err(e) if is_contention(&e) => return Ok(Attempt::Retry(e)),
        other => other?,
    };
    let status: Option<String> = match sqlx::query(AssertSqlSafe(sql.select_for_update.as_str()))
        .persistent(false)
        .bind(task_id.to_owned())
        .fetch_optional(&mut *tx)
        .await
    {
        Err(e) if is_contention(&e) => return Ok(Attempt::Retry(e)),
        other => other?.map(|r| r.try_get(0)).transpose()?,
    };
    if status.as_deref() == Some("SUCCESS") {
        tx.rollback().await?;
        return Ok(Attempt::Done(StoreOutcome::SuccessAlreadyStored));
    }
    let stmt = if status.is_some() {
        &sql.update
    } else {
        &sql.insert
    };
    let q = bind_row(
        sqlx::query(AssertSqlSafe(stmt.as_str())).persistent(false),
        layout,
        row,
    )
    .bind(task_id.to_owned());
    match q.execute(&mut *tx).await {
        Err(e) if is_contention(&e) => return Ok(Attempt::Retry(e)),
        other => other?,
    };
    match tx.commit().await {
        Err(e) if is_contention(&e) => Ok(Attempt::Retry(e)),
        other => other
            .map(|_| Attempt::Done(StoreOutcome::Stored))
            .map_err(Error::from),
    }
}

/// Unique violation, deadlock, serialization failure, SQLite busy/locked.
fn is_contention(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    if db.is_unique_violation() {
        return true;
    }
    let code = db.code().unwrap_or_default();
    matches!(
        code.as_ref(),
        "40001" | "40P01" | "1213" | "5" | "6" | "517" | "262"
    )
}

fn bind_row<'q>(
    q: Query<'q, Any, AnyArguments>,
    layout: ResultLayout,
    r: &RowValues,
) -> Query<'q, Any, AnyArguments> {
    let q = q
        .bind(r.status.clone())
        .bind(r.result.clone())
        .bind(r.date_done.clone())
        .bind(r.traceback.clone());
    let q = if layout == ResultLayout::Celery57 {
        q.bind(r.children.clone())
    } else {
        q
    };
    q.bind(r.name.clone())
        .bind(r.args.clone())
        .bind(r.kwargs.clone())
        .bind(r.worker.clone())
        .bind(r.retries)
        .bind(r.queue.clone())
}

/// The stored row, or None when there is none (= PENDING).
pub async fn fetch(pool: &AnyPool, sql: &Statements, task_id: &str) -> Result<Option<RowValues>> {
    let row = sqlx::query(AssertSqlSafe(sql.get.as_str()))
        .persistent(false)
        .bind(task_id.to_owned())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(read_row).transpose()
}

fn read_row(r: &AnyRow) -> Result<RowValues> {
    Ok(RowValues {
        status: r.try_get(0)?,
        result: r.try_get(1)?,
        date_done: r.try_get(2)?,
        traceback: r.try_get(3)?,
        children: r.try_get(4)?,
        name: r.try_get(5)?,
        args: r.try_get(6)?,
        kwargs: r.try_get(7)?,
        worker: r.try_get(8)?,
        retries: r
            .try_get::<Option<i64>, _>(9)?
            .and_then(|n| i32::try_from(n).ok()),
        queue: r.try_get(10)?,
    })
}
