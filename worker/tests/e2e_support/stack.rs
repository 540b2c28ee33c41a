//! One Airflow 3.3 stack (api-server, scheduler, dag-processor) with the
//! CeleryExecutor, configured only through `AIRFLOW__*` variables: a fresh
//! PostgreSQL database (metadata and Celery results), a Redis db (with a
//! fresh queue name) or a fresh RabbitMQ vhost as the broker, random ports,
//! and every log in one run directory (kept when the test fails).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use celeriac_tests::postgres::PgDatabase;
use celeriac_tests::services::{redis_url, RabbitVhost};
use celeriac_tests::unique;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::http;
use super::metadb::MetaDb;
use super::proc::{self, Proc};

const SETPRIV: &str = "/usr/bin/setpriv";

/// Redis db of the Airflow e2e broker (no other test uses it).
pub const REDIS_DB: u8 = 9;

/// DAG files of the suite (`tests/airflow/dags`).
pub fn dags_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/airflow/dags")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Who creates the Celery result table: the worker (a fresh deployment
/// with celeriac as the only worker) or Airflow's Celery (celeriac swapped
/// in where `airflow celery worker` ran before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultTable {
    CreatedByWorker,
    CreatedByAirflowCelery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    RabbitMq,
}

/// The Airflow venv from `tests/airflow/install.sh` (idempotent, cached
/// in the target dir): returns its `bin` directory.
pub fn airflow_venv() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/airflow/install.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = stdout
        .lines()
        .last()
        .ok_or_else(|| anyhow!("install.sh printed no python path"))?;
    eprintln!(
        "[e2e] Airflow venv ready in {:.1}s: {python}",
        started.elapsed().as_secs_f64()
    );
    Ok(Path::new(python.trim())
        .parent()
        .ok_or_else(|| anyhow!("bad python path {python}"))?
        .to_path_buf())
}

pub struct Stack {
    pub kind: BrokerKind,
    pub dir: PathBuf,
    pub home: PathBuf,
    pub bin: PathBuf,
    pub queue: String,
    pub api: SocketAddr,
    pub broker_url: String,
    pub db: MetaDb,
    pub env: BTreeMap<String, String>,
    procs: Vec<Proc>,
    _vhost: Option<RabbitVhost>,
    _pg: PgDatabase,
}

impl Stack {
    /// Create the database and broker resources, migrate, start the three
    /// Airflow processes and wait until the suite's DAGs are serialized.
    pub async fn start(
        kind: BrokerKind,
        results: ResultTable,
        extra_env: &[(&str, &str)],
    ) -> Result<Stack> {
        let started = Instant::now();
        let bin = airflow_venv()?;
        let pg = PgDatabase::create()
            .await
            .context("PostgreSQL at 127.0.0.1:5432 is not reachable")?;
        let run = unique("airflow-e2e");
        let dir = celeriac_tests::venv::target_dir()
            .join("celeriac-test-logs")
            .join(&run);
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        let queue = unique("celeriac-af");
        let (broker_url, vhost) = match kind {
            BrokerKind::Redis => (redis_url(REDIS_DB), None),
            BrokerKind::RabbitMq => {
                let v = RabbitVhost::create()?;
                (v.url(), Some(v))
            }
        };
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let sql = format!("postgresql+psycopg2://postgres@127.0.0.1:5432/{}", pg.name);
        let mut env = super::env::airflow_env(&bin, &home, api, &sql, &broker_url, &queue);
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let db = MetaDb {
            url: pg.url(),
            watch: Vec::new(),
        };
        let mut stack = Stack {
            kind,
            dir,
            home,
            bin,
            queue,
            api,
            broker_url,
            db,
            env,
            procs: Vec::new(),
            _vhost: vhost,
            _pg: pg,
        };
        stack.migrate().await?;
        if results == ResultTable::CreatedByAirflowCelery
            || std::env::var_os("CELERIAC_E2E_PRECREATE_RESULTS").is_some()
        {
            stack.precreate_result_table().await?;
        }
        stack.spawn_airflow(
            "api-server",
            &[
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                &api.port().to_string(),
            ],
        )?;
        stack.spawn_airflow("scheduler", &["scheduler", "--skip-serve-logs"])?;
        stack.spawn_airflow("dag-processor", &["dag-processor"])?;
        stack.db.watch = stack
            .procs
            .iter()
            .map(|p| (p.name.clone(), p.pid()))
            .collect();
        stack
            .wait_up()
            .await
            .map_err(|e| anyhow!("{e:#}\n{}", stack.tails()))?;
        eprintln!(
            "[e2e] Airflow ({kind:?}) up in {:.1}s, logs in {}",
            started.elapsed().as_secs_f64(),
            stack.dir.display()
        );
        Ok(stack)
    }

    /// A command with exactly the stack's environment.
    /// Run under `setpriv --pdeathsig KILL` so nothing outlives a test
    /// process that is itself killed (nextest's timeout) before its drops run.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = if Path::new(SETPRIV).exists() {
            let mut c = Command::new(SETPRIV);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.env_clear().envs(&self.env).current_dir(&self.dir);
        cmd
    }

    pub fn airflow(&self) -> Command {
        self.command(self.bin.join("airflow"))
    }

    fn spawn_airflow(&mut self, name: &str, args: &[&str]) -> Result<()> {
        let mut cmd = self.airflow();
        cmd.args(args);
        let p = Proc::spawn(name, cmd, &self.dir)?;
        self.procs.push(p);
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        let t = Instant::now();
        let mut cmd = self.airflow();
        cmd.args(["db", "migrate"]);
        let mut p = Proc::spawn("db-migrate", cmd, &self.dir)?;
        match p.wait_exit(Duration::from_secs(300)).await {
            Some(s) if s.success() => {
                eprintln!(
                    "[e2e] airflow db migrate: {:.1}s",
                    t.elapsed().as_secs_f64()
                );
                Ok(())
            }
            other => bail!("airflow db migrate: {other:?}\n{}", p.tail(40)),
        }
    }

    /// `celery_taskmeta` as Airflow's own Celery (5.6, pickle `result`)
    /// creates it, as in a deployment that ran `airflow celery worker` before.
    async fn precreate_result_table(&self) -> Result<()> {
        let code = "from airflow.providers.celery.executors.celery_executor_utils import app\n\
                    app.backend.ResultSession().close()\nprint('celery_taskmeta ready')";
        let mut cmd = self.command(self.bin.join("python"));
        cmd.args(["-c", code]);
        let mut p = Proc::spawn("precreate-results", cmd, &self.dir)?;
        match p.wait_exit(Duration::from_secs(120)).await {
            Some(s) if s.success() => Ok(()),
            other => bail!(
                "creating celery_taskmeta with Airflow's Celery: {other:?}\n{}",
                p.tail(30)
            ),
        }
    }

    /// Which Airflow process died, if one did (they must run all along).
    pub fn dead(&self) -> Option<String> {
        self.procs
            .iter()
            .find(|p| !p.alive())
            .map(|p| format!("{} (pid {}) died\n{}", p.name, p.pid(), p.tail(40)))
    }

    async fn wait_up(&mut self) -> Result<()> {
        let want = [
            "celeriac_e2e_simple",
            "celeriac_e2e_parallel",
            "celeriac_e2e_fail",
            "celeriac_e2e_sleep",
        ];
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            for p in &mut self.procs {
                if let Some(s) = p.exited() {
                    bail!("{} exited during start-up: {s}", p.name);
                }
            }
            let api_ok = matches!(
                http::get(self.api, "/api/v2/monitor/health").await,
                Ok((200, _))
            );
            let dags = self.db.serialized_dags().await.unwrap_or_default();
            if api_ok && want.iter().all(|d| dags.contains(*d)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Airflow not up after 240s (api-server healthy: {api_ok}, serialized DAGs: {dags:?})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Trigger a DAG run through the REST API; returns its run id.
    pub async fn trigger(&self, dag_id: &str, conf: Value) -> Result<String> {
        let run_id = unique("e2e");
        let body = json!({"dag_run_id": run_id, "logical_date": null, "conf": conf});
        let (status, text) = http::request(
            self.api,
            "POST",
            &format!("/api/v2/dags/{dag_id}/dagRuns"),
            Some(&body),
        )
        .await?;
        if status != 200 {
            bail!("triggering {dag_id}: HTTP {status}: {text}");
        }
        Ok(run_id)
    }

    pub fn scheduler(&self) -> Option<&Proc> {
        self.procs.iter().find(|p| p.name == "scheduler")
    }

    /// `executor.running (N)` from the scheduler's SIGUSR2 debug dump.
    pub async fn executor_running(&self) -> Result<usize> {
        let sched = self.scheduler().ok_or_else(|| anyhow!("no scheduler"))?;
        let before = std::fs::metadata(&sched.log).map(|m| m.len()).unwrap_or(0) as usize;
        sched.signal(Signal::SIGUSR2)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read(&sched.log).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(before..).unwrap_or_default()).into_owned();
            if let Some(n) = new
                .rsplit("executor.running (")
                .next()
                .filter(|_| new.contains("executor.running ("))
            {
                let n: String = n.chars().take_while(char::is_ascii_digit).collect();
                return n.parse().context("parsing the executor.running count");
            }
            if Instant::now() > deadline {
                bail!("the scheduler printed no debug dump after SIGUSR2");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until the scheduler tracks no Celery task any more (no slot leaked).
    pub async fn wait_executor_drained(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.executor_running().await?;
            if n == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the scheduler still tracks {n} Celery task(s) in executor.running after {timeout:?} (slot leak)");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Tails of every log of the run (Airflow processes and workers).
    pub fn tails(&self) -> String {
        let mut out = String::new();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        for log in logs {
            out.push_str(&proc::tail(&log, 40));
        }
        out
    }

    pub fn marker(&self) -> String {
        format!("AIRFLOW_HOME={}", self.home.display())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.procs.clear();
        proc::sweep(&self.marker());
        if self.kind == BrokerKind::Redis {
            let _ = drop_redis_keys(&self.queue);
        }
        if std::thread::panicking() || std::env::var_os("CELERIAC_E2E_KEEP_LOGS").is_some() {
            eprintln!("[e2e] logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The queue's list and kombu bindings in the e2e Redis db.
fn drop_redis_keys(queue: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(redis_url(REDIS_DB))?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{queue}*"))
        .query(&mut conn)?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
    }
    Ok(())
}
