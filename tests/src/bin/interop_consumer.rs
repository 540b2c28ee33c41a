//! A minimal Celery-compatible consumer built on broker-compat, for the
//! shared-queue interop test: it consumes a queue next to a real Python
//! worker, runs `interop.mark` itself (SADD of the task id into the same
//! Redis set, plus an execution counter, in one transaction, then the
//! optional `sleep` kwarg), stores SUCCESS if given a result backend, and
//! acks only afterwards (acks_late), so a `kill -9` loses nothing.
//!
//! Prints `consuming <queue>` on stdout once it consumes, then `got <id>` for
//! every task it receives. Runs until killed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use broker_compat::backend::{self, BackendOptions, ResultBackend, TaskResult};
use broker_compat::protocol::{DecodeOptions, TaskMessage};
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::{Acker, QueueSpec, Transport};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// `redis://…` or `amqp://…`.
    #[arg(long)]
    broker: String,
    #[arg(long)]
    queue: String,
    /// Redis transport `global_keyprefix`.
    #[arg(long, default_value = "")]
    global_keyprefix: String,
    /// Redis transport `visibility_timeout` in seconds (the sweep then runs every second).
    #[arg(long)]
    visibility_timeout: Option<u64>,
    #[arg(long, default_value_t = 8)]
    prefetch: u16,
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    mark_redis: String,
    #[arg(long)]
    mark_set: String,
    /// Counted in `<mark_set>:count:<who>`.
    #[arg(long, default_value = "rust")]
    who: String,
    #[arg(long)]
    result_backend: Option<String>,
}

struct Ctx {
    mark: redis::aio::MultiplexedConnection,
    set: String,
    counter: String,
    results: Option<Arc<dyn ResultBackend>>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let transport = connect(&args).await?;
    let mark = redis::Client::open(args.mark_redis.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to the mark Redis")?;
    let results = match &args.result_backend {
        Some(url) => Some(backend::connect(url, &BackendOptions::default()).await?),
        None => None,
    };
    let ctx = Arc::new(Ctx {
        mark,
        counter: format!("{}:count:{}", args.mark_set, args.who),
        set: args.mark_set.clone(),
        results,
    });
    let spec = QueueSpec::task_queue(&args.queue);
    let mut consumer = transport.consume(&[spec], args.prefetch).await?;
    println!("consuming {}", args.queue);
    loop {
        let (message, _info, acker) = consumer.next().await?.into_parts();
        let ctx = ctx.clone();
        // The consumer's prefetch bounds how many of these run at once.
        tokio::spawn(async move {
            let outcome = match TaskMessage::decode(&message, &DecodeOptions::default()) {
                Ok(task) => {
                    // The test reads this to tell who had a task it lost.
                    println!("got {}", task.id());
                    handle(&ctx, task, acker).await
                }
                Err(e) => reject(e.to_string(), acker).await,
            };
            if let Err(e) = outcome {
                eprintln!("interop_consumer: {e:#}");
            }
        });
    }
}

async fn connect(args: &Args) -> Result<Box<dyn Transport>> {
    if args.broker.starts_with("amqp") {
        let opts = AmqpOptions::from_url(&args.broker)?;
        return Ok(Box::new(AmqpTransport::connect(opts).await?));
    }
    let mut opts = RedisOptions::from_url(&args.broker)?;
    opts.global_keyprefix = args.global_keyprefix.clone();
    if let Some(secs) = args.visibility_timeout {
        opts.visibility_timeout = Duration::from_secs(secs);
        opts.restore_interval = Duration::from_secs(1);
    }
    Ok(Box::new(RedisTransport::connect(opts).await?))
}

async fn handle(ctx: &Ctx, task: TaskMessage, acker: Box<dyn Acker>) -> Result<()> {
    if task.task() != "interop.mark" {
        return reject(format!("unknown task {}", task.task()), acker).await;
    }
    let mut conn = ctx.mark.clone();
    redis::pipe()
        .atomic()
        .sadd(&ctx.set, task.id())
        .incr(&ctx.counter, 1)
        .query_async::<()>(&mut conn)
        .await?;
    let sleep = task.kwargs.get("sleep").and_then(|s| s.as_f64());
    if let Some(secs) = sleep.filter(|s| *s > 0.0) {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    if let Some(results) = &ctx.results {
        results
            .store(&TaskResult::success(task.id(), json!(task.id())))
            .await?;
    }
    acker.ack().await?;
    Ok(())
}

async fn reject(why: String, acker: Box<dyn Acker>) -> Result<()> {
    eprintln!("interop_consumer: rejecting a message: {why}");
    acker.reject(false).await?;
    Ok(())
}
