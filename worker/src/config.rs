//! Worker configuration: Celery-style flags, each also a `CELERIAC_*`
//! environment variable, falling back to Airflow's `AIRFLOW__CELERY__*`
//! settings so `celeriac-worker` can replace `airflow celery worker` with the
//! environment unchanged. Validated once at start; invalid settings exit 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

use crate::tasks::airflow::settings::{AirflowFlags, AirflowSettings};

/// Command line as the user types it. Every value is optional here so that
/// Airflow's settings can fill the gaps; [`Config::resolve`] applies defaults.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "celeriac-worker",
    version,
    about = "A Celery-compatible worker"
)]
pub struct Cli {
    /// Broker URL (redis://, rediss://, amqp://, amqps://). Falls back to AIRFLOW__CELERY__BROKER_URL.
    #[arg(long, env = "CELERIAC_BROKER_URL")]
    pub broker: Option<String>,
    /// Result backend URL (redis://…, db+postgresql://…). Falls back to
    /// AIRFLOW__CELERY__RESULT_BACKEND, then db+ AIRFLOW__DATABASE__SQL_ALCHEMY_CONN.
    #[arg(long, env = "CELERIAC_RESULT_BACKEND")]
    pub result_backend: Option<String>,
    /// Comma-separated queues. Falls back to AIRFLOW__OPERATORS__DEFAULT_QUEUE, then `celery`.
    #[arg(short = 'Q', long, env = "CELERIAC_QUEUES", value_delimiter = ',')]
    pub queues: Option<Vec<String>>,
    /// Tasks run at once. Falls back to AIRFLOW__CELERY__WORKER_CONCURRENCY, then the CPU count.
    #[arg(short = 'c', long, env = "CELERIAC_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Node name; `%h` hostname, `%n` name part, `%d` domain. Default `celeriac@%h`.
    #[arg(short = 'n', long, env = "CELERIAC_HOSTNAME")]
    pub hostname: Option<String>,
    /// prefetch = concurrency × multiplier. Falls back to AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER.
    #[arg(long, env = "CELERIAC_PREFETCH_MULTIPLIER")]
    pub prefetch_multiplier: Option<u16>,
    /// Send task events (task-received, task-started, …) for monitors such as Flower.
    #[arg(short = 'E', long = "task-events", env = "CELERIAC_TASK_EVENTS")]
    pub task_events: bool,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(short = 'l', long, env = "CELERIAC_LOGLEVEL", default_value = "info")]
    pub loglevel: String,
    /// Address of the admin HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "CELERIAC_ADMIN_ADDR", default_value = "0.0.0.0:9808")]
    pub admin_addr: String,
    /// Redis visibility timeout, e.g. `1h`. Falls back to
    /// AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT (seconds).
    #[arg(long, env = "CELERIAC_VISIBILITY_TIMEOUT")]
    pub visibility_timeout: Option<String>,
    /// Ack after the task finished instead of when it starts (Airflow: on).
    #[arg(long, env = "CELERIAC_ACKS_LATE")]
    pub acks_late: Option<bool>,
    /// Write STARTED before running a task (Airflow: on).
    #[arg(long, env = "CELERIAC_TRACK_STARTED")]
    pub track_started: Option<bool>,
    /// How long running tasks may finish after SIGTERM, e.g. `10m`.
    #[arg(long, env = "CELERIAC_SHUTDOWN_GRACE", default_value = "10m")]
    pub shutdown_grace: String,
    /// How long results live in a Redis backend, e.g. `1d`.
    #[arg(long, env = "CELERIAC_RESULT_EXPIRES", default_value = "1d")]
    pub result_expires: String,
    /// Task-routing file (TOML): which runtime profile runs which task.
    #[arg(long, env = "CELERIAC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where task logs are kept (`<dir>/<queue>/<task_id>.log`).
    #[arg(
        long,
        env = "CELERIAC_LOG_DIR",
        default_value = "/var/tmp/celeriac/logs"
    )]
    pub log_dir: PathBuf,
    /// Airflow mode even without AIRFLOW__CELERY__BROKER_URL: run Airflow's
    /// `execute_workload` (3.x) and `execute_command` (2.x) tasks.
    #[arg(long, env = "CELERIAC_AIRFLOW")]
    pub airflow: bool,
    /// Python with Airflow installed, for Airflow tasks. Default `python3`.
    #[arg(long, env = "CELERIAC_AIRFLOW_PYTHON")]
    pub airflow_python: Option<PathBuf>,
    /// Pre-imported Python fork servers for Airflow tasks (0 = a fresh Python per task). Default 1.
    #[arg(long, env = "CELERIAC_AIRFLOW_WARM_POOL")]
    pub airflow_warm_pool: Option<usize>,
    /// Modules the warm pool imports once (comma-separated; `?module`: only if installed), and
    /// `warm:<name>` warm-ups it runs (`warm:airflow-api-client`). Replaces the default: the
    /// Task SDK, the DAG bag, the standard provider's operators and the warm-ups.
    #[arg(long, env = "CELERIAC_AIRFLOW_PRELOAD", value_delimiter = ',')]
    pub airflow_preload: Option<Vec<String>>,
    /// Modules the warm pool imports besides the default (or `--airflow-preload`) list: your
    /// DAGs' operators and hooks, e.g. `airflow.providers.amazon.aws.operators.s3`.
    #[arg(long, env = "CELERIAC_AIRFLOW_PRELOAD_EXTRA", value_delimiter = ',')]
    pub airflow_preload_extra: Vec<String>,
    /// Port of the Airflow worker log server. Falls back to
    /// AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT, then 8793.
    #[arg(long, env = "CELERIAC_LOG_SERVER_PORT")]
    pub log_server_port: Option<u16>,
    /// Do not serve task logs (`airflow celery worker --skip-serve-logs`).
    #[arg(long, env = "CELERIAC_SKIP_SERVE_LOGS")]
    pub skip_serve_logs: bool,
}

/// Where a setting came from, so error messages name what the user set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The validated configuration the rest of the worker is built from.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker_url: SecretString,
    pub result_backend: Option<SecretString>,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub hostname: String,
    pub prefetch_multiplier: u16,
    pub task_events: bool,
    pub loglevel: String,
    pub admin_addr: SocketAddr,
    pub visibility_timeout: Duration,
    pub acks_late: bool,
    pub track_started: bool,
    pub shutdown_grace: Duration,
    pub result_expires: Duration,
    /// Airflow's settings were found: Airflow's Celery defaults apply.
    pub airflow: bool,
    pub config_file: Option<PathBuf>,
    pub log_dir: PathBuf,
    /// Set in Airflow mode: where Airflow is and how its tasks run.
    pub airflow_settings: Option<AirflowSettings>,
}

/// Environment lookup, injectable so tests do not touch the process env.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Apply Airflow fallbacks and defaults, and validate.
    pub fn resolve(cli: Cli, env: Env<'_>) -> Result<Config, ConfigError> {
        let airflow_broker = env("AIRFLOW__CELERY__BROKER_URL");
        let airflow = cli.airflow || airflow_broker.is_some();
        let airflow_settings = if airflow {
            let flags = AirflowFlags {
                python: cli.airflow_python.clone(),
                warm_pool: Some(cli.airflow_warm_pool.unwrap_or(1)),
                preload: cli.airflow_preload.clone(),
                preload_extra: cli.airflow_preload_extra.clone(),
                log_server_port: cli.log_server_port,
                skip_serve_logs: cli.skip_serve_logs,
            };
            Some(AirflowSettings::resolve(flags, env)?)
        } else {
            None
        };
        let broker = cli.broker.or(airflow_broker).ok_or_else(|| {
            ConfigError::new(
                "--broker",
                "no broker URL: set --broker, CELERIAC_BROKER_URL or AIRFLOW__CELERY__BROKER_URL",
            )
        })?;
        validate_scheme(
            "--broker",
            &broker,
            &[
                "redis", "rediss", "unix", "sentinel", "amqp", "amqps", "pyamqp",
            ],
        )?;
        let result_backend = cli
            .result_backend
            .or_else(|| env("AIRFLOW__CELERY__RESULT_BACKEND"))
            .or_else(|| env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN").map(|c| format!("db+{c}")));
        let queues = match cli.queues {
            Some(q) => q,
            None => vec![env("AIRFLOW__OPERATORS__DEFAULT_QUEUE")
                .unwrap_or_else(|| if airflow { "default" } else { "celery" }.to_owned())],
        };
        let queues: Vec<String> = queues
            .into_iter()
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty())
            .collect();
        if queues.is_empty() {
            return Err(ConfigError::new("--queues", "at least one queue is needed"));
        }
        let concurrency = match cli.concurrency {
            Some(c) => c,
            None => match env("AIRFLOW__CELERY__WORKER_CONCURRENCY") {
                Some(v) => parse_num("AIRFLOW__CELERY__WORKER_CONCURRENCY", &v)?,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        if concurrency == 0 {
            return Err(ConfigError::new("--concurrency", "must be at least 1"));
        }
        let prefetch_multiplier = match cli.prefetch_multiplier {
            Some(m) => m,
            None => match env("AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER") {
                Some(v) => parse_num("AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER", &v)?,
                None if airflow => 1,
                None => 4,
            },
        };
        let visibility_timeout = match cli.visibility_timeout {
            Some(v) => parse_duration("--visibility-timeout", &v)?,
            None => match env("AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT") {
                Some(v) => Duration::from_secs(parse_num(
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
                    &v,
                )?),
                None if airflow => Duration::from_secs(86_400),
                None => Duration::from_secs(3_600),
            },
        };
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Ok(Config {
            broker_url: SecretString::from(broker),
            result_backend: result_backend.map(SecretString::from),
            queues,
            concurrency,
            hostname: node_name(cli.hostname.as_deref().unwrap_or("celeriac@%h"), &host),
            prefetch_multiplier,
            task_events: cli.task_events,
            loglevel: cli.loglevel,
            admin_addr: cli
                .admin_addr
                .parse()
                .map_err(|e| ConfigError::new("--admin-addr", format!("{e}")))?,
            visibility_timeout,
            acks_late: cli.acks_late.unwrap_or(airflow),
            track_started: cli.track_started.unwrap_or(airflow),
            shutdown_grace: parse_duration("--shutdown-grace", &cli.shutdown_grace)?,
            result_expires: parse_duration("--result-expires", &cli.result_expires)?,
            airflow,
            config_file: cli.config,
            log_dir: cli.log_dir,
            airflow_settings,
        })
    }

    /// prefetch = concurrency × multiplier (0 multiplier = unlimited, as Celery).
    pub fn prefetch(&self) -> u16 {
        u16::try_from(self.concurrency)
            .unwrap_or(u16::MAX)
            .saturating_mul(self.prefetch_multiplier)
    }
}

fn validate_scheme(setting: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = url.split("://").next().unwrap_or_default();
    if url.contains("://") && schemes.contains(&scheme) {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            format!(
                "{} is not a supported URL (schemes: {})",
                broker_compat::url::mask_password(url),
                schemes.join(", ")
            ),
        ))
    }
}

fn parse_num<T: std::str::FromStr>(setting: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::new(setting, format!("{v:?} is not a valid number")))
}

/// Durations as humantime (`30s`, `10m`, `1d`) or plain seconds as Celery spells them.
fn parse_duration(setting: &str, v: &str) -> Result<Duration, ConfigError> {
    if let Ok(secs) = v.trim().parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(v.trim())
        .map_err(|e| ConfigError::new(setting, format!("{v:?} is not a duration: {e}")))
}

/// Celery's node-name expansion: `%h` full hostname, `%n` its first label, `%d` the rest.
pub fn node_name(template: &str, host: &str) -> String {
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    let expanded = template
        .replace("%h", host)
        .replace("%n", name)
        .replace("%d", domain);
    if expanded.contains('@') {
        expanded
    } else {
        format!("celeriac@{expanded}")
    }
}

/// The URL with its password masked, for logs and `inspect stats`.
pub fn masked(url: &SecretString) -> String {
    broker_compat::url::mask_password(url.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut argv = vec!["celeriac-worker"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| ConfigError::new("args", e.to_string()))?;
        Config::resolve(cli, &|k| vars.get(k).cloned())
    }

    #[test]
    fn airflow_settings_fill_the_gaps() {
        let c = resolve(
            &[],
            &[
                ("AIRFLOW__CELERY__BROKER_URL", "redis://:pw@redis:6379/0"),
                (
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                    "postgresql+psycopg2://a:b@pg/airflow",
                ),
                ("AIRFLOW__CELERY__WORKER_CONCURRENCY", "16"),
            ],
        )
        .unwrap();
        assert!(c.airflow);
        assert_eq!(c.queues, vec!["default"]);
        assert_eq!(c.concurrency, 16);
        assert_eq!(c.prefetch(), 16, "Airflow's prefetch multiplier is 1");
        assert_eq!(c.visibility_timeout, Duration::from_secs(86_400));
        assert!(c.acks_late && c.track_started);
        assert_eq!(
            c.result_backend.as_ref().unwrap().expose_secret(),
            "db+postgresql+psycopg2://a:b@pg/airflow"
        );
        assert_eq!(masked(&c.broker_url), "redis://:****@redis:6379/0");
        assert!(
            !format!("{c:?}").contains("pw@"),
            "Debug must not leak the password"
        );
    }

    #[test]
    fn preload_extra_adds_to_the_default_or_the_given_list() {
        let preload = |args: &[&str]| {
            let c = resolve(args, &[("AIRFLOW__CELERY__BROKER_URL", "redis://x/0")]).unwrap();
            c.airflow_settings.unwrap().preload
        };
        let default = preload(&[]);
        assert!(default.iter().any(|m| m == "warm:airflow-task-logging"));
        let extra = preload(&["--airflow-preload-extra", "a.b,?c.d"]);
        assert_eq!(extra[..default.len()], default[..]);
        assert_eq!(extra[default.len()..], ["a.b", "?c.d"]);
        assert_eq!(
            preload(&["--airflow-preload", "x", "--airflow-preload-extra", "y"]),
            ["x", "y"]
        );
    }

    #[test]
    fn flags_win_over_airflow() {
        let c = resolve(
            &[
                "--broker",
                "amqp://guest:guest@localhost//",
                "-Q",
                "a,b",
                "-c",
                "3",
                "-n",
                "w1@%n",
            ],
            &[("AIRFLOW__CELERY__BROKER_URL", "redis://x/0")],
        )
        .unwrap();
        assert_eq!(
            c.broker_url.expose_secret(),
            "amqp://guest:guest@localhost//"
        );
        assert_eq!(c.queues, vec!["a", "b"]);
        assert_eq!(c.concurrency, 3);
        assert!(c.hostname.starts_with("w1@"));
    }

    #[test]
    fn invalid_settings_are_named() {
        let e = resolve(&[], &[]).unwrap_err();
        assert_eq!(e.setting, "--broker");
        let e = resolve(&["--broker", "http://x"], &[]).unwrap_err();
        assert_eq!(e.setting, "--broker");
        let e = resolve(&["--broker", "redis://x", "-c", "0"], &[]).unwrap_err();
        assert_eq!(e.setting, "--concurrency");
        let e = resolve(
            &["--broker", "redis://x"],
            &[("AIRFLOW__CELERY__WORKER_CONCURRENCY", "lots")],
        )
        .unwrap_err();
        assert_eq!(e.setting, "AIRFLOW__CELERY__WORKER_CONCURRENCY");
        let e = resolve(&["--broker", "redis://x", "--shutdown-grace", "soon"], &[]).unwrap_err();
        assert_eq!(e.setting, "--shutdown-grace");
    }

    #[test]
    fn node_names_expand_like_celery() {
        assert_eq!(
            node_name("celeriac@%h", "box.example.com"),
            "celeriac@box.example.com"
        );
        assert_eq!(node_name("w@%n", "box.example.com"), "w@box");
        assert_eq!(node_name("%h", "box"), "celeriac@box");
    }
}
