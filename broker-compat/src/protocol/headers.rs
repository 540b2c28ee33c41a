//! Protocol 2 task headers (spec §1.3), typed, and back in Celery's order.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::pyjson;
use super::time::{parse_iso, to_isoformat};
use crate::error::{DecodeError, DecodeErrorKind};

/// The headers Celery's `as_task_v2` writes, in its order. Custom headers
/// (`apply_async(headers=...)`) follow them, then kombu's `compression`,
/// then `redelivered` (added on restore).
pub const STANDARD_ORDER: [&str; 19] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// `(hard, soft)` time limits in seconds; `None` = the task/worker default.
pub type TimeLimit = (Option<f64>, Option<f64>);

#[derive(Debug, Clone, PartialEq)]
pub struct TaskHeaders {
    /// `"py"` from Python clients; informational.
    pub lang: String,
    pub task: String,
    pub id: String,
    /// Display name override; the task run is still `task`.
    pub shadow: Option<String>,
    /// Not before this time. Naive wire values are UTC.
    pub eta: Option<DateTime<Utc>>,
    /// Revoke (do not run) after this time.
    pub expires: Option<DateTime<Utc>>,
    pub group: Option<String>,
    pub group_index: Option<i64>,
    pub retries: u32,
    /// `(hard, soft)`: the wire order of `timelimit`.
    pub timelimit: TimeLimit,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub argsrepr: Option<String>,
    pub kwargsrepr: Option<String>,
    pub origin: Option<String>,
    /// `None` (null) means "use the task's default".
    pub ignore_result: Option<bool>,
    pub replaced_task_nesting: u32,
    pub stamped_headers: Option<Vec<String>>,
    pub stamps: Map<String, Value>,
    /// MIME type of the body compression, when compressed.
    pub compression: Option<String>,
    /// Set by kombu's Redis transport when the message was restored/requeued.
    pub redelivered: bool,
    /// Custom headers, in wire order.
    pub extra: Map<String, Value>,
}

impl TaskHeaders {
    /// Headers with Celery's defaults for a new top-level task.
    pub fn new(task: &str, id: &str) -> Self {
        TaskHeaders {
            lang: "py".into(),
            task: task.into(),
            id: id.into(),
            shadow: None,
            eta: None,
            expires: None,
            group: None,
            group_index: None,
            retries: 0,
            timelimit: (None, None),
            root_id: Some(id.into()),
            parent_id: None,
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: Some(false),
            replaced_task_nesting: 0,
            stamped_headers: None,
            stamps: Map::new(),
            compression: None,
            redelivered: false,
            extra: Map::new(),
        }
    }

    /// Parse a header map. `task` and `id` must be strings
    /// ([`DecodeErrorKind::MissingField`]); any other header of the wrong
    /// type, or an unparsable `eta`/`expires`, is [`DecodeErrorKind::Header`].
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, DecodeError> {
        let task = required(map, "task")?;
        let id = required(map, "id")?;
        let h = Reader(map);
        let mut headers = TaskHeaders {
            lang: h.string("lang")?.unwrap_or_else(|| "py".into()),
            shadow: h.string("shadow")?,
            eta: h.time("eta")?,
            expires: h.time("expires")?,
            group: h.string("group")?,
            group_index: h.int("group_index")?,
            retries: h.uint("retries")?.unwrap_or(0),
            timelimit: h.timelimit()?,
            root_id: h.string("root_id")?,
            parent_id: h.string("parent_id")?,
            argsrepr: h.string("argsrepr")?,
            kwargsrepr: h.string("kwargsrepr")?,
            origin: h.string("origin")?,
            ignore_result: h.boolean("ignore_result")?,
            replaced_task_nesting: h.uint("replaced_task_nesting")?.unwrap_or(0),
            stamped_headers: h.string_list("stamped_headers")?,
            stamps: h.map("stamps")?.unwrap_or_default(),
            compression: h.string("compression")?,
            redelivered: h.boolean("redelivered")?.unwrap_or(false),
            ..TaskHeaders::new(&task, &id)
        };
        headers.extra = map
            .iter()
            .filter(|(k, _)| !is_known(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(headers)
    }

    /// The header map as Celery writes it (every standard key, null when unset).
    pub fn to_map(&self) -> Map<String, Value> {
        let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
        let time = |t: &Option<DateTime<Utc>>| t.map_or(Value::Null, |t| to_isoformat(t).into());
        let limit = |x: Option<f64>| x.map_or(Value::Null, pyjson::number);
        let values: [Value; 19] = [
            self.lang.clone().into(),
            self.task.clone().into(),
            self.id.clone().into(),
            opt(&self.shadow),
            time(&self.eta),
            time(&self.expires),
            opt(&self.group),
            self.group_index.map_or(Value::Null, Value::from),
            self.retries.into(),
            Value::Array(vec![limit(self.timelimit.0), limit(self.timelimit.1)]),
            opt(&self.root_id),
            opt(&self.parent_id),
            opt(&self.argsrepr),
            opt(&self.kwargsrepr),
            opt(&self.origin),
            self.ignore_result.map_or(Value::Null, Value::Bool),
            self.replaced_task_nesting.into(),
            self.stamped_headers.as_ref().map_or(Value::Null, |s| {
                s.iter().cloned().map(Value::String).collect()
            }),
            Value::Object(self.stamps.clone()),
        ];
        let mut map: Map<String, Value> = STANDARD_ORDER
            .iter()
            .map(|k| k.to_string())
            .zip(values)
            .collect();
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        if let Some(c) = &self.compression {
            map.insert("compression".into(), c.clone().into());
        }
        if self.redelivered {
            map.insert("redelivered".into(), true.into());
        }
        map
    }

    /// The name to show in logs and events: `shadow or task`.
    pub fn display_name(&self) -> &str {
        self.shadow.as_deref().unwrap_or(&self.task)
    }
}

fn is_known(key: &str) -> bool {
    STANDARD_ORDER.contains(&key) || key == "compression" || key == "redelivered"
}

fn required(map: &Map<String, Value>, key: &str) -> Result<String, DecodeError> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(DecodeError::new(
            DecodeErrorKind::MissingField,
            format!("{key} is not a string: {}", pyjson::to_string(other)),
        )),
        None => Err(DecodeError::new(
            DecodeErrorKind::MissingField,
            format!("message has no {key}"),
        )),
    }
}

/// Typed access to optional headers; null and absent are the same.
struct Reader<'a>(&'a Map<String, Value>);

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, want: &str) -> DecodeError {
        let got = self.get(key).map(pyjson::to_string).unwrap_or_default();
        DecodeError::new(
            DecodeErrorKind::Header,
            format!("header {key} must be {want}, got {got}"),
        )
    }

    fn string(&self, key: &str) -> Result<Option<String>, DecodeError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.bad(key, "a string"))
            })
            .transpose()
    }

    fn int(&self, key: &str) -> Result<Option<i64>, DecodeError> {
        self.get(key)
            .map(|v| v.as_i64().ok_or_else(|| self.bad(key, "an integer")))
            .transpose()
    }

    fn uint(&self, key: &str) -> Result<Option<u32>, DecodeError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| self.bad(key, "a non-negative integer"))
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, DecodeError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(key, "a boolean")))
            .transpose()
    }

    fn map(&self, key: &str) -> Result<Option<Map<String, Value>>, DecodeError> {
        self.get(key)
            .map(|v| v.as_object().cloned().ok_or_else(|| self.bad(key, "a map")))
            .transpose()
    }

    fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, DecodeError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.bad(key, "a list of strings"))?;
        items
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.bad(key, "a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `eta`/`expires`: an ISO-8601 string (Celery raises InvalidTaskError otherwise).
    fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        parse_iso(&text).map(Some).map_err(|_| {
            DecodeError::new(
                DecodeErrorKind::Header,
                format!("invalid {key} value {text:?}"),
            )
        })
    }

    fn timelimit(&self) -> Result<TimeLimit, DecodeError> {
        let Some(v) = self.get("timelimit") else {
            return Ok((None, None));
        };
        let want = "[hard, soft] (numbers or null)";
        let items = v
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| self.bad("timelimit", want))?;
        let limit = |x: &Value| match x {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad("timelimit", want)),
            _ => Err(self.bad("timelimit", want)),
        };
        Ok((limit(&items[0])?, limit(&items[1])?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn celery_headers() -> Map<String, Value> {
        let v = json!({"lang": "py", "task": "capapp.add", "id": "i", "shadow": null,
            "eta": "2026-11-21T22:45:09.646588+00:00", "expires": null, "group": "g", "group_index": 1,
            "retries": 0, "timelimit": [30, 20], "root_id": "i", "parent_id": null, "argsrepr": "(2,)",
            "kwargsrepr": "{'y': 3}", "origin": "gen1@vm", "ignore_result": false,
            "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {},
            "x-custom": [1], "compression": "application/x-gzip", "redelivered": true});
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_and_writes_back_in_celery_order() {
        let map = celery_headers();
        let h = TaskHeaders::from_map(&map).unwrap();
        assert_eq!(h.timelimit, (Some(30.0), Some(20.0)));
        assert_eq!(h.group_index, Some(1));
        assert_eq!(h.extra.keys().collect::<Vec<_>>(), ["x-custom"]);
        assert!(h.redelivered);
        assert_eq!(pyjson::to_string(&h.to_map()), pyjson::to_string(&map));
    }

    #[test]
    fn minimal_headers_get_defaults_and_bad_values_are_typed() {
        let min = json!({"task": "t", "id": "i"})
            .as_object()
            .cloned()
            .unwrap();
        let h = TaskHeaders::from_map(&min).unwrap();
        assert_eq!((h.retries, h.timelimit, h.eta), (0, (None, None), None));
        let kind = |v: Value| {
            TaskHeaders::from_map(v.as_object().unwrap())
                .unwrap_err()
                .kind
        };
        assert_eq!(kind(json!({"task": "t"})), DecodeErrorKind::MissingField);
        assert_eq!(
            kind(json!({"id": "i", "task": 3})),
            DecodeErrorKind::MissingField
        );
        assert_eq!(
            kind(json!({"task": "t", "id": "i", "eta": "not-a-date"})),
            DecodeErrorKind::Header
        );
        assert_eq!(
            kind(json!({"task": "t", "id": "i", "timelimit": [1]})),
            DecodeErrorKind::Header
        );
        assert_eq!(
            kind(json!({"task": "t", "id": "i", "retries": -1})),
            DecodeErrorKind::Header
        );
    }
}
