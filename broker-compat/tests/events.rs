//! Events (spec §5): golden tests against the real Celery captures, and
//! integration tests that publish and receive on real Redis and RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "events/support.rs"]
mod support;

#[path = "events/golden.rs"]
mod golden;
#[path = "events/live.rs"]
mod live;
