//! The exchanges, queues and bindings kombu declares (spec §3.2), with the
//! same flags and argument types, so that declaring what a Python worker
//! already declared never fails with PRECONDITION_FAILED.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use super::headers::int_to_amqp;
use super::names::short;
use crate::transport::{ExchangeType, QueueSpec};
use crate::Result;

/// Declare `spec`'s exchange (unless it is the default exchange `""`, which
/// cannot be declared), the queue and the binding.
pub async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> Result<()> {
    declare_exchange(channel, &spec.exchange, spec.exchange_type, spec.durable).await?;
    channel
        .queue_declare(
            short("queue", &spec.name)?,
            QueueDeclareOptions {
                durable: spec.durable,
                exclusive: spec.exclusive,
                auto_delete: spec.auto_delete,
                ..QueueDeclareOptions::default()
            },
            queue_arguments(spec),
        )
        .await?;
    bind(channel, spec).await
}

/// [`declare_queue`] on a throwaway channel: a refused declare closes the
/// channel it was sent on, which must not be one that holds consumers.
pub async fn declare_scratch(connection: &Connection, spec: &QueueSpec) -> Result<()> {
    let channel = connection.create_channel().await?;
    declare_queue(&channel, spec).await?;
    let _ = channel.close(200, "OK".into()).await;
    Ok(())
}

/// Declare an exchange as kombu's `Exchange(name, type, durable)`:
/// not auto-delete, not internal, no arguments.
pub async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeType,
    durable: bool,
) -> Result<()> {
    if name.is_empty() {
        return Ok(());
    }
    channel
        .exchange_declare(
            short("exchange", name)?,
            exchange_kind(kind),
            ExchangeDeclareOptions {
                durable,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Bind the queue to its exchange; every queue is already bound to `""`.
pub async fn bind(channel: &Channel, spec: &QueueSpec) -> Result<()> {
    if spec.exchange.is_empty() {
        return Ok(());
    }
    channel
        .queue_bind(
            short("queue", &spec.name)?,
            short("exchange", &spec.exchange)?,
            short("routing_key", &spec.routing_key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Durability of the exchanges Celery publishes broadcasts to, which a
/// `Route` does not carry: `celeryev` is durable, the pidbox exchanges
/// (`celery.pidbox`, `reply.celery.pidbox`) are transient.
pub fn kombu_exchange_durable(name: &str) -> bool {
    !name.ends_with(".pidbox")
}

/// `x-*` arguments with py-amqp's types: milliseconds and priorities as
/// signed 32-bit ints (`signedint` in `rabbitmqctl`), the queue type as a string.
pub fn queue_arguments(spec: &QueueSpec) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(ttl) = spec.message_ttl {
        args.insert("x-message-ttl".into(), millis(ttl));
    }
    if let Some(expires) = spec.expires {
        args.insert("x-expires".into(), millis(expires));
    }
    if let Some(max) = spec.max_priority {
        args.insert("x-max-priority".into(), int_to_amqp(i64::from(max)));
    }
    if spec.quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    args
}

/// kombu: `int(seconds * 1000)`.
fn millis(d: Duration) -> AMQPValue {
    int_to_amqp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn exchange_kind(kind: ExchangeType) -> ExchangeKind {
    match kind {
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Fanout => ExchangeKind::Fanout,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pidbox_queue_arguments_as_kombu() {
        let spec = QueueSpec {
            expires: Some(Duration::from_secs(10)),
            message_ttl: Some(Duration::from_secs(300)),
            ..QueueSpec::task_queue("celery@vm.celery.pidbox")
        };
        let args = queue_arguments(&spec);
        assert_eq!(
            args.inner().get("x-expires"),
            Some(&AMQPValue::LongInt(10_000))
        );
        assert_eq!(
            args.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongInt(300_000))
        );
        assert_eq!(
            queue_arguments(&QueueSpec::task_queue("celery"))
                .inner()
                .len(),
            0
        );
    }

    #[test]
    fn broadcast_exchange_durability() {
        assert!(kombu_exchange_durable("celeryev"));
        assert!(!kombu_exchange_durable("celery.pidbox"));
        assert!(!kombu_exchange_durable("reply.celery.pidbox"));
    }
}
