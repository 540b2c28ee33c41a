//! Wiring: build the sources and the target from the validated
//! [`Config`], then run one tick (`--once`) or the loop with the admin server.
//!
//! Plug-in points for the parts still to come:
//! - Kubernetes target: implement `ReplicaTarget` in `target/kubernetes.rs`
//!   and construct it in [`build_target`] (the `TargetKind::Kubernetes` arm;
//!   `config.kubernetes` holds namespace and deployment).
//! - KEDA external scaler: `keda.rs`, started in [`App::run`] when
//!   `config.keda_grpc_addr` is set; it can share `App::sources` and the policy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::config::{Config, TargetKind};
use crate::control_loop::{ControlLoop, TickReport};
use crate::metrics::Metrics;
use crate::source::broker::BrokerSource;
use crate::source::metastore::{CountQuery, MetastoreQuery, MetastoreSource};
use crate::source::workers::WorkersSource;
use crate::source::LoadSource;
use crate::target::dry_run::DryRunTarget;
use crate::target::ReplicaTarget;

pub struct App {
    pub config: Config,
    pub sources: Vec<Arc<dyn LoadSource>>,
    pub target: Arc<dyn ReplicaTarget>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl App {
    pub fn build(config: Config) -> anyhow::Result<App> {
        let sources = build_sources(&config)?;
        let target = build_target(&config)?;
        let metrics = Arc::new(Metrics::new().context("registering metrics")?);
        // Stuck = three intervals without a finished tick, plus the query budget.
        let budget = config
            .metastore
            .as_ref()
            .map_or(Duration::from_secs(5), |m| m.timeout);
        let health = Arc::new(Health::new(config.polling_interval * 3 + budget * 2));
        Ok(App {
            config,
            sources,
            target,
            metrics,
            health,
        })
    }

    pub fn control_loop(&self) -> ControlLoop {
        ControlLoop::new(
            self.sources.clone(),
            self.target.clone(),
            self.config.policy.clone(),
            self.metrics.clone(),
            self.health.clone(),
        )
    }

    /// One observe → decide → act cycle.
    pub async fn once(&self) -> anyhow::Result<TickReport> {
        Ok(self.control_loop().tick().await?)
    }

    /// The admin server and the loop, until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.config.keda_grpc_addr.is_some() {
            bail!("--keda-grpc-addr: the KEDA external-scaler server is not built yet");
        }
        let listener = tokio::net::TcpListener::bind(self.config.admin_addr)
            .await
            .with_context(|| format!("binding the admin server to {}", self.config.admin_addr))?;
        tracing::info!(admin = %listener.local_addr()?, "admin server listening");
        let server = admin::serve(
            listener,
            self.metrics.clone(),
            self.health.clone(),
            shutdown.clone(),
        );
        self.control_loop()
            .run(self.config.polling_interval, shutdown)
            .await;
        let _ = server.await;
        Ok(())
    }
}

fn build_sources(config: &Config) -> anyhow::Result<Vec<Arc<dyn LoadSource>>> {
    let mut sources: Vec<Arc<dyn LoadSource>> = Vec::new();
    if let Some(m) = &config.metastore {
        let query = match &m.custom_query {
            Some(sql) => MetastoreQuery::Custom(sql.clone()),
            None => MetastoreQuery::Count(CountQuery {
                queues: config.queues.clone(),
                executors: m.executors.clone(),
            }),
        };
        let source = MetastoreSource::new(m.url.expose_secret(), query, m.timeout)
            .context("--metastore-url")?;
        sources.push(Arc::new(source));
    }
    if let Some(url) = &config.broker {
        let source =
            BrokerSource::new(url.expose_secret(), config.queues.clone()).context("--broker")?;
        sources.push(Arc::new(source));
    }
    if !config.worker_metrics.is_empty() {
        let timeout = Duration::from_secs(2);
        sources.push(Arc::new(WorkersSource::new(
            config.worker_metrics.clone(),
            timeout,
        )));
    }
    Ok(sources)
}

fn build_target(config: &Config) -> anyhow::Result<Arc<dyn ReplicaTarget>> {
    match config.target {
        TargetKind::DryRun => Ok(Arc::new(DryRunTarget::new(config.current_replicas))),
        TargetKind::Kubernetes => {
            bail!("--target kubernetes is not built yet (use --target dry-run)")
        }
    }
}
