//! Airflow's CeleryExecutor messages (Airflow 3 `execute_workload`, Airflow 2
//! style `execute_command`), on Redis and RabbitMQ.

use broker_compat::protocol::{
    decode_envelope, pyjson, DecodeOptions, Message, Properties, TaskMessage,
};
use serde_json::Value;

use super::fixtures::load;

fn from_raw(raw: &Value) -> (String, TaskMessage) {
    let bytes = match raw {
        Value::String(s) => s.as_bytes().to_vec(),
        parsed => pyjson::to_vec(parsed),
    };
    let env = decode_envelope(&bytes).expect("envelope");
    let tm = TaskMessage::decode(&env.message, &DecodeOptions::default()).expect("task");
    (env.routing_key, tm)
}

/// The workload JSON Airflow 3 passes as the single positional argument.
fn workload(tm: &TaskMessage) -> Value {
    assert_eq!(tm.task(), "execute_workload");
    assert_eq!((tm.args.len(), tm.kwargs.len()), (1, 0));
    serde_json::from_str(tm.args[0].as_str().expect("workload is a JSON string"))
        .expect("workload JSON")
}

#[test]
fn airflow3_redis_queue_messages() {
    let doc = load("airflow/redis_queue_afcap_simple_echo.json");
    let msg = &doc["messages"][0];
    let (queue, tm) = from_raw(&msg["raw"]);
    assert_eq!(queue, "default");
    let w = workload(&tm);
    assert_eq!(w, msg["decoded"]["workload"]);
    assert_eq!(
        (w["type"].as_str(), w["ti"]["dag_id"].as_str()),
        (Some("ExecuteTask"), Some("afcap_simple"))
    );

    let doc = load("airflow/redis_queue_22_messages.json");
    let msgs = doc["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 22);
    for m in msgs {
        let (queue, tm) = from_raw(&m["raw"]);
        assert_eq!(queue, "default");
        assert_eq!(workload(&tm), m["decoded"]["workload"]);
    }
}

#[test]
fn airflow3_messages_held_unacked_by_a_worker() {
    let doc = load("airflow/redis_unacked_while_running.json");
    let unacked = doc["unacked"].as_object().expect("unacked");
    assert_eq!(unacked.len(), 2);
    for (tag, entry) in unacked {
        let (queue, tm) = from_raw(&entry[0]);
        assert_eq!(
            (queue.as_str(), entry[2].as_str()),
            ("default", Some("default"))
        );
        assert_eq!(workload(&tm)["ti"]["dag_id"], "afcap_sleep");
        let env = decode_envelope(&pyjson::to_vec(&entry[0])).expect("envelope");
        assert_eq!(env.delivery_tag.as_deref(), Some(tag.as_str()));
    }
}

#[test]
fn airflow2_execute_command() {
    let doc = load("airflow/synthesized_airflow2_execute_command.json");
    let mut saw_map_index = false;
    for m in doc["messages"].as_array().expect("messages") {
        let (_, tm) = from_raw(&m["raw"]);
        assert_eq!(tm.task(), "execute_command");
        let argv: Vec<&str> = tm.args[0]
            .as_array()
            .expect("argv")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(&argv[..3], ["airflow", "tasks", "run"]);
        saw_map_index |= argv.windows(2).any(|w| w == ["--map-index", "3"]);
    }
    assert!(saw_map_index);
}

#[test]
fn airflow3_rabbitmq_message() {
    let doc = load("airflow/rabbitmq_message_afcap_simple_echo.json");
    let props = &doc["properties"];
    let body = pyjson::to_vec(&doc["body"]);
    let s = |k: &str| props[k].as_str().map(str::to_owned);
    let msg = Message {
        body: body.clone(),
        content_type: s("content_type").unwrap_or_default(),
        content_encoding: s("content_encoding").unwrap_or_default(),
        headers: props["application_headers"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        properties: Properties {
            correlation_id: s("correlation_id"),
            reply_to: s("reply_to"),
            delivery_mode: Some(2),
            ..Properties::default()
        },
    };
    let tm = TaskMessage::decode(&msg, &DecodeOptions::default()).expect("task");
    assert_eq!(workload(&tm), doc["workload"]);
    let again = tm.encode(&Default::default()).expect("encodes");
    assert_eq!(
        (pyjson::to_string(&again.headers), again.body),
        (pyjson::to_string(&msg.headers), body)
    );
}
