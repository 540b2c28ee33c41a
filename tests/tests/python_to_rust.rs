//! Real Python Celery publishes every message kind of the wire fixtures
//! (tests/python/publish_all.py); broker-compat consumes them from the same
//! queue and `TaskMessage::decode` must give back exactly what Python sent.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use broker_compat::protocol::{DecodeOptions, TaskMessage};
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::{QueueDepth, QueueSpec, Transport};
use celeriac_tests::published::{by_id, mismatches, publish_all, Published, Received};
use celeriac_tests::services::{redis_conn, redis_url, RabbitVhost, RedisKeys};
use celeriac_tests::{key_prefix, unique, PyApp};

/// Consume `n` deliveries (acking each), decoding every one.
async fn consume_all(transport: &dyn Transport, queue: &str, n: usize) -> Result<Vec<Received>> {
    let spec = QueueSpec::task_queue(queue);
    let mut consumer = transport.consume(&[spec], 100).await?;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(15), consumer.next()).await;
        let delivery = next
            .with_context(|| format!("only {} of the {n} Python messages arrived", out.len()))??;
        let (message, info, acker) = delivery.into_parts();
        let task = TaskMessage::decode(&message, &DecodeOptions::default())
            .with_context(|| format!("decoding {message:?}"))?;
        acker.ack().await?;
        out.push(Received {
            message,
            info,
            task,
        });
    }
    consumer.stop().await?;
    Ok(out)
}

/// Every Python message arrived once and decodes to what Python sent.
fn compare(published: &[Published], received: Vec<Received>, queue: &str) -> Result<()> {
    let mut got = by_id(received)?;
    let mut problems = Vec::new();
    for p in published {
        match got.remove(p.id()) {
            Some(r) => problems.extend(mismatches(p, &r, queue)),
            None => problems.push(format!("[{}] task {} never arrived", p.case, p.id())),
        }
    }
    problems.extend(got.keys().map(|id| format!("unexpected task {id}")));
    if !problems.is_empty() {
        bail!("{} mismatches:\n{}", problems.len(), problems.join("\n"));
    }
    Ok(())
}

/// kombu's Redis layout serves priority step 0 first and 9 last (spec §2.2),
/// FIFO within a step.
fn check_redis_priority_order(published: &[Published], received: &[Received]) -> Result<()> {
    let step = |p: u8| [9, 6, 3, 0].into_iter().find(|s| p >= *s).unwrap_or(0);
    let mut want: Vec<(u8, usize, &str)> = published
        .iter()
        .enumerate()
        .map(|(i, p)| (step(p.priority()), i, p.id()))
        .collect();
    want.sort();
    let want: Vec<&str> = want.into_iter().map(|(_, _, id)| id).collect();
    let got: Vec<&str> = received.iter().map(|r| r.task.id()).collect();
    ensure!(got == want, "delivery order {got:?}, kombu order {want:?}");
    Ok(())
}

async fn assert_drained(transport: &dyn Transport, queue: &str) -> Result<()> {
    let depth = transport.queue_depth(queue).await?;
    ensure!(
        depth == QueueDepth::default(),
        "queue not empty after acks: {depth:?}"
    );
    Ok(())
}

/// The chord's `.s` key the client wrote to the result backend (db 1).
fn chord_keys(published: &[Published]) -> RedisKeys {
    let mut keys = RedisKeys::new(1, "");
    for g in published.iter().filter_map(|p| p.headers.get("group")) {
        if let Some(g) = g.as_str() {
            keys.also(format!("celery-taskset-meta-{g}.s"));
        }
    }
    keys
}

#[tokio::test]
async fn redis_python_publishes_rust_consumes() -> Result<()> {
    let _ = redis_conn(0).await;
    let (prefix, queue) = (key_prefix(), unique("py2rs"));
    let _keys = RedisKeys::new(0, &prefix);
    let mut app = PyApp::new(&redis_url(0), &queue);
    app.backend = Some(redis_url(1));
    app.keyprefix = Some(prefix.clone());
    let published = publish_all(&app).await?;
    let _chord = chord_keys(&published);
    let mut opts = RedisOptions::from_url(&redis_url(0))?;
    opts.global_keyprefix = prefix;
    let transport = RedisTransport::connect(opts).await?;
    let received = consume_all(&transport, &queue, published.len()).await?;
    check_redis_priority_order(&published, &received)?;
    compare(&published, received, &queue)?;
    assert_drained(&transport, &queue).await
}

#[tokio::test]
async fn amqp_python_publishes_rust_consumes() -> Result<()> {
    let vhost = RabbitVhost::create()?;
    let queue = unique("py2rs");
    let mut app = PyApp::new(&vhost.url(), &queue);
    app.backend = Some(redis_url(1));
    let published = publish_all(&app).await?;
    let _chord = chord_keys(&published);
    let transport = AmqpTransport::connect(AmqpOptions::from_url(&vhost.url())?).await?;
    let received = consume_all(&transport, &queue, published.len()).await?;
    // No x-max-priority on Celery's default queue: RabbitMQ keeps FIFO.
    let order: Vec<&str> = received.iter().map(|r| r.task.id()).collect();
    let sent: Vec<&str> = published.iter().map(Published::id).collect();
    ensure!(
        order == sent,
        "AMQP order {order:?} differs from publish order {sent:?}"
    );
    compare(&published, received, &queue)?;
    assert_drained(&transport, &queue).await?;
    transport.close().await?;
    Ok(())
}
