//! Where the load comes from. Every source answers the same question —
//! how many tasks are running and waiting — so the control loop can poll any
//! mix of them and take the most pessimistic answer.

pub mod broker;
pub mod metastore;
mod metastore_sql;
pub mod workers;

use async_trait::async_trait;
use serde::Serialize;

use crate::Result;

/// Which kind of source answered: a fixed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Metastore,
    Broker,
    Workers,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [
        SourceKind::Metastore,
        SourceKind::Broker,
        SourceKind::Workers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Metastore => "metastore",
            SourceKind::Broker => "broker",
            SourceKind::Workers => "workers",
        }
    }
}

/// One worker's self-reported occupation (its `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerLoad {
    /// The metrics URL it was read from (the Kubernetes target maps it to a pod).
    pub endpoint: String,
    pub active: u64,
    pub reserved: u64,
}

impl WorkerLoad {
    pub fn busy(&self) -> bool {
        self.active + self.reserved > 0
    }
}

/// What one source saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Load {
    /// Tasks executing (metastore `running`; broker unacked; workers active).
    pub running: u64,
    /// Tasks waiting (metastore `queued`; broker ready; workers reserved).
    pub queued: u64,
    /// Per-worker detail, from the workers source only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerLoad>,
}

impl Load {
    pub fn total(&self) -> u64 {
        self.running.saturating_add(self.queued)
    }

    /// Workers with something to do, when this source knows the workers.
    pub fn busy_workers(&self) -> Option<u32> {
        if self.workers.is_empty() {
            return None;
        }
        let busy = self.workers.iter().filter(|w| w.busy()).count();
        Some(u32::try_from(busy).unwrap_or(u32::MAX))
    }
}

#[async_trait]
pub trait LoadSource: Send + Sync {
    fn kind(&self) -> SourceKind;
    /// One observation. Must not hang: implementations bound their own time.
    async fn observe(&self) -> Result<Load>;
}
