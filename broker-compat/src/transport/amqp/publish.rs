//! Publishing with publisher confirms: one long-lived confirm-mode channel,
//! reopened when the broker closed it.
//!
//! Routes to a direct exchange (tasks on `""`, pidbox replies) are published
//! `mandatory`, so a message no queue would take comes back as an error
//! instead of vanishing (kombu does not set mandatory; we prefer to know).
//! Broadcasts (topic/fanout: events, pidbox requests) are not: nobody
//! listening is normal there. Named exchanges are declared once before the
//! first publish, as kombu's `Producer` does.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as SyncMutex};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ErrorKind, ExchangeKind};
use tokio::sync::Mutex;

use super::declare::{declare_exchange, kombu_exchange_durable};
use super::framing::to_basic_properties;
use super::names::short;
use crate::protocol::Message;
use crate::transport::{ExchangeType, Route};
use crate::Result;

pub struct Publisher {
    connection: Arc<Connection>,
    channel: Mutex<Option<Channel>>,
    /// Exchanges known to exist (declared by us or found by a passive declare).
    exchanges: SyncMutex<HashSet<String>>,
}

impl Publisher {
    pub fn new(connection: Arc<Connection>) -> Self {
        Publisher {
            connection,
            channel: Mutex::new(None),
            exchanges: SyncMutex::new(HashSet::new()),
        }
    }

    /// Publish and wait for the broker's confirm.
    pub async fn publish(&self, route: &Route, message: &Message) -> Result<()> {
        let properties = to_basic_properties(message)?;
        let exchange = short("exchange", &route.exchange)?;
        let routing_key = short("routing_key", &route.routing_key)?;
        self.ensure_exchange(route).await?;
        let channel = self.confirm_channel().await?;
        let options = BasicPublishOptions {
            mandatory: route.exchange_type == ExchangeType::Direct,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(exchange, routing_key, options, &message.body, properties)
            .await?
            .await?;
        check_confirmation(confirm)
    }

    /// The confirm-mode channel, opened (again) when missing or closed.
    async fn confirm_channel(&self) -> Result<Channel> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Make sure a named exchange exists: passive declare first (it may have
    /// been declared by Python with other flags), else declare it as kombu would.
    async fn ensure_exchange(&self, route: &Route) -> Result<()> {
        if route.exchange.is_empty() || self.known(&route.exchange) {
            return Ok(());
        }
        // A failed passive declare closes its channel: use throwaway ones.
        let probe = self.connection.create_channel().await?;
        let passive = probe
            .exchange_declare(
                short("exchange", &route.exchange)?,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = probe.close(200, "OK".into()).await;
        if let Err(e) = passive {
            if !is_not_found(&e) {
                return Err(e.into());
            }
            let channel = self.connection.create_channel().await?;
            let durable = kombu_exchange_durable(&route.exchange);
            declare_exchange(&channel, &route.exchange, route.exchange_type, durable).await?;
            let _ = channel.close(200, "OK".into()).await;
        }
        if let Ok(mut known) = self.exchanges.lock() {
            known.insert(route.exchange.clone());
        }
        Ok(())
    }

    fn known(&self, exchange: &str) -> bool {
        self.exchanges
            .lock()
            .map(|known| known.contains(exchange))
            .unwrap_or(false)
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(err)
        if *err.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// A nack (the broker could not store the message) or a returned message
/// (unroutable) is an error; the returned message's reply code says why.
fn check_confirmation(confirm: Confirmation) -> Result<()> {
    let nacked = confirm.is_nack();
    if let Some(returned) = confirm.take_message() {
        let error = returned.error().unwrap_or_else(|| {
            AMQPError::new(AMQPSoftError::NOROUTE.into(), returned.reply_text.clone())
        });
        return Err(lapin::Error::from(ErrorKind::ProtocolError(error)).into());
    }
    if nacked {
        let error = AMQPError::new(
            AMQPHardError::INTERNALERROR.into(),
            "the broker nacked the message (basic.nack)".into(),
        );
        return Err(lapin::Error::from(ErrorKind::ProtocolError(error)).into());
    }
    Ok(())
}
