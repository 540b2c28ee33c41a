//! What the workers themselves report: `celeriac_worker_tasks_active` and
//! `celeriac_worker_tasks_reserved` from each worker's admin `/metrics`.
//! The policy never scales below the number of busy workers, and the
//! Kubernetes target uses the per-worker detail to pick idle pods.
//!
//! Any unreadable endpoint fails the whole observation: an unknown worker
//! might be busy, so the policy holds (fallback) rather than guess.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Load, LoadSource, SourceKind, WorkerLoad};
use crate::{Error, Result};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub struct WorkersSource {
    urls: Vec<String>,
    timeout: Duration,
    client: HttpClient,
}

impl WorkersSource {
    /// `urls` are full metrics URLs (`http://10.0.0.7:9808/metrics`).
    pub fn new(urls: Vec<String>, timeout: Duration) -> Self {
        WorkersSource {
            urls,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn scrape(&self, url: &str) -> Result<WorkerLoad> {
        let fail = |reason: String| Error::WorkerMetrics {
            url: url.to_owned(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
        let fetch = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(fail(format!("HTTP {}", resp.status())));
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))??;
        let text = String::from_utf8_lossy(&body);
        parse_worker_metrics(url, &text).ok_or_else(|| {
            fail("celeriac_worker_tasks_active/_reserved missing (not a celeriac worker?)".into())
        })
    }
}

#[async_trait]
impl LoadSource for WorkersSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Workers
    }

    async fn observe(&self) -> Result<Load> {
        let scrapes = self.urls.iter().map(|u| self.scrape(u));
        let workers = futures::future::try_join_all(scrapes).await?;
        Ok(Load {
            running: workers.iter().map(|w| w.active).sum(),
            queued: workers.iter().map(|w| w.reserved).sum(),
            workers,
        })
    }
}

/// Read the two gauges from Prometheus text exposition.
pub fn parse_worker_metrics(endpoint: &str, text: &str) -> Option<WorkerLoad> {
    let gauge = |name: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (metric, value) = l.split_once(char::is_whitespace)?;
                (metric == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .map(|v| {
                if v.is_finite() && v > 0.0 {
                    v as u64
                } else {
                    0
                }
            })
    };
    Some(WorkerLoad {
        endpoint: endpoint.to_owned(),
        active: gauge("celeriac_worker_tasks_active")?,
        reserved: gauge("celeriac_worker_tasks_reserved")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_worker_gauges() {
        let text = "# HELP celeriac_worker_tasks_active Tasks executing now\n\
                    # TYPE celeriac_worker_tasks_active gauge\n\
                    celeriac_worker_tasks_active 2\n\
                    celeriac_worker_tasks_active_total 9\n\
                    celeriac_worker_tasks_reserved 1\n";
        let w = parse_worker_metrics("http://w:9808/metrics", text).unwrap();
        assert_eq!((w.active, w.reserved), (2, 1));
        assert!(w.busy());
        assert!(parse_worker_metrics("u", "celeriac_worker_tasks_active 1\n").is_none());
    }
}
