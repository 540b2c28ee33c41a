//! Test support: fresh databases with Airflow's `task_instance`, a PgBouncer
//! child process, Redis/RabbitMQ resources. A service that is down fails the
//! test at once with a message naming it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod airflow;
pub mod pgbouncer;

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, MySqlConnection, PgConnection};

pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/";
pub const MARIADB: &str = "mysql://root@127.0.0.1:3306/";
pub const REDIS: &str = "redis://127.0.0.1:6379/";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/";

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Poll `f` until it returns `Some`, or panic after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which database server a [`FreshDb`] lives on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Server {
    Postgres,
    MariaDb,
}

/// A fresh database, dropped (forcefully) with the guard.
pub struct FreshDb {
    pub server: Server,
    pub name: String,
}

impl FreshDb {
    pub async fn create(server: Server) -> FreshDb {
        let name = unique("celeriac_scaler");
        admin(server, &format!("CREATE DATABASE {name}")).await;
        FreshDb { server, name }
    }

    pub fn url(&self) -> String {
        match self.server {
            Server::Postgres => format!("{POSTGRES}{}", self.name),
            Server::MariaDb => format!("{MARIADB}{}", self.name),
        }
    }

    /// Run SQL statements (separated by `;`) in this database.
    pub async fn exec(&self, sql: &str) {
        match self.server {
            Server::Postgres => {
                let mut c = PgConnection::connect(&self.url()).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Server::MariaDb => {
                let mut c = MySqlConnection::connect(&self.url()).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

async fn admin(server: Server, sql: &str) {
    let result = match server {
        Server::Postgres => {
            let url = format!("{POSTGRES}postgres");
            match PgConnection::connect(&url).await {
                Ok(mut c) => sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .map(drop),
                Err(e) => panic!("PostgreSQL at {url} is not reachable (start it): {e}"),
            }
        }
        Server::MariaDb => match MySqlConnection::connect(MARIADB).await {
            Ok(mut c) => sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map(drop),
            Err(e) => panic!("MariaDB at {MARIADB} is not reachable (start mariadbd): {e}"),
        },
    };
    result.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let sql = match self.server {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::MariaDb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let server = self.server;
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(admin(server, &sql)))
        })
        .join();
    }
}
