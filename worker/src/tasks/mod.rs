//! What a task name means on this worker: a built-in task or a routing
//! profile. Names nothing resolves are "unregistered" (Celery's outcome).

pub mod builtin;

use std::sync::Arc;

use crate::routing::{Profile, Routing};

pub use builtin::Builtin;

/// How to execute a resolved task.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// Runs inside the worker (health checks, benchmarks).
    Builtin(Builtin),
    /// Runs in the profile's runtime.
    Profile { name: String, profile: Profile },
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    routing: Arc<Routing>,
}

impl Registry {
    pub fn new(routing: Routing) -> Self {
        Registry {
            routing: Arc::new(routing),
        }
    }

    pub fn resolve(&self, task: &str, queue: &str) -> Option<TaskKind> {
        if let Some(b) = Builtin::from_name(task) {
            return Some(TaskKind::Builtin(b));
        }
        self.routing
            .profile_for(task, queue)
            .map(|(name, profile)| TaskKind::Profile {
                name: name.to_owned(),
                profile: profile.clone(),
            })
    }

    /// Sorted names for `inspect registered` (routes are globs).
    pub fn registered(&self) -> Vec<String> {
        let mut names: Vec<String> = Builtin::ALL.iter().map(|b| b.name().to_owned()).collect();
        names.extend(self.routing.registered());
        names.sort();
        names.dedup();
        names
    }

    /// Metric label for a task name: bounded to what this worker knows.
    pub fn metric_name<'a>(&self, task: &'a str, queue: &str) -> &'a str {
        if self.resolve(task, queue).is_some() {
            task
        } else {
            "unregistered"
        }
    }
}
