//! A received task: the decoded message, where it came from, what runs it,
//! and the broker settlement that must happen exactly once.

use std::sync::Arc;

use broker_compat::protocol::{DeliveryInfo, TaskMessage};
use broker_compat::transport::Acker;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::tasks::TaskKind;

/// Settles a delivery once; later calls are no-ops. Shared by the executor
/// (early/late ack) and shutdown (restore of what did not run).
#[derive(Clone)]
pub struct Settle {
    acker: Arc<Mutex<Option<Box<dyn Acker>>>>,
}

/// How a delivery was (or is to be) settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    Reject {
        requeue: bool,
    },
    /// Back to the front of the queue, untouched (shutdown).
    Restore,
}

impl Settle {
    pub fn new(acker: Box<dyn Acker>) -> Self {
        Settle {
            acker: Arc::new(Mutex::new(Some(acker))),
        }
    }

    /// Settle if not settled yet. Returns whether this call settled it.
    pub async fn settle(&self, how: Settlement) -> broker_compat::Result<bool> {
        let mut slot = self.acker.lock().await;
        let Some(acker) = slot.take() else {
            return Ok(false);
        };
        let r = match how {
            Settlement::Ack => acker.ack().await,
            Settlement::Reject { requeue } => acker.reject(requeue).await,
            Settlement::Restore => acker.restore().await,
        };
        if r.is_err() {
            // Keep it so shutdown can still restore it.
            *slot = Some(acker);
        }
        r.map(|()| true)
    }

    pub async fn is_settled(&self) -> bool {
        self.acker.lock().await.is_none()
    }
}

pub struct Request {
    pub msg: TaskMessage,
    pub delivery: DeliveryInfo,
    pub kind: TaskKind,
    pub settle: Settle,
    /// Queue the message came from (for routing a retry and metrics).
    pub queue: String,
}

impl Request {
    pub fn id(&self) -> &str {
        &self.msg.headers.id
    }

    /// `shadow or task`: the name logs, events and inspect show.
    pub fn display_name(&self) -> &str {
        self.msg
            .headers
            .shadow
            .as_deref()
            .unwrap_or(&self.msg.headers.task)
    }

    /// Celery's request info dict (inspect active/reserved/scheduled).
    pub fn info(&self, hostname: &str, time_start: Option<f64>, acknowledged: bool) -> Value {
        json!({
            "id": self.id(),
            "name": self.display_name(),
            "args": self.msg.args,
            "kwargs": self.msg.kwargs,
            "type": self.msg.headers.task,
            "hostname": hostname,
            "time_start": time_start,
            "acknowledged": acknowledged,
            "delivery_info": {
                "exchange": self.delivery.exchange,
                "routing_key": self.delivery.routing_key,
                "priority": self.msg.properties.priority.unwrap_or(0),
                "redelivered": self.delivery.redelivered,
            },
            "worker_pid": Value::Null,
        })
    }
}
