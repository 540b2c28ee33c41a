//! Remote control (spec §6): golden tests against the real Celery captures,
//! and integration tests of Mailbox + ControlClient on real Redis and RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "events/support.rs"]
mod support;

#[path = "control/golden.rs"]
mod golden;
#[path = "control/live.rs"]
mod live;
