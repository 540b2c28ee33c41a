//! `GroupResult.save()` on the database backend: one INSERT into
//! `celery_tasksetmeta` with `result` = the group tuple
//! `[[gid, null], [[[id, null], null], …]]` (fixture `db-rows-public.json`).

use serde_json::{json, Value};
use sqlx::{AnyPool, AssertSqlSafe};

use super::sql::{param, timestamp_param, IdSource, Qualified};
use super::{pickle, LegacyResult, ResultLayout};
use crate::backend::url::DbDialect;
use crate::protocol::pyjson;
use crate::Result;

/// The INSERT for the group table; its id comes from `taskset_id_sequence`
/// wherever the task table's comes from a sequence.
pub fn insert_sql(dialect: DbDialect, table: &Qualified, task_id_source: &IdSource) -> String {
    let seq = table.sibling("taskset_id_sequence").sql();
    let (id_col, id_val) = match (task_id_source, dialect) {
        (IdSource::Sequence(_), DbDialect::Postgres) => ("id, ", format!("nextval('{seq}'), ")),
        (IdSource::Sequence(_), _) => ("id, ", format!("NEXTVAL({seq}), ")),
        (IdSource::AutoIncrement, _) => ("", String::new()),
    };
    format!(
        "INSERT INTO {} ({id_col}taskset_id, result, date_done) VALUES ({id_val}{}, {}, {})",
        table.sql(),
        param(dialect, 1),
        param(dialect, 2),
        timestamp_param(dialect, 3)
    )
}

/// The `result` column for a group, as the layout stores values.
pub fn encode(
    group_id: &str,
    member_ids: &[String],
    layout: ResultLayout,
    legacy: LegacyResult,
) -> Option<Vec<u8>> {
    let members: Vec<Value> = member_ids
        .iter()
        .map(|id| json!([[id, null], null]))
        .collect();
    let value = json!([[group_id, null], members]);
    match (layout, legacy) {
        (ResultLayout::Celery57, _) => Some(pyjson::to_vec(&value)),
        (ResultLayout::Celery56, LegacyResult::Pickle) => Some(pickle::dumps(&value)),
        (ResultLayout::Celery56, LegacyResult::Null) => None,
    }
}

pub async fn insert(
    pool: &AnyPool,
    sql: &str,
    group_id: &str,
    result: Option<Vec<u8>>,
    date_done: String,
) -> Result<()> {
    sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .bind(group_id.to_owned())
        .bind(result)
        .bind(date_done)
        .execute(pool)
        .await?;
    Ok(())
}
