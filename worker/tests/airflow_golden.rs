//! Golden tests of the Airflow task kinds against the captured messages
//! (`broker-compat/tests/fixtures/airflow`): the Airflow 3.3 scheduler's
//! `execute_workload` message (Redis and RabbitMQ) decodes into the Python
//! run the worker starts, and the synthesized Airflow 2 `execute_command`
//! messages into the validated command with `external_executor_id`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod airflow_support;

use std::sync::Arc;

use airflow_support::fixture;
use broker_compat::protocol::{decode_envelope, DecodeOptions, Message, TaskMessage};
use celeriac_worker::config::{Cli, Config};
use celeriac_worker::routing::{Routing, RuntimeKind};
use celeriac_worker::tasks::airflow::{self, AirflowTaskName, PythonRun, BOOTSTRAP};
use celeriac_worker::tasks::{Registry, TaskKind};
use clap::Parser;
use serde_json::{json, Value};

fn airflow_registry(routing: Routing) -> Registry {
    let cli =
        Cli::try_parse_from(["celeriac-worker", "--airflow", "--broker", "redis://x/0"]).unwrap();
    let env = |k: &str| match k {
        "AIRFLOW_HOME" => Some("/opt/airflow".to_owned()),
        _ => None,
    };
    let config = Config::resolve(cli, &env).unwrap();
    assert!(
        config.acks_late && config.track_started,
        "Airflow acks late and tracks STARTED"
    );
    assert_eq!(
        config.prefetch_multiplier, 1,
        "Airflow's prefetch multiplier"
    );
    let settings = config.airflow_settings.unwrap().with_process_env([
        (
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL".to_owned(),
            "http://api:8080/execution/".to_owned(),
        ),
        ("AIRFLOW__CORE__DAGS_FOLDER".to_owned(), "/dags".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "not for tasks".to_owned(),
        ),
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
    ]);
    let env = settings.task_env();
    assert_eq!(
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"],
        "http://api:8080/execution/"
    );
    assert_eq!(env["AIRFLOW_HOME"], "/opt/airflow");
    assert!(
        !env.contains_key("AWS_SECRET_ACCESS_KEY"),
        "only Airflow's settings pass through"
    );
    Registry::new(routing).with_airflow(Arc::new(settings))
}

fn decode_redis(raw: &str) -> TaskMessage {
    let envelope = decode_envelope(raw.as_bytes()).unwrap();
    TaskMessage::decode(&envelope.message, &DecodeOptions::default()).unwrap()
}

fn plan(registry: &Registry, msg: &TaskMessage, queue: &str) -> (TaskKind, PythonRun) {
    let kind = registry
        .resolve(&msg.headers.task, queue)
        .expect("Airflow tasks are registered in Airflow mode");
    let TaskKind::Airflow(task) = &kind else {
        panic!("not an Airflow task: {kind:?}")
    };
    let run = task.plan(&msg.headers.id, &msg.args, &msg.kwargs).unwrap();
    (kind.clone(), run)
}

#[test]
fn airflow3_execute_workload_from_redis() {
    let registry = airflow_registry(Routing::default());
    let captured = fixture("redis_queue_22_messages.json");
    let messages = captured["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 22);
    for m in messages {
        let msg = decode_redis(m["raw"].as_str().unwrap());
        assert_eq!(msg.headers.task, "execute_workload");
        let (kind, run) = plan(&registry, &msg, "default");
        let TaskKind::Airflow(task) = kind else {
            unreachable!()
        };
        assert_eq!(task.name, AirflowTaskName::ExecuteWorkload);
        assert_eq!(task.profile.runtime, RuntimeKind::Process);
        assert_eq!(run.module, "airflow.sdk.execution_time.execute_workload");
        assert_eq!(run.argv[1], "--json-string");
        // The workload string reaches the SDK byte for byte.
        let workload: Value = serde_json::from_str(&run.argv[2]).unwrap();
        assert_eq!(workload, m["decoded"]["workload"]);
        assert_eq!(run.argv[2], msg.args[0].as_str().unwrap());
        assert!(run.extra_env.is_empty());
        let ti = &m["decoded"]["workload"]["ti"];
        assert!(
            run.what.contains(ti["dag_id"].as_str().unwrap()),
            "{}",
            run.what
        );
        assert_eq!(
            run.document(),
            json!({"module": run.module, "argv": run.argv})
        );
    }
}

#[test]
fn airflow3_execute_workload_from_rabbitmq() {
    let registry = airflow_registry(Routing::default());
    let captured = fixture("rabbitmq_message_afcap_simple_echo.json");
    let props = &captured["properties"];
    let mut message = Message {
        // The fixture holds the AMQP body parsed; the workload string inside is verbatim.
        body: captured["body"].to_string().into_bytes(),
        content_type: props["content_type"].as_str().unwrap().to_owned(),
        content_encoding: props["content_encoding"].as_str().unwrap().to_owned(),
        ..Message::default()
    };
    message.headers = props["application_headers"].as_object().unwrap().clone();
    let msg = TaskMessage::decode(&message, &DecodeOptions::default()).unwrap();
    let (_, run) = plan(&registry, &msg, "default");
    let workload: Value = serde_json::from_str(&run.argv[2]).unwrap();
    assert_eq!(workload, captured["workload"]);
    assert_eq!(workload["type"], "ExecuteTask");
}

#[test]
fn airflow2_execute_command_messages() {
    let registry = airflow_registry(Routing::default());
    let captured = fixture("synthesized_airflow2_execute_command.json");
    for m in captured["messages"].as_array().unwrap() {
        let msg = decode_redis(m["raw"].as_str().unwrap());
        let (_, run) = plan(&registry, &msg, "afcap_v2_sample");
        let command: Vec<String> = serde_json::from_value(msg.args[0].clone()).unwrap();
        assert_eq!(&command[..3], ["airflow", "tasks", "run"]);
        assert_eq!(run.module, "airflow");
        assert_eq!(run.argv, command);
        assert_eq!(
            run.extra_env,
            vec![("external_executor_id".to_owned(), msg.headers.id.clone())]
        );
    }
}

#[test]
fn refused_arguments_name_the_python_exception() {
    let registry = airflow_registry(Routing::default());
    let TaskKind::Airflow(cmd) = registry.resolve("execute_command", "q").unwrap() else {
        panic!()
    };
    for bad in [
        json!([["airflow", "db", "reset"]]),
        json!([["bash", "-c", "id"]]),
        json!(["airflow tasks run"]),
        json!([]),
    ] {
        let e = cmd
            .plan("id", bad.as_array().unwrap(), &serde_json::Map::new())
            .unwrap_err();
        assert_eq!(e.exc_type, "ValueError", "{bad}");
    }
    let TaskKind::Airflow(wl) = registry.resolve("execute_workload", "q").unwrap() else {
        panic!()
    };
    for bad in [
        json!([]),
        json!([{"type": "ExecuteTask"}]),
        json!(["not json"]),
        json!(["{}", "x"]),
    ] {
        let e = wl
            .plan("id", bad.as_array().unwrap(), &serde_json::Map::new())
            .unwrap_err();
        assert_eq!(e.exc_type, "TypeError", "{bad}");
    }
}

#[test]
fn airflow_names_need_airflow_mode_and_routes_pick_the_runtime() {
    assert!(Registry::new(Routing::default())
        .resolve("execute_workload", "default")
        .is_none());
    let routing = Routing::parse(
        r#"
[profile.af]
runtime = "docker"
image = "apache/airflow:3.3.2"
network = "host"

[[route]]
task = "execute_workload"
profile = "af"
"#,
    )
    .unwrap();
    let registry = airflow_registry(routing);
    let TaskKind::Airflow(task) = registry.resolve("execute_workload", "default").unwrap() else {
        panic!()
    };
    assert_eq!(task.profile.runtime, RuntimeKind::Docker);
    assert_eq!(task.profile.image.as_deref(), Some("apache/airflow:3.3.2"));
    let names = registry.registered();
    assert!(
        names.contains(&"execute_workload".to_owned())
            && names.contains(&"execute_command".to_owned())
    );
}

/// The bootstrap the cold runtimes run really is `python -m <module> <args>`.
#[test]
fn bootstrap_runs_the_module_like_python_dash_m() {
    let run = PythonRun {
        module: "json.tool".into(),
        argv: vec!["json.tool".into(), "--compact".into()],
        extra_env: Vec::new(),
        what: String::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(&input, "{ \"a\" : [1, 2] }").unwrap();
    let mut argv = run.argv.clone();
    argv.push(input.display().to_string());
    let doc = json!({"args": [{"module": run.module, "argv": argv}], "kwargs": {}});
    let out = std::process::Command::new("python3")
        .args(["-c", BOOTSTRAP])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(doc.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 must be installed");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"a":[1,2]}"#
    );
    assert_eq!(
        airflow::verdict(Some(0), None, true),
        airflow::Verdict::Success
    );
}
