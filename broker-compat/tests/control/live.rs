//! Remote control (spec §6): integration tests on real Redis and RabbitMQ.

use serde_json::{json, Map, Value};

use broker_compat::control::{ok, ControlRequest};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{node_name, within, Broker, Namespace};
use broker_compat::control::{ControlClient, Mailbox};
use broker_compat::events::LamportClock;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

async fn ping_round_trip(broker: Broker) {
    let ns = Namespace::new(broker);
    let node = node_name();
    let worker_clock = Arc::new(LamportClock::default());
    let mut mailbox = Mailbox::bind(ns.transport().await, &node, worker_clock.clone())
        .await
        .unwrap();
    let client_clock = Arc::new(LamportClock::new(100));
    let mut client = ControlClient::new(ns.transport().await, client_clock.clone());

    let worker = tokio::spawn(async move {
        let req = within("the ping request", mailbox.next()).await.unwrap();
        assert!(mailbox.reply(&req, ok("pong")).await.unwrap());
        req
    });
    let replies = client
        .broadcast("ping", Map::new(), None, true, REPLY_TIMEOUT, Some(1))
        .await
        .unwrap();
    let req = worker.await.unwrap();

    assert_eq!(req.method, "ping");
    assert_eq!(req.destination, None);
    let reply_to = req.reply_to.clone().unwrap();
    assert_eq!(reply_to.exchange, "reply.celery.pidbox");
    assert_eq!(reply_to.routing_key, client.oid());
    assert_eq!(req.clock, Some(101));
    assert!(req.expires.unwrap() > 1.0e9);

    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].ticket, req.ticket);
    assert_eq!(
        Value::Object(replies[0].body.clone()),
        json!({ node: {"ok": "pong"} })
    );
    // worker: adjust(101) = 102, reply forward = 103; client: adjust(103) = 104.
    assert_eq!(worker_clock.value(), 103);
    assert_eq!(replies[0].clock, Some(103));
    assert_eq!(client_clock.value(), 104);
    client.close().await.unwrap();
}

#[tokio::test]
async fn ping_round_trip_redis() {
    ping_round_trip(Broker::Redis).await;
}

#[tokio::test]
async fn ping_round_trip_amqp() {
    ping_round_trip(Broker::Amqp).await;
}

/// A request for another node is not returned (but still moves the clock);
/// the next request that names this node is.
async fn destination_filtering(broker: Broker) {
    let ns = Namespace::new(broker);
    let node = node_name();
    let clock = Arc::new(LamportClock::default());
    let mut mailbox = Mailbox::bind(ns.transport().await, &node, clock.clone())
        .await
        .unwrap();
    let mut client = ControlClient::new(ns.transport().await, Arc::new(LamportClock::default()));
    let other = [node_name()];
    let mine = [node.clone()];
    let t = Duration::from_secs(1);
    client
        .broadcast("for_other", Map::new(), Some(&other), false, t, None)
        .await
        .unwrap();
    let mut glob = ControlRequest::new("for_other_glob", Map::new());
    glob.pattern = Some("celery@*".into());
    glob.matcher = Some("glob".into());
    client.call(glob, false, t, None).await.unwrap();
    let mut pcre = ControlRequest::new("for_me_pcre", Map::new());
    pcre.pattern = Some("celeriac@test-".into());
    pcre.matcher = Some("pcre".into());
    client.call(pcre, false, t, None).await.unwrap();
    client
        .broadcast("for_me", Map::new(), Some(&mine), false, t, None)
        .await
        .unwrap();

    let first = within("the pcre request", mailbox.next()).await.unwrap();
    assert_eq!(first.method, "for_me_pcre");
    let second = within("the request for this node", mailbox.next())
        .await
        .unwrap();
    assert_eq!(second.method, "for_me");
    assert_eq!(second.destination.as_deref(), Some(&mine[..]));
    // Client clocks 1..=4; each request adjusts: 2, 3, 4, 5.
    assert_eq!(clock.value(), 5);
}

#[tokio::test]
async fn destination_filtering_redis() {
    destination_filtering(Broker::Redis).await;
}

#[tokio::test]
async fn destination_filtering_amqp() {
    destination_filtering(Broker::Amqp).await;
}

/// A cast (no reply wanted) carries no ticket/reply_to and gets no reply:
/// the next reply on the client's queue is the one for the following ping.
async fn no_reply_without_reply_to(broker: Broker) {
    let ns = Namespace::new(broker);
    let node = node_name();
    let mut mailbox = Mailbox::bind(
        ns.transport().await,
        &node,
        Arc::new(LamportClock::default()),
    )
    .await
    .unwrap();
    let mut client = ControlClient::new(ns.transport().await, Arc::new(LamportClock::default()));
    // Open the reply queue first so a stray reply to the cast could land in it.
    let warmup = tokio::spawn(async move {
        let req = within("the warm-up ping", mailbox.next()).await.unwrap();
        mailbox.reply(&req, ok("pong")).await.unwrap();
        let cast = within("the cast", mailbox.next()).await.unwrap();
        assert!(cast.ticket.is_none() && cast.reply_to.is_none());
        assert!(!mailbox.reply(&cast, ok("must not be sent")).await.unwrap());
        let ping = within("the second ping", mailbox.next()).await.unwrap();
        mailbox.reply(&ping, ok("pong")).await.unwrap();
    });
    let first = client
        .broadcast("ping", Map::new(), None, true, REPLY_TIMEOUT, Some(1))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let none = client
        .broadcast("cast_me", Map::new(), None, false, REPLY_TIMEOUT, None)
        .await
        .unwrap();
    assert!(none.is_empty());
    let mut ping = ControlRequest::new("ping", Map::new());
    ping.destination = Some(vec![node.clone()]);
    let second = client.call(ping, true, REPLY_TIMEOUT, None).await.unwrap();
    warmup.await.unwrap();
    // limit defaulted to the one destination; FIFO means a stray reply to
    // the cast would have come first, without this ping's ticket.
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].value(), Some(&ok("pong")));
    assert!(second[0].ticket.is_some());
    assert_ne!(second[0].ticket, first[0].ticket);
    client.close().await.unwrap();
}

#[tokio::test]
async fn no_reply_without_reply_to_redis() {
    no_reply_without_reply_to(Broker::Redis).await;
}

#[tokio::test]
async fn no_reply_without_reply_to_amqp() {
    no_reply_without_reply_to(Broker::Amqp).await;
}

fn rabbitmqctl_list(args: &[&str]) -> Vec<Vec<String>> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .args(["--quiet", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The entities a bound mailbox and a waiting client leave on RabbitMQ are
/// kombu's (spec §3.2), so Python peers can declare the same names.
#[tokio::test]
async fn amqp_entities_match_kombu() {
    let ns = Namespace::new(Broker::Amqp);
    let node = node_name();
    let _mailbox = Mailbox::bind(
        ns.transport().await,
        &node,
        Arc::new(LamportClock::default()),
    )
    .await
    .unwrap();
    let mut client = ControlClient::new(ns.transport().await, Arc::new(LamportClock::default()));
    // No node answers: this only opens the reply queue (limit 0 returns at once).
    client
        .broadcast(
            "ping",
            Map::new(),
            None,
            true,
            Duration::from_secs(1),
            Some(0),
        )
        .await
        .unwrap();
    let exchanges =
        rabbitmqctl_list(&["list_exchanges", "-p", ns.name(), "name", "type", "durable"]);
    for want in [
        ["celery.pidbox", "fanout", "false"],
        ["reply.celery.pidbox", "direct", "false"],
    ] {
        assert!(
            exchanges.iter().any(|e| e == &want),
            "{want:?} not in {exchanges:?}"
        );
    }
    let queues = rabbitmqctl_list(&[
        "list_queues",
        "-p",
        ns.name(),
        "name",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
    ]);
    let find = |name: &str| {
        queues
            .iter()
            .find(|q| q[0] == name)
            .unwrap_or_else(|| panic!("queue {name} not in {queues:?}"))
            .clone()
    };
    let pidbox = find(&format!("{node}.celery.pidbox"));
    let reply = find(&format!("{}.reply.celery.pidbox", client.oid()));
    for q in [&pidbox, &reply] {
        assert_eq!(q[1..4], ["false", "true", "true"], "{q:?}");
        assert!(
            q[4].contains("x-expires") && q[4].contains("10000"),
            "{q:?}"
        );
        assert!(
            q[4].contains("x-message-ttl") && q[4].contains("300000"),
            "{q:?}"
        );
    }
    client.close().await.unwrap();
}
