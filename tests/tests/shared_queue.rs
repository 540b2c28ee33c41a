//! One Redis queue, two consumers at once: the Rust consumer binary
//! (broker-compat, `interop_consumer`) and a real Python prefork worker.
//! 2,000 `interop.mark` tasks; one consumer is `kill -9`ed midway and
//! restarted. With acks_late on both sides and a 5 s visibility_timeout,
//! whatever the dead one held unacked is restored by a sweep (kombu's or
//! ours), so every task runs at least once and the queue and `unacked` end
//! empty. Duplicates are allowed (at-least-once) and reported.
//!
//! The same scenario also runs on RabbitMQ, where the broker itself requeues
//! a dead consumer's unacked messages when its connection drops.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use broker_compat::protocol::{EncodeOptions, TaskMessage};
use broker_compat::transport::amqp::{AmqpOptions, AmqpTransport};
use broker_compat::transport::redis::{RedisOptions, RedisTransport};
use broker_compat::transport::{Route, Transport};
use celeriac_tests::services::{rabbitmqctl, redis_conn, redis_url, RabbitVhost, RedisKeys};
use celeriac_tests::{key_prefix, unique, wait_until, ChildGuard, PyApp};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Map};

const TOTAL: usize = 2_000;
const VISIBILITY_TIMEOUT: u32 = 5;
/// Per task, so the run lasts long enough (a few seconds) to kill midway.
const TASK_SLEEP: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Rust,
    Python,
}

enum Broker {
    /// kombu's Redis layout, with a short visibility timeout on both sides.
    Redis,
    Amqp(RabbitVhost),
}

struct Setup {
    broker: Broker,
    prefix: String,
    queue: String,
    set: String,
    app: PyApp,
    redis: MultiplexedConnection,
    _keys: RedisKeys,
}

#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    marked: usize,
    by_rust: usize,
    by_python: usize,
    /// Broker counts; None when not asked for (RabbitMQ, see `progress`).
    ready: Option<usize>,
    unacked: Option<usize>,
    unacked_index: Option<usize>,
}

impl Setup {
    async fn new(amqp: bool) -> Result<Self> {
        let redis = redis_conn(0).await;
        let (prefix, queue) = (key_prefix(), unique("shared"));
        let set = format!("{prefix}marks");
        let broker = match amqp {
            true => Broker::Amqp(RabbitVhost::create()?),
            false => Broker::Redis,
        };
        let broker_url = match &broker {
            Broker::Redis => redis_url(0),
            Broker::Amqp(vhost) => vhost.url(),
        };
        let mut app = PyApp::new(&broker_url, &queue);
        if !amqp {
            app.keyprefix = Some(prefix.clone());
            app.visibility_timeout = Some(VISIBILITY_TIMEOUT);
        }
        app.acks_late = true;
        app.mark_redis = Some(redis_url(0));
        app.mark_set = Some(set.clone());
        let _keys = RedisKeys::new(0, &prefix);
        Ok(Setup {
            broker,
            prefix,
            queue,
            set,
            app,
            redis,
            _keys,
        })
    }

    fn broker_url(&self) -> String {
        self.app.broker.clone()
    }

    async fn rust_consumer(&self) -> Result<ChildGuard> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_interop_consumer"));
        let vt = VISIBILITY_TIMEOUT.to_string();
        cmd.args(["--broker", &self.broker_url(), "--queue", &self.queue]);
        if let Broker::Redis = self.broker {
            cmd.args(["--global-keyprefix", &self.prefix])
                .args(["--visibility-timeout", &vt]);
        }
        cmd.args(["--mark-redis", &redis_url(0), "--mark-set", &self.set])
            // Close to the Python side's 2 processes × prefetch multiplier,
            // so neither consumer finishes the queue alone before the kill.
            .args(["--prefetch", "4"]);
        let mut child = ChildGuard::spawn("rust-consumer", cmd)?;
        let started = wait_until(
            "the Rust consumer to print `consuming`",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let state = match child.exited() {
                    Some(status) => Err(anyhow::anyhow!("rust consumer exited: {status}")),
                    None => Ok(child.log_contains("consuming ").then_some(())),
                };
                async move { state }
            },
        )
        .await;
        started.with_context(|| child.log_tail(30))?;
        Ok(child)
    }

    async fn transport(&self) -> Result<Box<dyn Transport>> {
        Ok(match self.broker {
            Broker::Redis => {
                let mut opts = RedisOptions::from_url(&redis_url(0))?;
                opts.global_keyprefix = self.prefix.clone();
                Box::new(RedisTransport::connect(opts).await?)
            }
            Broker::Amqp(_) => {
                let opts = AmqpOptions::from_url(&self.broker_url())?;
                Box::new(AmqpTransport::connect(opts).await?)
            }
        })
    }

    /// Start publishing the tasks in the background (on RabbitMQ each
    /// publish waits for its confirm, so consumers run meanwhile); their ids.
    async fn publish(&self) -> Result<tokio::task::JoinHandle<Result<Vec<String>>>> {
        let transport = self.transport().await?;
        let route = Route::queue(&self.queue);
        Ok(tokio::spawn(async move {
            let mut kwargs = Map::new();
            kwargs.insert("sleep".into(), json!(TASK_SLEEP));
            let mut ids = Vec::with_capacity(TOTAL);
            for _ in 0..TOTAL {
                let task = TaskMessage::new("interop.mark", vec![], kwargs.clone());
                ids.push(task.id().to_owned());
                let message = task.encode(&EncodeOptions::default())?;
                transport.publish(&route, &message).await?;
            }
            Ok(ids)
        }))
    }

    /// Marks and counters; the broker's own counts only if `broker_counts`
    /// (on RabbitMQ they cost a `rabbitmqctl` run, ~0.5 s).
    async fn progress(&self, broker_counts: bool) -> Result<Progress> {
        let p = &self.prefix;
        let lists: Vec<String> = ["", "\x06\x163", "\x06\x166", "\x06\x169"]
            .iter()
            .map(|step| format!("{p}{}{step}", self.queue))
            .collect();
        // One MULTI: a consistent snapshot (a task acked between reading the
        // marks and the unacked hash would look lost).
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.scard(&self.set)
            .get(format!("{}:count:rust", self.set))
            .get(format!("{}:count:py", self.set));
        for l in &lists {
            pipe.llen(l);
        }
        pipe.hlen(format!("{p}unacked"))
            .zcard(format!("{p}unacked_index"));
        let mut conn = self.redis.clone();
        let (marked, rust, py, l0, l3, l6, l9, unacked, index): (
            usize,
            Option<usize>,
            Option<usize>,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        ) = pipe.query_async(&mut conn).await?;
        let mut progress = Progress {
            marked,
            by_rust: rust.unwrap_or(0),
            by_python: py.unwrap_or(0),
            ready: Some(l0 + l3 + l6 + l9),
            unacked: Some(unacked),
            unacked_index: Some(index),
        };
        if let Broker::Amqp(vhost) = &self.broker {
            let counts = match broker_counts {
                true => Some(amqp_counts(&vhost.name, &self.queue).await?),
                false => None,
            };
            progress.ready = counts.map(|c| c.0);
            progress.unacked = counts.map(|c| c.1);
            progress.unacked_index = progress.unacked;
        }
        Ok(progress)
    }

    /// The envelopes in the Redis `unacked` hash (empty on RabbitMQ).
    async fn unacked_envelopes(&self) -> Result<Vec<String>> {
        let mut conn = self.redis.clone();
        let key = format!("{}unacked", self.prefix);
        Ok(redis::cmd("HVALS").arg(key).query_async(&mut conn).await?)
    }

    /// Poll until `done(progress)`, failing with the progress and both logs.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        consumers: &mut [&mut ChildGuard],
        done: impl Fn(&Progress) -> bool,
    ) -> Result<Progress> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut p = self.progress(false).await?;
            if p.marked == TOTAL {
                p = self.progress(true).await?;
            }
            if done(&p) {
                return Ok(p);
            }
            let dead = consumers
                .iter_mut()
                .find_map(|c| c.exited().map(|s| (c.name().to_owned(), s)));
            if Instant::now() >= deadline || dead.is_some() {
                let logs: Vec<String> = consumers.iter().map(|c| c.log_tail(25)).collect();
                bail!(
                    "waiting for {what}: {}; progress {p:?}\n{}",
                    dead.map_or(format!("timed out after {timeout:?}"), |(n, s)| format!(
                        "{n} exited: {s}"
                    )),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Ready and unacknowledged messages of a RabbitMQ queue, as the broker counts them.
async fn amqp_counts(vhost: &str, queue: &str) -> Result<(usize, usize)> {
    let args = [
        "list_queues",
        "-q",
        "-p",
        vhost,
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rabbitmqctl(&args)
    })
    .await??;
    let line = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&queue));
    match line.as_deref() {
        Some([_, ready, unacked]) => Ok((ready.parse()?, unacked.parse()?)),
        _ => bail!("queue {queue} not in rabbitmqctl list_queues output:\n{out}"),
    }
}

async fn run(amqp: bool, victim: Victim) -> Result<()> {
    let s = Setup::new(amqp).await?;
    let mut rust = s.rust_consumer().await?;
    let mut py = s.app.start_worker("prefork", 2).await?;
    let publishing = s.publish().await?;
    let midway = s
        .wait_for(
            "both consumers to have run tasks",
            Duration::from_secs(60),
            &mut [&mut rust, &mut py],
            |p| p.by_rust >= 20 && p.by_python >= 20 && p.marked >= TOTAL / 5,
        )
        .await?;
    // Only a kill with tasks still flowing proves anything (loaded CI machines
    // may get close to the end before both sides reached 20 tasks).
    if midway.marked >= TOTAL - 20 {
        bail!(
            "all but {} tasks ran before the kill: {midway:?}",
            TOTAL - midway.marked
        );
    }
    let mut killed = Vec::new();
    let unacked_at_kill = match victim {
        Victim::Rust => {
            rust.kill()?;
            let held = s.unacked_envelopes().await?;
            killed.push(std::mem::replace(&mut rust, s.rust_consumer().await?));
            held
        }
        Victim::Python => {
            py.kill()?;
            let held = s.unacked_envelopes().await?;
            let new = s.app.start_worker("prefork", 2).await?;
            killed.push(std::mem::replace(&mut py, new));
            held
        }
    };
    let ids = publishing.await??;
    let drained =
        |p: &Progress| p.ready == Some(0) && p.unacked == Some(0) && p.unacked_index == Some(0);
    let consumers = &mut [&mut rust, &mut py];
    let what = "the queue and unacked to drain";
    let mut end = s
        .wait_for(what, Duration::from_secs(150), consumers, drained)
        .await?;
    if end.marked < TOTAL {
        // kombu keeps a message in memory for a moment between its BRPOP
        // and the unacked bookkeeping: let such a straggler finish.
        let last = |p: &Progress| drained(p) && p.marked == TOTAL;
        let more = s.wait_for("the last tasks", Duration::from_secs(10), consumers, last);
        end = more.await.unwrap_or(end);
    }
    if end.marked < TOTAL {
        let everyone: Vec<&ChildGuard> = [&rust, &py].into_iter().chain(&killed).collect();
        judge_losses(&s, &ids, victim, &everyone, &unacked_at_kill).await?;
    }
    let runs = end.by_rust + end.by_python;
    let broker = if amqp { "amqp" } else { "redis" };
    println!(
        "{broker}: {victim:?} killed at {} marked: {}/{TOTAL} tasks ran, {runs} executions \
         (rust {}, python {}), {} duplicates",
        midway.marked,
        end.marked,
        end.by_rust,
        end.by_python,
        runs.saturating_sub(end.marked)
    );
    Ok(())
}

/// Tasks that never ran although nothing holds them any more. The one loss
/// that is Python's, not ours: kombu's worker BRPOPs a message and records it
/// in `unacked` in a second round trip (spec §2.5), so a Python worker
/// killed in between takes the message with it — no consumer ever logged it
/// as received. Anything else is a real loss and fails the test.
async fn judge_losses(
    s: &Setup,
    ids: &[String],
    victim: Victim,
    all: &[&ChildGuard],
    unacked_at_kill: &[String],
) -> Result<()> {
    let mut conn = s.redis.clone();
    let marked: std::collections::HashSet<String> = redis::cmd("SMEMBERS")
        .arg(&s.set)
        .query_async(&mut conn)
        .await?;
    let lost: Vec<&String> = ids.iter().filter(|id| !marked.contains(*id)).collect();
    let seen: Vec<String> = lost
        .iter()
        .flat_map(|id| {
            all.iter()
                .filter(|c| c.log_contains(id))
                .map(move |c| format!("{id} in {}", c.name()))
        })
        .collect();
    // Held in `unacked` when the victim died: the restore had to bring it back.
    let held = lost
        .iter()
        .any(|id| unacked_at_kill.iter().any(|e| e.contains(id.as_str())));
    if victim == Victim::Python && lost.len() == 1 && seen.is_empty() && !held {
        println!(
            "NOTE: task {} was lost inside the killed Python worker (kombu's BRPOP→MULTI \
             window, spec §2.5); no consumer had received it. Not a broker-compat loss.",
            lost[0]
        );
        return Ok(());
    }
    bail!(
        "{} tasks lost: {lost:?}; received by: {seen:?}; in unacked at the kill: {held}",
        lost.len()
    )
}

#[tokio::test]
async fn redis_shared_queue_survives_kill_of_rust_consumer() -> Result<()> {
    run(false, Victim::Rust).await
}

#[tokio::test]
async fn redis_shared_queue_survives_kill_of_python_worker() -> Result<()> {
    run(false, Victim::Python).await
}

#[tokio::test]
async fn amqp_shared_queue_survives_kill_of_rust_consumer() -> Result<()> {
    run(true, Victim::Rust).await
}

#[tokio::test]
async fn amqp_shared_queue_survives_kill_of_python_worker() -> Result<()> {
    run(true, Victim::Python).await
}
