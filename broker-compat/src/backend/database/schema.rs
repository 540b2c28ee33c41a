//! Table creation exactly as SQLAlchemy creates Celery's models, and
//! detection of the layout an existing table has.
//!
//! SQLAlchemy's `Sequence('task_id_sequence')` on `id` becomes a real
//! sequence on PostgreSQL and on MariaDB ≥ 10.3 (the dialect has
//! `supports_sequences` there, and then emits no AUTO_INCREMENT), and is
//! ignored on MySQL (AUTO_INCREMENT) and SQLite (`sqlite_autoincrement`).

use sqlx::AnyPool;
use sqlx::{AssertSqlSafe, Executor, Row};

use super::sql::{as_text, param, IdSource, Qualified};
use super::ResultLayout;
use crate::backend::url::DbDialect;
use crate::Result;

/// What we learned about the task table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTable {
    pub layout: ResultLayout,
    pub id: IdSource,
}

/// Names of the two tables and where their sequences live.
#[derive(Debug, Clone)]
pub struct Tables {
    pub task: Qualified,
    pub group: Qualified,
}

/// Detect the task table, creating both tables (and sequences) if missing.
pub async fn prepare(
    pool: &AnyPool,
    dialect: DbDialect,
    tables: &Tables,
    create_layout: ResultLayout,
) -> Result<TaskTable> {
    if let Some(found) = detect(pool, dialect, &tables.task).await? {
        return Ok(found);
    }
    let sequences = uses_sequences(pool, dialect).await?;
    create(pool, dialect, tables, create_layout, sequences).await?;
    detect(pool, dialect, &tables.task).await?.ok_or_else(|| {
        crate::Error::Protocol(format!("table {} missing after CREATE", tables.task.sql()))
    })
}

async fn uses_sequences(pool: &AnyPool, dialect: DbDialect) -> Result<bool> {
    Ok(match dialect {
        DbDialect::Postgres => true,
        DbDialect::Sqlite => false,
        DbDialect::MySql => {
            let row = sqlx::query("SELECT VERSION()")
                .persistent(false)
                .fetch_one(pool)
                .await?;
            mariadb_has_sequences(&row.try_get::<String, _>(0)?)
        }
    })
}

/// `10.11.19-MariaDB-0+deb12u1` → true; MySQL `8.0.36` → false.
fn mariadb_has_sequences(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    let mut nums = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = nums.next().unwrap_or(0);
    let minor = nums.next().unwrap_or(0);
    (major, minor) >= (10, 3)
}

/// Columns of the table → layout; `None` when the table does not exist.
async fn detect(
    pool: &AnyPool,
    dialect: DbDialect,
    table: &Qualified,
) -> Result<Option<TaskTable>> {
    let columns = columns(pool, dialect, table).await?;
    if columns.is_empty() {
        return Ok(None);
    }
    let layout = if columns
        .iter()
        .any(|(c, _)| c.eq_ignore_ascii_case("children"))
    {
        ResultLayout::Celery57
    } else {
        ResultLayout::Celery56
    };
    let id_auto = columns.iter().any(|(c, extra)| {
        c.eq_ignore_ascii_case("id") && extra.to_ascii_lowercase().contains("auto_increment")
    });
    let id = match dialect {
        DbDialect::Postgres => IdSource::Sequence(table.sibling("task_id_sequence").sql()),
        DbDialect::MySql if !id_auto => IdSource::Sequence(table.sibling("task_id_sequence").sql()),
        DbDialect::MySql | DbDialect::Sqlite => IdSource::AutoIncrement,
    };
    Ok(Some(TaskTable { layout, id }))
}

/// `(column name, MySQL "extra" or "")` for each column.
async fn columns(
    pool: &AnyPool,
    dialect: DbDialect,
    table: &Qualified,
) -> Result<Vec<(String, String)>> {
    let schema_cond = match (&table.schema, dialect) {
        (Some(_), _) => format!("table_schema = {}", param(dialect, 2)),
        (None, DbDialect::Postgres) => "table_schema = current_schema()".to_owned(),
        (None, _) => "table_schema = DATABASE()".to_owned(),
    };
    let sql = match dialect {
        DbDialect::Sqlite => "SELECT name, '' FROM pragma_table_info(?)".to_owned(),
        DbDialect::Postgres => format!(
            "SELECT {}, '' FROM information_schema.columns WHERE table_name = $1 AND {schema_cond}",
            as_text(dialect, "column_name")
        ),
        DbDialect::MySql => format!(
            "SELECT {}, {} FROM information_schema.columns WHERE table_name = ? AND {schema_cond}",
            as_text(dialect, "column_name"),
            as_text(dialect, "extra")
        ),
    };
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .bind(table.name.clone());
    if dialect != DbDialect::Sqlite {
        if let Some(s) = &table.schema {
            q = q.bind(s.clone());
        }
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect()
}

async fn create(
    pool: &AnyPool,
    dialect: DbDialect,
    tables: &Tables,
    layout: ResultLayout,
    sequences: bool,
) -> Result<()> {
    let ddl = ddl(dialect, tables, layout, sequences);
    match dialect {
        // Workers starting together must not race on CREATE: serialize them.
        DbDialect::Postgres => {
            let mut tx = pool.begin().await?;
            tx.execute("SELECT pg_advisory_xact_lock(7262381)").await?;
            for stmt in &ddl {
                tx.execute(AssertSqlSafe(stmt.as_str())).await?;
            }
            tx.commit().await?;
        }
        DbDialect::MySql => {
            // DDL commits implicitly on MySQL: a named lock serializes instead.
            let mut conn = pool.acquire().await?;
            conn.execute("SELECT GET_LOCK('celeriac_result_schema', 60)")
                .await?;
            let mut outcome = Ok(());
            for stmt in &ddl {
                if let Err(e) = conn.execute(AssertSqlSafe(stmt.as_str())).await {
                    outcome = Err(e);
                    break;
                }
            }
            conn.execute("SELECT RELEASE_LOCK('celeriac_result_schema')")
                .await?;
            outcome?;
        }
        DbDialect::Sqlite => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for stmt in &ddl {
                tx.execute(AssertSqlSafe(stmt.as_str())).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// The DDL SQLAlchemy emits for Celery's `Task` and `TaskSet` models
/// (`IF NOT EXISTS` added so concurrent first starts are harmless).
pub fn ddl(
    dialect: DbDialect,
    tables: &Tables,
    layout: ResultLayout,
    sequences: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let (bin, ts) = match dialect {
        DbDialect::Postgres => ("BYTEA", "TIMESTAMP WITHOUT TIME ZONE"),
        DbDialect::MySql | DbDialect::Sqlite => ("BLOB", "DATETIME"),
    };
    let extra = if layout == ResultLayout::Celery57 {
        format!("\tchildren {bin},\n")
    } else {
        String::new()
    };
    let stamps = if layout == ResultLayout::Celery57 {
        format!("\tstamps {bin},\n")
    } else {
        String::new()
    };
    let task_cols = format!(
        "\ttask_id VARCHAR(155),\n\tstatus VARCHAR(50),\n\tresult {bin},\n\tdate_done {ts},\n\
         \ttraceback TEXT,\n{extra}\tname VARCHAR(155),\n\targs {bin},\n\tkwargs {bin},\n\
         \tworker VARCHAR(155),\n\tretries INTEGER,\n\tqueue VARCHAR(155),\n{stamps}"
    );
    let group_cols = format!("\ttaskset_id VARCHAR(155),\n\tresult {bin},\n\tdate_done {ts},\n");
    for (table, cols, seq, unique) in [
        (&tables.task, &task_cols, "task_id_sequence", "task_id"),
        (
            &tables.group,
            &group_cols,
            "taskset_id_sequence",
            "taskset_id",
        ),
    ] {
        if sequences {
            out.push(format!(
                "CREATE SEQUENCE IF NOT EXISTS {}",
                table.sibling(seq).sql()
            ));
        }
        out.extend(table_ddl(dialect, table, cols, unique, sequences));
    }
    out
}

fn table_ddl(
    dialect: DbDialect,
    table: &Qualified,
    cols: &str,
    unique: &str,
    sequences: bool,
) -> Vec<String> {
    let t = table.sql();
    let index = format!("ix_{}_date_done", table.name);
    match dialect {
        DbDialect::Postgres => vec![
            format!("CREATE TABLE IF NOT EXISTS {t} (\n\tid INTEGER NOT NULL,\n{cols}\tPRIMARY KEY (id),\n\tUNIQUE ({unique})\n)"),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (date_done)"),
        ],
        // MySQL has no CREATE INDEX IF NOT EXISTS: the index goes inline.
        DbDialect::MySql => {
            let auto = if sequences { "" } else { " AUTO_INCREMENT" };
            vec![format!(
                "CREATE TABLE IF NOT EXISTS {t} (\n\tid INTEGER NOT NULL{auto},\n{cols}\tPRIMARY KEY (id),\n\
                 \tUNIQUE ({unique}),\n\tINDEX {index} (date_done)\n)"
            )]
        }
        DbDialect::Sqlite => vec![
            format!("CREATE TABLE IF NOT EXISTS {t} (\n\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,\n{cols}\tUNIQUE ({unique})\n)"),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (date_done)"),
        ],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::mariadb_has_sequences;

    #[test]
    fn mariadb_versions() {
        assert!(mariadb_has_sequences("10.11.19-MariaDB-0+deb12u1"));
        assert!(!mariadb_has_sequences("10.2.44-MariaDB"));
        assert!(!mariadb_has_sequences("8.0.36"));
    }
}
