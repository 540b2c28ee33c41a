//! celeriac-scaler: scales Celery worker replicas from Airflow's metastore,
//! the broker and the workers' own reports. `policy` is pure; everything
//! with I/O sits behind `LoadSource` and `ReplicaTarget`.

pub mod admin;
pub mod app;
pub mod config;
pub mod control_loop;
mod error;
pub mod keda;
pub mod metrics;
pub mod policy;
pub mod source;
pub mod target;
pub mod telemetry;

pub use error::{Error, Result};
