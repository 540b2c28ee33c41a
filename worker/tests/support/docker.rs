//! A Docker runtime for one test: every container it creates carries a
//! `celeriac-test=<uuid>` label, and whatever is left is removed on drop.

use std::collections::BTreeMap;

use celeriac_worker::runtime::docker::DockerRuntime;

use super::images::docker;

pub const TEST_LABEL: &str = "celeriac-test";

pub struct TestDocker {
    pub runtime: DockerRuntime,
    pub label: String,
}

impl TestDocker {
    /// Connects to the local daemon; a daemon that is down fails the test.
    pub async fn new() -> Self {
        let label = uuid::Uuid::new_v4().to_string();
        let labels = BTreeMap::from([(TEST_LABEL.to_owned(), label.clone())]);
        let runtime = DockerRuntime::connect(labels).await.unwrap_or_else(|e| {
            panic!("these tests need the Docker daemon on this machine (is dockerd running?): {e}")
        });
        TestDocker { runtime, label }
    }

    /// Ids of this test's containers, running or not.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label={TEST_LABEL}={}", self.label);
        let out = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestDocker {
    fn drop(&mut self) {
        let ids = self.containers();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        if let Err(e) = docker(&args) {
            eprintln!("could not remove test containers {ids:?}: {e}");
        }
    }
}
