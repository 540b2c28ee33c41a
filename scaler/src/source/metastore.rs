//! Load from Airflow's metadata database: queued + running rows of
//! `task_instance` (spec §8), as the Helm chart's KEDA query counts them.
//!
//! PgBouncer (transaction pooling) safe: every poll is one explicit
//! read-only transaction, statements are never cached or named
//! (`persistent(false)`, statement cache 0), the statement timeout is
//! `SET LOCAL` (transaction-scoped), and no startup parameter PgBouncer
//! rejects (`extra_float_digits`) is sent.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlRow};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Row};

pub use super::metastore_sql::{
    executor_filter_from_airflow, sqlx_url, CountQuery, Dialect, ExecutorFilter,
};
use super::{Load, LoadSource, SourceKind};
use crate::{Error, Result};

/// What to ask the metastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetastoreQuery {
    /// The built-in count, filtered by queues and executors.
    Count(CountQuery),
    /// A user query (like KEDA's `query`) returning one row: either columns
    /// `running` and `queued`, or one number = tasks that need a slot.
    Custom(String),
}

enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
}

pub struct MetastoreSource {
    pool: Pool,
    query: MetastoreQuery,
    timeout: Duration,
}

impl MetastoreSource {
    /// Parse the URL (SQLAlchemy or sqlx form) and prepare a lazy pool: the
    /// scaler starts, and falls back, even while the database is down.
    pub fn new(url: &str, query: MetastoreQuery, timeout: Duration) -> Result<Self> {
        let (dialect, url) = sqlx_url(url).map_err(Error::Unexpected)?;
        let pool = match dialect {
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(&url)?
                    .extra_float_digits(None)
                    .statement_cache_capacity(0)
                    .application_name("celeriac-scaler");
                Pool::Postgres(pool_options::<sqlx::Postgres>(timeout).connect_lazy_with(opts))
            }
            Dialect::MySql => {
                let opts = MySqlConnectOptions::from_str(&url)?.statement_cache_capacity(0);
                Pool::MySql(pool_options::<sqlx::MySql>(timeout).connect_lazy_with(opts))
            }
        };
        Ok(MetastoreSource {
            pool,
            query,
            timeout,
        })
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    async fn observe_postgres(&self, pool: &PgPool) -> Result<Load> {
        let mut tx = pool.begin_with("BEGIN READ ONLY").await?;
        let set = format!("SET LOCAL statement_timeout = {}", self.timeout_ms());
        sqlx::raw_sql(AssertSqlSafe(set)).execute(&mut *tx).await?;
        let load = match &self.query {
            MetastoreQuery::Count(q) => {
                let (sql, binds) = q.sql(Dialect::Postgres, self.timeout_ms());
                let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                for b in binds {
                    query = query.bind(b);
                }
                counts_pg(&query.fetch_one(&mut *tx).await?)?
            }
            MetastoreQuery::Custom(sql) => {
                let rows = sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
                    .fetch_all(&mut *tx)
                    .await?;
                custom_load(rows.first().map(text_columns_pg).transpose()?)?
            }
        };
        tx.commit().await?;
        Ok(load)
    }

    async fn observe_mysql(&self, pool: &MySqlPool) -> Result<Load> {
        let mut tx = pool.begin_with("START TRANSACTION READ ONLY").await?;
        let load = match &self.query {
            MetastoreQuery::Count(q) => {
                let (sql, binds) = q.sql(Dialect::MySql, self.timeout_ms());
                let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                for b in binds {
                    query = query.bind(b);
                }
                counts_mysql(&query.fetch_one(&mut *tx).await?)?
            }
            MetastoreQuery::Custom(sql) => {
                let rows = sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
                    .fetch_all(&mut *tx)
                    .await?;
                custom_load(rows.first().map(text_columns_mysql).transpose()?)?
            }
        };
        tx.commit().await?;
        Ok(load)
    }
}

/// Pool settings shared by both dialects: few connections, bounded waits.
fn pool_options<DB: sqlx::Database>(timeout: Duration) -> PoolOptions<DB> {
    PoolOptions::<DB>::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
}

#[async_trait]
impl LoadSource for MetastoreSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Metastore
    }

    async fn observe(&self) -> Result<Load> {
        // The server-side timeout bounds the query; this bounds connecting too.
        let limit = self.timeout + Duration::from_secs(1);
        let fut = async {
            match &self.pool {
                Pool::Postgres(p) => self.observe_postgres(p).await,
                Pool::MySql(p) => self.observe_mysql(p).await,
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| Error::Timeout(limit))?
    }
}

fn counts_pg(row: &PgRow) -> Result<Load> {
    Ok(Load {
        running: non_negative(row.try_get::<i64, _>("running")?),
        queued: non_negative(row.try_get::<i64, _>("queued")?),
        workers: Vec::new(),
    })
}

fn counts_mysql(row: &MySqlRow) -> Result<Load> {
    Ok(Load {
        running: non_negative(row.try_get::<i64, _>("running")?),
        queued: non_negative(row.try_get::<i64, _>("queued")?),
        workers: Vec::new(),
    })
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A row of the simple (text) protocol as (column name, text value) pairs:
/// whatever the column type (bigint, numeric, float), its text parses.
fn text_columns_pg(row: &PgRow) -> Result<Vec<(String, Option<String>)>> {
    use sqlx::Column;
    row.columns()
        .iter()
        .map(|c| Ok((c.name().to_owned(), row.try_get_unchecked(c.ordinal())?)))
        .collect()
}

fn text_columns_mysql(row: &MySqlRow) -> Result<Vec<(String, Option<String>)>> {
    use sqlx::Column;
    row.columns()
        .iter()
        .map(|c| Ok((c.name().to_owned(), row.try_get_unchecked(c.ordinal())?)))
        .collect()
}

/// Interpret a custom query's row: `running`/`queued` columns, or the first
/// column as the number of tasks. No row means no load.
pub fn custom_load(row: Option<Vec<(String, Option<String>)>>) -> Result<Load> {
    let Some(cols) = row else {
        return Ok(Load::default());
    };
    let named = |name: &str| cols.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    if let (Some(r), Some(q)) = (named("running"), named("queued")) {
        return Ok(Load {
            running: number(r.1.as_deref())?,
            queued: number(q.1.as_deref())?,
            workers: Vec::new(),
        });
    }
    let first = cols
        .first()
        .ok_or_else(|| Error::Unexpected("the custom query returned no column".into()))?;
    Ok(Load {
        running: 0,
        queued: number(first.1.as_deref())?,
        workers: Vec::new(),
    })
}

/// A count from text: integers, decimals (`ceil` applies) or NULL (= 0).
fn number(text: Option<&str>) -> Result<u64> {
    let Some(t) = text.map(str::trim) else {
        return Ok(0);
    };
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f.ceil() as u64),
        _ => Err(Error::Unexpected(format!(
            "the custom query returned {t:?}, not a count"
        ))),
    }
}
