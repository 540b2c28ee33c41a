//! Golden tests: every Celery/kombu wire capture in `tests/fixtures` decodes,
//! and what we encode again is byte-for-byte what Celery wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "golden/fixtures.rs"]
mod fixtures;

#[path = "golden/airflow.rs"]
mod airflow;
#[path = "golden/cases.rs"]
mod cases;
#[path = "golden/envelopes.rs"]
mod envelopes;
#[path = "golden/handmade.rs"]
mod handmade;
#[path = "golden/results.rs"]
mod results;
#[path = "golden/tasks.rs"]
mod tasks;
