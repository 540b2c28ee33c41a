//! The docker runtime against the real Docker engine on this machine, driven
//! as the executor drives it: `start`, `wait`, the logs channel to its end,
//! `read_file`, then `cleanup`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use celeriac_worker::routing::{Profile, Routing};
use celeriac_worker::runtime::docker::DockerRuntime;
use celeriac_worker::runtime::{
    payload, Exit, LogLine, LogStream, Running, Runtime, RuntimeErrorKind, TaskSpec,
};
use serde_json::json;
use support::docker::TestDocker;
use support::images;
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

/// A docker profile on the busybox image; `extra` is more TOML.
fn profile(extra: &str) -> Profile {
    let text = format!(
        "[profile.t]\nruntime = \"docker\"\nimage = \"{}\"\n{extra}",
        images::busybox()
    );
    Routing::parse(&text).unwrap().profile["t"].clone()
}

/// A task running `script` with busybox's shell.
fn spec(script: &str, extra: &str) -> TaskSpec {
    let command = json!(["/bin/busybox", "sh", "-c", script]);
    TaskSpec {
        task_id: uuid::Uuid::new_v4().to_string(),
        task_name: "tests.docker".into(),
        queue: "celery".into(),
        worker: "celery@test".into(),
        args: vec![json!(1), json!("two")],
        kwargs: json!({"x": [3]}).as_object().unwrap().clone(),
        retries: 0,
        profile: profile(&format!("command = {command}\n{extra}")),
    }
}

struct Ran {
    unit: Box<dyn Running>,
    exit: Exit,
    lines: Vec<LogLine>,
}

impl Ran {
    fn stream(&self, stream: LogStream) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.line.as_str())
            .collect()
    }
}

/// Start, wait, and collect every log line, as the executor does.
async fn run(docker: &TestDocker, spec: &TaskSpec) -> Ran {
    let (tx, mut rx) = mpsc::channel(1024);
    let mut unit = docker.runtime.start(spec, tx).await.unwrap();
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let exit = timeout(DEADLINE, unit.wait())
        .await
        .expect("the task did not end")
        .unwrap();
    let lines = timeout(DEADLINE, collect)
        .await
        .expect("the logs did not end")
        .unwrap();
    Ran { unit, exit, lines }
}

fn client(docker: &TestDocker) -> &Docker {
    docker.runtime.client()
}

async fn container_of(
    docker: &TestDocker,
    spec: &TaskSpec,
) -> Option<bollard::models::ContainerInspectResponse> {
    let name = format!("celeriac-{}", spec.task_id);
    match client(docker).inspect_container(&name, None).await {
        Ok(info) => Some(info),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => panic!("inspect {name}: {e}"),
    }
}

#[tokio::test]
async fn arguments_arrive_on_stdin_and_in_env_and_the_last_line_is_the_result() {
    let docker = TestDocker::new().await;
    let script = r#"doc=$(cat); echo "stdin=$doc"; echo "env=$CELERIAC_TASK_ARGS"; echo "to stderr" >&2; echo '{"sum": 3}'"#;
    let spec = spec(script, "");
    let mut ran = run(&docker, &spec).await;
    let doc = payload::args_document(&spec);
    assert_eq!(
        ran.exit,
        Exit {
            code: Some(0),
            signal: None,
            oom_killed: false
        }
    );
    assert_eq!(
        ran.stream(LogStream::Stdout),
        [
            format!("stdin={doc}"),
            format!("env={doc}"),
            r#"{"sum": 3}"#.to_owned()
        ]
    );
    assert_eq!(ran.stream(LogStream::Stderr), ["to stderr"]);
    let last = ran.stream(LogStream::Stdout).last().copied().unwrap();
    assert_eq!(payload::parse_result(last), json!({"sum": 3}));
    ran.unit.cleanup().await.unwrap();
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let docker = TestDocker::new().await;
    let mut ran = run(&docker, &spec("echo failing >&2; exit 3", "")).await;
    assert_eq!(ran.exit.code, Some(3));
    assert!(!ran.exit.success());
    assert_eq!(ran.stream(LogStream::Stderr), ["failing"]);
    ran.unit.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_oom_killed() {
    let docker = TestDocker::new().await;
    // `tail` keeps the one 64 MiB "line" in memory.
    let mut ran = run(
        &docker,
        &spec("head -c 64m /dev/zero | tail", "memory = \"8Mi\""),
    )
    .await;
    assert!(ran.exit.oom_killed, "{:?}", ran.exit);
    assert!(!ran.exit.success());
    ran.unit.cleanup().await.unwrap();
}

#[tokio::test]
async fn sigterm_ends_a_sleeping_task() {
    let docker = TestDocker::new().await;
    let spec = spec("echo sleeping; sleep 60", "");
    let (tx, mut rx) = mpsc::channel(16);
    let mut unit = docker.runtime.start(&spec, tx).await.unwrap();
    let first = timeout(DEADLINE, rx.recv())
        .await
        .expect("no output")
        .unwrap();
    assert_eq!(first.line, "sleeping");
    // `wait` is raced against timers by the executor: dropping it is fine.
    assert!(timeout(Duration::from_millis(200), unit.wait())
        .await
        .is_err());
    unit.signal(15).await.unwrap();
    let exit = timeout(Duration::from_secs(10), unit.wait())
        .await
        .expect("SIGTERM did not end it")
        .unwrap();
    assert_eq!(exit.code, Some(128 + 15));
    assert_eq!(
        timeout(DEADLINE, rx.recv()).await.unwrap(),
        None,
        "the logs channel closes"
    );
    // A signal to an ended container is not an error.
    unit.signal(9).await.unwrap();
    unit.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_result_file_is_read_back_before_cleanup() {
    let docker = TestDocker::new().await;
    let spec = spec(
        r#"echo '[1, "a"]' > /out/result.json"#,
        "result = { file = \"/out/result.json\" }",
    );
    let mut ran = run(&docker, &spec).await;
    assert_eq!(ran.exit.code, Some(0));
    let bytes = ran
        .unit
        .read_file(Path::new("/out/result.json"))
        .await
        .unwrap();
    assert_eq!(bytes.as_deref(), Some(&b"[1, \"a\"]\n"[..]));
    assert_eq!(
        ran.unit
            .read_file(Path::new("/out/missing.json"))
            .await
            .unwrap(),
        None
    );
    ran.unit.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_task_runs_unprivileged_and_its_container_stays_until_cleanup() {
    let docker = TestDocker::new().await;
    let spec = spec(
        "id -u; id -g; ls /sys/class/net; touch /root-is-writable || echo read-only",
        "",
    );
    let mut ran = run(&docker, &spec).await;
    assert_eq!(
        ran.stream(LogStream::Stdout),
        ["65534", "65534", "lo", "read-only"]
    );
    let info = container_of(&docker, &spec)
        .await
        .expect("the container is gone before cleanup");
    let labels = info.config.unwrap().labels.unwrap();
    assert_eq!(labels["celeriac.task_id"], spec.task_id);
    assert_eq!(labels["celeriac.queue"], "celery");
    assert_eq!(labels["celeriac-test"], docker.label);
    let host = info.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(
        host.pids_limit,
        Some(celeriac_worker::runtime::docker::PIDS_LIMIT)
    );
    ran.unit.cleanup().await.unwrap();
    assert!(
        container_of(&docker, &spec).await.is_none(),
        "cleanup removes the container"
    );
    assert!(docker.containers().is_empty());
}

#[tokio::test]
async fn a_missing_image_is_not_found() {
    let docker = TestDocker::new().await;
    for pull in ["never", "if-not-present"] {
        let mut spec = spec("true", &format!("pull = \"{pull}\""));
        spec.profile.image = Some(format!("celeriac-test-missing-{}:1", docker.label));
        let (tx, _rx) = mpsc::channel(1);
        let err = docker
            .runtime
            .start(&spec, tx)
            .await
            .err()
            .expect("started without an image");
        assert_eq!(err.kind, RuntimeErrorKind::NotFound, "pull = {pull}: {err}");
    }
    assert!(docker.containers().is_empty());
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable() {
    // A socket nobody listens on any more: a daemon that went away.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let client =
        Docker::connect_with_unix(&socket.to_string_lossy(), 5, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let runtime = DockerRuntime::new(client, Default::default());
    let (tx, _rx) = mpsc::channel(1);
    let err = runtime
        .start(&spec("true", ""), tx)
        .await
        .err()
        .expect("started without a daemon");
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn pull_always_does_not_run_a_stale_local_copy_when_the_registry_is_down() {
    let docker = TestDocker::new().await;
    let (tx, _rx) = mpsc::channel(1);
    let spec = spec("true", "pull = \"always\"");
    let err = docker
        .runtime
        .start(&spec, tx)
        .await
        .err()
        .expect("ran without pulling");
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable, "{err}");
    assert!(docker.containers().is_empty());
}

#[tokio::test]
async fn a_stopped_container_left_by_an_earlier_delivery_is_replaced() {
    let docker = TestDocker::new().await;
    let spec = spec("echo second", "");
    let name = format!("celeriac-{}", spec.task_id);
    let label = format!("{}={}", support::docker::TEST_LABEL, docker.label);
    let args = [
        "create",
        "--name",
        &name,
        "--label",
        &label,
        images::BUSYBOX,
        "/bin/busybox",
        "true",
    ];
    let out = images::docker(&args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ran = run(&docker, &spec).await;
    assert_eq!(ran.stream(LogStream::Stdout), ["second"]);
    ran.unit.cleanup().await.unwrap();
    assert!(docker.containers().is_empty());
}

#[tokio::test]
async fn arguments_too_large_for_the_environment_still_arrive_on_stdin() {
    let docker = TestDocker::new().await;
    let mut spec = spec(r#"echo "env=${#CELERIAC_TASK_ARGS}"; wc -c"#, "");
    spec.args = vec![json!("x".repeat(200_000))];
    let mut ran = run(&docker, &spec).await;
    assert_eq!(ran.exit.code, Some(0), "{:?}", ran.lines);
    let length = payload::args_document(&spec).len();
    assert_eq!(
        ran.stream(LogStream::Stdout),
        ["env=0".to_owned(), length.to_string()]
    );
    ran.unit.cleanup().await.unwrap();
}
