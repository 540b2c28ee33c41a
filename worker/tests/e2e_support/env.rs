//! The stack's configuration: only `AIRFLOW__*` variables (what an operator
//! sets for every Airflow process, the worker included).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use celeriac_tests::unique;

use super::stack::{dags_folder, free_port};

/// The environment of every process of a stack. Short intervals keep the
/// suite fast: heartbeats every second, DAG folder rescans every 5 s, a
/// 10 s broker visibility timeout (kill -9 redelivery) and a 30 s heartbeat
/// timeout (a task whose supervisor died is failed quickly).
pub fn airflow_env(
    bin: &Path,
    home: &Path,
    api: SocketAddr,
    sql: &str,
    broker: &str,
    queue: &str,
) -> BTreeMap<String, String> {
    let home_dir = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let vars = [
        (
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        ),
        ("HOME", home_dir),
        ("LANG", "C.UTF-8".into()),
        ("AIRFLOW_HOME", home.display().to_string()),
        ("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor".into()),
        (
            "AIRFLOW__CORE__DAGS_FOLDER",
            dags_folder().display().to_string(),
        ),
        ("AIRFLOW__CORE__LOAD_EXAMPLES", "False".into()),
        ("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False".into()),
        (
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS",
            "True".into(),
        ),
        (
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            format!("http://{api}/execution/"),
        ),
        ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", sql.to_owned()),
        ("AIRFLOW__CELERY__BROKER_URL", broker.to_owned()),
        ("AIRFLOW__CELERY__RESULT_BACKEND", format!("db+{sql}")),
        ("AIRFLOW__CELERY__WORKER_CONCURRENCY", "2".into()),
        (
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
            "10".into(),
        ),
        ("AIRFLOW__OPERATORS__DEFAULT_QUEUE", queue.to_owned()),
        ("AIRFLOW__API__BASE_URL", format!("http://{api}")),
        ("AIRFLOW__API__WORKERS", "1".into()),
        ("AIRFLOW__API__SECRET_KEY", unique("secret")),
        ("AIRFLOW__API_AUTH__JWT_SECRET", unique("jwt")),
        (
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
            free_port().to_string(),
        ),
        ("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "1".into()),
        ("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "5".into()),
        (
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
            "30".into(),
        ),
    ];
    let mut m: BTreeMap<String, String> =
        vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    // Diagnostics (bench/import_trace): a PYTHONPATH for every process.
    if let Ok(p) = std::env::var("CELERIAC_E2E_PYTHONPATH") {
        m.insert("PYTHONPATH".into(), p);
    }
    m
}
