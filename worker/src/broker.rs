//! Connecting to the broker named by the URL: kombu's Redis transport or AMQP.

use std::sync::Arc;
use std::time::Duration;

use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::reconnect::{Connector, Reconnecting};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::Transport;

/// Settings that apply to the broker connection.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub visibility_timeout: Duration,
    pub connection_name: String,
}

pub fn is_redis(url: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "unix://",
        "redis+unix://",
        "sentinel://",
    ]
    .iter()
    .any(|s| url.starts_with(s))
}

/// A transport that reconnects by itself after a broker loss.
pub async fn connect(
    url: &str,
    settings: &BrokerSettings,
) -> broker_compat::Result<Arc<dyn Transport>> {
    let (url, settings) = (url.to_owned(), settings.clone());
    let connector: Connector = Arc::new(move || {
        let (url, settings) = (url.clone(), settings.clone());
        Box::pin(async move { connect_once(&url, &settings).await })
    });
    Ok(Arc::new(Reconnecting::connect(connector).await?))
}

async fn connect_once(
    url: &str,
    settings: &BrokerSettings,
) -> broker_compat::Result<Arc<dyn Transport>> {
    if is_redis(url) {
        let mut opts = RedisOptions::from_url(url)?;
        opts.visibility_timeout = settings.visibility_timeout;
        Ok(Arc::new(RedisTransport::connect(opts).await?))
    } else {
        let opts =
            AmqpOptions::from_url(url)?.with_connection_name(settings.connection_name.clone());
        Ok(Arc::new(AmqpTransport::connect(opts).await?))
    }
}

/// `host:port` of the broker for `inspect stats`, without credentials.
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port().unwrap_or(0)))
        })
        .unwrap_or_default()
}
