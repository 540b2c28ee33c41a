//! The scaler library's one error type. `is_transient` tells the control
//! loop whether the next poll may succeed (it always retries; the flag only
//! decides how loudly to log).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metastore: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] broker_compat::Error),
    /// A worker's /metrics endpoint could not be read.
    #[error("worker metrics {url}: {reason}")]
    WorkerMetrics { url: String, reason: String },
    /// The custom query or the database returned something unusable.
    #[error("unexpected result: {0}")]
    Unexpected(String),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The replica target refused or failed.
    #[error("target: {0}")]
    Target(String),
}

impl Error {
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            Error::Broker(e) => e.is_transient(),
            Error::WorkerMetrics { .. } | Error::Timeout(_) => true,
            Error::Unexpected(_) | Error::Target(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
