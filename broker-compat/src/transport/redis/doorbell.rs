//! The doorbell: an idle consumer hears of a new message at once instead
//! of at its next poll.
//!
//! Why: an idle pop loop polls `pop.lua` with a back-off of up to
//! `poll_max_interval` (50 ms), so a task sent to an idle worker waited
//! ~25 ms on average before it was seen; Celery blocks in BRPOP and sees it
//! at once. A blocking command cannot run inside the atomic pop script, and
//! a bare BRPOP would take the message with no record of it in `unacked`
//! (kombu's crash window). So the doorbell only listens: on a dedicated
//! connection it blocks in `BLMOVE q q RIGHT RIGHT`, which returns as soon
//! as the queue's list holds a message and moves that message from the tail
//! back to the tail — the list is unchanged, nothing is consumed — and then
//! wakes the pop loop, whose script takes the message as before.
//!
//! It listens on each queue's step-0 list, where every message without a
//! priority goes; messages of the other priority lists are still found by
//! the poll. Redis before 6.2 has no BLMOVE: the doorbell logs that once and
//! the poll alone remains.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::transport::QueueSpec;
use crate::{Error, Result};

/// How long one BLMOVE blocks; an idle worker sends one per queue per this.
const BLOCK: Duration = Duration::from_secs(5);

/// Pause after a failed BLMOVE (the connection is then opened again).
const RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Doorbell {
    inner: Arc<Inner>,
    /// True while the pop loop found the queues empty: only then is a
    /// listener blocked (a busy loop pops without being told).
    idle: watch::Sender<bool>,
    /// Woken when a listened-to list received a message.
    pub(crate) rang: Notify,
    cancel: CancellationToken,
    /// One listener per queue, by queue name.
    listeners: Mutex<HashMap<String, CancellationToken>>,
    /// Set once BLMOVE was refused (Redis < 6.2): no listener starts again.
    unsupported: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new(inner: Arc<Inner>, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Doorbell {
            inner,
            idle: watch::Sender::new(false),
            rang: Notify::new(),
            cancel,
            listeners: Mutex::new(HashMap::new()),
            unsupported: AtomicBool::new(false),
        })
    }

    /// The pop loop found nothing (`true`) or popped something (`false`).
    pub(crate) fn set_idle(&self, idle: bool) {
        self.idle
            .send_if_modified(|v| std::mem::replace(v, idle) != idle);
    }

    /// Listen on exactly these queues: start listeners for new ones, stop
    /// those of queues no longer consumed.
    pub(crate) fn listen(self: &Arc<Self>, queues: &[QueueSpec]) {
        if self.unsupported.load(Ordering::Relaxed) {
            return;
        }
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|name, token| {
            let keep = queues.iter().any(|q| &q.name == name);
            if !keep {
                token.cancel();
            }
            keep
        });
        for q in queues {
            if !listeners.contains_key(&q.name) {
                let token = self.cancel.child_token();
                listeners.insert(q.name.clone(), token.clone());
                let list = self.inner.keys.queue_list(&q.name, 0);
                tokio::spawn(self.clone().listener(list, token));
            }
        }
    }

    /// Blocks in BLMOVE on `list` while the pop loop is idle; rings when
    /// the list holds a message.
    async fn listener(self: Arc<Self>, list: String, cancel: CancellationToken) {
        let mut idle = self.idle.subscribe();
        let mut conn: Option<MultiplexedConnection> = None;
        loop {
            tokio::select! {
                r = idle.wait_for(|i| *i) => if r.is_err() { return },
                _ = cancel.cancelled() => return,
            }
            let moved = tokio::select! {
                r = self.block(&mut conn, &list) => r,
                _ = cancel.cancelled() => return,
            };
            match moved {
                Ok(true) => {
                    self.rang.notify_one();
                    // Until the loop popped, or one poll interval if another
                    // consumer took the message (the loop stays idle).
                    tokio::select! {
                        _ = idle.wait_for(|i| !*i) => {}
                        _ = tokio::time::sleep(self.inner.opts.poll_max_interval) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
                Ok(false) => {}
                Err(e) if is_unknown_command(&e) => {
                    if !self.unsupported.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            error = %e,
                            "Redis has no BLMOVE (before 6.2): idle consumers poll every {:?}",
                            self.inner.opts.poll_max_interval
                        );
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "doorbell connection failed; polling until it is back");
                    conn = None;
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One `BLMOVE list list RIGHT RIGHT <BLOCK>`: whether a message is there.
    async fn block(&self, conn: &mut Option<MultiplexedConnection>, list: &str) -> Result<bool> {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(self.inner.connector.open(BLOCK * 2).await?),
        };
        let moved: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(list)
            .arg(list)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(BLOCK.as_secs_f64())
            .query_async(c)
            .await?;
        Ok(moved.is_some())
    }
}

fn is_unknown_command(e: &Error) -> bool {
    e.to_string()
        .to_ascii_lowercase()
        .contains("unknown command")
}
