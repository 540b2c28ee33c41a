//! The Airflow 3 workload: the single positional argument of
//! `execute_workload`, a JSON *string* discriminated by `type` (airflow.md
//! §2.2–2.4). The worker only reads what it needs for logs and checks; the
//! string itself is handed to the Task SDK untouched.

use serde::Deserialize;
use serde_json::Value;

/// Workload types the Task SDK's `execute_workload` module accepts.
pub const KNOWN_TYPES: [&str; 4] = [
    "ExecuteTask",
    "ExecuteCallback",
    "RunTrigger",
    "TestConnection",
];

/// The fields of a workload the worker uses. Unknown fields are ignored:
/// newer Airflow versions add some, and the SDK validates the full document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Workload {
    #[serde(rename = "type")]
    pub kind: String,
    /// Relative to `[logging] base_log_folder` (`ExecuteTask` only).
    #[serde(default)]
    pub log_path: Option<String>,
    #[serde(default)]
    pub ti: Option<TaskInstance>,
    #[serde(default)]
    pub dag_rel_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskInstance {
    pub id: String,
    pub dag_id: String,
    pub task_id: String,
    pub run_id: String,
    #[serde(default)]
    pub try_number: i64,
    #[serde(default = "unmapped")]
    pub map_index: i64,
}

fn unmapped() -> i64 {
    -1
}

/// A decoded `execute_workload` request: the raw JSON string (passed on
/// verbatim) and what the worker read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadArg {
    pub json: String,
    pub workload: Workload,
}

impl WorkloadArg {
    /// `dag_id.task_id[map_index] run_id try` for log lines.
    pub fn describe(&self) -> String {
        match &self.workload.ti {
            Some(ti) if ti.map_index >= 0 => format!(
                "{} {}.{}[{}] {} try {}",
                self.workload.kind, ti.dag_id, ti.task_id, ti.map_index, ti.run_id, ti.try_number
            ),
            Some(ti) => format!(
                "{} {}.{} {} try {}",
                self.workload.kind, ti.dag_id, ti.task_id, ti.run_id, ti.try_number
            ),
            None => self.workload.kind.clone(),
        }
    }
}

/// Check the message arguments as the Python task (`execute_workload(input:
/// str)`) would receive them: exactly one positional string holding a JSON
/// object with a known `type`.
pub fn parse(
    args: &[Value],
    kwargs: &serde_json::Map<String, Value>,
) -> Result<WorkloadArg, String> {
    let json = match (args, kwargs.get("input")) {
        ([Value::String(s)], None) => s.clone(),
        ([], Some(Value::String(s))) if kwargs.len() == 1 => s.clone(),
        _ => {
            return Err(format!(
                "execute_workload expects one JSON string argument, got {} positional and {} keyword arguments",
                args.len(),
                kwargs.len()
            ))
        }
    };
    let workload: Workload =
        serde_json::from_str(&json).map_err(|e| format!("the workload is not valid JSON: {e}"))?;
    if !KNOWN_TYPES.contains(&workload.kind.as_str()) {
        // Still run it: the installed SDK may know newer types; it fails clearly if not.
        tracing::warn!(kind = %workload.kind, "unknown Airflow workload type; handing it to the Task SDK anyway");
    }
    Ok(WorkloadArg { json, workload })
}
