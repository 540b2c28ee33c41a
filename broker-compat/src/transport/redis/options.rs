//! kombu's Redis transport options (`broker_transport_options`) with kombu's
//! defaults, and the broker URL they go with.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::url::mask_password;
use crate::{Error, Result};

/// `fanout_prefix`: kombu's default is the template `/{db}.` formatted with
/// the db number; `False` disables it; a string replaces it (spec §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutPrefix {
    /// `/<db>.` — kombu ≥ 5.4 with `fanout_prefix=True` (the default).
    Db,
    /// `fanout_prefix=False`: channels are the bare exchange name.
    Disabled,
    /// A custom prefix, used verbatim.
    Custom(String),
}

/// Connection URL plus kombu's transport options. Build with
/// [`RedisOptions::from_url`] and adjust fields; every default is kombu's
/// unless the field says otherwise.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://`, `rediss://`, `unix://` (or `redis+unix://`). Never logged unmasked.
    pub url: String,
    /// Logical database (the "virtual host"), parsed from the URL.
    pub db: i64,
    /// Unacked messages older than this are restored (kombu 3600 s; Airflow 86400 s).
    pub visibility_timeout: Duration,
    /// Prepended to every key and channel the transport uses (§2.6).
    pub global_keyprefix: String,
    /// Field separator of binding members and priority list names.
    pub sep: String,
    /// Priority steps, ascending; step 0 is the bare queue name.
    pub priority_steps: Vec<u8>,
    pub fanout_prefix: FanoutPrefix,
    /// Append `/<routing key>` to fanout channels (kombu default true).
    pub fanout_patterns: bool,
    pub unacked_key: String,
    pub unacked_index_key: String,
    pub unacked_mutex_key: String,
    /// How long a `restore_visible` sweep may hold the mutex (kombu 300 s).
    pub unacked_mutex_expire: Duration,
    /// At most this many messages restored per sweep (`None` = all, as kombu).
    pub unacked_restore_limit: Option<usize>,
    /// How often a consumer runs the visibility sweep. kombu sweeps every
    /// 10th idle poll of 10 s (~100 s); a sweep costs one SET NX and one
    /// ZRANGE, so we default to the 10 s interval without the throttle.
    pub restore_interval: Duration,
    /// `rediss://`: PEM file of the CA to trust instead of the system store
    /// (kombu's `ssl_ca_certs` URL parameter).
    pub ssl_ca_certs: Option<PathBuf>,
    /// `rediss://` client certificate and key (PEM) for mutual TLS
    /// (kombu's `ssl_certfile` / `ssl_keyfile`).
    pub ssl_certfile: Option<PathBuf>,
    pub ssl_keyfile: Option<PathBuf>,
    /// Sentinel: the monitored master's name (kombu transport option
    /// `master_name`, required with `sentinel://` URLs).
    pub master_name: Option<String>,
    /// Not a kombu option: the longest pause between two pop attempts of an
    /// idle consumer (we poll a Lua script instead of BRPOP, see `consumer.rs`).
    pub poll_max_interval: Duration,
}

impl RedisOptions {
    /// Parse a broker URL (`redis://[user:pass@]host[:port][/db]`,
    /// `rediss://…?ssl_cert_reqs=required`, `unix:///path?db=N`,
    /// `sentinel://host:port[;sentinel://…]` — then set `master_name`) with
    /// kombu's default transport options.
    pub fn from_url(raw: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: mask_password(raw),
            reason: reason.to_owned(),
        };
        let first = raw.split(';').next().unwrap_or(raw).trim();
        let parsed = Url::parse(first).map_err(|e| invalid(&e.to_string()))?;
        let db = match parsed.scheme() {
            "redis" | "rediss" => db_from_path(parsed.path()).ok_or_else(|| {
                invalid("the path must be a database number (redis://host:port/<db>)")
            })?,
            "unix" | "redis+unix" => query_db(&parsed).ok_or_else(|| invalid("bad db= value"))?,
            // kombu: `sentinel://h1:26379;sentinel://h2:26379`, db from the first.
            "sentinel" => db_from_path(parsed.path()).ok_or_else(|| invalid("bad db in path"))?,
            other => return Err(invalid(&format!("unsupported scheme {other:?}"))),
        };
        check_ssl_cert_reqs(&parsed).map_err(|r| invalid(&r))?;
        let url = if parsed.scheme() == "sentinel" {
            raw.to_owned()
        } else {
            client_url(&parsed)
        };
        let path = |name: &str| {
            parsed
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| PathBuf::from(v.as_ref()))
        };
        Ok(RedisOptions {
            url,
            db,
            ssl_ca_certs: path("ssl_ca_certs"),
            ssl_certfile: path("ssl_certfile"),
            ssl_keyfile: path("ssl_keyfile"),
            ..RedisOptions::default_for(raw)
        })
    }

    fn default_for(url: &str) -> Self {
        RedisOptions {
            url: url.to_owned(),
            db: 0,
            visibility_timeout: Duration::from_secs(3600),
            global_keyprefix: String::new(),
            sep: "\x06\x16".to_owned(),
            priority_steps: vec![0, 3, 6, 9],
            fanout_prefix: FanoutPrefix::Db,
            fanout_patterns: true,
            unacked_key: "unacked".to_owned(),
            unacked_index_key: "unacked_index".to_owned(),
            unacked_mutex_key: "unacked_mutex".to_owned(),
            unacked_mutex_expire: Duration::from_secs(300),
            unacked_restore_limit: None,
            restore_interval: Duration::from_secs(10),
            ssl_ca_certs: None,
            ssl_certfile: None,
            ssl_keyfile: None,
            master_name: None,
            poll_max_interval: Duration::from_millis(50),
        }
    }

    /// The URL with its password masked, for logs.
    pub fn masked_url(&self) -> String {
        mask_password(&self.url)
    }

    /// The fanout channel prefix in effect (before `global_keyprefix`).
    pub fn fanout_prefix_str(&self) -> String {
        match &self.fanout_prefix {
            FanoutPrefix::Db => format!("/{}.", self.db),
            FanoutPrefix::Disabled => String::new(),
            FanoutPrefix::Custom(p) => p.clone(),
        }
    }
}

fn db_from_path(path: &str) -> Option<i64> {
    let p = path.trim_start_matches('/');
    if p.is_empty() {
        return Some(0);
    }
    p.parse().ok().filter(|db: &i64| *db >= 0)
}

fn query_db(u: &Url) -> Option<i64> {
    match u.query_pairs().find(|(k, _)| k == "db") {
        None => Some(0),
        Some((_, v)) => v.parse().ok().filter(|db: &i64| *db >= 0),
    }
}

/// kombu spells certificate checking `ssl_cert_reqs=required|optional|none`
/// (or `CERT_REQUIRED`…). The redis crate is built with rustls without the
/// insecure feature, so only verifying certificates is possible.
fn check_ssl_cert_reqs(u: &Url) -> std::result::Result<(), String> {
    let Some((_, v)) = u.query_pairs().find(|(k, _)| k == "ssl_cert_reqs") else {
        return Ok(());
    };
    match v.to_ascii_lowercase().as_str() {
        "required" | "cert_required" => Ok(()),
        other => Err(format!(
            "ssl_cert_reqs={other} is not supported: certificates are always verified"
        )),
    }
}

/// kombu's TLS query parameters; the redis crate does not know them.
const KOMBU_ONLY_PARAMS: [&str; 4] = [
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
];

/// The URL handed to the redis crate: kombu-only query parameters removed
/// (the crate rejects or ignores them).
fn client_url(u: &Url) -> String {
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !KOMBU_ONLY_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = u.clone();
    if kept.is_empty() {
        out.set_query(None);
    } else {
        out.query_pairs_mut().clear().extend_pairs(kept);
    }
    out.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_kombu_urls() {
        let o = RedisOptions::from_url("redis://:pw@localhost:6380/3").unwrap();
        assert_eq!(o.db, 3);
        assert_eq!(o.fanout_prefix_str(), "/3.");
        assert_eq!(o.visibility_timeout, Duration::from_secs(3600));
        assert!(!o.masked_url().contains("pw"));
        assert_eq!(RedisOptions::from_url("redis://h").unwrap().db, 0);
        let t = RedisOptions::from_url("rediss://h:6379/1?ssl_cert_reqs=required").unwrap();
        assert_eq!(t.url, "rediss://h:6379/1");
        let c = RedisOptions::from_url("rediss://h/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem")
            .unwrap();
        assert_eq!(c.ssl_ca_certs, Some(PathBuf::from("/ca.pem")));
        assert_eq!((c.url.as_str(), c.ssl_keyfile), ("rediss://h/0", None));
        assert!(RedisOptions::from_url("rediss://h/0?ssl_cert_reqs=none").is_err());
        assert_eq!(
            RedisOptions::from_url("unix:///tmp/r.sock?db=2")
                .unwrap()
                .db,
            2
        );
        assert!(RedisOptions::from_url("redis://h/x").is_err());
        let s = RedisOptions::from_url("sentinel://:pw@a:26379/2;sentinel://b:26380").unwrap();
        assert_eq!((s.db, s.url.contains("b:26380")), (2, true));
        let err = RedisOptions::from_url("redis://u:secret@h/x").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
