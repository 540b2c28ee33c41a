//! Publishing events on `celeryev` the way `celery.events.EventDispatcher`
//! does: single events on `<group>.<name>`, buffered task events as a JSON
//! list on `task.multi`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::clock::LamportClock;
use super::event::{Event, Stamp};
use crate::protocol::{pyjson, Message, Properties};
use crate::transport::{ExchangeType, Route, Transport};
use crate::Result;

/// `event_exchange` default.
pub const EVENT_EXCHANGE: &str = "celeryev";
/// Routing key of buffered task events.
pub const MULTI_ROUTING_KEY: &str = "task.multi";
/// `EventDispatcher.buffer_limit`: at most this many events per list.
pub const BATCH_LIMIT: usize = 24;

/// The event exchange type: Celery switches `celeryev` from topic to fanout
/// on Redis (`celery/events/event.py::get_exchange`).
pub fn event_exchange_type(transport_kind: &str) -> ExchangeType {
    if transport_kind == "redis" {
        ExchangeType::Fanout
    } else {
        ExchangeType::Topic
    }
}

pub struct EventDispatcher {
    transport: Arc<dyn Transport>,
    hostname: String,
    pid: u32,
    clock: Arc<LamportClock>,
    utcoffset: f64,
}

impl EventDispatcher {
    /// `utcoffset` is Celery's: hours **west** of UTC (UTC+2 → -2.0).
    pub fn new(
        transport: Arc<dyn Transport>,
        hostname: impl Into<String>,
        pid: u32,
        clock: Arc<LamportClock>,
        utcoffset: f64,
    ) -> Self {
        EventDispatcher {
            transport,
            hostname: hostname.into(),
            pid,
            clock,
            utcoffset,
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Fill in hostname/utcoffset/pid, a fresh clock tick and the current
    /// time. Celery does this when an event is created, before buffering.
    pub fn stamp(&self, event: Event) -> Event {
        event.stamp(&Stamp {
            hostname: &self.hostname,
            utcoffset: self.utcoffset,
            pid: self.pid,
            clock: self.clock.forward(),
            timestamp: now(),
        })
    }

    /// Stamp and publish one event as a single object. Returns what was sent.
    pub async fn send(&self, event: Event) -> Result<Event> {
        let event = self.stamp(event);
        self.publish(&event.routing_key(), event.to_json()).await?;
        Ok(event)
    }

    /// Stamp and publish events as lists on `task.multi`, at most
    /// [`BATCH_LIMIT`] per message.
    pub async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        let stamped: Vec<Event> = events.into_iter().map(|e| self.stamp(e)).collect();
        self.publish_stamped(&stamped).await?;
        Ok(stamped)
    }

    /// Publish events stamped earlier (a worker's own buffer) as lists on
    /// `task.multi`, at most [`BATCH_LIMIT`] per message.
    pub async fn publish_stamped(&self, events: &[Event]) -> Result<()> {
        for chunk in events.chunks(BATCH_LIMIT) {
            let list: Vec<&Map<String, Value>> = chunk.iter().map(Event::fields).collect();
            self.publish(MULTI_ROUTING_KEY, pyjson::to_vec(&list))
                .await?;
        }
        Ok(())
    }

    async fn publish(&self, routing_key: &str, body: Vec<u8>) -> Result<()> {
        let route = Route {
            exchange: EVENT_EXCHANGE.to_owned(),
            exchange_type: event_exchange_type(self.transport.kind()),
            routing_key: routing_key.to_owned(),
        };
        self.transport
            .publish(&route, &event_message(&self.hostname, body))
            .await
    }
}

/// The kombu message around an event body: headers `{"hostname": node}`,
/// transient, priority 0, JSON.
pub fn event_message(hostname: &str, body: Vec<u8>) -> Message {
    let mut headers = Map::new();
    headers.insert("hostname".into(), Value::from(hostname));
    Message {
        body,
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        headers,
        properties: Properties {
            delivery_mode: Some(1),
            priority: Some(0),
            ..Properties::default()
        },
    }
}

/// Celery's `utcoffset`: hours **west** of UTC, from the local offset in
/// seconds **east** of UTC (chrono's `Local` offset). UTC+2 → `-2.0`;
/// UTC → `0.0` (never `-0.0`, which would serialize differently).
pub fn utcoffset_hours(seconds_east: i32) -> f64 {
    -f64::from(seconds_east) / 3600.0 + 0.0
}

/// `time.time()`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utcoffset_is_hours_west_and_never_negative_zero() {
        assert_eq!(utcoffset_hours(7200), -2.0);
        assert_eq!(utcoffset_hours(-18000), 5.0);
        assert_eq!(utcoffset_hours(19800), -5.5);
        assert_eq!(pyjson::to_string(&Value::from(utcoffset_hours(0))), "0.0");
    }
}
