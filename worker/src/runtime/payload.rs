//! How a task's arguments reach it and how its result comes back, the same
//! for every runtime: JSON `{"args": [...], "kwargs": {...}}` on stdin and in
//! `CELERIAC_TASK_ARGS`; the result is the last stdout line (JSON, or the
//! line as a string) or a result file.

use serde_json::{json, Value};

use super::TaskSpec;

/// The JSON document a task receives.
pub fn args_document(spec: &TaskSpec) -> String {
    json!({"args": spec.args, "kwargs": spec.kwargs}).to_string()
}

/// Environment every task gets (on top of its profile's `env`).
pub fn task_env(spec: &TaskSpec) -> Vec<(String, String)> {
    vec![
        ("CELERIAC_TASK_ID".into(), spec.task_id.clone()),
        ("CELERIAC_TASK_NAME".into(), spec.task_name.clone()),
        ("CELERIAC_TASK_QUEUE".into(), spec.queue.clone()),
        ("CELERIAC_TASK_RETRIES".into(), spec.retries.to_string()),
        ("CELERIAC_WORKER".into(), spec.worker.clone()),
        ("CELERIAC_TASK_ARGS".into(), args_document(spec)),
    ]
}

/// The kernel refuses to start a program with one environment string of
/// 128 KiB or more (MAX_ARG_STRLEN): such a variable is left out rather than
/// failing the start — the arguments still arrive on stdin.
const MAX_ENV_STRING: usize = 128 * 1024;

/// The profile's `env` then [`task_env`], without variables too large to pass.
pub fn environment(spec: &TaskSpec) -> Vec<(String, String)> {
    spec.profile
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(task_env(spec))
        .filter(|(k, v)| {
            let bytes = k.len() + 1 + v.len();
            let fits = bytes < MAX_ENV_STRING;
            if !fits {
                tracing::warn!(task_id = %spec.task_id, variable = %k, bytes, "too large for the environment; left out (the arguments are on stdin)");
            }
            fits
        })
        .collect()
}

/// argv with `{task}`, `{id}` and `{queue}` replaced.
pub fn command(spec: &TaskSpec) -> Vec<String> {
    spec.profile
        .command
        .iter()
        .map(|a| {
            a.replace("{task}", &spec.task_name)
                .replace("{id}", &spec.task_id)
                .replace("{queue}", &spec.queue)
        })
        .collect()
}

/// The task's return value from its output: JSON if it parses, else the text.
pub fn parse_result(text: &str) -> Value {
    let t = text.trim();
    if t.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned()))
}
