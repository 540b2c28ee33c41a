//! celeriac-worker: consumes Celery task messages exactly as a Python Celery
//! worker would and runs each task in an isolated runtime. The binary is a
//! thin `main`; tests build the same [`app::App`].

pub mod admin;
pub mod app;
pub mod broker;
pub mod config;
pub mod consume;
pub mod control;
pub mod events;
pub mod execute;
pub mod logserver;
pub mod metrics;
pub mod request;
pub mod routing;
pub mod runtime;
pub mod state;
pub mod tasklog;
pub mod tasks;
pub mod telemetry;
