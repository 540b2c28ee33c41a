//! The kombu-layout Redis transport against the real Redis on 127.0.0.1:6379,
//! compared with what kombu 5.7 wrote (fixtures `redis-msg-plain.json`,
//! `redis-crash-monitor.jsonl`, `redis-reject-requeue.json`,
//! `redis-priority-order.json`). Every test uses its own random
//! `global_keyprefix` and unacked key names, so tests never see each other's
//! keys; a guard deletes them afterwards. The restart test runs its own
//! `redis-server` on a spare port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use broker_compat::protocol::{Message, Properties};
use broker_compat::transport::redis::{FanoutPrefix, RedisOptions, RedisTransport};
use broker_compat::transport::{Consumer, Delivery, ExchangeType, QueueSpec, Route, Transport};
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{json, Map, Value};
use tokio::time::{timeout, Instant};

const URL: &str = "redis://127.0.0.1:6379/0";
const WAIT: Duration = Duration::from_secs(10);

fn fixture_path(name: &str) -> String {
    format!(
        "{}/tests/fixtures/celery/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every command of a MONITOR capture, as argument lists.
fn monitor(name: &str) -> Vec<Vec<Value>> {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["args"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect()
}

fn arg(cmd: &[Value], i: usize) -> String {
    cmd[i].as_str().unwrap().to_owned()
}

/// The envelope inside an `unacked` hash value `[envelope, "", "celery"]`.
fn envelope_of_unacked(value: &str) -> String {
    let inner = value.strip_prefix('[').unwrap();
    inner.strip_suffix(r#", "", "celery"]"#).unwrap().to_owned()
}

struct Env {
    prefix: String,
    opts: RedisOptions,
    transport: RedisTransport,
    raw: redis::aio::MultiplexedConnection,
}

impl Drop for Env {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(URL) else {
            return;
        };
        let Ok(mut con) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut con)
            .unwrap_or_default();
        for k in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(k).query(&mut con);
        }
    }
}

fn options(url: &str) -> (String, RedisOptions) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("rttest-{id}:");
    let mut opts = RedisOptions::from_url(url).unwrap();
    opts.global_keyprefix = prefix.clone();
    opts.unacked_key = format!("unacked-{id}");
    opts.unacked_index_key = format!("unacked_index-{id}");
    opts.unacked_mutex_key = format!("unacked_mutex-{id}");
    (prefix, opts)
}

async fn env_with(f: impl FnOnce(&mut RedisOptions)) -> Env {
    let (prefix, mut opts) = options(URL);
    f(&mut opts);
    let transport = RedisTransport::connect(opts.clone())
        .await
        .unwrap_or_else(|e| panic!("Redis at {URL} is required for this test: {e}"));
    let client = redis::Client::open(URL).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    Env {
        prefix,
        opts,
        transport,
        raw,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    async fn list(&mut self, k: &str) -> Vec<String> {
        let key = self.key(k);
        self.raw.lrange(key, 0, -1).await.unwrap()
    }

    async fn unacked(&mut self) -> Vec<(String, String)> {
        let key = self.key(&self.opts.unacked_key.clone());
        self.raw.hgetall(key).await.unwrap()
    }

    async fn unacked_index(&mut self) -> Vec<(String, f64)> {
        let key = self.key(&self.opts.unacked_index_key.clone());
        self.raw.zrange_withscores(key, 0, -1).await.unwrap()
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Box<dyn Consumer> {
        self.transport
            .consume(&[QueueSpec::task_queue(queue)], prefetch)
            .await
            .unwrap()
    }
}

fn task(id: &str, priority: u8) -> Message {
    let mut headers = Map::new();
    headers.insert("lang".into(), json!("py"));
    headers.insert("task".into(), json!("tests.add"));
    headers.insert("id".into(), json!(id));
    Message {
        body: br#"[[2], {"y": 3}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#.to_vec(),
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        headers,
        properties: Properties {
            correlation_id: Some(id.into()),
            reply_to: Some("80e464bc-8182-38d8-864d-eefc49ae55ac".into()),
            delivery_mode: Some(2),
            priority: Some(priority),
            ..Properties::default()
        },
    }
}

async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    timeout(WAIT, c.next())
        .await
        .expect("no delivery in time")
        .unwrap()
}

fn id_of(d: &Delivery) -> String {
    d.message.task_id().unwrap().to_owned()
}

#[tokio::test]
async fn publish_consume_ack_writes_kombus_keys() {
    let mut e = env().await;
    let q = "celery";
    e.transport
        .declare_queue(&QueueSpec::task_queue(q))
        .await
        .unwrap();
    e.transport
        .publish(&Route::queue(q), &task("t-1", 0))
        .await
        .unwrap();

    let member = "celery\x06\x16\x06\x16celery".to_owned();
    let binding: Vec<String> = e
        .raw
        .smembers(e.key("_kombu.binding.celery"))
        .await
        .unwrap();
    let permanent: Vec<String> = e
        .raw
        .smembers(e.key("_kombu.binding_permanent.celery"))
        .await
        .unwrap();
    assert_eq!((binding, permanent), (vec![member.clone()], vec![member]));

    // The list element has kombu's shape, key for key, in kombu's order.
    let stored = e.list(q).await;
    assert_eq!(stored.len(), 1);
    let ours: Value = serde_json::from_str(&stored[0]).unwrap();
    let theirs = &fixture("redis-msg-plain.json")["snapshot"]["db0_broker"]["celery"]
        ["_derived_parsed"][0]["envelope"];
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(theirs));
    assert_eq!(keys(&ours["properties"]), keys(&theirs["properties"]));
    assert_eq!(
        ours["properties"]["delivery_info"],
        json!({"exchange": "", "routing_key": "celery"})
    );
    let tag = ours["properties"]["delivery_tag"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&tag).is_ok());

    let mut c = e.consume(q, 1).await;
    let d = next(&mut c).await;
    assert_eq!(d.message, task("t-1", 0));
    assert_eq!(
        (
            d.info.exchange.as_str(),
            d.info.routing_key.as_str(),
            d.info.redelivered
        ),
        ("", q, false)
    );
    let unacked = e.unacked().await;
    assert_eq!(
        unacked,
        vec![(tag.clone(), format!(r#"[{}, "", "celery"]"#, stored[0]))]
    );
    let (itag, score) = e.unacked_index().await.remove(0);
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut e.raw).await.unwrap();
    assert_eq!(itag, tag);
    assert!(
        (score - secs as f64).abs() < 60.0,
        "score {score} is not unix seconds"
    );
    let depth = e.transport.queue_depth(q).await.unwrap();
    assert_eq!((depth.ready, depth.unacked), (0, 1));

    d.ack().await.unwrap();
    assert!(e.unacked().await.is_empty());
    assert!(e.unacked_index().await.is_empty());
    assert!(e.list(q).await.is_empty());
}

#[tokio::test]
async fn unacked_value_is_byte_identical_to_kombus() {
    // A kombu-published envelope, consumed by us: HSET unacked gets exactly
    // what the Celery worker wrote in the capture.
    let cmds = monitor("redis-crash-monitor.jsonl");
    let lpush = cmds
        .iter()
        .find(|c| arg(c, 0) == "LPUSH" && arg(c, 1) == "celery")
        .unwrap();
    let hset = cmds
        .iter()
        .find(|c| arg(c, 0) == "HSET" && arg(c, 1) == "unacked")
        .unwrap();
    let mut e = env().await;
    let key = e.key("celery");
    e.raw.lpush::<_, _, ()>(key, arg(lpush, 2)).await.unwrap();
    let mut c = e.consume("celery", 1).await;
    let d = next(&mut c).await;
    assert_eq!(d.message.task_name(), Some("capapp.sleep"));
    assert_eq!(e.unacked().await, vec![(arg(hset, 2), arg(hset, 3))]);
    d.ack().await.unwrap();
}

#[tokio::test]
async fn priorities_are_served_as_on_kombu() {
    let mut e = env().await;
    let q = "celery";
    for p in [9u8, 6, 3, 0, 5, 1] {
        e.transport
            .publish(&Route::queue(q), &task(&format!("p{p}"), p))
            .await
            .unwrap();
    }
    let want = &fixture("redis-priority-order.json")["list_lengths_before_worker"];
    for (list, len) in want.as_object().unwrap() {
        assert_eq!(
            e.list(list).await.len() as u64,
            len.as_u64().unwrap(),
            "{list:?}"
        );
    }
    let mut c = e.consume(q, 0).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let d = next(&mut c).await;
        order.push(d.message.properties.priority.unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(order, [0, 1, 3, 5, 6, 9]);
}

#[tokio::test]
async fn reject_requeue_goes_to_the_back_like_kombu() {
    // From the capture: the envelope before and after Reject(requeue=True).
    let trace = fixture("redis-reject-requeue.json")["trace"]
        .as_array()
        .unwrap()
        .clone();
    let hsets: Vec<String> = trace
        .iter()
        .filter(|t| t["args"][0] == "HSET")
        .map(|t| envelope_of_unacked(t["args"][3].as_str().unwrap()))
        .collect();
    let (original, requeued) = (&hsets[0], &hsets[1]);
    let mut e = env().await;
    let key = e.key("celery");
    e.raw.lpush::<_, _, ()>(&key, original).await.unwrap();
    e.transport
        .publish(&Route::queue("celery"), &task("second", 0))
        .await
        .unwrap();
    let mut c = e.consume("celery", 1).await;
    let first = next(&mut c).await;
    assert_eq!(first.message.task_name(), Some("capapp.reject_once"));
    // Stop taking messages so the list can be inspected as reject left it.
    c.stop().await.unwrap();
    first.reject(true).await.unwrap();
    // LPUSH: at the head of the list = the back of the queue, byte-exact.
    let list = e.list("celery").await;
    assert_eq!(list.len(), 2);
    assert_eq!(&list[0], requeued);
    assert!(e.unacked().await.is_empty() && e.unacked_index().await.is_empty());
    let mut c = e.consume("celery", 1).await;
    let second = next(&mut c).await;
    assert_eq!(id_of(&second), "second");
    second.ack().await.unwrap();
    let again = next(&mut c).await;
    assert!(again.info.redelivered);
    assert_eq!(again.message.task_name(), Some("capapp.reject_once"));
    again.ack().await.unwrap();
}

#[tokio::test]
async fn restore_goes_to_the_front() {
    let mut e = env().await;
    for id in ["a", "b"] {
        e.transport
            .publish(&Route::queue("q"), &task(id, 0))
            .await
            .unwrap();
    }
    let tag_a: Value = serde_json::from_str(&e.list("q").await[1]).unwrap();
    let mut c = e.consume("q", 1).await;
    let a = next(&mut c).await;
    assert_eq!(id_of(&a), "a");
    a.restore().await.unwrap();
    let again = next(&mut c).await;
    assert_eq!(
        (id_of(&again), again.info.redelivered),
        ("a".to_owned(), true)
    );
    let (tag, _) = e.unacked_index().await.remove(0);
    assert_eq!(tag, tag_a["properties"]["delivery_tag"].as_str().unwrap());
    again.ack().await.unwrap();
    assert_eq!(id_of(&next(&mut c).await), "b");
}

#[tokio::test]
async fn visibility_timeout_restores_a_crashed_consumers_message() {
    let cmds = monitor("redis-crash-monitor.jsonl");
    let lpush = cmds
        .iter()
        .find(|c| arg(c, 0) == "LPUSH" && arg(c, 1) == "celery")
        .unwrap();
    let rpush = cmds
        .iter()
        .find(|c| arg(c, 0) == "RPUSH" && arg(c, 1) == "celery")
        .unwrap();
    let mut e = env_with(|o| o.visibility_timeout = Duration::from_secs(1)).await;
    let key = e.key("celery");
    e.raw.lpush::<_, _, ()>(key, arg(lpush, 2)).await.unwrap();
    {
        // The "crash": consumer and delivery dropped without ack.
        let mut c = e.consume("celery", 1).await;
        let d = next(&mut c).await;
        drop(d);
    }
    assert_eq!(e.unacked().await.len(), 1);
    let deadline = Instant::now() + WAIT;
    let mut restored = 0;
    while restored == 0 {
        assert!(Instant::now() < deadline, "never restored");
        restored = e.transport.restore_visible().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(restored, 1);
    // RPUSH of the redelivered envelope, byte-identical to kombu's.
    assert_eq!(e.list("celery").await, vec![arg(rpush, 2)]);
    assert!(e.unacked().await.is_empty());
    let mut c = e.consume("celery", 1).await;
    let d = next(&mut c).await;
    assert!(d.info.redelivered);
    d.ack().await.unwrap();
}

#[tokio::test]
async fn the_mutex_keeps_sweeps_apart() {
    let mut e = env_with(|o| o.visibility_timeout = Duration::ZERO).await;
    e.transport
        .publish(&Route::queue("q"), &task("m", 0))
        .await
        .unwrap();
    let mut c = e.consume("q", 1).await;
    let d = next(&mut c).await;
    c.stop().await.unwrap();
    let mutex = e.key(&e.opts.unacked_mutex_key.clone());
    e.raw.set::<_, _, ()>(&mutex, "someone-else").await.unwrap();
    assert_eq!(e.transport.restore_visible().await.unwrap(), None);
    assert_eq!(
        e.unacked().await.len(),
        1,
        "restored while another sweep held the mutex"
    );
    e.raw.del::<_, ()>(&mutex).await.unwrap();
    let (a, b) = tokio::join!(e.transport.restore_visible(), e.transport.restore_visible());
    let total: usize = [a.unwrap(), b.unwrap()].into_iter().flatten().sum();
    assert_eq!(total, 1);
    assert_eq!(e.list("q").await.len(), 1);
    let exists: bool = e.raw.exists(&mutex).await.unwrap();
    assert!(!exists, "mutex not released");
    drop(d);
}

#[tokio::test]
async fn qos_stops_at_prefetch() {
    let mut e = env().await;
    for i in 0..3 {
        e.transport
            .publish(&Route::queue("q"), &task(&format!("m{i}"), 0))
            .await
            .unwrap();
    }
    let mut c = e.consume("q", 2).await;
    let first = next(&mut c).await;
    let _second = next(&mut c).await;
    assert!(timeout(Duration::from_millis(300), c.next()).await.is_err());
    assert_eq!(
        e.list("q").await.len(),
        1,
        "popped beyond the prefetch limit"
    );
    first.ack().await.unwrap();
    assert_eq!(id_of(&next(&mut c).await), "m2");
}

#[tokio::test]
async fn direct_and_topic_exchanges_route_like_kombu() {
    let mut e = env().await;
    let bind = |name: &str, ex: &str, kind, rk: &str| QueueSpec {
        exchange: ex.into(),
        exchange_type: kind,
        routing_key: rk.into(),
        ..QueueSpec::task_queue(name)
    };
    for spec in [
        bind("qa", "tex", ExchangeType::Topic, "a.*"),
        bind("qb", "tex", ExchangeType::Topic, "#"),
        bind("qc", "tex", ExchangeType::Topic, "c.#"),
        QueueSpec::task_queue("qd"),
    ] {
        e.transport.declare_queue(&spec).await.unwrap();
    }
    let members: HashSet<String> = e.raw.smembers(e.key("_kombu.binding.tex")).await.unwrap();
    assert!(
        members.contains("a.*\x06\x16^a\\..*?[^\\.]$\x06\x16qa"),
        "{members:?}"
    );
    let topic = Route {
        exchange: "tex".into(),
        exchange_type: ExchangeType::Topic,
        routing_key: "a.b".into(),
    };
    e.transport.publish(&topic, &task("t", 0)).await.unwrap();
    let direct = Route {
        exchange: "qd".into(),
        exchange_type: ExchangeType::Direct,
        routing_key: "qd".into(),
    };
    e.transport.publish(&direct, &task("d", 0)).await.unwrap();
    let lens = [
        e.list("qa").await.len(),
        e.list("qb").await.len(),
        e.list("qc").await.len(),
        e.list("qd").await.len(),
    ];
    assert_eq!(lens, [1, 1, 0, 1]);
    let env: Value = serde_json::from_str(&e.list("qd").await[0]).unwrap();
    assert_eq!(
        env["properties"]["delivery_info"],
        json!({"exchange": "qd", "routing_key": "qd"})
    );
}

async fn raw_subscriber(channel: &str) -> redis::aio::PubSubStream {
    let mut ps = redis::Client::open(URL)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    ps.subscribe(channel).await.unwrap();
    ps.into_on_message()
}

async fn check_fanout(url: &str, prefix: FanoutPrefix, want_prefix: &str) {
    let (kp, mut opts) = options(url);
    opts.fanout_prefix = prefix;
    let t = RedisTransport::connect(opts)
        .await
        .expect("Redis at 127.0.0.1:6379 is required");
    let ex = format!("ev-{}", uuid::Uuid::new_v4().simple());
    let spec = QueueSpec {
        exchange: ex.clone(),
        exchange_type: ExchangeType::Fanout,
        routing_key: "worker.#".into(),
        expires: Some(Duration::from_secs(60)),
        ..QueueSpec::task_queue(&format!("celeryev.{}", uuid::Uuid::new_v4()))
    };
    let mut sub = t.subscribe(&spec).await.unwrap();
    let mut spy = raw_subscriber(&format!("{kp}{want_prefix}{ex}/worker.heartbeat")).await;
    let route = Route {
        exchange: ex.clone(),
        exchange_type: ExchangeType::Fanout,
        routing_key: "worker.heartbeat".into(),
    };
    t.publish(&route, &task("ev", 0)).await.unwrap();
    let got = timeout(WAIT, sub.next()).await.unwrap().unwrap();
    assert_eq!(got.task_id(), Some("ev"));
    let raw = timeout(WAIT, spy.next()).await.unwrap().unwrap();
    let env: Value = serde_json::from_slice(raw.get_payload_bytes()).unwrap();
    assert_eq!(env["properties"]["delivery_info"]["exchange"], json!(ex));
    // A malformed broadcast is a decode error; the subscription goes on.
    let mut pubc = redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let channel = format!("{kp}{want_prefix}{ex}/worker.online");
    pubc.publish::<_, _, ()>(&channel, "not json")
        .await
        .unwrap();
    let bad = timeout(WAIT, sub.next()).await.unwrap();
    assert!(
        matches!(bad, Err(broker_compat::Error::Decode(_))),
        "{bad:?}"
    );
    t.publish(&route, &task("ev2", 0)).await.unwrap();
    assert_eq!(
        timeout(WAIT, sub.next()).await.unwrap().unwrap().task_id(),
        Some("ev2")
    );
}

#[tokio::test]
async fn fanout_uses_the_db_prefix_and_custom_prefixes() {
    check_fanout("redis://127.0.0.1:6379/0", FanoutPrefix::Db, "/0.").await;
    check_fanout("redis://127.0.0.1:6379/3", FanoutPrefix::Db, "/3.").await;
    check_fanout(URL, FanoutPrefix::Custom("/custom.".into()), "/custom.").await;
}

#[tokio::test]
async fn pidbox_subscription_has_no_routing_key_suffix() {
    let (kp, opts) = options(URL);
    let t = RedisTransport::connect(opts).await.unwrap();
    let ex = format!("celery.pidbox-{}", uuid::Uuid::new_v4().simple());
    let spec = QueueSpec {
        exchange: ex.clone(),
        exchange_type: ExchangeType::Fanout,
        routing_key: String::new(),
        ..QueueSpec::task_queue("celery@vm.celery.pidbox")
    };
    let mut sub = t.subscribe(&spec).await.unwrap();
    let mut spy = raw_subscriber(&format!("{kp}/0.{ex}")).await;
    let route = Route {
        exchange: ex.clone(),
        exchange_type: ExchangeType::Fanout,
        routing_key: String::new(),
    };
    t.publish(&route, &task("ping", 0)).await.unwrap();
    assert_eq!(
        timeout(WAIT, sub.next()).await.unwrap().unwrap().task_id(),
        Some("ping")
    );
    assert!(timeout(WAIT, spy.next()).await.unwrap().is_some());
    let mut raw = redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let members: Vec<String> = raw
        .smembers(format!("{kp}_kombu.binding.{ex}"))
        .await
        .unwrap();
    assert_eq!(
        members,
        vec!["\x06\x16\x06\x16celery@vm.celery.pidbox".to_owned()]
    );
    let _: () = raw.del(format!("{kp}_kombu.binding.{ex}")).await.unwrap();
    let _: () = raw
        .del(format!("{kp}_kombu.binding_permanent.{ex}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn global_keyprefix_is_applied_to_every_key() {
    let mut e = env_with(|o| o.visibility_timeout = Duration::ZERO).await;
    let q = format!("q-{}", uuid::Uuid::new_v4().simple());
    let spec = QueueSpec {
        expires: Some(Duration::from_secs(30)),
        ..QueueSpec::task_queue(&q)
    };
    e.transport.declare_queue(&spec).await.unwrap();
    e.transport
        .publish(&Route::queue(&q), &task("k1", 9))
        .await
        .unwrap();
    e.transport
        .publish(&Route::queue(&q), &task("k2", 0))
        .await
        .unwrap();
    let mut c = e.transport.consume(&[spec], 1).await.unwrap();
    let d = next(&mut c).await;
    c.stop().await.unwrap();
    let mutex = e.opts.unacked_mutex_key.clone();
    e.raw.set::<_, _, ()>(e.key(&mutex), "held").await.unwrap();
    let unprefixed = [
        q.clone(),
        format!("{q}\x06\x169"),
        format!("_kombu.binding.{q}"),
        e.opts.unacked_key.clone(),
        e.opts.unacked_index_key.clone(),
        mutex.clone(),
    ];
    for k in &unprefixed {
        let bare: bool = e.raw.exists(k).await.unwrap();
        assert!(!bare, "{k:?} written without the prefix");
    }
    for k in [
        format!("{q}\x06\x169"),
        format!("_kombu.binding.{q}"),
        e.opts.unacked_key.clone(),
        e.opts.unacked_index_key.clone(),
    ] {
        let prefixed: bool = e.raw.exists(e.key(&k)).await.unwrap();
        assert!(prefixed, "{k:?} missing under the prefix");
    }
    // Queues with x-expires: lists get a TTL and no permanent binding.
    let ttl: i64 = e.raw.pttl(e.key(&format!("{q}\x06\x169"))).await.unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "pttl {ttl}");
    let permanent: bool = e
        .raw
        .exists(e.key(&format!("_kombu.binding_permanent.{q}")))
        .await
        .unwrap();
    assert!(!permanent);
    d.ack().await.unwrap();
}

#[tokio::test]
async fn cancelled_next_futures_lose_nothing() {
    let mut e = env().await;
    let n = 30;
    let mut c = e.consume("q", 0).await;
    for i in 0..n {
        e.transport
            .publish(&Route::queue("q"), &task(&format!("c{i}"), 0))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            got.len()
        );
        // Most of these futures are dropped before they complete.
        if let Ok(d) = timeout(Duration::from_micros(200), c.next()).await {
            got.push(d.unwrap());
        }
    }
    let ids: HashSet<String> = got.iter().map(id_of).collect();
    assert_eq!(ids.len(), n);
    let depth = e.transport.queue_depth("q").await.unwrap();
    assert_eq!((depth.ready, depth.unacked), (0, n as u64));
    for d in got {
        d.ack().await.unwrap();
    }
    assert!(e.unacked().await.is_empty());
}

#[tokio::test]
async fn stopping_a_consumer_puts_undelivered_messages_back() {
    let mut e = env().await;
    for i in 0..3 {
        e.transport
            .publish(&Route::queue("q"), &task(&format!("s{i}"), 0))
            .await
            .unwrap();
    }
    let mut c = e.consume("q", 0).await;
    let d = next(&mut c).await;
    // The pop task has another message waiting in its channel by now.
    let deadline = Instant::now() + WAIT;
    while e.list("q").await.len() > 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.stop().await.unwrap();
    assert_eq!(
        e.unacked().await.len(),
        1,
        "only the handed-out message stays unacked"
    );
    assert_eq!(e.list("q").await.len(), 2);
    d.ack().await.unwrap();
}

/// A private redis-server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16) -> Server {
        Server::spawn(port, &[])
    }

    /// `redis-server [extra…] --port <port>` without persistence.
    fn spawn(port: u16, extra: &[&str]) -> Server {
        let port_s = port.to_string();
        let mut args = extra.to_vec();
        args.extend([
            "--port",
            &port_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ]);
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test");
        Server { child, port }
    }

    async fn wait_ready(&self) {
        let url = format!("redis://127.0.0.1:{}/0", self.port);
        let deadline = Instant::now() + WAIT;
        loop {
            let client = redis::Client::open(url.as_str()).unwrap();
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn consumer_survives_a_redis_restart() {
    let port = spare_port();
    let mut server = Server::start(port);
    server.wait_ready().await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let t = RedisTransport::connect(RedisOptions::from_url(&url).unwrap())
        .await
        .unwrap();
    let mut c = t.consume(&[QueueSpec::task_queue("q")], 1).await.unwrap();
    t.publish(&Route::queue("q"), &task("before", 0))
        .await
        .unwrap();
    let d = next(&mut c).await;
    d.ack().await.unwrap();
    let ev = QueueSpec {
        exchange: "celeryev".into(),
        exchange_type: ExchangeType::Fanout,
        routing_key: "worker.#".into(),
        ..QueueSpec::task_queue("celeryev.restart")
    };
    let mut sub = t.subscribe(&ev).await.unwrap();

    server.kill();
    let err = t
        .publish(&Route::queue("q"), &task("lost", 0))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let server = Server::start(port);
    server.wait_ready().await;

    let deadline = Instant::now() + WAIT;
    while let Err(e) = t.publish(&Route::queue("q"), &task("after", 0)).await {
        assert!(e.is_transient() && Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery = loop {
        assert!(Instant::now() < deadline, "consumer did not resume");
        match timeout(WAIT, c.next()).await.expect("consumer hung") {
            Ok(d) => break d,
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    };
    assert_eq!(id_of(&delivery), "after");
    delivery.ack().await.unwrap();
    assert_eq!(t.queue_depth("q").await.unwrap(), Default::default());

    // The subscription reconnects too (broadcasts sent while it was down are
    // lost, as with kombu, so keep sending until one arrives).
    let route = Route {
        exchange: "celeryev".into(),
        exchange_type: ExchangeType::Fanout,
        routing_key: "worker.heartbeat".into(),
    };
    loop {
        assert!(Instant::now() < deadline, "subscription did not resume");
        t.publish(&route, &task("hb", 0)).await.unwrap();
        match timeout(Duration::from_millis(200), sub.next()).await {
            Ok(Ok(m)) => break assert_eq!(m.task_id(), Some("hb")),
            Ok(Err(e)) => assert!(e.is_transient(), "{e}"),
            Err(_) => {}
        }
    }
    drop(server);
}

#[tokio::test]
async fn sentinel_urls_find_the_master() {
    let master = Server::start(spare_port());
    master.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("sentinel.conf");
    let monitor = format!("sentinel monitor mymaster 127.0.0.1 {} 1\n", master.port);
    std::fs::write(&conf, monitor).unwrap();
    let sentinel = Server::spawn(spare_port(), &[conf.to_str().unwrap(), "--sentinel"]);
    sentinel.wait_ready().await;
    let url = format!(
        "sentinel://127.0.0.1:{}/0;sentinel://127.0.0.1:1",
        sentinel.port
    );
    let mut opts = RedisOptions::from_url(&url).unwrap();
    assert!(matches!(
        RedisTransport::connect(opts.clone()).await,
        Err(broker_compat::Error::Config { .. })
    ));
    opts.master_name = Some("mymaster".into());
    let t = RedisTransport::connect(opts).await.unwrap();
    t.publish(&Route::queue("q"), &task("via-sentinel", 0))
        .await
        .unwrap();
    let mut c = t.consume(&[QueueSpec::task_queue("q")], 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(id_of(&d), "via-sentinel");
    d.ack().await.unwrap();
    // The message really went to the master.
    let mut raw = redis::Client::open(format!("redis://127.0.0.1:{}/0", master.port).as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let bindings: Vec<String> = raw.smembers("_kombu.binding.q").await.unwrap();
    assert_eq!(bindings.len(), 1);
}

#[tokio::test]
async fn non_ascii_queue_names_are_recorded_like_python_json() {
    let mut e = env().await;
    let q = "tâche-✓-😀";
    e.transport
        .publish(&Route::queue(q), &task("u", 0))
        .await
        .unwrap();
    let stored = e.list(q).await.remove(0);
    let mut c = e.consume(q, 1).await;
    let d = next(&mut c).await;
    // Python's json.dumps (ensure_ascii) of the routing key, surrogate pair included.
    let (_, value) = e.unacked().await.remove(0);
    assert_eq!(
        value,
        format!(r#"[{stored}, "", "t\u00e2che-\u2713-\ud83d\ude00"]"#)
    );
    c.stop().await.unwrap();
    d.reject(true).await.unwrap();
    let back: Value = serde_json::from_str(&e.list(q).await[0]).unwrap();
    assert_eq!(
        back["properties"]["delivery_info"]["redelivered"],
        json!(true)
    );
}

/// A CA and a `localhost` server certificate made with openssl in `dir`.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed for this test")
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test]
async fn rediss_urls_verify_the_server_with_ssl_ca_certs() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let file = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let port = spare_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
        ])
        .args([
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
        ])
        .args(["--tls-ca-cert-file", &file("ca.pem")])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for this test");
    let _server = Server { child, port };
    let url = format!(
        "rediss://localhost:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={}",
        file("ca.pem")
    );
    let deadline = Instant::now() + WAIT;
    let t = loop {
        match RedisTransport::connect(RedisOptions::from_url(&url).unwrap()).await {
            Ok(t) => break t,
            Err(e) => assert!(e.is_transient() && Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    t.publish(&Route::queue("q"), &task("tls", 0))
        .await
        .unwrap();
    let mut c = t.consume(&[QueueSpec::task_queue("q")], 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(id_of(&d), "tls");
    d.ack().await.unwrap();
    // Without the CA the self-signed server is refused.
    let plain = format!("rediss://localhost:{port}/0");
    let refused = RedisTransport::connect(RedisOptions::from_url(&plain).unwrap()).await;
    assert!(refused.is_err(), "an unverifiable certificate was accepted");
}

#[tokio::test]
async fn unix_socket_urls_work() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .args(["--unixsocket", sock.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for this test");
    let _server = Server { child, port: 0 };
    let url = format!("unix://{}?db=2", sock.display());
    let opts = RedisOptions::from_url(&url).unwrap();
    assert_eq!(opts.fanout_prefix_str(), "/2.");
    let deadline = Instant::now() + WAIT;
    let t = loop {
        match RedisTransport::connect(opts.clone()).await {
            Ok(t) => break t,
            Err(e) => assert!(e.is_transient() && Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    t.publish(&Route::queue("q"), &task("unix", 0))
        .await
        .unwrap();
    let mut c = t.consume(&[QueueSpec::task_queue("q")], 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(id_of(&d), "unix");
    d.ack().await.unwrap();
}

/// Polls so rare that only the doorbell can explain a prompt delivery.
const NO_POLL: Duration = Duration::from_secs(120);

/// Lets an idle consumer's poll back-off grow: after 4.3 s idle its polls
/// came at 4.095 s and the next is due at 8.191 s.
async fn idle_for_a_while() {
    tokio::time::sleep(Duration::from_millis(4300)).await;
}

#[tokio::test]
async fn the_doorbell_wakes_an_idle_consumer_before_its_next_poll() {
    let e = env_with(|o| o.poll_max_interval = NO_POLL).await;
    let mut c = e.consume("celery", 1).await;
    idle_for_a_while().await;
    let sent = Instant::now();
    e.transport
        .publish(&Route::queue("celery"), &task("rung", 0))
        .await
        .unwrap();
    let d = timeout(Duration::from_secs(2), c.next())
        .await
        .expect("an idle consumer must be woken by the doorbell, not its next poll (due in ~3.9 s)")
        .unwrap();
    assert_eq!(id_of(&d), "rung");
    d.ack().await.unwrap();
    eprintln!("delivered {:?} after publish", sent.elapsed());
}

#[tokio::test]
async fn the_doorbell_consumes_nothing_and_keeps_the_order() {
    let mut e = env_with(|o| o.poll_max_interval = NO_POLL).await;
    let mut c = e.consume("celery", 1).await;
    idle_for_a_while().await;
    for id in ["a", "b", "c"] {
        e.transport
            .publish(&Route::queue("celery"), &task(id, 0))
            .await
            .unwrap();
    }
    let mut order = Vec::new();
    for left in [2, 1, 0] {
        let d = next(&mut c).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(e.list("celery").await.len(), left, "still queued");
        assert_eq!(e.unacked().await.len(), 1, "prefetch 1: one taken");
        order.push(id_of(&d));
        d.ack().await.unwrap();
    }
    assert_eq!(order, ["a", "b", "c"], "FIFO, as kombu delivers");
}
