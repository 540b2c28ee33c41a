//! The Python side: a real Celery 5.7 client (`tests/python/celeriac_client.py`
//! in the venv `celeriac-tests` builds) sending tasks to the worker under test
//! and reading back what Celery users see — results, states, inspect replies
//! and events.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use celeriac_tests::venv::venv;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long one client command may take (Celery's import is ~1 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

#[derive(Debug, Clone)]
pub struct Client {
    pub broker: String,
    pub backend: Option<String>,
    pub queue: String,
}

impl Client {
    /// `program` from the venv, with this client's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(venv().join("bin").join(program));
        cmd.current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("CLIENT_BROKER", &self.broker)
            .env("CLIENT_QUEUE", &self.queue)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &self.backend {
            Some(b) => cmd.env("CLIENT_BACKEND", b),
            None => cmd.env_remove("CLIENT_BACKEND"),
        };
        cmd
    }

    /// Run one client command; its JSON answer.
    pub async fn run(&self, args: &[&str]) -> Result<Value> {
        let mut cmd = self.command("python");
        cmd.arg(python_dir().join("celeriac_client.py")).args(args);
        let shown = format!("celeriac_client.py {}", args.join(" "));
        let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("{shown} still running after {COMMAND_TIMEOUT:?}"))?
            .with_context(|| format!("cannot start {shown}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{shown} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = stdout.lines().next().unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("{shown} printed {stdout:?}"))
    }

    /// Send and wait: `{"id", "result", "raised", "raised_args", "state", "traceback"}`.
    pub async fn call(
        &self,
        name: &str,
        args: Value,
        kwargs: Value,
        options: Value,
    ) -> Result<Value> {
        let (a, k, o) = (args.to_string(), kwargs.to_string(), options.to_string());
        self.run(&["call", name, &a, &k, &o]).await
    }

    /// Send only; the task id.
    pub async fn send(&self, name: &str, args: Value, options: Value) -> Result<String> {
        let (a, o) = (args.to_string(), options.to_string());
        let doc = self.run(&["send", name, &a, "{}", &o]).await?;
        doc["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("send printed {doc}"))
    }

    /// Send `(name, args, options)` in this order from one process; the ids.
    pub async fn send_many(&self, tasks: &[(&str, Value, Value)]) -> Result<Vec<String>> {
        let list: Vec<Value> = tasks.iter().map(|(n, a, o)| json!([n, a, o])).collect();
        let doc = self
            .run(&["send-many", &Value::Array(list).to_string()])
            .await?;
        serde_json::from_value(doc["ids"].clone())
            .with_context(|| format!("send-many printed {doc}"))
    }

    /// Wait for a sent task's outcome, as `call` reports it.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Value> {
        let t = timeout.as_secs_f64().to_string();
        self.run(&["wait", id, &t]).await
    }

    /// The backend's meta for `id` (`status`, `result`, `traceback`, …).
    pub async fn meta(&self, id: &str) -> Result<Value> {
        self.run(&["meta", id]).await
    }

    /// `app.control.inspect(destination=[node]).<method>()`.
    pub async fn inspect(&self, method: &str, node: &str) -> Result<Value> {
        self.run(&["inspect", method, node]).await
    }

    pub async fn revoke(&self, id: &str, terminate: bool) -> Result<()> {
        let t = if terminate { "1" } else { "0" };
        self.run(&["revoke", id, t]).await.map(drop)
    }

    /// LPUSH raw kombu envelopes `(body, content_type, headers)` in this
    /// order (the script base64-encodes each body).
    pub async fn lpush(&self, messages: &[(&str, &str, Value)]) -> Result<()> {
        let list: Vec<Value> = messages.iter().map(|(b, c, h)| json!([b, c, h])).collect();
        self.run(&["lpush", &Value::Array(list).to_string()])
            .await
            .map(drop)
    }

    /// Start an event receiver writing to `file`; returns once it listens.
    pub async fn events(&self, file: &Path) -> Result<Events> {
        let mut cmd = self.command("python");
        cmd.arg(python_dir().join("celeriac_client.py"))
            .arg("events")
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("cannot start the event receiver")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line()).await;
        match ready {
            Ok(Ok(Some(l))) if l.contains("ready") => {}
            other => bail!("the event receiver did not get ready: {other:?}"),
        }
        Ok(Events {
            _child: child,
            file: file.to_owned(),
        })
    }
}

/// A running `app.events.Receiver`; killed on drop.
pub struct Events {
    _child: Child,
    file: PathBuf,
}

impl Events {
    /// Every event received so far.
    pub fn all(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Events of `kind` matching `field == value`.
    pub fn find(&self, kind: &str, field: &str, value: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|e| e["type"] == json!(kind) && e[field] == json!(value))
            .collect()
    }
}
