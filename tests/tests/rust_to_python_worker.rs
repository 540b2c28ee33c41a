//! broker-compat builds and publishes tasks (`TaskMessage::new(..).encode(..)`
//! then `Transport::publish`); a real Python Celery worker runs them and its
//! result backend must hold SUCCESS with the right value.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use broker_compat::protocol::{
    Compression, EncodeOptions, KombuValue, ProtocolVersion, Serializer, TaskMessage,
};
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::{QueueSpec, Route, Transport};
use celeriac_tests::services::{redis_conn, redis_url, RabbitVhost, RedisKeys};
use celeriac_tests::{key_prefix, unique, PyApp};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

struct Case {
    name: &'static str,
    task: TaskMessage,
    opts: EncodeOptions,
    /// Python `repr()` of the value the worker must store.
    want: String,
}

fn encode(protocol: ProtocolVersion, zlib: bool) -> EncodeOptions {
    EncodeOptions {
        protocol,
        serializer: Serializer::Json,
        compression: zlib.then_some(Compression::Zlib),
    }
}

fn add(x: i64, y: i64) -> TaskMessage {
    TaskMessage::new("interop.add", vec![json!(x), json!(y)], Map::new())
}

fn typed_args() -> Result<Vec<Value>> {
    let when = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678901+00:00")?;
    let v = KombuValue::Array(vec![
        KombuValue::DateTime(when),
        KombuValue::Uuid("12345678-1234-5678-1234-567812345678".parse()?),
        KombuValue::Decimal("1.10".into()),
        KombuValue::Bytes(b"hello bytes".to_vec()),
        KombuValue::Bytes(vec![0xff, 0x00, 0xfe]),
    ]);
    Ok(vec![v.to_json()])
}

fn cases() -> Result<Vec<Case>> {
    use ProtocolVersion::{V1, V2};
    let mut kwargs = Map::new();
    kwargs.insert("x".into(), json!(40));
    kwargs.insert("y".into(), json!(2));
    let typed_repr = "[datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, \
        tzinfo=datetime.timezone.utc), UUID('12345678-1234-5678-1234-567812345678'), \
        Decimal('1.10'), b'hello bytes', b'\\xff\\x00\\xfe']";
    let case = |name, task, opts, want: &str| Case {
        name,
        task,
        opts,
        want: want.to_owned(),
    };
    let countdown = Duration::from_secs(2);
    Ok(vec![
        case("v2", add(2, 3), encode(V2, false), "5"),
        case("v1", add(20, 22), encode(V1, false), "42"),
        case(
            "v2 kwargs",
            TaskMessage::new("interop.add", vec![], kwargs),
            encode(V2, false),
            "42",
        ),
        case(
            "v2 countdown",
            add(1, 1).countdown(countdown),
            encode(V2, false),
            "2",
        ),
        case(
            "v1 countdown",
            add(1, 2).countdown(countdown),
            encode(V1, false),
            "3",
        ),
        case("v2 zlib", add(100, 1), encode(V2, true), "101"),
        case("v1 zlib", add(100, 2), encode(V1, true), "102"),
        case(
            "v2 typed args",
            TaskMessage::new("interop.echo", typed_args()?, Map::new()),
            encode(V2, false),
            typed_repr,
        ),
    ])
}

/// Publish every case to `queue`, then read the results with AsyncResult.get().
async fn publish_and_check(transport: &dyn Transport, app: &PyApp, queue: &str) -> Result<()> {
    let cases = cases()?;
    let mut results = RedisKeys::new(1, "");
    for c in &cases {
        results.also(format!("celery-task-meta-{}", c.task.id()));
        let message = c.task.encode(&c.opts).with_context(|| c.name)?;
        transport.publish(&Route::queue(queue), &message).await?;
    }
    let mut args = vec!["--timeout", "30"];
    args.extend(cases.iter().map(|c| c.task.id()));
    let out = app.run_script("get_results.py", &args).await?;
    let docs: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut problems = Vec::new();
    for (c, doc) in cases.iter().zip(&docs) {
        if doc["state"] != "SUCCESS" || doc["repr"] != json!(c.want) {
            problems.push(format!(
                "[{}] want SUCCESS {}, Python read {doc}",
                c.name, c.want
            ));
        }
        if let Some(eta) = c.task.headers.eta {
            let done = doc["date_done"].as_str().map(DateTime::parse_from_rfc3339);
            let early = !matches!(done, Some(Ok(d)) if d.with_timezone(&Utc) >= eta);
            if early {
                problems.push(format!("[{}] ran before its eta {eta}: {doc}", c.name));
            }
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[tokio::test]
async fn redis_rust_publishes_python_worker_runs() -> Result<()> {
    let _ = redis_conn(0).await;
    let (prefix, queue) = (key_prefix(), unique("rs2py"));
    let _keys = RedisKeys::new(0, &prefix);
    let mut app = PyApp::new(&redis_url(0), &queue);
    app.backend = Some(redis_url(1));
    app.keyprefix = Some(prefix.clone());
    let worker = app.start_worker("solo", 1).await?;
    let mut opts = RedisOptions::from_url(&redis_url(0))?;
    opts.global_keyprefix = prefix;
    let transport = RedisTransport::connect(opts).await?;
    transport
        .declare_queue(&QueueSpec::task_queue(&queue))
        .await?;
    let checked = publish_and_check(&transport, &app, &queue).await;
    checked.with_context(|| worker.log_tail(40))
}

#[tokio::test]
async fn amqp_rust_publishes_python_worker_runs() -> Result<()> {
    let vhost = RabbitVhost::create()?;
    let queue = unique("rs2py");
    let mut app = PyApp::new(&vhost.url(), &queue);
    app.backend = Some(redis_url(1));
    let worker = app.start_worker("solo", 1).await?;
    let transport = AmqpTransport::connect(AmqpOptions::from_url(&vhost.url())?).await?;
    // Declaring what the worker already declared must be accepted as equivalent.
    transport
        .declare_queue(&QueueSpec::task_queue(&queue))
        .await?;
    let checked = publish_and_check(&transport, &app, &queue).await;
    transport.close().await?;
    checked.with_context(|| worker.log_tail(40))
}
