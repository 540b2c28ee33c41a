//! Where the Redis server is: a fixed URL, or the master that Sentinel
//! currently names (`sentinel://host:port[;sentinel://…]` + `master_name`).
//! Sentinel is asked again on every (re)connect, so a failover is followed.

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use std::path::Path;

use redis::{Client, ClientTlsConfig, RedisConnectionInfo, TlsCertificates};
use tokio::sync::Mutex;
use url::Url;

use super::options::RedisOptions;
use crate::{Error, Result};

pub(crate) enum Source {
    Direct(Client),
    Sentinel(Mutex<SentinelClient>),
}

impl Source {
    pub(crate) fn new(opts: &RedisOptions) -> Result<Source> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: opts.masked_url(),
            reason,
        };
        if !opts.url.starts_with("sentinel://") {
            let client = match tls_files(opts)? {
                Some(certs) => Client::build_with_tls(opts.url.as_str(), certs),
                None => Client::open(opts.url.as_str()),
            };
            return Ok(Source::Direct(client.map_err(|e| invalid(e.to_string()))?));
        }
        let master = opts.master_name.clone().ok_or_else(|| Error::Config {
            setting: "master_name".into(),
            reason: "a sentinel:// broker URL needs the master_name transport option".into(),
        })?;
        let (nodes, info) = sentinel_nodes(&opts.url, opts.db).map_err(invalid)?;
        let client = SentinelClient::build(nodes, master, Some(info), SentinelServerType::Master)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Source::Sentinel(Mutex::new(client)))
    }

    /// A client for the server to talk to now.
    pub(crate) async fn client(&self) -> Result<Client> {
        match self {
            Source::Direct(c) => Ok(c.clone()),
            Source::Sentinel(s) => Ok(s.lock().await.async_get_client().await?),
        }
    }
}

/// The CA / client certificate files of a `rediss://` URL, read once.
fn tls_files(opts: &RedisOptions) -> Result<Option<TlsCertificates>> {
    let read = |setting: &str, path: &Path| {
        std::fs::read(path).map_err(|e| Error::Config {
            setting: setting.into(),
            reason: format!("cannot read {}: {e}", path.display()),
        })
    };
    let root_cert = match &opts.ssl_ca_certs {
        Some(p) => Some(read("ssl_ca_certs", p)?),
        None => None,
    };
    let client_tls = match (&opts.ssl_certfile, &opts.ssl_keyfile) {
        (Some(c), Some(k)) => Some(ClientTlsConfig {
            client_cert: read("ssl_certfile", c)?,
            client_key: read("ssl_keyfile", k)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::Config {
                setting: "ssl_certfile".into(),
                reason: "ssl_certfile and ssl_keyfile go together".into(),
            })
        }
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The sentinel node addresses and the credentials/db for the master, from
/// kombu's `sentinel://[user:pass@]host:port[/db][;sentinel://host:port…]`.
fn sentinel_nodes(
    raw: &str,
    db: i64,
) -> std::result::Result<(Vec<String>, SentinelNodeConnectionInfo), String> {
    let mut nodes = Vec::new();
    let mut redis_info = RedisConnectionInfo::default().set_db(db);
    for (i, part) in raw
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let u = Url::parse(part).map_err(|e| e.to_string())?;
        let host = u.host_str().ok_or("sentinel URL without a host")?;
        nodes.push(format!("redis://{host}:{}", u.port().unwrap_or(26379)));
        if i == 0 {
            if !u.username().is_empty() {
                redis_info = redis_info.set_username(u.username());
            }
            if let Some(p) = u.password() {
                redis_info = redis_info.set_password(p);
            }
        }
    }
    let info = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
    Ok((nodes, info))
}
