//! Conversions between [`TaskResult`] and `celery_taskmeta` column values.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use super::{pickle, LegacyResult, ResultLayout};
use crate::backend::{ExtendedMeta, TaskResult, TaskState};
use crate::protocol::pyjson;
use crate::{Error, Result};

/// SQLAlchemy's text form of a naive DATETIME (SQLite storage format too).
const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// The values of one write, in [`super::sql::value_columns`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowValues {
    pub status: String,
    pub result: Option<Vec<u8>>,
    pub date_done: Option<String>,
    pub traceback: Option<String>,
    /// Only bound for the Celery 5.7 layout.
    pub children: Option<Vec<u8>>,
    pub name: Option<String>,
    pub args: Option<Vec<u8>>,
    pub kwargs: Option<Vec<u8>>,
    pub worker: Option<String>,
    pub retries: Option<i32>,
    pub queue: Option<String>,
}

/// Encode a result as Celery's database backend does for this layout.
pub fn encode(
    r: &TaskResult,
    layout: ResultLayout,
    legacy: LegacyResult,
    extended: bool,
) -> RowValues {
    let result = match (layout, legacy) {
        // 5.7: the result serializer's bytes (json), `null` for None.
        (ResultLayout::Celery57, _) => Some(pyjson::to_vec(&r.result)),
        (ResultLayout::Celery56, LegacyResult::Pickle) => Some(pickle::dumps(&r.result)),
        (ResultLayout::Celery56, LegacyResult::Null) => None,
    };
    let children = match &r.children {
        Some(c) if !c.is_empty() => Some(pyjson::to_vec(c)),
        _ => None,
    };
    let x = r.extended.as_ref().filter(|_| extended);
    let json_bytes = |v: &Option<Value>| pyjson::to_vec(v.as_ref().unwrap_or(&Value::Null));
    RowValues {
        status: r.status.as_str().to_owned(),
        result,
        date_done: r
            .date_done
            .map(|d| d.naive_utc().format(DATE_FORMAT).to_string()),
        traceback: r.traceback.clone(),
        children,
        name: x.and_then(|x| x.name.clone()),
        args: x.map(|x| json_bytes(&x.args)),
        kwargs: x.map(|x| json_bytes(&x.kwargs)),
        worker: x.and_then(|x| x.worker.clone()),
        retries: x
            .and_then(|x| x.retries)
            .and_then(|n| i32::try_from(n).ok()),
        queue: x.and_then(|x| x.queue.clone()),
    }
}

/// A time as the naive-UTC text a DATETIME column is written with.
pub fn date_text(t: DateTime<Utc>) -> String {
    t.naive_utc().format(DATE_FORMAT).to_string()
}

/// Rebuild a result from a row. Pickled (legacy) results are never read:
/// their value comes back as null.
pub fn decode(
    task_id: &str,
    v: RowValues,
    layout: ResultLayout,
    extended: bool,
) -> Result<TaskResult> {
    let bad = |what: &str| Error::Protocol(format!("celery_taskmeta row {task_id}: {what}"));
    let status = TaskState::parse(&v.status).ok_or_else(|| bad("unknown status"))?;
    let json = |b: &Option<Vec<u8>>| -> Result<Option<Value>> {
        b.as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(|_| bad("column is not JSON"))
    };
    let result = match layout {
        ResultLayout::Celery57 => json(&v.result)?.unwrap_or(Value::Null),
        ResultLayout::Celery56 => Value::Null,
    };
    let children = match json(&v.children)? {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let extended = if extended {
        Some(ExtendedMeta {
            name: v.name,
            args: json(&v.args)?.filter(|a| !a.is_null()),
            kwargs: json(&v.kwargs)?.filter(|a| !a.is_null()),
            worker: v.worker,
            retries: v.retries.map(i64::from),
            queue: v.queue,
        })
    } else {
        None
    };
    Ok(TaskResult {
        task_id: task_id.to_owned(),
        status,
        result,
        traceback: v.traceback,
        children: Some(children),
        date_done: v.date_done.as_deref().map(parse_date).transpose()?,
        group_id: None,
        parent_id: None,
        extended,
    })
}

fn parse_date(s: &str) -> Result<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|e| Error::Protocol(format!("date_done {s:?}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::backend::ExceptionInfo;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn failure_row_like_celery_57() {
        let mut r = TaskResult::failure(
            "t",
            &ExceptionInfo::new("builtins", "ValueError", vec![json!("boom")]),
            Some("Traceback...".into()),
        );
        r.date_done = Utc.with_ymd_and_hms(2026, 11, 21, 22, 47, 45).single();
        let v = encode(&r, ResultLayout::Celery57, LegacyResult::Null, false);
        assert_eq!(
            v.result.as_deref(),
            Some(&br#"{"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}"#[..])
        );
        assert_eq!(v.date_done.as_deref(), Some("2026-11-21 22:47:45.000000"));
        assert_eq!(v.children, None);
        assert_eq!(v.args, None);
    }
}
