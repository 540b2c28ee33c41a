//! What the worker knows about its tasks right now: the revoked set and the
//! requests that are scheduled (ETA), reserved (waiting for a slot) and
//! active (running). Remote control reads it; the executor writes it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::watch;

/// Celery's revoked set: a bounded, insertion-ordered set of ids
/// (`CELERY_WORKER_REVOKES_MAX` = 50 000).
#[derive(Debug, Default)]
pub struct RevokedSet {
    ids: HashMap<String, ()>,
    order: VecDeque<String>,
}

const REVOKES_MAX: usize = 50_000;

impl RevokedSet {
    pub fn insert(&mut self, id: &str) {
        if self.ids.insert(id.to_owned(), ()).is_none() {
            self.order.push_back(id.to_owned());
            while self.order.len() > REVOKES_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.order.iter().cloned().collect()
    }
}

/// A running task as remote control sees it, with the handle that signals it.
#[derive(Debug)]
pub struct ActiveTask {
    pub info: Value,
    pub name: String,
    /// Send a signal number to terminate it (revoke terminate=True).
    pub terminate: watch::Sender<Option<i32>>,
}

#[derive(Debug, Default)]
pub struct Tasks {
    pub active: HashMap<String, ActiveTask>,
    pub reserved: HashMap<String, Value>,
    /// id → (eta ISO, request info)
    pub scheduled: HashMap<String, (String, Value)>,
    pub revoked: RevokedSet,
    /// Tasks accepted so far, per name (`inspect stats` total).
    pub totals: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct WorkerState {
    pub hostname: String,
    pub pid: u32,
    pub started: Instant,
    tasks: Mutex<Tasks>,
    pub processed: AtomicU64,
    pub task_events: AtomicBool,
}

impl WorkerState {
    pub fn new(hostname: &str, task_events: bool) -> Arc<Self> {
        Arc::new(WorkerState {
            hostname: hostname.to_owned(),
            pid: std::process::id(),
            started: Instant::now(),
            tasks: Mutex::new(Tasks::default()),
            processed: AtomicU64::new(0),
            task_events: AtomicBool::new(task_events),
        })
    }

    /// The task tables. Never hold the guard across an await.
    pub fn tasks(&self) -> MutexGuard<'_, Tasks> {
        // A poisoned lock only means another thread panicked mid-update; the
        // tables stay usable, so keep serving rather than crash the worker.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.tasks().revoked.contains(id)
    }

    pub fn active_count(&self) -> usize {
        self.tasks().active.len()
    }

    pub fn task_events_enabled(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_set_is_bounded_and_ordered() {
        let mut s = RevokedSet::default();
        for i in 0..REVOKES_MAX + 10 {
            s.insert(&i.to_string());
        }
        s.insert("5");
        assert!(!s.contains("0"));
        assert!(!s.contains("10"), "re-adding 5 evicted the next oldest");
        assert!(s.contains("11") && s.contains("5"));
        assert_eq!(s.ids().len(), REVOKES_MAX);
    }
}
