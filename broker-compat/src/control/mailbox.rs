//! A node's pidbox (`kombu.pidbox.Node`): receive the control requests
//! meant for this node and send their replies.

use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};

use super::reply::reply_message;
use super::request::ControlRequest;
use super::{PIDBOX_EXCHANGE, QUEUE_EXPIRES, QUEUE_TTL};
use crate::events::LamportClock;
use crate::transport::{ExchangeType, QueueSpec, Route, Subscription, Transport};
use crate::{Error, Result};

pub struct Mailbox {
    replier: Replier,
    /// Only used through `&mut self`; the mutex makes `Mailbox` `Sync` so a
    /// `reply(&self)` future can move between threads.
    subscription: Mutex<Box<dyn Subscription>>,
}

/// Sends replies as `node`; cheap to clone, so a command handler running in
/// another task can answer while the mailbox keeps receiving.
#[derive(Clone)]
pub struct Replier {
    transport: Arc<dyn Transport>,
    node: String,
    clock: Arc<LamportClock>,
}

impl Mailbox {
    /// Start listening on `<node>.celery.pidbox` (bound to the
    /// `celery.pidbox` fanout exchange; on Redis a PSUBSCRIBE).
    pub async fn bind(
        transport: Arc<dyn Transport>,
        node: &str,
        clock: Arc<LamportClock>,
    ) -> Result<Self> {
        let subscription = transport.subscribe(&Self::queue_spec(node)).await?;
        Ok(Mailbox {
            replier: Replier {
                transport,
                node: node.to_owned(),
                clock,
            },
            subscription: Mutex::new(subscription),
        })
    }

    /// kombu's `Mailbox.get_queue(hostname)` with Celery's control settings.
    pub fn queue_spec(node: &str) -> QueueSpec {
        QueueSpec {
            name: format!("{node}.{PIDBOX_EXCHANGE}"),
            exchange: PIDBOX_EXCHANGE.to_owned(),
            exchange_type: ExchangeType::Fanout,
            routing_key: String::new(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            max_priority: None,
            message_ttl: Some(QUEUE_TTL),
            expires: Some(QUEUE_EXPIRES),
            quorum: false,
        }
    }

    pub fn node(&self) -> &str {
        &self.replier.node
    }

    /// A handle that sends replies for this mailbox's node.
    pub fn replier(&self) -> Replier {
        self.replier.clone()
    }

    /// The next request for this node. Every request received moves the
    /// clock (as kombu does, even those for other nodes); undecodable ones
    /// are logged and skipped. Cancellation-safe.
    pub async fn next(&mut self) -> Result<ControlRequest> {
        let subscription = self
            .subscription
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let message = match subscription.next().await {
                Ok(m) => m,
                Err(Error::Decode(e)) => {
                    tracing::warn!(error = %e, "skipping undecodable pidbox message");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let request = match ControlRequest::from_message(&message) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping undecodable control request");
                    continue;
                }
            };
            self.replier.clock.adjust(request.clock.unwrap_or(0));
            if request.is_for(&self.replier.node) {
                return Ok(request);
            }
        }
    }

    /// Send `{node: value}` to the requester (see [`Replier::reply`]).
    pub async fn reply(&self, request: &ControlRequest, value: Value) -> Result<bool> {
        self.replier.reply(request, value).await
    }
}

impl Replier {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Send `{node: value}` to the requester. Does nothing (and returns
    /// false) when the request wants no reply.
    pub async fn reply(&self, request: &ControlRequest, value: Value) -> Result<bool> {
        let Some(reply_to) = &request.reply_to else {
            return Ok(false);
        };
        let message = reply_message(
            &self.node,
            value,
            request.ticket.as_deref(),
            self.clock.forward(),
        );
        let route = Route {
            exchange: reply_to.exchange.clone(),
            exchange_type: ExchangeType::Direct,
            routing_key: reply_to.routing_key.clone(),
        };
        self.transport.publish(&route, &message).await?;
        Ok(true)
    }
}
