//! A transport that survives broker restarts: it holds the current
//! connection and, when an operation fails with a transient error, connects
//! again (with back-off) and retries the operation once on the new
//! connection. The AMQP transport never reconnects by itself (a dead lapin
//! connection stays dead); this wrapper is what lets a worker resume
//! consuming after RabbitMQ comes back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, RwLock};

use super::{Consumer, QueueDepth, QueueSpec, Route, Subscription, Transport};
use crate::protocol::Message;
use crate::Result;

/// Makes a fresh connection.
pub type Connector = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Transport>>> + Send + Sync>;

pub struct Reconnecting {
    connector: Connector,
    kind: &'static str,
    current: RwLock<Arc<dyn Transport>>,
    /// Serialises reconnects so a burst of failures makes one new connection.
    reconnecting: Mutex<()>,
    reconnects: AtomicU64,
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Attempts per failed operation before the error is returned to the caller
/// (which may retry later: nothing is lost, the caller's loop decides).
const ATTEMPTS: u32 = 4;

impl Reconnecting {
    pub async fn connect(connector: Connector) -> Result<Self> {
        let first = connector().await?;
        Ok(Reconnecting {
            kind: first.kind(),
            connector,
            current: RwLock::new(first),
            reconnecting: Mutex::new(()),
            reconnects: AtomicU64::new(0),
        })
    }

    /// How many times a new connection was made.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    async fn current(&self) -> Arc<dyn Transport> {
        self.current.read().await.clone()
    }

    /// Replace `failed` with a new connection unless someone already did.
    async fn replace(&self, failed: &Arc<dyn Transport>) -> Result<Arc<dyn Transport>> {
        let _one = self.reconnecting.lock().await;
        let now = self.current().await;
        if !Arc::ptr_eq(&now, failed) {
            return Ok(now);
        }
        let fresh = (self.connector)().await?;
        *self.current.write().await = fresh.clone();
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(transport = self.kind, "reconnected to the broker");
        Ok(fresh)
    }

    /// Run `op`, reconnecting with back-off on transient errors.
    async fn with_retry<T, F>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<dyn Transport>) -> BoxFuture<'static, Result<T>>,
    {
        let mut transport = self.current().await;
        let mut backoff = BACKOFF_START;
        let mut attempt = 1;
        loop {
            let err = match op(transport.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < ATTEMPTS => e,
                Err(e) => return Err(e),
            };
            tracing::warn!(transport = self.kind, error = %err, attempt, "broker operation failed; reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            attempt += 1;
            match self.replace(&transport).await {
                Ok(t) => transport = t,
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::warn!(transport = self.kind, error = %e, "reconnect failed");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl Transport for Reconnecting {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        self.with_retry(|t| {
            let spec = spec.clone();
            Box::pin(async move { t.declare_queue(&spec).await })
        })
        .await
    }

    async fn publish(&self, route: &Route, message: &Message) -> Result<()> {
        self.with_retry(|t| {
            let (route, message) = (route.clone(), message.clone());
            Box::pin(async move { t.publish(&route, &message).await })
        })
        .await
    }

    async fn consume(&self, queues: &[QueueSpec], prefetch: u16) -> Result<Box<dyn Consumer>> {
        self.with_retry(|t| {
            let queues = queues.to_vec();
            Box::pin(async move { t.consume(&queues, prefetch).await })
        })
        .await
    }

    async fn subscribe(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>> {
        self.with_retry(|t| {
            let spec = spec.clone();
            Box::pin(async move { t.subscribe(&spec).await })
        })
        .await
    }

    async fn delete_queue(&self, spec: &QueueSpec) -> Result<()> {
        self.current().await.delete_queue(spec).await
    }

    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth> {
        self.with_retry(|t| {
            let queue = queue.to_owned();
            Box::pin(async move { t.queue_depth(&queue).await })
        })
        .await
    }
}
