//! The Airflow 2 task: `execute_command` with a command list that must start
//! with `airflow tasks run` (airflow.md §9,
//! `BaseExecutor.validate_airflow_tasks_run_command`). Anything else is
//! refused without running it.

use serde_json::Value;

const PREFIX: [&str; 3] = ["airflow", "tasks", "run"];

/// The validated command (all strings, starting with `airflow tasks run`).
pub fn parse(args: &[Value]) -> Result<Vec<String>, String> {
    let Some(Value::Array(items)) = args.first().filter(|_| args.len() == 1) else {
        return Err(
            "execute_command expects one argument: the command as a list of strings".into(),
        );
    };
    let command: Vec<String> = items
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            "execute_command: every element of the command must be a string".to_owned()
        })?;
    if command.len() < PREFIX.len() + 1 || command[..PREFIX.len()] != PREFIX {
        return Err(format!(
            "The command must start with ['airflow', 'tasks', 'run'], got {}",
            broker_compat::protocol::pyjson::repr(&Value::Array(items.clone()))
        ));
    }
    Ok(command)
}
