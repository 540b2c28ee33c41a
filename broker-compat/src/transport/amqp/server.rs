//! What the broker says it is, for the QoS decision kombu makes.
//!
//! Celery sets `basic_qos(global=True)` unless
//! `qos_semantics_matches_spec` (kombu `transport/pyamqp.py`): on RabbitMQ
//! 3.3–3.x the `global` flag means "shared by the channel", which is what
//! Celery wants; older and ≥ 4 servers (and non-RabbitMQ brokers) follow the
//! spec's meaning, so Celery uses per-consumer QoS there. lapin reads the
//! server properties of `connection.start` but does not expose them, so
//! [`probe`] opens a short extra socket, reads `connection.start` and hangs up
//! before authenticating.

use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use lapin::protocol::{connection::AMQPMethod, parse_class, AMQPClass};
use lapin::tcp::{AMQPUriTcpExt, TLSConfig};
use lapin::types::AMQPValue;
use lapin::uri::AMQPUri;

use crate::{Error, Result};

/// AMQP 0-9-1 protocol header.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
/// `connection.start` is a few hundred bytes; refuse anything absurd.
const MAX_START_FRAME: usize = 1 << 20;

/// The broker's `product` and `version` server properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub product: String,
    pub version: String,
}

impl ServerInfo {
    /// kombu's `not qos_semantics_matches_spec`: RabbitMQ 3.3 ≤ v < 4.0.
    pub fn global_qos_is_per_channel(&self) -> bool {
        if self.product != "RabbitMQ" {
            return false;
        }
        let mut parts = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let major_minor = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        ((3, 3)..(4, 0)).contains(&major_minor)
    }
}

/// Read the server properties of the broker at `uri` (TLS included).
pub async fn probe(uri: &AMQPUri, timeout: Duration) -> Result<ServerInfo> {
    tokio::time::timeout(timeout, read_start(uri))
        .await
        .map_err(|_| Error::Timeout(format!("no connection.start from {}", uri.authority.host)))?
}

async fn read_start(uri: &AMQPUri) -> Result<ServerInfo> {
    let runtime = lapin::runtime::default_runtime()?;
    let mut stream = uri
        .connect_with_config_async(TLSConfig::default(), &runtime)
        .await
        .map_err(lapin::Error::from)?;
    stream
        .write_all(PROTOCOL_HEADER)
        .await
        .map_err(lapin::Error::from)?;
    // Frame: type (1 = method), channel (u16), size (u32), payload, 0xCE.
    let mut header = [0u8; 7];
    stream
        .read_exact(&mut header)
        .await
        .map_err(lapin::Error::from)?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    if header[0] != 1 || size > MAX_START_FRAME {
        return Err(Error::Protocol(format!(
            "expected connection.start, got frame type {} of {size} bytes",
            header[0]
        )));
    }
    let mut payload = vec![0u8; size + 1];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(lapin::Error::from)?;
    let _ = stream.close().await;
    parse_start(&payload[..size])
}

fn parse_start(payload: &[u8]) -> Result<ServerInfo> {
    let start = match parse_class(payload) {
        Ok((_, AMQPClass::Connection(AMQPMethod::Start(start)))) => start,
        Ok(_) => {
            return Err(Error::Protocol(
                "first method is not connection.start".into(),
            ))
        }
        Err(e) => return Err(Error::Protocol(format!("connection.start: {e}"))),
    };
    let text = |key: &str| match start.server_properties.inner().get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    };
    Ok(ServerInfo {
        product: text("product"),
        version: text("version"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(product: &str, version: &str) -> ServerInfo {
        ServerInfo {
            product: product.into(),
            version: version.into(),
        }
    }

    #[test]
    fn global_qos_only_on_rabbitmq_3() {
        assert!(info("RabbitMQ", "3.10.8").global_qos_is_per_channel());
        assert!(info("RabbitMQ", "3.3.0").global_qos_is_per_channel());
        assert!(!info("RabbitMQ", "3.2.4").global_qos_is_per_channel());
        assert!(!info("RabbitMQ", "4.0.5").global_qos_is_per_channel());
        assert!(!info("LavinMQ", "3.10.0").global_qos_is_per_channel());
    }
}
