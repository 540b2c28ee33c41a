//! KEDA external-scaler mode (`--keda-grpc-addr`): KEDA keeps owning the
//! HPA, and asks this server, over KEDA's own `externalscaler.proto`, how
//! much work there is.
//!
//! The metric is the task count (`celeriac-tasks`: running + queued, at
//! least busy workers × concurrency) with target size = the concurrency, so
//! the HPA computes `ceil(tasks / concurrency)` itself, exactly the Airflow
//! chart's formula, with better inputs. Not a "desired replicas" number with
//! target 1: KEDA's min/max/cooldown/fallback and the HPA's stabilization
//! then apply once, not on top of this scaler's own policy, and
//! `kubectl get hpa` shows tasks against tasks per worker.
//!
//! A failed source is a gRPC error (UNAVAILABLE), never a zero: KEDA then
//! applies its `fallback` instead of scaling in. With `--target kubernetes`
//! as well, the worker pods' deletion costs are kept current
//! ([`keep_deletion_costs`]), so KEDA's scale-in removes idle workers first.

mod deletion_costs;
mod observer;

use std::pin::Pin;

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub use deletion_costs::keep_deletion_costs;
pub use observer::{observe, spawn_poller, Observation};

/// Generated from `proto/externalscaler.proto` (server and client).
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

use proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The one metric this scaler reports.
pub const METRIC_NAME: &str = "celeriac-tasks";

#[derive(Clone)]
pub struct KedaService {
    observations: watch::Receiver<Option<Observation>>,
    concurrency: u32,
    shutdown: CancellationToken,
}

impl KedaService {
    /// `observations`: from [`spawn_poller`]; `concurrency`: tasks per worker.
    pub fn new(
        observations: watch::Receiver<Option<Observation>>,
        concurrency: u32,
        shutdown: CancellationToken,
    ) -> Self {
        KedaService {
            observations,
            concurrency,
            shutdown,
        }
    }

    /// The latest complete observation, waiting for the first poll.
    async fn latest(&self) -> Result<u64, Status> {
        let mut rx = self.observations.clone();
        let seen = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::unavailable("the scaler is shutting down"))?
            .clone()
            .unwrap_or_default();
        if !seen.errors.is_empty() {
            return Err(Status::unavailable(seen.errors.join("; ")));
        }
        Ok(seen.tasks(self.concurrency))
    }

    pub fn into_server(self) -> ExternalScalerServer<KedaService> {
        ExternalScalerServer::new(self)
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;
type SpecStream = Pin<Box<dyn Stream<Item = Result<GetMetricSpecResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for KedaService {
    async fn is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let tasks = self.latest().await?;
        Ok(Response::new(IsActiveResponse { result: tasks > 0 }))
    }

    type StreamIsActiveStream = ActiveStream;

    /// Sends the activity now and again whenever it flips; a poll whose
    /// sources failed changes nothing (KEDA keeps the last state).
    async fn stream_is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let state = (self.clone(), None::<bool>);
        let stream = futures::stream::unfold(state, |(svc, last)| async move {
            let mut rx = svc.observations.clone();
            loop {
                if let Ok(tasks) = svc.latest().await {
                    let active = tasks > 0;
                    if last != Some(active) {
                        let item = Ok(IsActiveResponse { result: active });
                        return Some((item, (svc, Some(active))));
                    }
                }
                tokio::select! {
                    _ = svc.shutdown.cancelled() => return None,
                    changed = rx.changed() => changed.ok()?,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let spec = MetricSpec {
            metric_name: METRIC_NAME.to_owned(),
            target_size: i64::from(self.concurrency),
            target_size_float: f64::from(self.concurrency),
        };
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![spec],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let tasks = self.latest().await?;
        // KEDA asks with the name it gave the HPA metric; answer under it.
        let name = match request.into_inner().metric_name {
            n if n.is_empty() => METRIC_NAME.to_owned(),
            n => n,
        };
        let value = MetricValue {
            metric_name: name,
            metric_value: i64::try_from(tasks).unwrap_or(i64::MAX),
            metric_value_float: tasks as f64,
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![value],
        }))
    }

    type StreamMetricSpecStream = SpecStream;

    /// The spec never changes (target = concurrency): KEDA's documented
    /// answer for that is UNIMPLEMENTED, and it keeps pulling GetMetricSpec.
    async fn stream_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<SpecStream>, Status> {
        Err(Status::unimplemented("the metric spec is static"))
    }
}

/// Serve on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: KedaService,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown.cancelled_owned(),
        )
        .await
}
