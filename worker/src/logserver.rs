//! Airflow's worker log server (`airflow/utils/serve_logs/log_server.py`,
//! Airflow 3.3): `GET /log/<relative path>` serves a file under
//! `[logging] base_log_folder` so the UI can show the log of a running task.
//! Same check as Airflow: the `Authorization` header is a JWT (HS512, signed
//! with `[api] secret_key`, audience `task-instance-logs`, `exp`/`iat`/`nbf`
//! required, leeway `[webserver] log_request_clock_grace`) whose `filename`
//! claim equals the requested path; anything else is 403. Paths that leave
//! the log folder are refused (403) and missing files are 404.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Audience Airflow's log client puts in its tokens.
pub const AUDIENCE: &str = "task-instance-logs";

/// What the log server needs.
#[derive(Clone)]
pub struct LogServer {
    pub base: PathBuf,
    secret: SecretString,
    leeway: Duration,
}

#[derive(Debug, Deserialize)]
struct Claims {
    filename: Option<String>,
    iat: Option<f64>,
}

impl LogServer {
    /// Without a configured secret Airflow signs with a random one, so no
    /// token verifies; the same here.
    pub fn new(base: PathBuf, secret: Option<SecretString>, leeway: Duration) -> Self {
        let secret = secret.unwrap_or_else(|| {
            tracing::warn!("[api] secret_key is not set (AIRFLOW__API__SECRET_KEY): the log server refuses every request");
            SecretString::from(uuid::Uuid::new_v4().simple().to_string())
        });
        LogServer {
            base,
            secret,
            leeway,
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/log/{*path}", get(serve))
            .with_state(Arc::new(self))
    }

    /// Serve on `listener` until `stop`.
    pub async fn serve(self, listener: tokio::net::TcpListener, stop: CancellationToken) {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, base = %self.base.display(), "Airflow log server listening");
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the log server stopped");
        }
    }

    /// The claims' `filename` if the token is valid for this server.
    fn check(&self, token: &str) -> Result<String, String> {
        let mut v = Validation::new(Algorithm::HS512);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iat", "nbf", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.leeway.as_secs();
        let key = DecodingKey::from_secret(self.secret.expose_secret().as_bytes());
        let claims = decode::<Claims>(token, &key, &v)
            .map_err(|e| e.to_string())?
            .claims;
        // PyJWT also refuses tokens issued in the future.
        let now = chrono::Utc::now().timestamp() as f64;
        if claims
            .iat
            .is_some_and(|iat| iat > now + self.leeway.as_secs_f64())
        {
            return Err("the token was issued in the future".into());
        }
        claims
            .filename
            .ok_or_else(|| "the token has no filename claim".into())
    }
}

async fn serve(
    State(server): State<Arc<LogServer>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(token) = token else {
        tracing::warn!("log request without an Authorization header");
        return StatusCode::FORBIDDEN.into_response();
    };
    match server.check(token) {
        Ok(filename) if filename == path => {}
        Ok(filename) => {
            tracing::warn!(request = %path, token = %filename, "log request for another file than the token's");
            return StatusCode::FORBIDDEN.into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "log request with an invalid token");
            return StatusCode::FORBIDDEN.into_response();
        }
    }
    let Some(file) = resolve(&server.base, &path) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    match tokio::fs::read(&file).await {
        Ok(body) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The file under `base` for a relative request path, or None when the
/// path (or a symlink in it) leads outside `base`.
pub fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) || rel.as_os_str().is_empty() {
        return None;
    }
    let joined = base.join(rel);
    let (Ok(real_base), Ok(real)) = (base.canonicalize(), joined.canonicalize()) else {
        // Missing files are checked by their parent-free shape above: 404 later.
        return Some(joined);
    };
    real.starts_with(&real_base).then_some(real)
}

/// Bind the log server's port; a failure is logged, not fatal (the tasks
/// still run; only the UI's live log view is missing), as with Airflow.
pub async fn bind(port: u16) -> Option<tokio::net::TcpListener> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot bind the Airflow log server; task logs will not be served");
            None
        }
    }
}
