//! Shared helpers for celeriac integration and interop tests: the Python
//! Celery venv and app, child processes that die with the test, polling with
//! deadlines, fresh names, and the real services with per-test isolation.

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
