//! The warm Python runtime (fork server) driven through the `Runtime`
//! trait, with the fake Airflow made as slow to import as the real one:
//! concurrent tasks run in separate processes and process groups, signals
//! reach them, exit codes come back, and a task starts much sooner than in a
//! fresh Python (the numbers are printed, not asserted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod airflow_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airflow_support::{fake_airflow, workload};
use celeriac_worker::routing::Profile;
use celeriac_worker::runtime::process::ProcessRuntime;
use celeriac_worker::runtime::warm_python::{Launch, WarmPythonRuntime};
use celeriac_worker::runtime::{LogLine, LogStream, Running, Runtime, TaskSpec};
use celeriac_worker::tasks::airflow::settings::{AirflowFlags, AirflowSettings};
use celeriac_worker::tasks::airflow::{BOOTSTRAP, WORKLOAD_MODULE};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Seconds the fake `airflow` package sleeps on import (the real one takes 1.7–2.8 s).
const IMPORT_SECONDS: &str = "1.5";

fn env(home: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        (
            "PYTHONPATH".to_owned(),
            fake_airflow().display().to_string(),
        ),
        ("AIRFLOW_HOME".to_owned(), home.display().to_string()),
        (
            "CELERIAC_FAKE_IMPORT_SECONDS".to_owned(),
            IMPORT_SECONDS.to_owned(),
        ),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
    ])
}

fn spec(home: &Path, ti_task: &str) -> (TaskSpec, Value) {
    let settings = AirflowSettings::resolve(AirflowFlags::default(), &|_| None).unwrap();
    let mut profile: Profile = settings.default_profile();
    profile.command = vec!["python3".into(), "-c".into(), BOOTSTRAP.into()];
    profile.env = env(home);
    let w = workload(ti_task);
    let doc = json!({"module": WORKLOAD_MODULE, "argv": [WORKLOAD_MODULE, "--json-string", w.to_string()]});
    let spec = TaskSpec {
        task_id: uuid::Uuid::new_v4().to_string(),
        task_name: "execute_workload".into(),
        queue: "default".into(),
        worker: "celeriac@test".into(),
        args: vec![doc],
        kwargs: serde_json::Map::new(),
        retries: 0,
        profile,
    };
    (spec, w)
}

async fn warm_runtime(home: &Path) -> WarmPythonRuntime {
    let launch = Launch {
        python: "python3".into(),
        env: env(home),
        preload: vec![WORKLOAD_MODULE.into()],
    };
    WarmPythonRuntime::start(launch, 1)
        .await
        .expect("python3 must be installed")
}

/// The fake's first line: `{"event": "fake started", "pid", "pgid", ...}`.
async fn first_line(rx: &mut mpsc::Receiver<LogLine>) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if line.stream == LogStream::Stdout {
            if let Ok(v) = serde_json::from_str::<Value>(&line.line) {
                if v["event"] == "fake started" {
                    return v;
                }
            }
        }
    }
}

async fn start(
    rt: &dyn Runtime,
    spec: &TaskSpec,
) -> (Box<dyn Running>, mpsc::Receiver<LogLine>, Value, Duration) {
    let (tx, mut rx) = mpsc::channel(64);
    let t0 = Instant::now();
    let unit = rt.start(spec, tx).await.unwrap();
    let started = first_line(&mut rx).await;
    (unit, rx, started, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_are_separate_processes_and_exit_codes_come_back() {
    let home = tempfile::tempdir().unwrap();
    let rt = Arc::new(warm_runtime(home.path()).await);
    let (a, wa) = spec(home.path(), "wait_a");
    let (b, wb) = spec(home.path(), "wait_b");
    let (mut ua, mut rxa, sa, _) = start(rt.as_ref(), &a).await;
    let (mut ub, mut rxb, sb, _) = start(rt.as_ref(), &b).await;
    // Both run at once (each waits for its release file), each its own group.
    assert_ne!(sa["pid"], sb["pid"]);
    assert_eq!(sa["pid"], sa["pgid"], "own process group: {sa}");
    assert_eq!(sb["pid"], sb["pgid"], "own process group: {sb}");
    assert_eq!(ua.id(), format!("pid {}", sa["pid"]));
    for w in [&wa, &wb] {
        std::fs::write(
            home.path()
                .join(format!("release-{}", w["ti"]["id"].as_str().unwrap())),
            b"",
        )
        .unwrap();
    }
    let (ea, eb) = tokio::join!(ua.wait(), ub.wait());
    assert_eq!(ea.unwrap().code, Some(0));
    assert_eq!(eb.unwrap().code, Some(0));
    let mut rest = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), rxa.recv()).await {
        rest.push(l.line);
    }
    assert!(
        rest.iter().any(|l| l.contains("Workload finished")),
        "{rest:?}"
    );
    while rxb.recv().await.is_some() {}

    // A failing task's exit code; a signal reaches the task.
    let (f, _) = spec(home.path(), "fail");
    let (mut uf, _rxf, _, _) = start(rt.as_ref(), &f).await;
    assert_eq!(uf.wait().await.unwrap().code, Some(1));
    let (s, _) = spec(home.path(), "sleep");
    let (mut us, _rxs, _, _) = start(rt.as_ref(), &s).await;
    us.signal(nix::sys::signal::Signal::SIGTERM as i32)
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), us.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((exit.code, exit.signal), (None, Some(15)), "{exit:?}");
    us.cleanup().await.unwrap();
}

/// Per-task start (start() → the module's first line), warm vs a fresh Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_start_versus_cold_start() {
    let home = tempfile::tempdir().unwrap();
    let warm = warm_runtime(home.path()).await;
    let cold = ProcessRuntime;
    let mut warm_times = Vec::new();
    let mut cold_times = Vec::new();
    for _ in 0..3 {
        let (s, _) = spec(home.path(), "ok");
        let (mut u, _rx, _, t) = start(&warm, &s).await;
        assert_eq!(u.wait().await.unwrap().code, Some(0));
        warm_times.push(t);
        let (s, _) = spec(home.path(), "ok");
        let (mut u, _rx, _, t) = start(&cold, &s).await;
        assert_eq!(u.wait().await.unwrap().code, Some(0));
        u.cleanup().await.unwrap();
        cold_times.push(t);
    }
    println!(
        "import delay {IMPORT_SECONDS} s; warm start: {warm_times:?}; cold start: {cold_times:?}"
    );
    let best_cold = cold_times.iter().min().unwrap();
    let worst_warm = warm_times.iter().max().unwrap();
    // Not a timing assertion: the cold start includes the import by construction.
    assert!(
        best_cold.as_secs_f64() >= 1.5,
        "the fake import delay did not apply: {cold_times:?}"
    );
    println!(
        "warm is {:.0}x faster",
        best_cold.as_secs_f64() / worst_warm.as_secs_f64()
    );
}

/// Preloaded modules may print to stdout before the server is ready (real
/// Airflow logs "Using Public CAs from certifi" while warming up; `import
/// this` prints the Zen of Python): the server still starts and runs tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_output_before_ready_is_not_mistaken_for_the_ready_line() {
    let home = tempfile::tempdir().unwrap();
    let launch = Launch {
        python: "python3".into(),
        env: env(home.path()),
        preload: vec!["this".into(), WORKLOAD_MODULE.into()],
    };
    let rt = WarmPythonRuntime::start(launch, 1)
        .await
        .expect("a chatty preload must not stop the server from starting");
    let (task, w) = spec(home.path(), "wait_zen");
    let (mut unit, _rx, started, _) = start(&rt, &task).await;
    assert!(started["pid"].is_number(), "{started}");
    let release = format!("release-{}", w["ti"]["id"].as_str().unwrap());
    std::fs::write(home.path().join(release), b"").unwrap();
    assert_eq!(unit.wait().await.unwrap().code, Some(0));
}

/// `(pid, ppid)` of every process, from /proc.
fn processes() -> Vec<(i32, i32)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// The fork server's children that are not running `busy`: its spare.
fn spares(busy: &[i32]) -> Vec<i32> {
    let all = processes();
    let me = i32::try_from(std::process::id()).unwrap();
    let servers: Vec<i32> = all.iter().filter(|p| p.1 == me).map(|p| p.0).collect();
    all.iter()
        .filter(|p| servers.contains(&p.1) && !busy.contains(&p.0))
        .map(|p| p.0)
        .collect()
}

async fn spare_appears(busy: &[i32]) -> i32 {
    for _ in 0..100 {
        if let [one] = spares(busy)[..] {
            return one;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no single spare process: {:?}", spares(busy));
}

/// The server forks each task's process ahead of it; a task runs in that
/// spare, and when the spare was killed the task is forked as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_in_the_spare_forked_ahead_and_survive_its_loss() {
    let home = tempfile::tempdir().unwrap();
    let rt = warm_runtime(home.path()).await;
    let spare = spare_appears(&[]).await;
    let (a, _) = spec(home.path(), "sleep_a");
    let (mut ua, _rxa, sa, _) = start(&rt, &a).await;
    assert_eq!(sa["pid"], spare, "the task ran in the spare");
    assert_eq!(sa["pid"], sa["pgid"], "own process group: {sa}");
    let a_pid = i32::try_from(sa["pid"].as_i64().unwrap()).unwrap();

    // The next spare, killed before its task comes: the task still runs.
    let next = spare_appears(&[a_pid]).await;
    assert_ne!(next, spare);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(next),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (f, _) = spec(home.path(), "fail");
    let (mut uf, _rxf, sf, _) = start(&rt, &f).await;
    assert_ne!(sf["pid"], next, "a fresh fork, not the dead spare");
    assert_eq!(uf.wait().await.unwrap().code, Some(1), "its exit code");
    spare_appears(&[a_pid]).await;

    ua.signal(nix::sys::signal::Signal::SIGKILL as i32)
        .await
        .unwrap();
    let exit = ua.wait().await.unwrap();
    assert_eq!(exit.signal, Some(9), "{exit:?}");
}

/// Tasks started at the same moment each run exactly once, in their own
/// process: the handover to the spare and the fork that replaces it never
/// both run one task (they once did, when the spare closed its socket
/// before the server's last, empty send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_started_together_each_run_exactly_once() {
    let home = tempfile::tempdir().unwrap();
    let rt = warm_runtime(home.path()).await;
    for round in 0..15 {
        let specs: Vec<TaskSpec> = (0..3)
            .map(|i| spec(home.path(), &format!("ok_{round}_{i}")).0)
            .collect();
        let runs = futures::future::join_all(specs.iter().map(|s| async {
            let (tx, mut rx) = mpsc::channel(64);
            let mut unit = rt.start(s, tx).await.unwrap();
            let exit = unit.wait().await.unwrap();
            let mut starts = Vec::new();
            while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                if l.line.contains("fake started") {
                    starts.push(l.line);
                }
            }
            (exit.code, starts)
        }))
        .await;
        for (code, starts) in runs {
            assert_eq!(code, Some(0));
            assert_eq!(
                starts.len(),
                1,
                "round {round}: ran {} times: {starts:?}",
                starts.len()
            );
        }
    }
}
