//! Configuration: one clap struct, every flag also a `CELERIAC_SCALER_*`
//! variable, KEDA's option names, and Airflow's own settings as fallbacks
//! so the sidecar can run with the Airflow environment unchanged. Validated
//! once here; `main` exits 64 with the setting's name when invalid.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use secrecy::SecretString;

use crate::policy::PolicyConfig;
use crate::source::metastore::{executor_filter_from_airflow, sqlx_url, ExecutorFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum TargetKind {
    /// Log and export the decision only.
    #[default]
    DryRun,
    /// A Deployment's `/scale` subresource (`--namespace`, `--deployment`).
    Kubernetes,
}

#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "celeriac-scaler",
    version,
    about = "Scales Celery/Airflow workers safely"
)]
pub struct Cli {
    /// One observe → decide → act cycle, printed as one JSON line, then exit.
    #[arg(long, env = "CELERIAC_SCALER_ONCE")]
    pub once: bool,
    /// Airflow metadata DB (postgres://, postgresql+psycopg2://, mysql://). Falls back to AIRFLOW__DATABASE__SQL_ALCHEMY_CONN.
    #[arg(long, env = "CELERIAC_SCALER_METASTORE_URL")]
    pub metastore_url: Option<String>,
    /// Custom count query (one row: `running`,`queued` columns, or one number of tasks).
    #[arg(long, env = "CELERIAC_SCALER_METASTORE_QUERY")]
    pub metastore_query: Option<String>,
    /// Statement timeout of the metastore query.
    #[arg(long, env = "CELERIAC_SCALER_METASTORE_TIMEOUT", default_value = "5s")]
    pub metastore_timeout: String,
    /// Count only these `executor` values (multi-executor setups). Default: from AIRFLOW__CORE__EXECUTOR.
    #[arg(long, env = "CELERIAC_SCALER_EXECUTORS", value_delimiter = ',')]
    pub executors: Option<Vec<String>>,
    /// With --executors: rows with executor NULL (the default executor) count too.
    #[arg(long, env = "CELERIAC_SCALER_COUNT_NULL_EXECUTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub count_null_executor: bool,
    /// Chart style: count every executor except these (`IS DISTINCT FROM`).
    #[arg(
        long,
        env = "CELERIAC_SCALER_EXCLUDE_EXECUTORS",
        value_delimiter = ',',
        conflicts_with = "executors"
    )]
    pub exclude_executors: Option<Vec<String>>,
    /// Broker URL (redis://, amqp://): adds the broker source. Falls back to AIRFLOW__CELERY__BROKER_URL.
    #[arg(long, env = "CELERIAC_SCALER_BROKER")]
    pub broker: Option<String>,
    /// Workers' metrics URLs (http://host:9808/metrics): busy counts for safe scale-in.
    #[arg(long, env = "CELERIAC_SCALER_WORKER_METRICS", value_delimiter = ',')]
    pub worker_metrics: Option<Vec<String>>,
    /// Queues the worker set consumes. Falls back to AIRFLOW__OPERATORS__DEFAULT_QUEUE, then `default`.
    #[arg(long, env = "CELERIAC_SCALER_QUEUES", value_delimiter = ',')]
    pub queues: Option<Vec<String>>,
    /// Tasks per worker. Falls back to AIRFLOW__CELERY__WORKER_CONCURRENCY, then 16.
    #[arg(long, env = "CELERIAC_SCALER_CONCURRENCY")]
    pub concurrency: Option<u32>,
    #[arg(
        long,
        env = "CELERIAC_SCALER_TARGET",
        value_enum,
        default_value = "dry-run"
    )]
    pub target: TargetKind,
    /// dry-run: replicas to assume at start (default: --min-replica-count).
    #[arg(long, env = "CELERIAC_SCALER_CURRENT_REPLICAS")]
    pub current_replicas: Option<u32>,
    #[arg(long, env = "CELERIAC_SCALER_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long, env = "CELERIAC_SCALER_DEPLOYMENT")]
    pub deployment: Option<String>,
    #[command(flatten)]
    pub kubernetes: crate::target::kubernetes::KubernetesArgs,
    /// Serve KEDA's external-scaler gRPC API here instead of scaling directly.
    #[arg(long, env = "CELERIAC_SCALER_KEDA_GRPC_ADDR")]
    pub keda_grpc_addr: Option<String>,
    #[arg(
        long,
        env = "CELERIAC_SCALER_ADMIN_ADDR",
        default_value = "0.0.0.0:9809"
    )]
    pub admin_addr: String,
    /// KEDA pollingInterval (seconds, or a duration like `5s`).
    #[arg(long, env = "CELERIAC_SCALER_POLLING_INTERVAL", default_value = "5")]
    pub polling_interval: String,
    /// KEDA cooldownPeriod: zero load this long before going idle.
    #[arg(long, env = "CELERIAC_SCALER_COOLDOWN_PERIOD", default_value = "30")]
    pub cooldown_period: String,
    /// Scale down only to the highest recommendation of this window (HPA default 300 s).
    #[arg(
        long,
        env = "CELERIAC_SCALER_STABILIZATION_WINDOW",
        default_value = "300"
    )]
    pub stabilization_window: String,
    #[arg(long, env = "CELERIAC_SCALER_MIN_REPLICA_COUNT", default_value_t = 0)]
    pub min_replica_count: u32,
    #[arg(long, env = "CELERIAC_SCALER_MAX_REPLICA_COUNT", default_value_t = 10)]
    pub max_replica_count: u32,
    /// KEDA idleReplicaCount: replicas while inactive (must be below min).
    #[arg(long, env = "CELERIAC_SCALER_IDLE_REPLICA_COUNT")]
    pub idle_replica_count: Option<u32>,
    /// Replicas to hold at least while a source fails.
    #[arg(long, env = "CELERIAC_SCALER_FALLBACK_REPLICAS", default_value_t = 1)]
    pub fallback_replicas: u32,
    /// At most this many replicas added per poll.
    #[arg(long, env = "CELERIAC_SCALER_MAX_SCALE_UP_STEP")]
    pub max_scale_up_step: Option<u32>,
    #[arg(long, env = "CELERIAC_SCALER_LOGLEVEL", default_value = "info")]
    pub loglevel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

fn err(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone)]
pub struct MetastoreConfig {
    pub url: SecretString,
    pub custom_query: Option<String>,
    pub timeout: Duration,
    pub executors: ExecutorFilter,
}

#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub spec: crate::target::kubernetes::KubernetesSpec,
    pub access: crate::target::kubernetes::ClusterAccess,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub once: bool,
    pub metastore: Option<MetastoreConfig>,
    pub broker: Option<SecretString>,
    pub worker_metrics: Vec<String>,
    pub queues: Vec<String>,
    pub policy: PolicyConfig,
    pub target: TargetKind,
    pub current_replicas: u32,
    pub kubernetes: Option<KubernetesConfig>,
    pub keda_grpc_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub polling_interval: Duration,
    pub loglevel: String,
}

/// Environment lookup, injectable so tests do not touch the process env.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Apply Airflow fallbacks and defaults, and validate.
    pub fn resolve(cli: Cli, env: Env<'_>) -> Result<Config, ConfigError> {
        let queues = resolve_queues(cli.queues.clone(), env)?;
        let policy = resolve_policy(&cli, env)?;
        let metastore = resolve_metastore(&cli, env)?;
        let broker = cli
            .broker
            .clone()
            .or_else(|| env("AIRFLOW__CELERY__BROKER_URL"));
        if let Some(url) = &broker {
            crate::source::broker::BrokerSource::new(url, Vec::new())
                .map_err(|e| err("--broker", e.to_string()))?;
        }
        if metastore.is_none() && broker.is_none() {
            return Err(err(
                "--metastore-url",
                "no load source: set --metastore-url (or AIRFLOW__DATABASE__SQL_ALCHEMY_CONN) and/or --broker",
            ));
        }
        let worker_metrics = cli.worker_metrics.clone().unwrap_or_default();
        for url in &worker_metrics {
            if !url.starts_with("http://") {
                return Err(err(
                    "--worker-metrics",
                    format!("{url:?} is not an http:// URL"),
                ));
            }
        }
        Ok(Config {
            once: cli.once,
            metastore,
            broker: broker.map(SecretString::from),
            worker_metrics,
            queues,
            current_replicas: cli.current_replicas.unwrap_or(policy.min_replicas),
            target: cli.target,
            kubernetes: resolve_kubernetes(&cli)?,
            keda_grpc_addr: cli
                .keda_grpc_addr
                .as_deref()
                .map(|a| parse_addr("--keda-grpc-addr", a))
                .transpose()?,
            admin_addr: parse_addr("--admin-addr", &cli.admin_addr)?,
            polling_interval: positive(
                duration("--polling-interval", &cli.polling_interval)?,
                "--polling-interval",
            )?,
            loglevel: cli.loglevel,
            policy,
        })
    }
}

fn resolve_queues(queues: Option<Vec<String>>, env: Env<'_>) -> Result<Vec<String>, ConfigError> {
    let queues: Vec<String> = queues
        .or_else(|| env("AIRFLOW__OPERATORS__DEFAULT_QUEUE").map(|q| vec![q]))
        .unwrap_or_else(|| vec!["default".to_owned()])
        .into_iter()
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
        .collect();
    if queues.is_empty() {
        return Err(err("--queues", "at least one queue is needed"));
    }
    Ok(queues)
}

fn resolve_policy(cli: &Cli, env: Env<'_>) -> Result<PolicyConfig, ConfigError> {
    let concurrency = match (cli.concurrency, env("AIRFLOW__CELERY__WORKER_CONCURRENCY")) {
        (Some(c), _) => c,
        (None, Some(v)) => v.trim().parse().map_err(|_| {
            err(
                "AIRFLOW__CELERY__WORKER_CONCURRENCY",
                format!("{v:?} is not a number"),
            )
        })?,
        (None, None) => 16,
    };
    if concurrency == 0 {
        return Err(err("--concurrency", "must be at least 1"));
    }
    let (min, max) = (cli.min_replica_count, cli.max_replica_count);
    if max == 0 || min > max {
        return Err(err(
            "--max-replica-count",
            format!("must be ≥ 1 and ≥ --min-replica-count ({min})"),
        ));
    }
    if cli.idle_replica_count.is_some_and(|i| i >= min) {
        return Err(err(
            "--idle-replica-count",
            "must be below --min-replica-count (as in KEDA)",
        ));
    }
    if cli.fallback_replicas > max {
        return Err(err(
            "--fallback-replicas",
            format!("must not exceed --max-replica-count ({max})"),
        ));
    }
    if cli.max_scale_up_step == Some(0) {
        return Err(err("--max-scale-up-step", "must be at least 1"));
    }
    Ok(PolicyConfig {
        concurrency,
        min_replicas: min,
        max_replicas: max,
        idle_replicas: cli.idle_replica_count,
        fallback_replicas: cli.fallback_replicas,
        cooldown: duration("--cooldown-period", &cli.cooldown_period)?,
        stabilization: duration("--stabilization-window", &cli.stabilization_window)?,
        max_step_up: cli.max_scale_up_step,
    })
}

fn resolve_metastore(cli: &Cli, env: Env<'_>) -> Result<Option<MetastoreConfig>, ConfigError> {
    let (setting, url) = match (
        &cli.metastore_url,
        env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
    ) {
        (Some(u), _) => ("--metastore-url", u.clone()),
        (None, Some(u)) => ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", u),
        (None, None) => return Ok(None),
    };
    sqlx_url(&url).map_err(|r| err(setting, r))?;
    let executors = match (&cli.executors, &cli.exclude_executors) {
        (Some(names), _) => ExecutorFilter::Only {
            names: names.clone(),
            include_null: cli.count_null_executor,
        },
        (None, Some(names)) => ExecutorFilter::Exclude(names.clone()),
        (None, None) => env("AIRFLOW__CORE__EXECUTOR")
            .map(|e| executor_filter_from_airflow(&e))
            .unwrap_or_default(),
    };
    let custom_query = cli.metastore_query.clone().filter(|q| !q.trim().is_empty());
    Ok(Some(MetastoreConfig {
        url: SecretString::from(url),
        custom_query,
        timeout: positive(
            duration("--metastore-timeout", &cli.metastore_timeout)?,
            "--metastore-timeout",
        )?,
        executors,
    }))
}

fn resolve_kubernetes(cli: &Cli) -> Result<Option<KubernetesConfig>, ConfigError> {
    if cli.target != TargetKind::Kubernetes {
        return Ok(None);
    }
    let namespace = cli
        .namespace
        .clone()
        .ok_or_else(|| err("--namespace", "required with --target kubernetes"))?;
    let (kind, name) = cli
        .kubernetes
        .workload(cli.deployment.as_deref())
        .ok_or_else(|| {
            err(
                "--deployment",
                "required with --target kubernetes (or --statefulset)",
            )
        })?;
    Ok(Some(KubernetesConfig {
        spec: cli.kubernetes.spec(namespace, kind, name),
        access: cli.kubernetes.access(),
    }))
}

/// KEDA writes durations as plain seconds; humantime (`30s`, `5m`) works too.
pub fn duration(setting: &str, raw: &str) -> Result<Duration, ConfigError> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw).map_err(|e| err(setting, format!("{raw:?}: {e}")))
}

fn positive(d: Duration, setting: &str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(err(setting, "must be greater than zero"));
    }
    Ok(d)
}

fn parse_addr(setting: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse()
        .map_err(|e| err(setting, format!("{raw:?}: {e}")))
}
