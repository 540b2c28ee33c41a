//! A fresh PostgreSQL database per test, dropped when the guard goes.

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::names::unique;
use crate::services::POSTGRES_URL;

pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    /// `CREATE DATABASE celeriac_test_<random>`; fails loudly if PostgreSQL is down.
    pub async fn create() -> Result<Self> {
        let name = unique("celeriac_test").replace('-', "_");
        let mut conn = admin().await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase { name })
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>` (sqlx, broker-compat).
    pub fn url(&self) -> String {
        format!("{POSTGRES_URL}{}", self.name)
    }

    /// The same database as Celery's SQLAlchemy backend URL
    /// (`db+postgresql://…`, psycopg2).
    pub fn celery_url(&self) -> String {
        format!("db+postgresql://postgres@127.0.0.1:5432/{}", self.name)
    }
}

async fn admin() -> Result<PgConnection> {
    let url = format!("{POSTGRES_URL}postgres");
    PgConnection::connect(&url).await.with_context(|| {
        format!("PostgreSQL at {url} is not reachable (start it: pg_ctlcluster <ver> main start)")
    })
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: use a thread with its own.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut conn = admin().await?;
                sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}
