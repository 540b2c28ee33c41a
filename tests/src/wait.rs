//! Polling with a deadline: the only way tests wait for something to happen.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Poll `probe` every `poll` until it returns `Some`, for at most `timeout`.
/// A probe error aborts the wait at once; a timeout is an error naming `what`
/// and the last progress the probe reported through `Err`-free polling.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(poll).await;
    }
}
