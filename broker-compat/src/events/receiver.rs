//! Receiving events from `celeryev`, as `celery.events.EventReceiver` does:
//! a private auto-deleted queue bound with a routing-key pattern, bodies
//! that are one event or a list, and the clock adjusted on each event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::clock::LamportClock;
use super::dispatcher::{event_exchange_type, EVENT_EXCHANGE};
use super::event::Event;
use crate::protocol::Message;
use crate::transport::{QueueSpec, Subscription, Transport};
use crate::{Error, Result};

/// `event_queue_ttl` default.
const EVENT_QUEUE_TTL: Duration = Duration::from_secs(5);
/// `event_queue_expires` default.
const EVENT_QUEUE_EXPIRES: Duration = Duration::from_secs(60);

pub struct EventReceiver {
    subscription: Box<dyn Subscription>,
    clock: Arc<LamportClock>,
    pending: VecDeque<Event>,
}

impl EventReceiver {
    /// Subscribe with `binding_key` such as `#` (everything) or `worker.#`.
    /// Events published before this returns are not seen.
    pub async fn subscribe(
        transport: &dyn Transport,
        binding_key: &str,
        clock: Arc<LamportClock>,
    ) -> Result<Self> {
        let spec = Self::queue_spec(transport.kind(), binding_key);
        let subscription = transport.subscribe(&spec).await?;
        Ok(EventReceiver {
            subscription,
            clock,
            pending: VecDeque::new(),
        })
    }

    /// Celery's receiver queue: `celeryev.<uuid4>`, exclusive, auto-delete,
    /// `x-message-ttl` 5 s, `x-expires` 60 s.
    pub fn queue_spec(transport_kind: &str, binding_key: &str) -> QueueSpec {
        QueueSpec {
            name: format!("celeryev.{}", uuid::Uuid::new_v4()),
            exchange: EVENT_EXCHANGE.to_owned(),
            exchange_type: event_exchange_type(transport_kind),
            routing_key: binding_key.to_owned(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            max_priority: None,
            message_ttl: Some(EVENT_QUEUE_TTL),
            expires: Some(EVENT_QUEUE_EXPIRES),
            quorum: false,
        }
    }

    /// The next event. Messages that are not JSON events are logged and
    /// skipped, as Celery's receiver logs decode errors and goes on.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match self.subscription.next().await {
                Ok(message) => self.accept(&message),
                Err(Error::Decode(e)) => {
                    tracing::warn!(error = %e, "skipping undecodable event message");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn accept(&mut self, message: &Message) {
        if message.content_type != "application/json" {
            tracing::warn!(content_type = %message.content_type, "skipping non-JSON event message");
            return;
        }
        match Event::parse_body(&message.body) {
            Ok(events) => {
                for event in events {
                    // Clients never sync their clock, so Celery does not
                    // adjust to a task-sent stamp (`CLIENT_CLOCK_SKEW`).
                    match event.clock().filter(|_| event.event_type() != "task-sent") {
                        Some(c) => self.clock.adjust(c),
                        None => self.clock.forward(),
                    };
                    self.pending.push_back(event);
                }
            }
            Err(e) => tracing::warn!(error = %e, "skipping undecodable event message"),
        }
    }
}
