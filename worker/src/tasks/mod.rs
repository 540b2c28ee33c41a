//! What a task name means on this worker: a built-in task or a routing
//! profile. Names nothing resolves are "unregistered" (Celery's outcome).

pub mod airflow;
pub mod builtin;

use std::sync::Arc;

use crate::routing::{Profile, Routing};

pub use airflow::{AirflowSettings, AirflowTask};
pub use builtin::Builtin;

/// How to execute a resolved task.
#[derive(Debug, Clone)]
pub enum TaskKind {
    /// Runs inside the worker (health checks, benchmarks).
    Builtin(Builtin),
    /// Runs in the profile's runtime.
    Profile { name: String, profile: Profile },
    /// Airflow's `execute_workload` / `execute_command` (Airflow mode only).
    Airflow(AirflowTask),
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    routing: Arc<Routing>,
    airflow: Option<Arc<AirflowSettings>>,
}

impl Registry {
    pub fn new(routing: Routing) -> Self {
        Registry {
            routing: Arc::new(routing),
            airflow: None,
        }
    }

    /// Airflow mode: `execute_workload` and `execute_command` are known.
    pub fn with_airflow(mut self, settings: Arc<AirflowSettings>) -> Self {
        self.airflow = Some(settings);
        self
    }

    pub fn airflow(&self) -> Option<&Arc<AirflowSettings>> {
        self.airflow.as_ref()
    }

    pub fn resolve(&self, task: &str, queue: &str) -> Option<TaskKind> {
        if let Some(b) = Builtin::from_name(task) {
            return Some(TaskKind::Builtin(b));
        }
        if let (Some(settings), Some(name)) =
            (&self.airflow, airflow::AirflowTaskName::from_name(task))
        {
            // A route may send Airflow tasks to another runtime (Docker image).
            let profile = match self.routing.profile_for(task, queue) {
                Some((_, p)) => p.clone(),
                None => settings.default_profile(),
            };
            return Some(TaskKind::Airflow(AirflowTask { name, profile }));
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
        if self.airflow.is_some() {
            names.extend([
                airflow::EXECUTE_WORKLOAD.to_owned(),
                airflow::EXECUTE_COMMAND.to_owned(),
            ]);
        }
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
