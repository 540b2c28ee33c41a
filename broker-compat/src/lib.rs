//! Celery 5.x wire compatibility for celeriac.
//!
//! Everything a Python Celery peer can observe lives here: the task message
//! (protocol v1 and v2), kombu's Redis and AMQP transports, the Redis and
//! database result backends, events and remote control (pidbox).
//!
//! Invariants (see ARCHITECTURE.md): this crate never reads the environment,
//! installs signal handlers or exits the process; `protocol` does no I/O.

pub mod backend;
mod batch;
pub mod control;
pub mod error;
pub mod events;
pub mod protocol;
pub mod transport;
pub mod url;

pub use error::{DecodeError, DecodeErrorKind, Error, Result};
