//! Kubernetes API failures as the operator needs to read them. The API
//! server answers errors with a `Status` object (`kube::Error::Api`); its
//! code says what to fix: 404 the workload's name, 403 the scaler's Role,
//! 422 the request. 409 (a concurrent write) is retried, never surfaced first.

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// One API call, for the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// RBAC verb: `get`, `patch`, `list`.
    pub verb: &'static str,
    /// RBAC resource: `deployments/scale`, `pods`.
    pub resource: &'a str,
    pub namespace: &'a str,
    /// The object, when the call names one.
    pub name: Option<&'a str>,
}

impl Call<'_> {
    fn object(&self) -> String {
        match self.name {
            Some(name) => format!("{}/{}", self.namespace, name),
            None => self.namespace.to_owned(),
        }
    }

    /// `deployments/scale` → `deployment`.
    fn kind(&self) -> &str {
        let plural = self.resource.split('/').next().unwrap_or(self.resource);
        plural.strip_suffix('s').unwrap_or(plural)
    }
}

/// Map a `kube` error to the scaler's error with a message that says what to fix.
pub(crate) fn target_error(call: Call<'_>, e: kube::Error) -> Error {
    let (verb, resource, ns) = (call.verb, call.resource, call.namespace);
    let message = match &e {
        kube::Error::Api(status) => match status.code {
            404 => format!(
                "{} {:?} not found ({verb} {resource}: {})",
                call.kind(),
                call.object(),
                status.message
            ),
            403 => format!(
                "RBAC: the scaler may not {verb} {resource} in namespace {ns:?} \
                 (grant it in the scaler's Role): {}",
                status.message
            ),
            401 => format!(
                "the API server rejected the scaler's credentials ({verb} {resource}): {}",
                status.message
            ),
            422 => format!(
                "{verb} {resource} {:?} rejected as invalid: {}",
                call.object(),
                status.message
            ),
            code => format!(
                "{verb} {resource} {:?}: HTTP {code} {}: {}",
                call.object(),
                status.reason,
                status.message
            ),
        },
        other => format!("{verb} {resource} {:?}: {other}", call.object()),
    };
    Error::Target(message)
}

/// The HTTP status code of an API error, when the server answered one.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Attempts at a write that keeps meeting 409 Conflict.
const CONFLICT_ATTEMPTS: u32 = 4;

/// Run `op` again while the API server answers 409 Conflict (another writer
/// won the race); a merge patch carries no resourceVersion, so a retry
/// applies the same change to the newer object.
pub(crate) async fn retry_conflicts<T, F, Fut>(mut op: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if api_code(&e) == Some(409) && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "409 Conflict: retrying");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
