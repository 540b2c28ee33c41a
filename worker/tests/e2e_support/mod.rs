//! Helpers of the Airflow end-to-end suite (`e2e_airflow.rs`): a real
//! Airflow 3.3 stack on this machine's PostgreSQL and Redis/RabbitMQ,
//! workers, the metadata DB, and the processes' cleanup.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod checks;
pub mod env;
pub mod http;
pub mod metadb;
pub mod proc;
pub mod stack;
pub mod workers;
