//! Remote control (pidbox) commands, answered as a Celery worker answers
//! them (§6.3), so `celery inspect ping` — the Airflow chart's liveness probe —
//! Flower and `celery control revoke` work against this worker.

use std::sync::Arc;
use std::time::Duration;

use broker_compat::backend::TaskResult;
use broker_compat::control::{nok, ok, unknown_command, ControlRequest, Mailbox};
use broker_compat::events::LamportClock;
use broker_compat::transport::{QueueSpec, Transport};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consume::{sleep_or_stop, QueueCommand};
use crate::events::Events;
use crate::execute::Executor;

pub struct Control {
    pub exec: Arc<Executor>,
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<LamportClock>,
    pub events: Events,
    pub queue_tx: mpsc::Sender<QueueCommand>,
    /// Cancelled by the `shutdown` command.
    pub shutdown: CancellationToken,
    /// What `stats` and `active_queues` report.
    pub info: StaticInfo,
}

/// Facts fixed at start-up.
#[derive(Debug, Clone)]
pub struct StaticInfo {
    pub broker_transport: &'static str,
    pub broker_host: String,
    pub concurrency: usize,
    pub prefetch: u16,
    pub queues: Vec<String>,
}

impl Control {
    /// Serve the mailbox until `stop`; rebinds after a broker loss.
    pub async fn run(self, stop: CancellationToken) {
        let node = self.exec.state.hostname.clone();
        while !stop.is_cancelled() {
            let bound = tokio::select! {
                m = Mailbox::bind(self.transport.clone(), &node, self.clock.clone()) => m,
                _ = stop.cancelled() => return,
            };
            let mut mailbox = match bound {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "cannot bind the remote-control mailbox; retrying");
                    sleep_or_stop(Duration::from_secs(2), &stop).await;
                    continue;
                }
            };
            loop {
                let request = tokio::select! {
                    r = mailbox.next() => r,
                    _ = stop.cancelled() => return,
                };
                match request {
                    Ok(req) => self.serve(&mut mailbox, req).await,
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "remote-control mailbox lost; rebinding");
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring an invalid control message"),
                }
            }
            sleep_or_stop(Duration::from_secs(1), &stop).await;
        }
    }

    async fn serve(&self, mailbox: &mut Mailbox, req: ControlRequest) {
        tracing::debug!(method = %req.method, "control command");
        let reply = self.handle(&req).await;
        if let Some(value) = reply {
            if let Err(e) = mailbox.reply(&req, value).await {
                tracing::warn!(error = %e, method = %req.method, "could not send a control reply");
            }
        }
    }

    /// The reply value, or None for commands that send none (`shutdown`).
    pub async fn handle(&self, req: &ControlRequest) -> Option<Value> {
        let args = &req.arguments;
        let state = &self.exec.state;
        Some(match req.method.as_str() {
            "ping" => ok("pong"),
            "hello" => self.hello(args),
            "clock" => json!({"clock": self.clock.value()}),
            "active" | "dump_active" => Value::Array(
                state
                    .tasks()
                    .active
                    .values()
                    .map(|a| a.info.clone())
                    .collect(),
            ),
            "reserved" | "dump_reserved" => {
                Value::Array(state.tasks().reserved.values().cloned().collect())
            }
            "scheduled" | "dump_schedule" => Value::Array(
                state
                    .tasks()
                    .scheduled
                    .values()
                    .map(|(eta, info)| json!({"eta": eta, "priority": 6, "request": info}))
                    .collect(),
            ),
            "query_task" => self.query_task(args),
            "revoked" | "dump_revoked" => json!(state.tasks().revoked.ids()),
            "registered" | "dump_tasks" => json!(self.exec.registry.registered()),
            "stats" => self.stats(),
            "active_queues" => {
                Value::Array(self.info.queues.iter().map(|q| queue_info(q)).collect())
            }
            "revoke" => self.revoke(args, arg_bool(args, "terminate")).await,
            "terminate" => self.revoke(args, true).await,
            "shutdown" => {
                tracing::warn!("shutdown requested by remote control");
                self.shutdown.cancel();
                return None;
            }
            "add_consumer" => self.add_consumer(args).await,
            "cancel_consumer" => self.cancel_consumer(args).await,
            "heartbeat" => {
                self.events.heartbeat_requested().await;
                Value::Null
            }
            "enable_events" => toggle_events(state, true),
            "disable_events" => toggle_events(state, false),
            other => unknown_command(other),
        })
    }

    fn hello(&self, args: &Map<String, Value>) -> Value {
        let from = args.get("from_node").and_then(Value::as_str);
        if let Some(ids) = args.get("revoked").and_then(Value::as_array) {
            let mut tasks = self.exec.state.tasks();
            for id in ids.iter().filter_map(Value::as_str) {
                tasks.revoked.insert(id);
            }
        }
        if from == Some(self.exec.state.hostname.as_str()) {
            return Value::Null;
        }
        json!({"revoked": self.exec.state.tasks().revoked.ids(), "clock": self.clock.value()})
    }

    fn query_task(&self, args: &Map<String, Value>) -> Value {
        let tasks = self.exec.state.tasks();
        let mut out = Map::new();
        for id in ids_arg(args, "ids")
            .iter()
            .chain(ids_arg(args, "task_id").iter())
        {
            let found = if let Some(a) = tasks.active.get(id) {
                Some(json!(["active", a.info]))
            } else if let Some(info) = tasks.reserved.get(id) {
                Some(json!(["reserved", info]))
            } else {
                tasks
                    .scheduled
                    .get(id)
                    .map(|(_, info)| json!(["scheduled", info]))
            };
            if let Some(v) = found {
                out.insert(id.clone(), v);
            }
        }
        Value::Object(out)
    }

    /// §6.4: flag the ids; terminate running ones; write REVOKED for ids this
    /// worker is not running whose stored state is not final yet (Celery 5.7).
    async fn revoke(&self, args: &Map<String, Value>, terminate: bool) -> Value {
        let ids = ids_arg(args, "task_id");
        let signum = parse_signal(
            args.get("signal")
                .and_then(Value::as_str)
                .unwrap_or("SIGTERM"),
        );
        let mut terminated = Vec::new();
        let mut not_running = Vec::new();
        {
            let mut tasks = self.exec.state.tasks();
            for id in &ids {
                tasks.revoked.insert(id);
                match tasks.active.get(id) {
                    Some(active) if terminate => {
                        let _ = active.terminate.send(Some(signum));
                        terminated.push(id.clone());
                    }
                    Some(_) => {}
                    None => not_running.push(id.clone()),
                }
            }
        }
        for id in &not_running {
            self.mark_revoked(id).await;
        }
        if terminate {
            if terminated.is_empty() {
                return ok("terminate: tasks unknown");
            }
            return ok(format!("terminate: {}", terminated.join(", ")));
        }
        let set: Vec<String> = ids
            .iter()
            .map(|i| broker_compat::protocol::pyjson::str_repr(i))
            .collect();
        ok(format!("tasks {{{}}} flagged as revoked", set.join(", ")))
    }

    async fn mark_revoked(&self, id: &str) {
        let Some(backend) = &self.exec.backend else {
            return;
        };
        let pending = match backend.get(id).await {
            Ok(None) => true,
            Ok(Some(r)) => matches!(
                r.status.as_str(),
                "PENDING" | "RECEIVED" | "RETRY" | "REJECTED"
            ),
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "could not read the state of a revoked task");
                false
            }
        };
        if pending {
            let mut r = TaskResult::revoked(id, "revoked");
            r.children = None;
            if let Err(e) = backend.store(&r).await {
                tracing::warn!(task_id = %id, error = %e, "could not store REVOKED");
            }
        }
    }

    async fn add_consumer(&self, args: &Map<String, Value>) -> Value {
        let Some(queue) = args.get("queue").and_then(Value::as_str) else {
            return nok("missing queue");
        };
        let mut spec = QueueSpec::task_queue(queue);
        if let Some(ex) = args.get("exchange").and_then(Value::as_str) {
            spec.exchange = ex.to_owned();
        }
        if let Some(rk) = args.get("routing_key").and_then(Value::as_str) {
            spec.routing_key = rk.to_owned();
        }
        if let Err(e) = self.transport.declare_queue(&spec).await {
            return nok(format!("{e}"));
        }
        let _ = self.queue_tx.send(QueueCommand::Add(spec)).await;
        ok(format!("add consumer {queue}"))
    }

    async fn cancel_consumer(&self, args: &Map<String, Value>) -> Value {
        let Some(queue) = args.get("queue").and_then(Value::as_str) else {
            return nok("missing queue");
        };
        let _ = self
            .queue_tx
            .send(QueueCommand::Cancel(queue.to_owned()))
            .await;
        ok(format!("no longer consuming from {queue}"))
    }

    fn stats(&self) -> Value {
        let state = &self.exec.state;
        let tasks = state.tasks();
        json!({
            "total": tasks.totals,
            "pid": state.pid,
            "clock": self.clock.value().to_string(),
            "uptime": state.started.elapsed().as_secs(),
            "pool": {
                "implementation": "celeriac",
                "max-concurrency": self.info.concurrency,
                "processes": [state.pid],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": false,
                "timeouts": [0, 0],
                "writes": {},
            },
            "broker": {"hostname": self.info.broker_host, "transport": self.info.broker_transport},
            "prefetch_count": self.info.prefetch,
            "rusage": {},
        })
    }
}

fn toggle_events(state: &crate::state::WorkerState, on: bool) -> Value {
    let was = state
        .task_events
        .swap(on, std::sync::atomic::Ordering::Relaxed);
    match (on, was) {
        (true, false) => ok("task events enabled"),
        (true, true) => ok("task events already enabled"),
        (false, true) => ok("task events disabled"),
        (false, false) => ok("task events already disabled"),
    }
}

/// Celery's `active_queues` entry for a plain task queue.
fn queue_info(name: &str) -> Value {
    json!({
        "name": name,
        "exchange": {"name": name, "type": "direct", "arguments": null, "durable": true,
                     "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false},
        "routing_key": name, "queue_arguments": null, "binding_arguments": null,
        "consumer_arguments": null, "durable": true, "exclusive": false, "auto_delete": false,
        "no_ack": false, "alias": null, "bindings": [], "no_declare": null, "expires": null,
        "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}

/// A string or a list of strings.
fn ids_arg(args: &Map<String, Value>, key: &str) -> Vec<String> {
    match args.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => vec![],
    }
}

fn arg_bool(args: &Map<String, Value>, key: &str) -> bool {
    args.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// `"SIGTERM"`, `"TERM"`, `"9"` → signal number (default SIGTERM).
pub fn parse_signal(s: &str) -> i32 {
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    match name {
        "TERM" => 15,
        "KILL" => 9,
        "INT" => 2,
        "HUP" => 1,
        "QUIT" => 3,
        "USR1" => 10,
        "USR2" => 12,
        n => n.parse().unwrap_or(15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_celery() {
        assert_eq!(parse_signal("SIGTERM"), 15);
        assert_eq!(parse_signal("kill"), 9);
        assert_eq!(parse_signal("9"), 9);
        assert_eq!(parse_signal("bogus"), 15);
    }

    #[test]
    fn ids_accept_a_string_or_a_list() {
        let mut m = Map::new();
        m.insert("task_id".into(), json!("a"));
        assert_eq!(ids_arg(&m, "task_id"), vec!["a"]);
        m.insert("task_id".into(), json!(["a", "b"]));
        assert_eq!(ids_arg(&m, "task_id"), vec!["a", "b"]);
    }
}
