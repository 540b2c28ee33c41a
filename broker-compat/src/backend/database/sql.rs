//! The SQL each dialect needs, built once per backend from validated names.

use super::ResultLayout;
use crate::backend::url::DbDialect;
use crate::{Error, Result};

/// How new rows get their `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// `nextval('<seq>')` in the INSERT (PostgreSQL; MariaDB ≥ 10.3 tables
    /// created by SQLAlchemy, which has sequences there).
    Sequence(String),
    /// The column is AUTO_INCREMENT / SQLite rowid: `id` is left out.
    AutoIncrement,
}

/// A table (or sequence) name, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    pub schema: Option<String>,
    pub name: String,
}

impl Qualified {
    /// Names are spliced into SQL, so only plain identifiers are accepted.
    pub fn new(setting: &str, schema: Option<&str>, name: &str) -> Result<Self> {
        for part in schema.into_iter().chain([name]) {
            let mut chars = part.chars();
            let head_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !head_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::Config {
                    setting: setting.to_owned(),
                    reason: format!("{part:?} is not a plain SQL identifier"),
                });
            }
        }
        Ok(Qualified {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// A sibling object (sequence, index) in the same schema.
    pub fn sibling(&self, name: &str) -> Qualified {
        Qualified {
            schema: self.schema.clone(),
            name: name.to_owned(),
        }
    }

    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The n-th (1-based) bind parameter.
pub fn param(dialect: DbDialect, n: usize) -> String {
    match dialect {
        DbDialect::Postgres => format!("${n}"),
        DbDialect::MySql | DbDialect::Sqlite => "?".to_owned(),
    }
}

/// A bind parameter holding `YYYY-MM-DD HH:MM:SS.ffffff` for a timestamp column.
pub fn timestamp_param(dialect: DbDialect, n: usize) -> String {
    match dialect {
        DbDialect::Postgres => format!("CAST(${n} AS TIMESTAMP)"),
        DbDialect::MySql | DbDialect::Sqlite => "?".to_owned(),
    }
}

/// A column read back as text (the Any driver has no timestamp type).
pub fn as_text(dialect: DbDialect, column: &str) -> String {
    match dialect {
        // SQLite: an expression is typed by its value, not the declared DATETIME.
        DbDialect::Postgres | DbDialect::Sqlite => format!("CAST({column} AS TEXT)"),
        DbDialect::MySql => format!("CAST({column} AS CHAR)"),
    }
}

/// Value columns in bind order (the task id is bound after them).
pub fn value_columns(layout: ResultLayout) -> Vec<&'static str> {
    let mut cols = vec!["status", "result", "date_done", "traceback"];
    if layout == ResultLayout::Celery57 {
        cols.push("children");
    }
    cols.extend(["name", "args", "kwargs", "worker", "retries", "queue"]);
    cols
}

/// Statements for one task table.
#[derive(Debug, Clone)]
pub struct Statements {
    pub select_for_update: String,
    pub insert: String,
    pub update: String,
    pub get: String,
}

impl Statements {
    pub fn new(dialect: DbDialect, table: &Qualified, layout: ResultLayout, id: &IdSource) -> Self {
        let t = table.sql();
        let cols = value_columns(layout);
        let values: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| match *c {
                "date_done" => timestamp_param(dialect, i + 1),
                _ => param(dialect, i + 1),
            })
            .collect();
        let task_id = param(dialect, cols.len() + 1);
        let lock = if dialect == DbDialect::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        Statements {
            select_for_update: format!(
                "SELECT status FROM {t} WHERE task_id = {}{lock}",
                param(dialect, 1)
            ),
            insert: insert_sql(dialect, &t, id, &cols, &values, &task_id),
            update: update_sql(&t, layout, &cols, &values, &task_id),
            get: get_sql(dialect, &t, layout),
        }
    }
}

fn insert_sql(
    dialect: DbDialect,
    t: &str,
    id: &IdSource,
    cols: &[&str],
    values: &[String],
    task_id: &str,
) -> String {
    let (id_col, id_val) = match id {
        IdSource::Sequence(seq) if dialect == DbDialect::Postgres => {
            ("id, ", format!("nextval('{seq}'), "))
        }
        IdSource::Sequence(seq) => ("id, ", format!("NEXTVAL({seq}), ")),
        IdSource::AutoIncrement => ("", String::new()),
    };
    format!(
        "INSERT INTO {t} ({id_col}{}, task_id) VALUES ({id_val}{}, {task_id})",
        cols.join(", "),
        values.join(", "),
    )
}

fn update_sql(
    t: &str,
    layout: ResultLayout,
    cols: &[&str],
    values: &[String],
    task_id: &str,
) -> String {
    let sets: Vec<String> = cols
        .iter()
        .zip(values)
        .map(|(c, v)| format!("{c} = {v}"))
        .collect();
    // Celery sets every column it maps from the meta; stamps is never in
    // ours, so it is cleared as Celery clears a key absent from the meta.
    let stamps = if layout == ResultLayout::Celery57 {
        ", stamps = NULL"
    } else {
        ""
    };
    format!(
        "UPDATE {t} SET {}{stamps} WHERE task_id = {task_id}",
        sets.join(", ")
    )
}

fn get_sql(dialect: DbDialect, t: &str, layout: ResultLayout) -> String {
    let children = if layout == ResultLayout::Celery57 {
        "children"
    } else {
        "NULL"
    };
    format!(
        "SELECT status, result, {}, traceback, {children}, name, args, kwargs, worker, \
         retries, queue FROM {t} WHERE task_id = {}",
        as_text(dialect, "date_done"),
        param(dialect, 1)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn postgres_insert_uses_the_sequence() {
        let t = Qualified::new("t", Some("ext"), "celery_taskmeta").unwrap();
        let s = Statements::new(
            DbDialect::Postgres,
            &t,
            ResultLayout::Celery57,
            &IdSource::Sequence(t.sibling("task_id_sequence").sql()),
        );
        assert!(s.insert.starts_with(
            "INSERT INTO ext.celery_taskmeta (id, status, result, date_done, traceback, children,"
        ));
        assert!(s
            .insert
            .contains("VALUES (nextval('ext.task_id_sequence'), $1, $2, CAST($3 AS TIMESTAMP)"));
        assert!(s.update.ends_with("stamps = NULL WHERE task_id = $12"));
    }

    #[test]
    fn identifiers_are_validated() {
        assert!(Qualified::new("t", None, "x; DROP TABLE y").is_err());
        assert!(Qualified::new("t", Some("a.b"), "x").is_err());
    }
}
