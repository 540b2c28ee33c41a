//! The metastore query, built from the configuration: pure string work, so
//! it is unit-tested without a database. Values are bound, never inlined.

/// SQL dialects of Airflow's supported metadata databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// Which executors' task instances count (spec §8). `executor` holds the
/// task's `executor=` argument verbatim; NULL means the default executor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExecutorFilter {
    /// Single-executor deployment: every row counts.
    #[default]
    Any,
    /// Only these names (alias, class name, module path); NULL rows count
    /// when Celery is the default executor.
    Only {
        names: Vec<String>,
        include_null: bool,
    },
    /// The chart's `executor IS DISTINCT FROM 'KubernetesExecutor'`.
    Exclude(Vec<String>),
}

/// What to count in `task_instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountQuery {
    pub queues: Vec<String>,
    pub executors: ExecutorFilter,
}

impl CountQuery {
    /// The SQL and its bind values, in order.
    pub fn sql(&self, dialect: Dialect, timeout_ms: u64) -> (String, Vec<String>) {
        let mut binds = Vec::new();
        // MySQL's optimizer hint bounds the statement server-side; MariaDB
        // ignores it (the client-side timeout still applies).
        let hint = match dialect {
            Dialect::MySql => format!("/*+ MAX_EXECUTION_TIME({timeout_ms}) */ "),
            Dialect::Postgres => String::new(),
        };
        let mut sql = format!(
            "SELECT {hint}COUNT(CASE WHEN state = 'running' THEN 1 END) AS running, \
             COUNT(CASE WHEN state = 'queued' THEN 1 END) AS queued \
             FROM task_instance WHERE state IN ('queued', 'running')"
        );
        if !self.queues.is_empty() {
            let list = placeholders(dialect, &mut binds, &self.queues);
            sql.push_str(&format!(" AND queue IN ({list})"));
        }
        match &self.executors {
            ExecutorFilter::Any => {}
            ExecutorFilter::Only {
                names,
                include_null,
            } => {
                let list = placeholders(dialect, &mut binds, names);
                let null = if *include_null {
                    "executor IS NULL OR "
                } else {
                    ""
                };
                sql.push_str(&format!(" AND ({null}executor IN ({list}))"));
            }
            ExecutorFilter::Exclude(names) => {
                let list = placeholders(dialect, &mut binds, names);
                sql.push_str(&format!(
                    " AND (executor IS NULL OR executor NOT IN ({list}))"
                ));
            }
        }
        (sql, binds)
    }
}

fn placeholders(dialect: Dialect, binds: &mut Vec<String>, values: &[String]) -> String {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        binds.push(v.clone());
        out.push(match dialect {
            Dialect::Postgres => format!("${}", binds.len()),
            Dialect::MySql => "?".to_owned(),
        });
    }
    out.join(", ")
}

/// Turn a SQLAlchemy URL (`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`) into one
/// sqlx accepts: the `+driver` suffix goes, `postgresql` becomes `postgres`.
pub fn sqlx_url(sqlalchemy: &str) -> Result<(Dialect, String), String> {
    let (scheme, rest) = sqlalchemy
        .split_once("://")
        .ok_or_else(|| "not a URL (expected scheme://…)".to_owned())?;
    let base = scheme.split('+').next().unwrap_or(scheme);
    match base {
        "postgres" | "postgresql" => Ok((Dialect::Postgres, format!("postgres://{rest}"))),
        "mysql" | "mariadb" => Ok((Dialect::MySql, format!("mysql://{rest}"))),
        other => Err(format!(
            "unsupported database {other:?} (PostgreSQL or MySQL/MariaDB)"
        )),
    }
}

/// Airflow's module path of the Celery executor class.
const CELERY_PATH: &str = "airflow.providers.celery.executors.celery_executor.CeleryExecutor";

/// Derive the executor filter from `[core] executor` (`AIRFLOW__CORE__EXECUTOR`):
/// one executor → no filter; several → count the Celery entries (by alias,
/// class name and module path), and NULL rows when Celery is listed first.
pub fn executor_filter_from_airflow(core_executor: &str) -> ExecutorFilter {
    let entries: Vec<&str> = core_executor
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() < 2 {
        return ExecutorFilter::Any;
    }
    let is_celery = |e: &str| {
        let path = e.rsplit(':').next().unwrap_or(e);
        path == "CeleryExecutor" || path.ends_with(".CeleryExecutor")
    };
    let mut names = vec!["CeleryExecutor".to_owned(), CELERY_PATH.to_owned()];
    for entry in entries.iter().filter(|e| is_celery(e)) {
        for part in entry.split(':') {
            if !names.iter().any(|n| n == part) {
                names.push(part.to_owned());
            }
        }
    }
    ExecutorFilter::Only {
        names,
        include_null: entries.first().is_some_and(|e| is_celery(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(executors: ExecutorFilter) -> CountQuery {
        CountQuery {
            queues: vec!["default".into(), "high".into()],
            executors,
        }
    }

    #[test]
    fn postgres_query_binds_queues_and_executors() {
        let filter = ExecutorFilter::Only {
            names: vec!["CeleryExecutor".into()],
            include_null: true,
        };
        let (sql, binds) = q(filter).sql(Dialect::Postgres, 5000);
        assert!(sql.ends_with(
            "WHERE state IN ('queued', 'running') AND queue IN ($1, $2) \
             AND (executor IS NULL OR executor IN ($3))"
        ));
        assert_eq!(binds, ["default", "high", "CeleryExecutor"]);
    }

    #[test]
    fn mysql_query_uses_question_marks_and_a_time_hint() {
        let (sql, binds) =
            q(ExecutorFilter::Exclude(vec!["KubernetesExecutor".into()])).sql(Dialect::MySql, 2500);
        assert!(sql.starts_with("SELECT /*+ MAX_EXECUTION_TIME(2500) */ COUNT"));
        assert!(sql.ends_with("AND queue IN (?, ?) AND (executor IS NULL OR executor NOT IN (?))"));
        assert_eq!(binds.len(), 3);
    }

    #[test]
    fn sqlalchemy_urls_translate() {
        let cases = [
            (
                "postgresql+psycopg2://u:p@h:5432/airflow",
                "postgres://u:p@h:5432/airflow",
            ),
            (
                "postgresql://h/db?sslmode=disable",
                "postgres://h/db?sslmode=disable",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("mysql+mysqldb://u@h/airflow", "mysql://u@h/airflow"),
        ];
        for (input, want) in cases {
            assert_eq!(sqlx_url(input).unwrap().1, want, "{input}");
        }
        assert!(sqlx_url("sqlite:////tmp/airflow.db").is_err());
        assert!(sqlx_url("nonsense").is_err());
    }

    #[test]
    fn executor_filter_follows_core_executor() {
        assert_eq!(
            executor_filter_from_airflow("CeleryExecutor"),
            ExecutorFilter::Any
        );
        let f = executor_filter_from_airflow("CeleryExecutor,KubernetesExecutor");
        let ExecutorFilter::Only {
            names,
            include_null,
        } = f
        else {
            panic!("expected Only, got {f:?}");
        };
        assert!(include_null);
        assert_eq!(names, ["CeleryExecutor", CELERY_PATH]);
        let f = executor_filter_from_airflow("KubernetesExecutor, fast:my.pkg.CeleryExecutor");
        let ExecutorFilter::Only {
            names,
            include_null,
        } = f
        else {
            panic!("expected Only, got {f:?}");
        };
        assert!(!include_null);
        assert!(
            names.contains(&"fast".to_owned())
                && names.contains(&"my.pkg.CeleryExecutor".to_owned())
        );
    }
}
