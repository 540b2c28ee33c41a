//! Request handling: one entry point that records the request, checks the
//! bearer token and the Role, then serves the scale subresource or pods.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use super::status::{self, json_response};
use super::{fixture, Recorded, State, TOKEN};

type Shared = Arc<Mutex<State>>;

pub fn router(state: Shared) -> Router {
    Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { handle(&state, method, uri, headers, body) }
        },
    )
}

/// What a path names.
enum Target<'a> {
    Scale {
        resource: &'a str,
        ns: &'a str,
        name: &'a str,
    },
    Workloads {
        resource: &'a str,
        ns: &'a str,
    },
    Pods {
        ns: &'a str,
    },
    Pod {
        ns: &'a str,
        name: &'a str,
    },
}

fn parse(path: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["apis", "apps", "v1", "namespaces", ns, resource, name, "scale"] => {
            Some(Target::Scale { resource, ns, name })
        }
        ["apis", "apps", "v1", "namespaces", ns, resource] => {
            Some(Target::Workloads { resource, ns })
        }
        ["api", "v1", "namespaces", ns, "pods"] => Some(Target::Pods { ns }),
        ["api", "v1", "namespaces", ns, "pods", name] => Some(Target::Pod { ns, name }),
        _ => None,
    }
}

fn verb(method: &Method, named: bool) -> &'static str {
    match *method {
        Method::GET if named => "get",
        Method::GET => "list",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::POST => "create",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

fn handle(state: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type: content_type.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {TOKEN}")) {
        return status::unauthorized();
    }
    let Some(target) = parse(uri.path()) else {
        return status::no_route();
    };
    let (resource, ns, name) = match &target {
        Target::Scale { resource, ns, name } => (format!("{resource}/scale"), *ns, Some(*name)),
        Target::Workloads { resource, ns } => (resource.to_string(), *ns, None),
        Target::Pods { ns } => ("pods".to_owned(), *ns, None),
        Target::Pod { ns, name } => ("pods".to_owned(), *ns, Some(*name)),
    };
    let verb = verb(&method, name.is_some());
    if !s.allowed.contains(&(verb.to_owned(), resource.clone())) {
        return status::forbidden(verb, &resource, ns, name);
    }
    if method == Method::PATCH && !is_patch_type(content_type.as_deref()) {
        return status::unsupported_media_type();
    }
    let patch = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    match target {
        Target::Scale { resource, ns, name } if method == Method::GET => {
            get_scale(&s, resource, ns, name)
        }
        Target::Scale { resource, ns, name } => patch_scale(&mut s, resource, ns, name, &patch()),
        Target::Pods { ns } => list_pods(&s, ns, uri.query().unwrap_or_default()),
        Target::Pod { ns, name } => patch_pod(&mut s, ns, name, &patch()),
        Target::Workloads { .. } => status::no_route(),
    }
}

fn is_patch_type(ct: Option<&str>) -> bool {
    matches!(
        ct,
        Some("application/merge-patch+json" | "application/strategic-merge-patch+json")
    )
}

fn scale_json(s: &State, resource: &str, ns: &str, name: &str) -> Option<Value> {
    let w = s
        .workloads
        .get(&(resource.into(), ns.into(), name.into()))?;
    let mut scale = fixture("scale_get_200")["response"]["body_json"].clone();
    scale["metadata"] = json!({
        "name": name, "namespace": ns, "uid": w.uid,
        "resourceVersion": w.resource_version.to_string(), "creationTimestamp": w.created,
    });
    scale["spec"] = json!({"replicas": w.replicas});
    scale["status"] = json!({"replicas": w.status_replicas, "selector": w.selector});
    Some(scale)
}

fn get_scale(s: &State, resource: &str, ns: &str, name: &str) -> Response {
    match scale_json(s, resource, ns, name) {
        Some(scale) => json_response(StatusCode::OK, &scale),
        None => status::not_found(&format!("{resource}/scale"), name),
    }
}

fn patch_scale(s: &mut State, resource: &str, ns: &str, name: &str, patch: &Value) -> Response {
    let Some(mut scale) = scale_json(s, resource, ns, name) else {
        return status::not_found(&format!("{resource}/scale"), name);
    };
    if s.conflicts > 0 {
        s.conflicts -= 1;
        return status::conflict(&format!("{resource}/scale"), name);
    }
    merge(&mut scale, patch);
    let replicas = &scale["spec"]["replicas"];
    let Some(n) = replicas.as_i64().filter(|n| *n >= 0) else {
        return status::invalid_replicas(name, replicas);
    };
    let rv = s.next_rv();
    let w = s
        .workloads
        .get_mut(&(resource.into(), ns.into(), name.into()))
        .unwrap();
    w.replicas = n;
    w.resource_version = rv;
    json_response(StatusCode::OK, &scale_json(s, resource, ns, name).unwrap())
}

/// `k=v,k2==v2,k3!=v3` (the equality-based selectors the scaler sends).
fn matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            return labels[k.trim()].as_str() != Some(v.trim());
        }
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or((term, ""));
        labels[k.trim()].as_str() == Some(v.trim())
    })
}

fn list_pods(s: &State, ns: &str, query: &str) -> Response {
    let selector = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let items: Vec<Value> = s
        .pods
        .iter()
        .filter(|((pod_ns, _), pod)| pod_ns == ns && matches(&selector, &pod["metadata"]["labels"]))
        .map(|(_, pod)| pod.clone())
        .collect();
    let list = json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": s.resource_version.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

fn patch_pod(s: &mut State, ns: &str, name: &str, patch: &Value) -> Response {
    let rv = s.next_rv();
    let Some(pod) = s.pods.get_mut(&(ns.into(), name.into())) else {
        return status::not_found("pods", name);
    };
    merge(pod, patch);
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    let mut out = json!({"kind": "Pod", "apiVersion": "v1"});
    for (k, v) in pod.as_object().unwrap() {
        out[k] = v.clone();
    }
    json_response(StatusCode::OK, &out)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let obj = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge(obj.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
