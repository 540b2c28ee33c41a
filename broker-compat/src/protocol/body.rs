//! Task bodies: protocol 2 `[args, kwargs, embed]` (§1.4) and the map bodies
//! of protocol 1 / "hybrid" messages (§1.5), converted like
//! `celery/worker/strategy.py::hybrid_to_proto2`.

use serde_json::{Map, Value};

use super::{kombu_json, pyjson};
use crate::error::{DecodeError, DecodeErrorKind};

/// `saferepr`'s limit on `argsrepr`/`kwargsrepr`.
pub const REPR_MAX: usize = 1024;

/// What runs after the task (`embed` of a protocol 2 body). Signatures are
/// kept as the JSON maps Celery wrote (`{"task", "args", "kwargs",
/// "options", "subtask_type", "immutable"}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embed {
    /// `link`: applied with the result prepended to their args.
    pub callbacks: Option<Vec<Value>>,
    /// `link_error`: applied with the failed task id prepended.
    pub errbacks: Option<Vec<Value>>,
    /// Remaining chain steps in reverse order: the next task is the last element.
    pub chain: Option<Vec<Value>>,
    /// The chord body signature (this task is a chord header member).
    pub chord: Option<Value>,
}

impl Embed {
    /// Parse an embed map. Missing or null embed = all null (Celery 5.7
    /// crashes on a 2-element body; we accept it).
    pub fn from_value(v: Option<&Value>) -> Result<Self, DecodeError> {
        let map = match v {
            None | Some(Value::Null) => return Ok(Embed::default()),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(shape(format!(
                    "embed must be a map, got {}",
                    pyjson::to_string(other)
                )))
            }
        };
        Ok(Embed {
            callbacks: signature_list(map, "callbacks")?,
            errbacks: signature_list(map, "errbacks")?,
            chain: signature_list(map, "chain")?,
            chord: map.get("chord").filter(|c| !c.is_null()).cloned(),
        })
    }

    /// The embed map as Celery writes it.
    pub fn to_value(&self) -> Value {
        let list = |l: &Option<Vec<Value>>| l.clone().map_or(Value::Null, Value::Array);
        let mut m = Map::new();
        m.insert("callbacks".into(), list(&self.callbacks));
        m.insert("errbacks".into(), list(&self.errbacks));
        m.insert("chain".into(), list(&self.chain));
        m.insert("chord".into(), self.chord.clone().unwrap_or(Value::Null));
        Value::Object(m)
    }
}

fn signature_list(map: &Map<String, Value>, key: &str) -> Result<Option<Vec<Value>>, DecodeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.clone())),
        Some(other) => Err(shape(format!(
            "embed {key} must be a list, got {}",
            pyjson::to_string(other)
        ))),
    }
}

/// args, kwargs and embed of a task, whatever the protocol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskBody {
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub embed: Embed,
}

impl TaskBody {
    /// A protocol 2 body: `[args, kwargs]` or `[args, kwargs, embed]`.
    pub fn from_v2(payload: &Value) -> Result<Self, DecodeError> {
        let items = payload.as_array().ok_or_else(|| {
            shape(format!(
                "body must be [args, kwargs, embed], got {}",
                kind_of(payload)
            ))
        })?;
        if !(2..=3).contains(&items.len()) {
            return Err(shape(format!(
                "body must be [args, kwargs, embed], got {} elements",
                items.len()
            )));
        }
        Ok(TaskBody {
            args: args(Some(&items[0]))?,
            kwargs: kwargs(Some(&items[1]))?,
            embed: Embed::from_value(items.get(2))?,
        })
    }

    /// The protocol 2 body value.
    pub fn to_v2(&self) -> Value {
        Value::Array(vec![
            Value::Array(self.args.clone()),
            Value::Object(self.kwargs.clone()),
            self.embed.to_value(),
        ])
    }

    /// `argsrepr` as Celery computes it for a tuple of args: `(2,)`, `(1, 2)`, `()`.
    pub fn args_repr(&self) -> String {
        let items: Vec<String> = self.args.iter().map(kombu_json::repr).collect();
        let text = match items.len() {
            1 => format!("({},)", items[0]),
            _ => format!("({})", items.join(", ")),
        };
        pyjson::truncate_repr(text, REPR_MAX)
    }

    /// `kwargsrepr`: `{'y': 3}`.
    pub fn kwargs_repr(&self) -> String {
        pyjson::truncate_repr(
            kombu_json::repr(&Value::Object(self.kwargs.clone())),
            REPR_MAX,
        )
    }
}

/// A map body (protocol 1, or hybrid: v2 headers with a map body) turned
/// into protocol 2 headers + body. Message headers win over body fields.
/// Returns the header map, the body and the protocol 1 `utc` flag.
pub fn from_map_body(
    body: &Map<String, Value>,
    message_headers: &Map<String, Value>,
) -> Result<(Map<String, Value>, TaskBody, bool), DecodeError> {
    let task_body = TaskBody {
        args: args(body.get("args"))?,
        kwargs: kwargs(body.get("kwargs"))?,
        embed: Embed {
            callbacks: signature_list(body, "callbacks")?,
            errbacks: signature_list(body, "errbacks")?,
            chain: None,
            chord: body.get("chord").filter(|c| !c.is_null()).cloned(),
        },
    };
    let mut headers = map_body_headers(body);
    if headers.get("argsrepr").is_none_or(Value::is_null) {
        headers.insert("argsrepr".into(), task_body.args_repr().into());
        headers.insert("kwargsrepr".into(), task_body.kwargs_repr().into());
    }
    for (k, v) in message_headers {
        headers.insert(k.clone(), v.clone());
    }
    let utc = body.get("utc").and_then(Value::as_bool).unwrap_or(true);
    Ok((headers, task_body, utc))
}

/// The header fields a map body carries.
fn map_body_headers(body: &Map<String, Value>) -> Map<String, Value> {
    const FIELDS: [&str; 15] = [
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
    ];
    let mut headers: Map<String, Value> = FIELDS
        .iter()
        .filter_map(|k| body.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    // Protocol 1 also names the group `taskset`.
    if headers.get("group").is_none_or(Value::is_null) {
        if let Some(taskset) = body.get("taskset") {
            headers.insert("group".into(), taskset.clone());
        }
    }
    headers
}

fn args(v: Option<&Value>) -> Result<Vec<Value>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(other) => Err(shape(format!(
            "args must be a list, got {}",
            kind_of(other)
        ))),
    }
}

fn kwargs(v: Option<&Value>) -> Result<Map<String, Value>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(shape(format!(
            "Task keyword arguments must be a mapping, got {}",
            kind_of(other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn shape(detail: String) -> DecodeError {
    DecodeError::new(DecodeErrorKind::BodyShape, detail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_body_with_and_without_embed() {
        let full = json!([[2], {"y": 3}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
        let body = TaskBody::from_v2(&full).unwrap();
        assert_eq!(body.to_v2(), full);
        assert_eq!(
            (body.args_repr().as_str(), body.kwargs_repr().as_str()),
            ("(2,)", "{'y': 3}")
        );
        let short = TaskBody::from_v2(&json!([[1, 2], {}])).unwrap();
        assert_eq!(short.embed, Embed::default());
        assert_eq!(short.args_repr(), "(1, 2)");
        assert_eq!(TaskBody::default().args_repr(), "()");
    }

    #[test]
    fn bad_shapes_are_body_shape_errors() {
        for bad in [
            json!([[1]]),
            json!([[1], {}, {}, {}]),
            json!([[1], [2], {}]),
            json!({"a": 1}),
            json!([1, {}]),
        ] {
            assert_eq!(
                TaskBody::from_v2(&bad).unwrap_err().kind,
                DecodeErrorKind::BodyShape,
                "{bad}"
            );
        }
    }
}
