//! A shared multiplexed connection that reconnects after a connection
//! error. The command that hit the error fails (transient `Error::Redis`);
//! it is never re-sent behind the caller's back, so a reconnect can neither
//! lose nor double a message. The next command opens a fresh connection.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::Mutex;

use crate::Result;

use super::source::Source;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SHARED_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Owns the current connection (if any) for all clones of a transport.
pub(crate) struct Connector {
    source: Source,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl Connector {
    pub(crate) fn new(source: Source) -> Arc<Self> {
        Arc::new(Connector {
            source,
            current: Mutex::new(None),
        })
    }

    /// The live connection, opening one if the last one broke.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<Conn> {
        let mut current = self.current.lock().await;
        let mc = match current.as_ref() {
            Some(mc) => mc.clone(),
            None => {
                let mc = self.open(SHARED_RESPONSE_TIMEOUT).await?;
                *current = Some(mc.clone());
                mc
            }
        };
        Ok(Conn {
            mc,
            connector: self.clone(),
        })
    }

    /// A new connection, resolved like the shared one, whose replies may take
    /// up to `response_timeout` (a blocking command needs longer than 30 s).
    pub(crate) async fn open(&self, response_timeout: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        let client = self.source.client().await?;
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// A client for a dedicated connection (pub/sub), resolved like ours.
    pub(crate) async fn client(&self) -> Result<redis::Client> {
        self.source.client().await
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// One handle on the shared connection; drops it from the [`Connector`]
/// when a command fails with a connection error.
#[derive(Clone)]
pub(crate) struct Conn {
    mc: MultiplexedConnection,
    connector: Arc<Connector>,
}

impl Conn {
    async fn check<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r {
            if is_connection_error(e) {
                self.connector.forget().await;
            }
        }
        r
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.mc.req_packed_command(cmd).await;
            self.check(r).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.mc.req_packed_commands(pipeline, offset, count).await;
            self.check(r).await
        })
    }

    fn get_db(&self) -> i64 {
        self.mc.get_db()
    }
}
