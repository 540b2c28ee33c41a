//! Database result backend (`celery_taskmeta`) via sqlx (spec §4.3), on
//! PostgreSQL, MySQL/MariaDB and SQLite, through sqlx's `Any` driver so one
//! write algorithm serves all three. Every query is sent unprepared-by-name
//! (`persistent(false)`), so PgBouncer in transaction mode works.

mod group;
mod pickle;
mod row;
mod schema;
mod sql;
mod store;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use super::url::{BackendOptions, DbDialect, DbUrl};
use super::{ResultBackend, StoreOutcome, TaskResult};
use crate::Result;

pub use pickle::dumps as pickle_dumps;
pub use schema::TaskTable;
pub use sql::IdSource;

/// The two `celery_taskmeta` layouts Celery has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultLayout {
    /// Celery 5.7: `result` holds the serializer's (JSON) bytes; has
    /// `children` and `stamps` columns.
    Celery57,
    /// Celery ≤ 5.6 (Airflow 3.3): `result` is a Python pickle (`PickleType`);
    /// no `children`/`stamps`.
    Celery56,
}

/// What to store in `result` for the ≤ 5.6 layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegacyResult {
    /// NULL: read as "no value" by every reader. **What Airflow needs**: its
    /// scheduler only reads `status`, and NULL can never be mistaken for bad
    /// exception info (which crashes it, airflow.md §4).
    #[default]
    Null,
    /// A pickle of the JSON value (exception dict for FAILURE, as Celery ≤ 5.6
    /// stores it), for Python clients that read `AsyncResult.result`.
    Pickle,
}

/// Celery's `DatabaseBackend`.
pub struct DatabaseBackend {
    pool: AnyPool,
    dialect: DbDialect,
    table: TaskTable,
    statements: sql::Statements,
    group_insert: String,
    opts: BackendOptions,
}

impl DatabaseBackend {
    /// Connect, and create the tables if missing (as Celery does on first use).
    pub async fn connect(url: &DbUrl, opts: &BackendOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .connect(&url.sqlx_url)
            .await?;
        let tables = tables(url.dialect, opts)?;
        let table = schema::prepare(&pool, url.dialect, &tables, opts.create_layout).await?;
        let statements = sql::Statements::new(url.dialect, &tables.task, table.layout, &table.id);
        let group_insert = group::insert_sql(url.dialect, &tables.group, &table.id);
        Ok(DatabaseBackend {
            pool,
            dialect: url.dialect,
            table,
            statements,
            group_insert,
            opts: opts.clone(),
        })
    }

    /// The layout detected (or created) for the task table.
    pub fn layout(&self) -> ResultLayout {
        self.table.layout
    }

    /// How new rows get their id.
    pub fn id_source(&self) -> &IdSource {
        &self.table.id
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `GroupResult.save()`: insert the group row (a second save of the
    /// same group id fails on the unique constraint, as in Celery).
    pub async fn save_group(&self, group_id: &str, member_ids: &[String]) -> Result<()> {
        let layout = self.table.layout;
        let result = group::encode(group_id, member_ids, layout, self.opts.legacy_result);
        let now = row::date_text(chrono::Utc::now());
        group::insert(&self.pool, &self.group_insert, group_id, result, now).await
    }
}

fn tables(dialect: DbDialect, opts: &BackendOptions) -> Result<schema::Tables> {
    // SQLite has no schemas in Celery's sense (attached databases only).
    let schema = |s: &Option<String>| match dialect {
        DbDialect::Sqlite => None,
        _ => s.clone(),
    };
    Ok(schema::Tables {
        task: sql::Qualified::new(
            "database_table_names",
            schema(&opts.task_schema).as_deref(),
            &opts.task_table,
        )?,
        group: sql::Qualified::new(
            "database_table_names",
            schema(&opts.group_schema).as_deref(),
            &opts.group_table,
        )?,
    })
}

#[async_trait]
impl ResultBackend for DatabaseBackend {
    fn kind(&self) -> &'static str {
        "database"
    }

    async fn store(&self, result: &TaskResult) -> Result<StoreOutcome> {
        let layout = self.table.layout;
        let values = row::encode(
            result,
            layout,
            self.opts.legacy_result,
            self.opts.result_extended,
        );
        store::store(
            &self.pool,
            self.dialect,
            &self.statements,
            layout,
            &result.task_id,
            &values,
        )
        .await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskResult>> {
        let Some(values) = store::fetch(&self.pool, &self.statements, task_id).await? else {
            return Ok(None);
        };
        row::decode(
            task_id,
            values,
            self.table.layout,
            self.opts.result_extended,
        )
        .map(Some)
    }
}
