//! The task-routing file (TOML): which runtime profile runs which task.
//!
//! A task name is *registered* when a route matches it (or it is a built-in
//! `celeriac.*` task); anything else gets Celery's unregistered-task outcome.
//!
//! ```toml
//! [profile.shell]
//! runtime = "process"
//! command = ["/bin/sh", "-c", "echo \"$CELERIAC_TASK_ARGS\""]
//!
//! [[route]]
//! task = "jobs.*"        # glob on the task name; or `queue = "spark"`
//! profile = "shell"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Process,
    Docker,
    Kubernetes,
}

/// How the task's return value comes back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResultSource {
    /// The last line the task wrote on stdout, parsed as JSON (plain text if it is not JSON).
    #[default]
    StdoutLastLine,
    /// A JSON file the task writes (inside the container for Docker).
    File(PathBuf),
    /// No value: the result is `null` (exit code decides success).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

/// Retry policy, as `Task.retry` would apply it (republish with retries+1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Celery's `max_retries` (default 3).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Countdown before the retry runs (Celery's `default_retry_delay`, 180 s).
    #[serde(default = "default_retry_delay", with = "humantime_serde_compat")]
    pub countdown: Duration,
    /// Exit codes that ask for a retry (default: 75, EX_TEMPFAIL).
    #[serde(default = "default_retry_codes")]
    pub on_exit_codes: Vec<i64>,
}

fn default_max_retries() -> u32 {
    3
}
fn default_retry_delay() -> Duration {
    Duration::from_secs(180)
}
fn default_retry_codes() -> Vec<i64> {
    vec![75]
}

/// Everything needed to run one kind of task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub runtime: RuntimeKind,
    /// Docker/Kubernetes image.
    pub image: Option<String>,
    #[serde(default)]
    pub pull: PullPolicy,
    /// argv; `{task}`, `{id}`, `{queue}` are replaced. Args reach the task as
    /// JSON `{"args": [...], "kwargs": {...}}` on stdin and in `CELERIAC_TASK_ARGS`.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Docker bind mounts `host:container[:ro]`.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// CPUs (e.g. 0.5).
    pub cpus: Option<f64>,
    /// Memory limit in bytes, or with a unit: `512Mi`, `2G`.
    pub memory: Option<String>,
    /// Docker network mode (default `none`: tasks get no network unless asked).
    pub network: Option<String>,
    /// `uid[:gid]` the task runs as (default for Docker: 65534:65534, nobody).
    pub user: Option<String>,
    pub workdir: Option<String>,
    #[serde(default, with = "humantime_serde_compat::option")]
    pub time_limit: Option<Duration>,
    #[serde(default, with = "humantime_serde_compat::option")]
    pub soft_time_limit: Option<Duration>,
    #[serde(default)]
    pub result: ResultSource,
    pub acks_late: Option<bool>,
    pub reject_on_worker_lost: Option<bool>,
    pub track_started: Option<bool>,
    pub ignore_result: Option<bool>,
    pub retry: Option<RetryPolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Glob on the task name (`*` any run of characters).
    pub task: Option<String>,
    /// Queue the message came from.
    pub queue: Option<String>,
    pub profile: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub profile: BTreeMap<String, Profile>,
    #[serde(default)]
    pub route: Vec<Route>,
}

impl Routing {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            setting: "--config".into(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let routing: Routing = toml::from_str(text).map_err(|e| ConfigError {
            setting: "--config".into(),
            reason: e.to_string(),
        })?;
        routing.validate()?;
        Ok(routing)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting: String, reason: &str| ConfigError {
            setting,
            reason: reason.to_owned(),
        };
        for (i, r) in self.route.iter().enumerate() {
            if !self.profile.contains_key(&r.profile) {
                return Err(err(format!("route[{i}].profile"), "names no [profile.*]"));
            }
            if r.task.is_none() && r.queue.is_none() {
                return Err(err(format!("route[{i}]"), "needs `task` or `queue`"));
            }
        }
        for (name, p) in &self.profile {
            let at = |field: &str| format!("profile.{name}.{field}");
            if matches!(p.runtime, RuntimeKind::Docker | RuntimeKind::Kubernetes)
                && p.image.is_none()
            {
                return Err(err(at("image"), "is required for this runtime"));
            }
            if p.runtime == RuntimeKind::Process && p.command.is_empty() {
                return Err(err(at("command"), "is required for the process runtime"));
            }
            if let Some(m) = &p.memory {
                parse_bytes(m).ok_or_else(|| err(at("memory"), "is not a size like 512Mi"))?;
            }
            if p.cpus.is_some_and(|c| c <= 0.0 || !c.is_finite()) {
                return Err(err(at("cpus"), "must be a positive number"));
            }
        }
        Ok(())
    }

    /// The profile for a task arriving on a queue: the first matching route wins.
    pub fn profile_for(&self, task: &str, queue: &str) -> Option<(&str, &Profile)> {
        self.route
            .iter()
            .find(|r| {
                r.task.as_deref().is_none_or(|g| glob_match(g, task))
                    && r.queue.as_deref().is_none_or(|q| q == queue)
            })
            .and_then(|r| {
                self.profile
                    .get_key_value(&r.profile)
                    .map(|(k, v)| (k.as_str(), v))
            })
    }

    /// Task-name globs for `inspect registered`.
    pub fn registered(&self) -> Vec<String> {
        self.route.iter().filter_map(|r| r.task.clone()).collect()
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// `512Mi`, `2G`, `1048576` → bytes.
pub fn parse_bytes(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "b" | "B" => 1.0,
        "k" | "K" | "kB" | "KB" => 1e3,
        "Ki" | "KiB" => 1024.0,
        "M" | "MB" => 1e6,
        "Mi" | "MiB" | "m" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "Gi" | "GiB" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (1.0..9.0e18).contains(&v).then_some(v as i64)
}

/// Durations in the routing file: `"30s"`, `"10m"` (humantime) or a number of seconds.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }

    fn convert<E: serde::de::Error>(raw: Raw) -> Result<Duration, E> {
        match raw {
            Raw::Secs(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
            Raw::Secs(s) => Err(E::custom(format!("invalid duration {s}"))),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(E::custom),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        convert(Raw::deserialize(d)?)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<Raw>::deserialize(d)?.map(convert).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[profile.shell]
runtime = "process"
command = ["/bin/sh", "-c", "cat"]
time_limit = "30s"
soft_time_limit = 20

[profile.spark]
runtime = "docker"
image = "spark-client:3.5"
memory = "512Mi"
cpus = 0.5
result = { file = "/out/result.json" }
retry = { max_retries = 2, countdown = "5s" }

[[route]]
task = "jobs.*"
profile = "shell"

[[route]]
queue = "spark"
profile = "spark"
"#;

    #[test]
    fn routes_by_task_glob_then_queue() {
        let r = Routing::parse(EXAMPLE).unwrap();
        assert_eq!(r.profile_for("jobs.nightly", "celery").unwrap().0, "shell");
        assert_eq!(r.profile_for("etl.load", "spark").unwrap().0, "spark");
        assert!(r.profile_for("etl.load", "celery").is_none());
        let shell = &r.profile["shell"];
        assert_eq!(shell.time_limit, Some(Duration::from_secs(30)));
        assert_eq!(shell.soft_time_limit, Some(Duration::from_secs(20)));
        let spark = &r.profile["spark"];
        assert_eq!(spark.result, ResultSource::File("/out/result.json".into()));
        assert_eq!(spark.retry.as_ref().unwrap().on_exit_codes, vec![75]);
    }

    #[test]
    fn invalid_files_name_the_setting() {
        let cases = [
            ("[[route]]\ntask='a'\nprofile='nope'", "route[0].profile"),
            ("[profile.d]\nruntime='docker'", "profile.d.image"),
            ("[profile.p]\nruntime='process'", "profile.p.command"),
            (
                "[profile.d]\nruntime='docker'\nimage='x'\nmemory='lots'",
                "profile.d.memory",
            ),
            ("[profile.d]\nruntime='vm'", "--config"),
        ];
        for (text, setting) in cases {
            assert_eq!(Routing::parse(text).unwrap_err().setting, setting, "{text}");
        }
    }

    #[test]
    fn globs_and_sizes() {
        assert!(glob_match("a.*", "a.b"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "ab"));
        assert!(!glob_match("a.b", "a.bc"));
        assert_eq!(parse_bytes("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("2G"), Some(2_000_000_000));
        assert_eq!(parse_bytes("x"), None);
    }
}
