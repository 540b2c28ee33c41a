//! Responses shaped like kube-apiserver's: JSON with a trailing newline,
//! its headers, and `kind: Status` bodies for errors (worded as captured).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::USER;

pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut text = serde_json::to_string(body).unwrap();
    text.push('\n');
    let mut resp = (code, text).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    h.insert(
        "audit-id",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap(),
    );
    if code == StatusCode::FORBIDDEN {
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }
    resp
}

fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    body["code"] = json!(code.as_u16());
    json_response(code, &body)
}

/// `deployments/scale` → (`deployments`, `apps`) for RBAC wording.
fn group_of(resource: &str) -> &'static str {
    if resource.starts_with("pods") {
        ""
    } else {
        "apps"
    }
}

fn qualified(resource: &str) -> String {
    let base = resource.split('/').next().unwrap_or(resource);
    match group_of(resource) {
        "" => base.to_owned(),
        g => format!("{base}.{g}"),
    }
}

fn details(name: Option<&str>, group: &str, kind: &str) -> Value {
    let mut d = serde_json::Map::new();
    if let Some(n) = name {
        d.insert("name".into(), json!(n));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    d.insert("kind".into(), json!(kind));
    Value::Object(d)
}

/// As `scale_put_forbidden_403` / `deployments_list_forbidden_403`.
pub fn forbidden(verb: &str, resource: &str, ns: &str, name: Option<&str>) -> Response {
    let group = group_of(resource);
    let subject = match name {
        Some(n) => format!("{} \"{n}\"", qualified(resource)),
        None => qualified(resource),
    };
    let message = format!(
        "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{resource}\" \
         in API group \"{group}\" in the namespace \"{ns}\""
    );
    let kind = resource.split('/').next().unwrap_or(resource);
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        message,
        Some(details(name, group, kind)),
    )
}

/// As `scale_get_missing_404`.
pub fn not_found(resource: &str, name: &str) -> Response {
    let group = group_of(resource);
    let what = match group {
        "" => resource.to_owned(),
        g => format!("{resource}.{g}"),
    };
    let message = format!("{what} \"{name}\" not found");
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        message,
        Some(details(Some(name), group, resource)),
    )
}

/// As `scale_patch_negative_422`.
pub fn invalid_replicas(name: &str, value: &Value) -> Response {
    let cause = format!("Invalid value: {value}: must be greater than or equal to 0");
    let message = format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: {cause}");
    let details = json!({
        "name": name, "group": "autoscaling", "kind": "Scale",
        "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "spec.replicas"}],
    });
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        message,
        Some(details),
    )
}

pub fn conflict(resource: &str, name: &str) -> Response {
    let message = format!(
        "Operation cannot be fulfilled on {resource}.apps \"{name}\": the object has been \
         modified; please apply your changes to the latest version and try again"
    );
    let d = details(
        Some(name),
        "apps",
        resource.split('/').next().unwrap_or(resource),
    );
    status(StatusCode::CONFLICT, "Conflict", message, Some(d))
}

pub fn unauthorized() -> Response {
    status(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized".into(),
        None,
    )
}

pub fn unsupported_media_type() -> Response {
    let message = "the body of the request was in an unknown format - accepted media types \
                   include: application/json-patch+json, application/merge-patch+json, \
                   application/apply-patch+yaml, application/strategic-merge-patch+json"
        .to_owned();
    status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        message,
        None,
    )
}

pub fn no_route() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".into(),
        Some(json!({})),
    )
}
