//! Database result backend against the real PostgreSQL, MariaDB and SQLite on
//! this machine. Every test gets a fresh database (dropped by a guard) or a
//! fresh SQLite file; rows are compared with what Celery 5.7 / SQLAlchemy 2.1
//! wrote (`db-schema-pg_dump.sql`, `db-rows-*.json`) and, for the ≤ 5.6
//! layout, with Airflow's captured `celery_taskmeta` rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use broker_compat::backend::database::{DatabaseBackend, LegacyResult, ResultLayout};
use broker_compat::backend::url::{parse_backend_url, BackendUrl, DbUrl};
use broker_compat::backend::{
    BackendOptions, ExceptionInfo, ExtendedMeta, ResultBackend, StoreOutcome, TaskResult,
};
use chrono::NaiveDateTime;
use serde_json::{json, Value};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MY_ADMIN: &str = "mysql://root@127.0.0.1:3306/";

fn fixture(dir: &str, name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Postgres,
    MariaDb,
}

/// A fresh database, dropped (with its connections) when the guard goes.
struct FreshDb {
    server: Server,
    name: String,
}

impl FreshDb {
    async fn new(server: Server) -> Self {
        let name = format!("celeriac_test_{}", uuid::Uuid::new_v4().simple());
        admin(server, &format!("CREATE DATABASE {name}")).await;
        FreshDb { server, name }
    }

    fn url(&self) -> String {
        match self.server {
            Server::Postgres => format!(
                "db+postgresql+psycopg2://postgres@127.0.0.1:5432/{}",
                self.name
            ),
            Server::MariaDb => format!("db+mysql+pymysql://root@127.0.0.1:3306/{}", self.name),
        }
    }

    fn sqlx_url(&self) -> String {
        match parse_backend_url(&self.url()).unwrap() {
            BackendUrl::Database(DbUrl { sqlx_url, .. }) => sqlx_url,
            other => panic!("{other:?}"),
        }
    }

    async fn exec(&self, sql: &str) {
        let mut c = sqlx::AnyConnection::connect(&self.sqlx_url())
            .await
            .unwrap();
        c.execute(AssertSqlSafe(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let (server, name) = (self.server, self.name.clone());
        // Drop is synchronous: run the DROP on its own runtime and thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let sql = match server {
                Server::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                Server::MariaDb => format!("DROP DATABASE IF EXISTS {name}"),
            };
            rt.block_on(admin(server, &sql));
        })
        .join();
    }
}

async fn admin(server: Server, sql: &str) {
    sqlx::any::install_default_drivers();
    let url = match server {
        Server::Postgres => PG_ADMIN,
        Server::MariaDb => MY_ADMIN,
    };
    let mut c = sqlx::AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url} is required for this test: {e}"));
    c.execute(AssertSqlSafe(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn backend(url: &str, opts: &BackendOptions) -> DatabaseBackend {
    match parse_backend_url(url).unwrap() {
        BackendUrl::Database(db) => DatabaseBackend::connect(&db, opts)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}")),
        other => panic!("{other:?}"),
    }
}

fn extended_opts() -> BackendOptions {
    BackendOptions {
        result_extended: true,
        ..BackendOptions::default()
    }
}

#[path = "database_backend/rows.rs"]
mod rows;
#[path = "database_backend/schema.rs"]
mod schema;
