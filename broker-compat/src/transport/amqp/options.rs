//! Connection settings for the AMQP transport, parsed from a Celery broker
//! URL the way kombu reads it.

use std::fmt;
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use url::Url;

use crate::url::mask_password;
use crate::{Error, Result};

/// Celery's `broker_heartbeat` default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(120);
/// kombu's `connect_timeout` default for py-amqp.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Where and how to connect. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// `amqps://`: TLS with the platform's trust store.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The virtual host, already unquoted (`/` for kombu's `amqp://h//`).
    pub vhost: String,
    /// Requested heartbeat; RabbitMQ's lower value wins. Zero disables it.
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    /// Shown in the RabbitMQ management UI (`connection_name` client property).
    pub connection_name: Option<String>,
    /// Force global (per-channel) QoS on or off. `None` decides as Celery
    /// does: global on RabbitMQ 3.3–3.x unless a quorum queue is consumed.
    pub global_qos: Option<bool>,
}

impl AmqpOptions {
    /// Parse `amqp://user:pass@host:port/vhost`, `amqps://…` or `pyamqp://…`.
    /// Missing parts take kombu's defaults (guest/guest@localhost:5672, vhost `/`).
    pub fn from_url(raw: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: mask_password(raw),
            reason: reason.to_owned(),
        };
        let url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        let tls = match url.scheme() {
            "amqp" | "pyamqp" => false,
            "amqps" | "pyamqps" => true,
            other => return Err(invalid(&format!("not an AMQP scheme: {other}"))),
        };
        let decode = |s: &str, what: &str| {
            percent_decode(s).ok_or_else(|| invalid(&format!("bad percent-encoding in {what}")))
        };
        let user = match url.username() {
            "" => "guest".to_owned(),
            u => decode(u, "user")?,
        };
        let password = match url.password() {
            None => "guest".to_owned(),
            Some(p) => decode(p, "password")?,
        };
        Ok(AmqpOptions {
            tls,
            host: url
                .host_str()
                .filter(|h| !h.is_empty())
                .unwrap_or("localhost")
                .to_owned(),
            port: url.port().unwrap_or(if tls { 5671 } else { 5672 }),
            user,
            password,
            vhost: vhost_from_path(url.path(), &decode)?,
            heartbeat: DEFAULT_HEARTBEAT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connection_name: None,
            global_qos: None,
        })
    }

    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Decide QoS globality instead of asking the server (see [`Self::global_qos`]).
    pub fn with_global_qos(mut self, global: bool) -> Self {
        self.global_qos = Some(global);
        self
    }

    pub fn with_vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// The URL with the password masked, for logs.
    pub fn masked_url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let vhost = if self.vhost == "/" { "" } else { &self.vhost };
        format!(
            "{scheme}://{}:****@{}:{}/{vhost}",
            self.user, self.host, self.port
        )
    }

    /// The URI lapin connects to (built field by field: lapin's own parser
    /// reads `amqp://h/` as vhost `""`, kombu reads it as `/`).
    pub(crate) fn to_uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.user.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(u16::try_from(self.heartbeat.as_secs()).unwrap_or(u16::MAX)),
                connection_timeout: Some(
                    u64::try_from(self.connect_timeout.as_millis()).unwrap_or(u64::MAX),
                ),
                ..AMQPQueryString::default()
            },
        }
    }
}

impl fmt::Debug for AmqpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpOptions")
            .field("url", &self.masked_url())
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .field("global_qos", &self.global_qos)
            .finish()
    }
}

/// kombu: the path minus its first `/`, unquoted; empty means `/`.
fn vhost_from_path(path: &str, decode: &dyn Fn(&str, &str) -> Result<String>) -> Result<String> {
    let vhost = decode(path.strip_prefix('/').unwrap_or(path), "vhost")?;
    Ok(if vhost.is_empty() {
        "/".to_owned()
    } else {
        vhost
    })
}

/// `%XX` unquoting (UTF-8); `None` when an escape is malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kombu_vhost_spelling() {
        let cases = [
            ("amqp://guest:guest@localhost:5672//", "/"),
            ("amqp://guest:guest@localhost:5672/", "/"),
            ("amqp://guest:guest@localhost:5672", "/"),
            ("amqp://guest:guest@localhost:5672/%2f", "/"),
            ("amqp://guest:guest@127.0.0.1:5672/celerycap", "celerycap"),
            ("pyamqp://u:p@h/a%2Fb", "a/b"),
        ];
        for (url, vhost) in cases {
            assert_eq!(AmqpOptions::from_url(url).unwrap().vhost, vhost, "{url}");
        }
    }

    #[test]
    fn defaults_and_tls() {
        let o = AmqpOptions::from_url("amqps://h").unwrap();
        assert!(o.tls);
        assert_eq!(
            (o.port, o.user.as_str(), o.password.as_str()),
            (5671, "guest", "guest")
        );
        assert_eq!(o.heartbeat, Duration::from_secs(120));
        let o = AmqpOptions::from_url("pyamqp://bob:s%40cret@rabbit:5673/v").unwrap();
        assert!(!o.tls);
        assert_eq!((o.host.as_str(), o.port), ("rabbit", 5673));
        assert_eq!(o.password, "s@cret");
        assert!(AmqpOptions::from_url("redis://h").is_err());
    }

    #[test]
    fn never_shows_the_password() {
        let o = AmqpOptions::from_url("amqp://bob:hunter2@h:5672/v").unwrap();
        assert!(!format!("{o:?}").contains("hunter2"));
        assert_eq!(o.masked_url(), "amqp://bob:****@h:5672/v");
        let err = AmqpOptions::from_url("ftp://bob:hunter2@h").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
