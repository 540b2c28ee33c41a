//! Where Airflow is and what its task processes see: the Python with
//! Airflow installed, the environment passed through from the worker (the
//! same `AIRFLOW__*` settings `airflow celery worker` would read), the warm
//! pool, and the worker log server (`[logging] worker_log_server_port`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::config::{ConfigError, Env};
use crate::routing::{Profile, PullPolicy, ResultSource, RuntimeKind};

/// Airflow's default `[logging] worker_log_server_port`.
pub const DEFAULT_LOG_SERVER_PORT: u16 = 8793;

/// Modules the warm pool imports once: everything `execute_workload` pulls
/// in before it forks the task runner (airflow.md §3), then the per-process
/// caches the fork server builds once for all tasks (`warm:` entries).
/// The rest were found by tracing the imports of forked tasks (an audit
/// hook, bench/airflow.md): what `airflow celery worker` has imported
/// before its pool forks a task. `?` marks an optional module.
pub const DEFAULT_PRELOAD: [&str; 16] = [
    "airflow.sdk.execution_time.execute_workload",
    "airflow.executors.workloads",
    "airflow.executors.base_executor",
    "airflow.sdk.log",
    "airflow.settings",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    // The task runner imports it when it parses the DAG: 117 modules, ~0.23 s
    // per task if not preloaded (`airflow celery worker` has it imported).
    "airflow.dag_processing.dagbag",
    // The API client's SSL context: ~0.1 s per task if every fork built it.
    "warm:airflow-api-client",
    // Imported by every task's supervisor or runner otherwise (~25 ms).
    "setproctitle",
    "encodings.idna",
    "jinja2.ext",
    "airflow.sdk.definitions.connection",
    // The operators most DAGs use (the standard provider ships with Airflow 3).
    "?airflow.providers.standard.operators.bash",
    "?airflow.providers.standard.operators.python",
    // `execute_workload`'s logging set-up, cached (~16 ms per task).
    "warm:airflow-task-logging",
];

/// Variables besides `AIRFLOW_*` that task processes get from the worker's
/// environment (locale, CA bundles, proxies, Python paths).
const PASSTHROUGH: [&str; 23] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TZ",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "KRB5CCNAME",
];

#[derive(Debug, Clone)]
pub struct AirflowSettings {
    /// Python with Airflow installed (process and warm runtimes).
    pub python: PathBuf,
    /// `$AIRFLOW_HOME` (default `~/airflow`).
    pub home: PathBuf,
    /// `[logging] base_log_folder` (default `$AIRFLOW_HOME/logs`).
    pub base_log_folder: PathBuf,
    /// Warm Python processes (fork servers); 0 = a fresh Python per task.
    pub warm_pool: usize,
    pub preload: Vec<String>,
    /// None = do not serve logs (`--skip-serve-logs`).
    pub log_server: Option<LogServerSettings>,
    /// Passed through to task processes (filled from the process env by `main`).
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct LogServerSettings {
    pub port: u16,
    /// `[api] secret_key` (Airflow 3; `[webserver] secret_key` before). None:
    /// like Airflow, a random key — every request is then refused.
    pub secret: Option<SecretString>,
    /// `[webserver] log_request_clock_grace`.
    pub leeway: Duration,
}

/// The command-line part of the settings.
#[derive(Debug, Clone, Default)]
pub struct AirflowFlags {
    pub python: Option<PathBuf>,
    pub warm_pool: Option<usize>,
    pub preload: Option<Vec<String>>,
    /// Appended to `preload` (or the default).
    pub preload_extra: Vec<String>,
    pub log_server_port: Option<u16>,
    pub skip_serve_logs: bool,
}

impl AirflowSettings {
    pub fn resolve(flags: AirflowFlags, env: Env<'_>) -> Result<Self, ConfigError> {
        let num = |name: &str| -> Result<Option<u64>, ConfigError> {
            env(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError {
                        setting: name.to_owned(),
                        reason: format!("{v:?} is not a valid number"),
                    })
                })
                .transpose()
        };
        let home = env("AIRFLOW_HOME").map(PathBuf::from).unwrap_or_else(|| {
            Path::new(&env("HOME").unwrap_or_else(|| "/root".into())).join("airflow")
        });
        let base_log_folder = env("AIRFLOW__LOGGING__BASE_LOG_FOLDER")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("logs"));
        let port = match flags.log_server_port {
            Some(p) => p,
            None => match num("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT")? {
                Some(p) => u16::try_from(p).map_err(|_| ConfigError {
                    setting: "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT".into(),
                    reason: format!("{p} is not a port"),
                })?,
                None => DEFAULT_LOG_SERVER_PORT,
            },
        };
        let secret = env("AIRFLOW__API__SECRET_KEY")
            .or_else(|| env("AIRFLOW__WEBSERVER__SECRET_KEY"))
            .filter(|s| !s.is_empty())
            .map(SecretString::from);
        let leeway =
            Duration::from_secs(num("AIRFLOW__WEBSERVER__LOG_REQUEST_CLOCK_GRACE")?.unwrap_or(30));
        Ok(AirflowSettings {
            python: flags.python.unwrap_or_else(|| "python3".into()),
            home,
            base_log_folder,
            warm_pool: flags.warm_pool.unwrap_or(0),
            preload: flags
                .preload
                .unwrap_or_else(|| DEFAULT_PRELOAD.iter().map(|m| (*m).to_owned()).collect())
                .into_iter()
                .chain(flags.preload_extra)
                .collect(),
            log_server: (!flags.skip_serve_logs).then_some(LogServerSettings {
                port,
                secret,
                leeway,
            }),
            env: Vec::new(),
        })
    }

    /// Keep the variables task processes need from the worker's environment.
    pub fn with_process_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("AIRFLOW_") || PASSTHROUGH.contains(&k.as_str()))
            .collect();
        self
    }

    /// The environment of a task process (and of the warm fork servers):
    /// the pass-through variables, `AIRFLOW_HOME`, and PATH with the
    /// Python's own directory first so `airflow` is that installation's.
    pub fn task_env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.env.iter().cloned().collect();
        let path = env
            .remove("PATH")
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("AIRFLOW_HOME".into(), self.home.display().to_string());
        let bin = self.python.parent().filter(|p| !p.as_os_str().is_empty());
        let path = match bin {
            Some(dir) => format!("{}:{path}", dir.display()),
            None => path,
        };
        env.insert("PATH".into(), path);
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
        env
    }

    /// The profile of Airflow tasks no route sends elsewhere: a local process.
    pub fn default_profile(&self) -> Profile {
        Profile {
            runtime: RuntimeKind::Process,
            image: None,
            pull: PullPolicy::default(),
            command: vec![self.python.display().to_string()],
            env: BTreeMap::new(),
            mounts: Vec::new(),
            cpus: None,
            memory: None,
            network: None,
            user: None,
            workdir: None,
            time_limit: None,
            soft_time_limit: None,
            result: ResultSource::None,
            acks_late: None,
            reject_on_worker_lost: None,
            track_started: None,
            ignore_result: None,
            retry: None,
        }
    }
}
