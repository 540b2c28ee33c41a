//! The worker assembled from its configuration: broker, result backend,
//! executor, consumer loop, remote control, heartbeats and the admin server.
//! `main` and the integration tests build and run the same `App`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use broker_compat::backend::database::ResultLayout;
use broker_compat::backend::{self, BackendOptions, ResultBackend};
use broker_compat::events::{EventDispatcher, LamportClock};
use broker_compat::protocol::DecodeOptions;
use broker_compat::transport::{QueueSpec, Transport};
use secrecy::ExposeSecret;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Health};
use crate::broker::{self, BrokerSettings};
use crate::config::{masked, Config};
use crate::consume::ConsumeLoop;
use crate::control::{Control, StaticInfo};
use crate::events::Events;
use crate::execute::{Executor, TaskDefaults};
use crate::logserver::LogServer;
use crate::metrics::Metrics;
use crate::routing::Routing;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::warm_python::{Launch, WarmPythonRuntime};
use crate::runtime::Runtime;
use crate::state::WorkerState;
use crate::tasks::Registry;

/// The two stages of shutdown: warm (stop consuming, drain running tasks)
/// and cold (stop running tasks, give everything back to the broker).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub warm: CancellationToken,
    pub cold: CancellationToken,
}

pub struct App {
    config: Config,
    routing: Routing,
    transport: Arc<dyn Transport>,
    backend: Option<Arc<dyn ResultBackend>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    admin: tokio::net::TcpListener,
    docker: Option<Arc<dyn Runtime>>,
    warm_python: Option<Arc<dyn Runtime>>,
    log_server: Option<tokio::net::TcpListener>,
    log_dir: PathBuf,
}

impl App {
    pub async fn build(config: Config, routing: Routing) -> anyhow::Result<App> {
        let settings = BrokerSettings {
            visibility_timeout: config.visibility_timeout,
            connection_name: config.hostname.clone(),
        };
        let transport = broker::connect(config.broker_url.expose_secret(), &settings)
            .await
            .with_context(|| format!("connecting to the broker {}", masked(&config.broker_url)))?;
        let backend = match &config.result_backend {
            Some(url) => {
                let opts = BackendOptions {
                    result_expires: Some(config.result_expires).filter(|d| !d.is_zero()),
                    // Airflow's scheduler runs Celery 5.6 (pickled `result`): a
                    // table this worker creates first must have its layout, or
                    // the scheduler cannot read the rows (airflow.md §4).
                    create_layout: if config.airflow {
                        ResultLayout::Celery56
                    } else {
                        ResultLayout::Celery57
                    },
                    ..BackendOptions::default()
                };
                let b = backend::connect(url.expose_secret(), &opts)
                    .await
                    .with_context(|| format!("connecting to the result backend {}", masked(url)))?;
                Some(b)
            }
            None => None,
        };
        for q in &config.queues {
            transport
                .declare_queue(&QueueSpec::task_queue(q))
                .await
                .with_context(|| format!("declaring queue {q}"))?;
        }
        let admin = tokio::net::TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("binding the admin server on {}", config.admin_addr))?;
        let docker = crate::runtime::docker_for(&routing).await?;
        let (warm_python, log_server) = airflow_parts(&config).await?;
        Ok(App {
            warm_python,
            log_server,
            log_dir: config.log_dir.clone(),
            metrics: Arc::new(Metrics::new().context("creating metrics")?),
            health: Arc::new(Health::default()),
            config,
            routing,
            transport,
            backend,
            admin,
            docker,
        })
    }

    /// Where the admin server listens (port 0 resolved).
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }

    /// Run until warm shutdown, drain, then stop. Returns once every task
    /// has finished or was given back to the broker.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let App {
            config,
            routing,
            transport,
            backend,
            metrics,
            health,
            admin,
            docker,
            warm_python,
            log_server,
            log_dir,
        } = self;
        let background = CancellationToken::new();
        let mut registry = Registry::new(routing);
        if let Some(settings) = config.airflow_settings.clone() {
            if let (Some(listener), Some(ls)) = (log_server, &settings.log_server) {
                let server = LogServer::new(
                    settings.base_log_folder.clone(),
                    ls.secret.clone(),
                    ls.leeway,
                );
                tokio::spawn(server.serve(listener, background.clone()));
            }
            registry = registry.with_airflow(Arc::new(settings));
        }
        let state = WorkerState::new(&config.hostname, config.task_events);
        let clock = Arc::new(LamportClock::new(0));
        let dispatcher = EventDispatcher::new(
            transport.clone(),
            config.hostname.clone(),
            state.pid,
            clock.clone(),
            utcoffset(),
        );
        let events = Events::new(Arc::new(dispatcher), state.clone());
        let (loop_tx, loop_rx) = mpsc::channel(64);
        let (queue_tx, queue_rx) = mpsc::channel(16);
        let exec = Arc::new(Executor {
            state: state.clone(),
            defaults: TaskDefaults {
                acks_late: config.acks_late,
                track_started: config.track_started,
                reject_on_worker_lost: config.acks_late,
            },
            backend,
            transport: transport.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            registry,
            process: Arc::new(ProcessRuntime),
            docker,
            warm_python,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            loop_tx,
            warm: shutdown.warm.clone(),
            cold: shutdown.cold.clone(),
            log_dir,
        });
        let admin_task = admin::serve(admin, metrics.clone(), health.clone(), background.clone());
        let heartbeat = tokio::spawn(events.clone().heartbeat_loop(background.clone()));
        let control = Control {
            exec: exec.clone(),
            transport: transport.clone(),
            clock,
            events,
            queue_tx,
            shutdown: shutdown.warm.clone(),
            info: StaticInfo {
                broker_transport: transport.kind(),
                broker_host: broker::host_of(config.broker_url.expose_secret()),
                concurrency: config.concurrency,
                prefetch: config.prefetch(),
                queues: config.queues.clone(),
            },
        };
        let control_task = tokio::spawn(control.run(background.clone()));
        let tracker = TaskTracker::new();
        tracing::info!(node = %config.hostname, broker = %masked(&config.broker_url), queues = ?config.queues, concurrency = config.concurrency, "celeriac-worker ready");
        ConsumeLoop {
            transport,
            queues: config
                .queues
                .iter()
                .map(|q| QueueSpec::task_queue(q))
                .collect(),
            prefetch: config.prefetch(),
            exec,
            health,
            decode: DecodeOptions::default(),
            commands: loop_rx,
            queue_commands: queue_rx,
            tracker: tracker.clone(),
        }
        .run(shutdown.warm.clone())
        .await;
        drain(&tracker, &shutdown, config.shutdown_grace).await;
        background.cancel();
        let _ = tokio::join!(heartbeat, control_task, admin_task);
        tracing::info!("celeriac-worker stopped");
        Ok(())
    }
}

/// Airflow mode: the warm Python pool (started now: a worker that cannot
/// run its tasks should not start) and the log server's port.
async fn airflow_parts(
    config: &Config,
) -> anyhow::Result<(Option<Arc<dyn Runtime>>, Option<tokio::net::TcpListener>)> {
    let Some(settings) = &config.airflow_settings else {
        return Ok((None, None));
    };
    let warm: Option<Arc<dyn Runtime>> = if settings.warm_pool > 0 {
        let launch = Launch {
            python: settings.python.clone(),
            env: settings.task_env(),
            preload: settings.preload.clone(),
        };
        let runtime = WarmPythonRuntime::start(launch, settings.warm_pool)
            .await
            .with_context(|| {
                format!(
                    "starting the warm Python pool with {}",
                    settings.python.display()
                )
            })?;
        Some(Arc::new(runtime))
    } else {
        None
    };
    let log_server = match &settings.log_server {
        Some(ls) => crate::logserver::bind(ls.port).await,
        None => None,
    };
    Ok((warm, log_server))
}

/// Warm shutdown: wait for running tasks up to the grace period, then go cold
/// (stop them and give their messages back).
async fn drain(tracker: &TaskTracker, shutdown: &Shutdown, grace: Duration) {
    tracker.close();
    let running = tracker.len();
    if running > 0 {
        tracing::info!(running, grace = ?grace, "warm shutdown: waiting for running tasks");
    }
    tokio::select! {
        _ = tracker.wait() => return,
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over: cold shutdown"),
        _ = shutdown.cold.cancelled() => tracing::warn!("cold shutdown"),
    }
    shutdown.cold.cancel();
    tracker.wait().await;
}

/// Celery's utcoffset: hours west of UTC. The worker runs in UTC unless TZ says otherwise.
fn utcoffset() -> f64 {
    let offset = chrono::Local::now().offset().local_minus_utc();
    -f64::from(offset) / 3600.0
}
