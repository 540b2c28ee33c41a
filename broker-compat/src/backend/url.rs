//! Result-backend URLs as Celery spells them, the options that go with them,
//! and [`connect`], which picks the backend.

use std::sync::Arc;
use std::time::Duration;

use super::database::{DatabaseBackend, LegacyResult, ResultLayout};
use super::redis::RedisBackend;
use super::ResultBackend;
use crate::url::mask_password;
use crate::{Error, Result};

/// Settings that shape what a backend writes (Celery's `result_*`/`database_*`).
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// `result_expires`: TTL of Redis keys. `None` (Celery's 0/None) = no TTL.
    pub result_expires: Option<Duration>,
    /// `result_backend_transport_options.global_keyprefix` (Redis only).
    pub global_keyprefix: Option<String>,
    /// `result_extended`: store name/args/kwargs/worker/retries/queue.
    pub result_extended: bool,
    /// `database_table_names['task']`.
    pub task_table: String,
    /// `database_table_names['group']`.
    pub group_table: String,
    /// `database_table_schemas['task']`; None = the connection's default schema.
    pub task_schema: Option<String>,
    /// `database_table_schemas['group']`.
    pub group_schema: Option<String>,
    /// What to put in `result` when the table has the Celery ≤ 5.6 layout.
    pub legacy_result: LegacyResult,
    /// Layout of tables we create (existing tables are detected, never altered).
    pub create_layout: ResultLayout,
    /// Database connection pool size.
    pub max_connections: u32,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            result_expires: Some(Duration::from_secs(86_400)),
            global_keyprefix: None,
            result_extended: false,
            task_table: "celery_taskmeta".into(),
            group_table: "celery_tasksetmeta".into(),
            task_schema: None,
            group_schema: None,
            legacy_result: LegacyResult::Null,
            create_layout: ResultLayout::Celery57,
            max_connections: 4,
        }
    }
}

/// Which backend a URL names, with the URL the client library understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendUrl {
    /// `redis://` or `rediss://`, passed through.
    Redis(String),
    /// `db+<dialect>[+driver]://…`, rewritten for sqlx.
    Database(DbUrl),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbDialect {
    Postgres,
    MySql,
    Sqlite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub dialect: DbDialect,
    /// `postgres://…`, `mysql://…` or `sqlite://<path>?mode=rwc`.
    pub sqlx_url: String,
}

/// Parse a Celery `result_backend` URL. Errors carry the masked URL.
pub fn parse_backend_url(url: &str) -> Result<BackendUrl> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: mask_password(url),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("missing scheme"))?;
    if scheme == "redis" || scheme == "rediss" {
        return Ok(BackendUrl::Redis(url.to_owned()));
    }
    let engine = scheme
        .strip_prefix("db+")
        .ok_or_else(|| invalid("unsupported result backend scheme"))?;
    // SQLAlchemy URL: dialect[+driver]; the driver part is Python-only.
    let dialect = engine.split('+').next().unwrap_or_default();
    let db = |dialect, sqlx_url| Ok(BackendUrl::Database(DbUrl { dialect, sqlx_url }));
    match dialect {
        "postgresql" | "postgres" => db(DbDialect::Postgres, format!("postgres://{rest}")),
        "mysql" | "mariadb" => db(DbDialect::MySql, format!("mysql://{rest}")),
        "sqlite" => sqlite_url(rest).map_or_else(
            || Err(invalid("sqlite needs a file path (db+sqlite:///file.db)")),
            |u| db(DbDialect::Sqlite, u),
        ),
        _ => Err(invalid("unsupported database dialect")),
    }
}

/// SQLAlchemy: `sqlite:///rel.db` is relative, `sqlite:////abs.db` absolute
/// (the part after `://` is `/rel.db` or `//abs.db`). The file is created
/// if missing, as SQLite does for Python.
fn sqlite_url(rest: &str) -> Option<String> {
    let path = rest.strip_prefix('/')?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return None;
    }
    Some(format!("sqlite://{path}?mode=rwc"))
}

/// Connect to the result backend named by a Celery URL.
pub async fn connect(url: &str, opts: &BackendOptions) -> Result<Arc<dyn ResultBackend>> {
    match parse_backend_url(url)? {
        BackendUrl::Redis(u) => Ok(Arc::new(RedisBackend::connect(&u, opts).await?)),
        BackendUrl::Database(db) => Ok(Arc::new(DatabaseBackend::connect(&db, opts).await?)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sqlx(url: &str) -> (DbDialect, String) {
        match parse_backend_url(url) {
            Ok(BackendUrl::Database(d)) => (d.dialect, d.sqlx_url),
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn celery_spellings() {
        assert_eq!(
            parse_backend_url("rediss://:pw@h:6380/1?ssl_cert_reqs=required").ok(),
            Some(BackendUrl::Redis(
                "rediss://:pw@h:6380/1?ssl_cert_reqs=required".into()
            ))
        );
        for u in [
            "db+postgresql://u:p@h/db",
            "db+postgresql+psycopg2://u:p@h/db",
            "db+postgresql+psycopg://u:p@h/db",
            "db+postgresql+asyncpg://u:p@h/db",
        ] {
            assert_eq!(sqlx(u), (DbDialect::Postgres, "postgres://u:p@h/db".into()));
        }
        for u in [
            "db+mysql://r@h/db",
            "db+mysql+pymysql://r@h/db",
            "db+mysql+mysqldb://r@h/db",
        ] {
            assert_eq!(sqlx(u), (DbDialect::MySql, "mysql://r@h/db".into()));
        }
        assert_eq!(
            sqlx("db+sqlite:///relative.db").1,
            "sqlite://relative.db?mode=rwc"
        );
        assert_eq!(
            sqlx("db+sqlite:////abs/path.db").1,
            "sqlite:///abs/path.db?mode=rwc"
        );
    }

    #[test]
    fn invalid_urls_are_masked() {
        for u in [
            "amqp://u:secret@h//",
            "db+oracle://u:secret@h/x",
            "nonsense",
        ] {
            match parse_backend_url(u) {
                Err(Error::InvalidUrl { url, .. }) => assert!(!url.contains("secret"), "{url}"),
                other => panic!("{u}: {other:?}"),
            }
        }
    }
}
