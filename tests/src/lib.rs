//! Shared helpers for celeriac integration and interop tests: the Python
//! Celery venv and app, child processes that die with the test, polling with
//! deadlines, fresh names, and the real services with per-test isolation.
//!
//! Run: `cargo nextest run -p celeriac-tests` (or `cargo test -p celeriac-tests`).
//! Needs Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672 (guest/guest,
//! `rabbitmqctl` on PATH), PostgreSQL 127.0.0.1:5432 (user postgres, trust),
//! `python3` with venv/ensurepip, and PyPI the first time: the venv with
//! `python/requirements.txt` is built once under the cargo target directory
//! (or at `$CELERIAC_TEST_VENV`) and reused while that file is unchanged.

pub mod names;
pub mod postgres;
pub mod process;
pub mod published;
pub mod python;
pub mod script;
pub mod services;
pub mod venv;
pub mod wait;

pub use names::{key_prefix, task_id, unique};
pub use process::ChildGuard;
pub use python::PyApp;
pub use venv::{python_bin, venv};
pub use wait::wait_until;
