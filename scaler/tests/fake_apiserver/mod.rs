//! An HTTP fake of kube-apiserver v1.28 for the calls the scaler makes,
//! built from the captured exchanges in `tests/fixtures/kubernetes/`: the
//! `/scale` subresource (GET, merge/strategic PATCH, PUT refused), pod list
//! by label selector and pod merge PATCH. Answers carry the real headers
//! (`Content-Type: application/json`, `Audit-Id`, `nosniff` on 403) and
//! `Status` bodies worded like the real ones. Bearer-token auth; RBAC is the
//! scaler's Role (get/patch `*/scale`, list/patch pods), and a test can
//! deny any verb. The production `kube` client talks to it unchanged.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod routes;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "fake-scaler-token";
pub const USER: &str = "airflow-scaler";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub replicas: i64,
    pub status_replicas: i64,
    pub selector: String,
    pub uid: String,
    pub created: String,
    pub resource_version: u64,
}

#[derive(Default)]
pub struct State {
    pub resource_version: u64,
    /// `(resource, namespace, name)` → workload; resource `deployments`/`statefulsets`.
    pub workloads: BTreeMap<(String, String, String), Workload>,
    /// `(namespace, name)` → the pod object as the API server stores it.
    pub pods: BTreeMap<(String, String), Value>,
    /// `(verb, resource)` the scaler's Role grants.
    pub allowed: BTreeSet<(String, String)>,
    /// The next this-many writes answer 409 Conflict.
    pub conflicts: u32,
    pub requests: Vec<Recorded>,
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }
}

pub struct FakeApiServer {
    pub url: String,
    pub token_file: PathBuf,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// A captured exchange, parsed.
pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/kubernetes/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let mut state = State {
            resource_version: 2600,
            ..State::default()
        };
        for (verb, resource) in [
            ("get", "deployments/scale"),
            ("patch", "deployments/scale"),
            ("get", "statefulsets/scale"),
            ("patch", "statefulsets/scale"),
            ("list", "pods"),
            ("patch", "pods"),
        ] {
            state.allowed.insert((verb.into(), resource.into()));
        }
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let router = routes::router(state.clone());
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        });
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        FakeApiServer {
            url,
            token_file,
            state,
            stop,
            _dir: dir,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A Deployment with `replicas` and selector `app=<name>`, as in the fixtures.
    pub fn add_deployment(&self, ns: &str, name: &str, replicas: i64) {
        self.add_workload("deployments", ns, name, replicas);
    }

    pub fn add_workload(&self, resource: &str, ns: &str, name: &str, replicas: i64) {
        let mut s = self.state();
        let rv = s.next_rv();
        let w = Workload {
            replicas,
            status_replicas: replicas,
            selector: format!("app={name}"),
            uid: uuid::Uuid::new_v4().to_string(),
            created: "2026-11-22T00:16:54Z".into(),
            resource_version: rv,
        };
        s.workloads
            .insert((resource.into(), ns.into(), name.into()), w);
    }

    pub fn replicas(&self, ns: &str, name: &str) -> i64 {
        let s = self.state();
        s.workloads[&("deployments".to_owned(), ns.to_owned(), name.to_owned())].replicas
    }

    /// A running worker pod labelled `app=<app>` whose container declares
    /// port `admin` = `admin_port`, built from the captured pod list.
    pub fn add_pod(&self, ns: &str, name: &str, app: &str, ip: &str, admin_port: u16) {
        let mut pod =
            fixture("pods_list_by_label_200")["response"]["body_json"]["items"][0].clone();
        let mut s = self.state();
        let rv = s.next_rv();
        let meta = &mut pod["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["resourceVersion"] = json!(rv.to_string());
        meta["labels"] = json!({"app": app, "pod-template-hash": "d5677449b"});
        pod["status"]["podIP"] = json!(ip);
        pod["status"]["podIPs"] = json!([{"ip": ip}]);
        pod["spec"]["containers"][0]["ports"] =
            json!([{"name": "admin", "containerPort": admin_port, "protocol": "TCP"}]);
        s.pods.insert((ns.into(), name.into()), pod);
    }

    pub fn pod(&self, ns: &str, name: &str) -> Value {
        self.state().pods[&(ns.to_owned(), name.to_owned())].clone()
    }

    /// The pod's `controller.kubernetes.io/pod-deletion-cost`, if set.
    pub fn deletion_cost(&self, ns: &str, name: &str) -> Option<i64> {
        let pod = self.pod(ns, name);
        pod["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
            .as_str()
            .map(|c| c.parse().unwrap())
    }

    /// Take `verb` on `resource` away from the scaler's Role.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.state().allowed.remove(&(verb.into(), resource.into()));
    }

    pub fn conflict_next_writes(&self, n: u32) {
        self.state().conflicts = n;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// A `kube` client configured as the scaler configures one for `--kube-api-url`.
    pub fn kube_config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.auth_info.token_file = Some(self.token_file.to_string_lossy().into_owned());
        config
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
