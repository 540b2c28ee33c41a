//! Wiring: build the sources and the target from the validated
//! [`Config`], then run one tick (`--once`) or the loop with the admin server.
//!
//! Where the optional parts plug in:
//! - Kubernetes target: `target/kubernetes.rs`, built in [`build_target`].
//! - KEDA external scaler: `keda.rs`, served by [`App::run`] instead of the
//!   control loop when `config.keda_grpc_addr` is set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::config::{Config, TargetKind};
use crate::control_loop::{ControlLoop, TickReport};
use crate::keda;
use crate::metrics::Metrics;
use crate::source::broker::BrokerSource;
use crate::source::metastore::{CountQuery, MetastoreQuery, MetastoreSource};
use crate::source::workers::WorkersSource;
use crate::source::LoadSource;
use crate::target::dry_run::DryRunTarget;
use crate::target::kubernetes::KubernetesTarget;
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
        match self.config.keda_grpc_addr {
            // KEDA owns the HPA: serve the load, scale nothing.
            Some(addr) => self.serve_keda(addr, shutdown).await?,
            None => {
                self.control_loop()
                    .run(self.config.polling_interval, shutdown)
                    .await
            }
        }
        let _ = server.await;
        Ok(())
    }
}

impl App {
    async fn serve_keda(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the KEDA gRPC server to {addr}"))?;
        tracing::info!(keda = %listener.local_addr()?, "KEDA external-scaler server listening");
        let observations = keda::spawn_poller(
            self.sources.clone(),
            self.config.polling_interval,
            self.metrics.clone(),
            self.health.clone(),
            shutdown.clone(),
        );
        if let Some(k) = &self.config.kubernetes {
            let target = KubernetesTarget::new(k.spec.clone(), k.access.clone());
            let interval = self.config.polling_interval;
            tokio::spawn(keda::keep_deletion_costs(
                target,
                interval,
                shutdown.clone(),
            ));
        }
        let service = keda::KedaService::new(
            observations,
            self.config.policy.concurrency,
            shutdown.clone(),
        );
        let served = keda::serve(listener, service, shutdown.clone()).await;
        shutdown.cancel();
        served.context("KEDA gRPC server")
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
            let Some(k) = &config.kubernetes else {
                bail!("--target kubernetes needs --namespace and --deployment");
            };
            Ok(Arc::new(KubernetesTarget::new(
                k.spec.clone(),
                k.access.clone(),
            )))
        }
    }
}
