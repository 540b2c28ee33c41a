//! Building new task messages with Celery's defaults (`app.send_task` +
//! `amqp.as_task_v2`). The library never reads the hostname or environment:
//! callers set `origin` themselves.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::body::{Embed, TaskBody};
use super::headers::TaskHeaders;
use super::message::{ProtocolVersion, TaskMessage};
use super::Properties;

impl TaskMessage {
    /// A new top-level task: fresh uuid4 id, `root_id` = id, retries 0, no
    /// time limits, `argsrepr`/`kwargsrepr` as Python reprs of the args
    /// tuple and kwargs dict, `ignore_result` false, delivery mode 2, priority 0.
    pub fn new(task: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        let id = Uuid::new_v4().to_string();
        let body = TaskBody {
            args,
            kwargs,
            embed: Embed::default(),
        };
        let headers = TaskHeaders {
            argsrepr: Some(body.args_repr()),
            kwargsrepr: Some(body.kwargs_repr()),
            ..TaskHeaders::new(task, &id)
        };
        TaskMessage {
            protocol: ProtocolVersion::V2,
            headers,
            args: body.args,
            kwargs: body.kwargs,
            embed: body.embed,
            properties: Properties {
                correlation_id: Some(id),
                delivery_mode: Some(2),
                priority: Some(0),
                ..Properties::default()
            },
            utc: true,
        }
    }

    /// Use a given task id (and root id, for a top-level task).
    pub fn with_id(mut self, id: &str) -> Self {
        if self.headers.root_id.as_deref() == Some(self.headers.id.as_str()) {
            self.headers.root_id = Some(id.to_owned());
        }
        self.headers.id = id.to_owned();
        self.properties.correlation_id = Some(id.to_owned());
        self
    }

    /// The sender's node name (Celery clients use `gen<pid>@<hostname>`).
    pub fn origin(mut self, origin: &str) -> Self {
        self.headers.origin = Some(origin.to_owned());
        self
    }

    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.headers.eta = Some(eta);
        self
    }

    /// `countdown=N`: eta = now + N.
    pub fn countdown(self, delay: Duration) -> Self {
        self.eta(Utc::now() + delay)
    }

    /// `expires=<datetime>`: the header, plus the AMQP per-message TTL
    /// (`expiration`, milliseconds from now, clamped to 0 like Celery).
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        let ms = (at - Utc::now()).num_milliseconds().max(0);
        self.headers.expires = Some(at);
        self.properties.expiration = Some(ms.to_string());
        self
    }

    /// `expires=N` seconds from now.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.headers.expires = Some(Utc::now() + ttl);
        self.properties.expiration = Some(ttl.as_millis().to_string());
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.properties.priority = Some(priority);
        self
    }

    /// `reply_to` property (only the `rpc://` backend uses it).
    pub fn reply_to(mut self, reply_to: &str) -> Self {
        self.properties.reply_to = Some(reply_to.to_owned());
        self
    }

    /// Membership of a group (or chord header) at `index`.
    pub fn group(mut self, group_id: &str, index: Option<i64>) -> Self {
        self.headers.group = Some(group_id.to_owned());
        self.headers.group_index = index;
        self
    }

    /// Sent from inside another task: its id and the workflow's root id.
    pub fn parent(mut self, parent_id: &str, root_id: &str) -> Self {
        self.headers.parent_id = Some(parent_id.to_owned());
        self.headers.root_id = Some(root_id.to_owned());
        self
    }

    pub fn shadow(mut self, name: &str) -> Self {
        self.headers.shadow = Some(name.to_owned());
        self
    }

    /// `time_limit` (hard) and `soft_time_limit`, in seconds.
    pub fn time_limits(mut self, hard: Option<f64>, soft: Option<f64>) -> Self {
        self.headers.timelimit = (hard, soft);
        self
    }

    pub fn retries(mut self, retries: u32) -> Self {
        self.headers.retries = retries;
        self
    }

    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.headers.ignore_result = Some(ignore);
        self
    }

    /// A custom header (`apply_async(headers=...)`), kept in insertion order.
    pub fn header(mut self, key: &str, value: Value) -> Self {
        self.headers.extra.insert(key.to_owned(), value);
        self
    }

    pub fn embed(mut self, embed: Embed) -> Self {
        self.embed = embed;
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_celery() {
        let kwargs = json!({"y": 3}).as_object().cloned().unwrap();
        let m = TaskMessage::new("capapp.add", vec![json!(2)], kwargs).origin("gen1@vm");
        let h = &m.headers;
        assert_eq!(h.root_id.as_deref(), Some(h.id.as_str()));
        assert_eq!(m.properties.correlation_id.as_deref(), Some(h.id.as_str()));
        assert_eq!(
            (h.argsrepr.as_deref(), h.kwargsrepr.as_deref()),
            (Some("(2,)"), Some("{'y': 3}"))
        );
        assert_eq!(
            (h.retries, h.timelimit, h.ignore_result),
            (0, (None, None), Some(false))
        );
        assert_eq!(Uuid::parse_str(&h.id).unwrap().get_version_num(), 4);
    }

    #[test]
    fn expires_sets_header_and_ttl() {
        let m = TaskMessage::new("t", vec![], Map::new()).expires_in(Duration::from_secs(120));
        assert_eq!(m.properties.expiration.as_deref(), Some("120000"));
        assert!(m.headers.expires.unwrap() > Utc::now());
        let past = TaskMessage::new("t", vec![], Map::new())
            .expires_at(Utc::now() - Duration::from_secs(5));
        assert_eq!(past.properties.expiration.as_deref(), Some("0"));
    }
}
