//! What `tests/python/publish_all.py` sent (captured from Celery's
//! `before_task_publish` signal), and the comparison of each captured message
//! with what broker-compat delivered and decoded.

use std::collections::HashMap;

use anyhow::{Context, Result};
use broker_compat::protocol::{DeliveryInfo, KombuValue, Message, ProtocolVersion, TaskMessage};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::python::PyApp;

/// One message as Python handed it to kombu.
#[derive(Debug, Clone, Deserialize)]
pub struct Published {
    pub case: String,
    /// What the call asked for (countdown, priority, …).
    pub intent: Map<String, Value>,
    /// Unix seconds just before the call.
    pub sent_at: f64,
    pub task: String,
    pub headers: Map<String, Value>,
    /// Pre-kombu view: `expiration` is still seconds, `priority` only if given.
    pub properties: Map<String, Value>,
    /// `[args, kwargs, embed]` (protocol 2) or the protocol 1 map.
    pub body: Value,
    pub exchange: String,
    pub routing_key: String,
}

#[derive(Deserialize)]
struct Doc {
    messages: Vec<Published>,
}

/// Run publish_all.py against `app`; every message it published.
pub async fn publish_all(app: &PyApp) -> Result<Vec<Published>> {
    let out = app.run_script("publish_all.py", &[]).await?;
    let doc: Doc = serde_json::from_str(out.trim()).context("parsing publish_all.py output")?;
    Ok(doc.messages)
}

/// A delivery as broker-compat handed it over, decoded.
pub struct Received {
    pub message: Message,
    pub info: DeliveryInfo,
    pub task: TaskMessage,
}

impl Published {
    pub fn is_v1(&self) -> bool {
        self.body.is_object()
    }

    pub fn id(&self) -> &str {
        let from = if self.is_v1() {
            self.body.get("id")
        } else {
            self.headers.get("id")
        };
        from.and_then(Value::as_str).unwrap_or_default()
    }

    /// The priority kombu put on the wire (0 when not given).
    pub fn priority(&self) -> u8 {
        let p = self.properties.get("priority").and_then(Value::as_u64);
        p.map_or(0, |p| p.min(9) as u8)
    }

    fn intent_f64(&self, key: &str) -> Option<f64> {
        self.intent.get(key).and_then(Value::as_f64)
    }

    fn sent_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros((self.sent_at * 1e6) as i64).unwrap_or_default()
    }
}

/// Every mismatch between `p` and `r`, as readable lines (empty = equal).
pub fn mismatches(p: &Published, r: &Received, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut eq = |what: &str, got: Value, want: Value| {
        if got != want {
            out.push(format!(
                "[{}] {what}: got {got}, Python sent {want}",
                p.case
            ));
        }
    };
    let t = &r.task;
    eq(
        "content_type",
        json!(r.message.content_type),
        json!("application/json"),
    );
    eq(
        "content_encoding",
        json!(r.message.content_encoding),
        json!("utf-8"),
    );
    eq(
        "delivery routing_key",
        json!(r.info.routing_key),
        json!(queue),
    );
    eq(
        "delivery exchange",
        json!(r.info.exchange),
        json!(p.exchange),
    );
    eq("redelivered", json!(r.info.redelivered), json!(false));
    eq(
        "correlation_id",
        json!(t.properties.correlation_id),
        json!(p.id()),
    );
    eq(
        "reply_to",
        json!(t.properties.reply_to),
        p.properties["reply_to"].clone(),
    );
    eq("delivery_mode", json!(t.properties.delivery_mode), json!(2));
    eq(
        "priority",
        json!(t.properties.priority),
        json!(p.priority()),
    );
    let expiration = p.properties.get("expiration").and_then(Value::as_f64);
    let want = expiration.map(|s| ((s * 1000.0) as i64).to_string());
    eq("expiration", json!(t.properties.expiration), json!(want));
    let v1 = p.is_v1();
    let version = if v1 {
        ProtocolVersion::V1
    } else {
        ProtocolVersion::V2
    };
    eq(
        "protocol",
        json!(format!("{:?}", t.protocol)),
        json!(format!("{version:?}")),
    );
    let (args, kwargs, embed) = expected_body(p);
    eq("args", json!(t.args), args);
    eq("kwargs", json!(t.kwargs), kwargs);
    eq("embed", t.embed.to_value(), embed);
    let got = t.headers.to_map();
    for (key, want) in expected_headers(p) {
        let have = got.get(&key).cloned().unwrap_or(Value::Null);
        eq(&format!("header {key}"), have, want);
    }
    out.extend(intent_mismatches(p, t));
    out
}

/// args, kwargs, embed as Python sent them (protocol 1: the map's fields).
fn expected_body(p: &Published) -> (Value, Value, Value) {
    if p.is_v1() {
        let b = &p.body;
        let embed = json!({"callbacks": b["callbacks"], "errbacks": b["errbacks"],
                           "chain": null, "chord": b["chord"]});
        return (b["args"].clone(), b["kwargs"].clone(), embed);
    }
    let part = |i: usize| p.body.get(i).cloned().unwrap_or(Value::Null);
    (part(0), part(1), part(2))
}

/// Header values the decoded message must re-encode to. Protocol 1 has no
/// headers: its body fields are what the worker turns into headers.
fn expected_headers(p: &Published) -> Vec<(String, Value)> {
    let mut want: Vec<(String, Value)> = if p.is_v1() {
        let keys = [
            "task",
            "id",
            "group",
            "group_index",
            "retries",
            "eta",
            "expires",
            "timelimit",
        ];
        keys.iter()
            .map(|k| (k.to_string(), p.body[*k].clone()))
            .collect()
    } else {
        p.headers.clone().into_iter().collect()
    };
    if p.intent.get("compression").is_some() {
        want.push(("compression".into(), json!("application/x-gzip")));
    }
    want
}

/// Checks of what the call asked for, independent of the captured headers.
fn intent_mismatches(p: &Published, t: &TaskMessage) -> Vec<String> {
    let mut out = Vec::new();
    let mut near = |what: &str, got: Option<DateTime<Utc>>, secs: f64| {
        let want = p.sent_at() + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        let ok = got.is_some_and(|g| (g - want).num_milliseconds().abs() < 5_000);
        if !ok {
            out.push(format!(
                "[{}] {what}: got {got:?}, want about {want}",
                p.case
            ));
        }
    };
    if let Some(c) = p.intent_f64("countdown") {
        near("eta from countdown", t.headers.eta, c);
    }
    if let Some(e) = p.intent_f64("expires") {
        near("expires", t.headers.expires, e);
    }
    let checks = case_checks(p, t);
    out.extend(
        checks
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| format!("[{}] {what} (decoded: {t:?})", p.case)),
    );
    out
}

fn case_checks(p: &Published, t: &TaskMessage) -> Vec<(&'static str, bool)> {
    let h = &t.headers;
    let sig = |list: &Option<Vec<Value>>, i: usize, key: &str| {
        list.as_ref().and_then(|l| l.get(i)).map(|s| s[key].clone())
    };
    match p.case.as_str() {
        "eta" => vec![(
            "eta 2031-01-02T03:04:05Z",
            h.eta.map(|e| e.to_rfc3339()) == Some("2031-01-02T03:04:05+00:00".into()),
        )],
        "timelimit" => vec![(
            "timelimit (hard 30, soft 20)",
            h.timelimit == (Some(30.0), Some(20.0)),
        )],
        "shadow_ignore_result" => vec![
            ("shadow", h.shadow.as_deref() == Some("interop.shadowed")),
            (
                "display name is the shadow",
                h.display_name() == "interop.shadowed",
            ),
            ("ignore_result true", h.ignore_result == Some(true)),
        ],
        "link_errback" => vec![
            (
                "callback interop.add(10)",
                sig(&t.embed.callbacks, 0, "args") == Some(json!([10])),
            ),
            (
                "errback interop.fail immutable",
                sig(&t.embed.errbacks, 0, "immutable") == Some(json!(true)),
            ),
        ],
        "chain" => vec![
            (
                "chain reversed: next step last",
                sig(&t.embed.chain, 1, "args") == Some(json!([3])),
            ),
            (
                "chain reversed: final step first",
                sig(&t.embed.chain, 0, "args") == Some(json!([4])),
            ),
        ],
        "group" => vec![(
            "group id and index",
            h.group.is_some() && h.group_index.is_some(),
        )],
        "send_task_unregistered" => vec![
            ("task no.such.task", h.task == "no.such.task"),
            ("ignore_result null", h.ignore_result.is_none()),
        ],
        "compression" => vec![(
            "compression header",
            h.compression.as_deref() == Some("application/x-gzip"),
        )],
        "chord" => vec![
            (
                "group id and index",
                h.group.is_some() && h.group_index.is_some(),
            ),
            (
                "chord body interop.xsum",
                t.embed.chord.as_ref().map(|c| c["task"].clone()) == Some(json!("interop.xsum")),
            ),
            (
                "chord group_id = group header",
                t.embed
                    .chord
                    .as_ref()
                    .map(|c| c["options"]["group_id"].clone())
                    == Some(json!(h.group)),
            ),
        ],
        "typed_args" => vec![(
            "typed args decode to Python types",
            typed_ok(t.args.first()),
        )],
        "typed_kwargs" => vec![(
            "typed kwargs decode to Python types",
            typed_ok(t.kwargs.get("value")),
        )],
        _ => Vec::new(),
    }
}

/// publish_all.py's typed values (a list for args, a dict for kwargs)
/// decode to the Python types kombu encoded.
fn typed_ok(v: Option<&Value>) -> bool {
    let values: Vec<Value> = match v {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(o)) => o.values().cloned().collect(),
        _ => return false,
    };
    let Ok(KombuValue::Array(got)) = KombuValue::from_json(&Value::Array(values)) else {
        return false;
    };
    let when = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678901+00:00");
    let uuid = "12345678-1234-5678-1234-567812345678".parse();
    match (when, uuid) {
        (Ok(when), Ok(uuid)) => {
            got == [
                KombuValue::DateTime(when),
                KombuValue::Uuid(uuid),
                KombuValue::Decimal("1.10".into()),
                KombuValue::Bytes(b"hello bytes".to_vec()),
                KombuValue::Bytes(vec![0xff, 0x00, 0xfe]),
            ]
        }
        _ => false,
    }
}

/// Index deliveries by task id, failing on duplicates.
pub fn by_id(received: Vec<Received>) -> Result<HashMap<String, Received>> {
    let mut map = HashMap::new();
    for r in received {
        let id = r.task.id().to_owned();
        if map.insert(id.clone(), r).is_some() {
            anyhow::bail!("task {id} was delivered twice");
        }
    }
    Ok(map)
}
