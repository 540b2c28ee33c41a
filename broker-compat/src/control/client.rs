//! A control client (`kombu.pidbox.Mailbox._broadcast`/`_collect`): publish
//! a request on `celery.pidbox` and gather the replies that come back on
//! this client's own reply queue. Used by tests, mingle and the scaler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::reply::ControlReply;
use super::request::{ControlRequest, ReplyTo};
use super::{PIDBOX_EXCHANGE, QUEUE_EXPIRES, QUEUE_TTL, REPLY_EXCHANGE};
use crate::events::LamportClock;
use crate::protocol::Message;
use crate::transport::{Consumer, ExchangeType, QueueSpec, Route, Transport};
use crate::Result;

/// Replies are acked on receipt, so this only bounds what is in flight.
const REPLY_PREFETCH: u16 = 64;

pub struct ControlClient {
    transport: Arc<dyn Transport>,
    clock: Arc<LamportClock>,
    oid: String,
    replies: Option<Box<dyn Consumer>>,
    /// Replies that carried another ticket, kept for the call that wants them.
    unclaimed: HashMap<String, Vec<ControlReply>>,
}

impl ControlClient {
    /// A client with a fresh oid (its reply routing key).
    pub fn new(transport: Arc<dyn Transport>, clock: Arc<LamportClock>) -> Self {
        ControlClient {
            transport,
            clock,
            oid: uuid::Uuid::new_v4().to_string(),
            replies: None,
            unclaimed: HashMap::new(),
        }
    }

    pub fn oid(&self) -> &str {
        &self.oid
    }

    /// `<oid>.reply.celery.pidbox`, bound to `reply.celery.pidbox` with
    /// routing key oid: non-durable, exclusive, auto-delete, `x-expires` 10 s.
    pub fn reply_queue_spec(oid: &str) -> QueueSpec {
        QueueSpec {
            name: format!("{oid}.{REPLY_EXCHANGE}"),
            exchange: REPLY_EXCHANGE.to_owned(),
            exchange_type: ExchangeType::Direct,
            routing_key: oid.to_owned(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            max_priority: None,
            message_ttl: Some(QUEUE_TTL),
            expires: Some(QUEUE_EXPIRES),
            quorum: false,
        }
    }

    /// Send `method(**arguments)` to `destination` (None = every node) and,
    /// if `reply`, collect replies until `timeout` has passed or `limit`
    /// replies came (limit defaults to the number of destinations).
    pub async fn broadcast(
        &mut self,
        method: &str,
        arguments: Map<String, Value>,
        destination: Option<&[String]>,
        reply: bool,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<ControlReply>> {
        let mut request = ControlRequest::new(method, arguments);
        request.destination = destination.map(<[String]>::to_vec);
        self.call(request, reply, timeout, limit).await
    }

    /// Like [`Self::broadcast`] for a request built by the caller (e.g. with
    /// `pattern`/`matcher`). Its ticket, reply_to and headers are set here.
    pub async fn call(
        &mut self,
        mut request: ControlRequest,
        reply: bool,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<ControlReply>> {
        let limit = limit.or_else(|| {
            request
                .destination
                .as_ref()
                .map(Vec::len)
                .filter(|n| *n > 0)
        });
        request.ticket = None;
        request.reply_to = None;
        if reply {
            self.ensure_reply_queue().await?;
            request.ticket = Some(uuid::Uuid::new_v4().to_string());
            request.reply_to = Some(ReplyTo {
                exchange: REPLY_EXCHANGE.to_owned(),
                routing_key: self.oid.clone(),
            });
        }
        let route = Route {
            exchange: PIDBOX_EXCHANGE.to_owned(),
            exchange_type: ExchangeType::Fanout,
            routing_key: String::new(),
        };
        let expires = (!timeout.is_zero()).then(|| now() + timeout.as_secs_f64());
        let message = request.to_message(self.clock.forward(), expires);
        self.transport.publish(&route, &message).await?;
        match request.ticket {
            Some(ticket) => self.collect(&ticket, timeout, limit).await,
            None => Ok(Vec::new()),
        }
    }

    /// Stop consuming the reply queue (on AMQP it is then auto-deleted)
    /// and delete it with its binding, as kombu does after collecting.
    pub async fn close(mut self) -> Result<()> {
        let Some(mut consumer) = self.replies.take() else {
            return Ok(());
        };
        consumer.stop().await?;
        drop(consumer);
        let spec = Self::reply_queue_spec(&self.oid);
        self.transport.delete_queue(&spec).await
    }

    async fn ensure_reply_queue(&mut self) -> Result<()> {
        if self.replies.is_none() {
            let spec = Self::reply_queue_spec(&self.oid);
            self.transport.declare_queue(&spec).await?;
            self.replies = Some(self.transport.consume(&[spec], REPLY_PREFETCH).await?);
        }
        Ok(())
    }

    async fn collect(
        &mut self,
        ticket: &str,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<ControlReply>> {
        let mut replies = self.unclaimed.remove(ticket).unwrap_or_default();
        let deadline = Instant::now() + timeout;
        while limit.is_none_or(|n| replies.len() < n) {
            let Some(consumer) = self.replies.as_mut() else {
                break;
            };
            let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(delivery) => delivery?,
                Err(_elapsed) => break,
            };
            let (message, _info, acker) = delivery.into_parts();
            acker.ack().await?;
            self.sort_reply(&message, ticket, &mut replies);
        }
        Ok(replies)
    }

    /// kombu's `on_message`: adjust the clock, drop expired replies, keep
    /// ours, park the others under their ticket.
    fn sort_reply(&mut self, message: &Message, ticket: &str, ours: &mut Vec<ControlReply>) {
        let reply = match ControlReply::from_message(message) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "skipping undecodable control reply");
                return;
            }
        };
        self.clock.adjust(reply.clock.unwrap_or(0));
        let expires = message.headers.get("expires").and_then(Value::as_f64);
        if expires.is_some_and(|e| e > 0.0 && now() > e) {
            return;
        }
        match reply.ticket.as_deref() {
            None => ours.push(reply),
            Some(t) if t == ticket => ours.push(reply),
            Some(t) => self.unclaimed.entry(t.to_owned()).or_default().push(reply),
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
