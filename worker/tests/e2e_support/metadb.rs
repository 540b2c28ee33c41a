//! Reading Airflow's metadata database (and the Celery result table in the
//! same database) the way an operator would check a run: plain SQL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Row};

/// One task instance of a run, as `task_instance` holds it.
#[derive(Debug, Clone)]
pub struct Ti {
    pub task_id: String,
    pub state: Option<String>,
    pub try_number: i32,
    pub queued: Option<DateTime<Utc>>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub external_executor_id: Option<String>,
    pub hostname: Option<String>,
}

impl Ti {
    /// queued → running (`start_date − queued_dttm`), seconds.
    pub fn queued_to_running(&self) -> Option<f64> {
        Some((self.start? - self.queued?).num_milliseconds() as f64 / 1000.0)
    }

    /// running (`end_date − start_date`), seconds.
    pub fn running(&self) -> Option<f64> {
        Some((self.end? - self.start?).num_milliseconds() as f64 / 1000.0)
    }
}

pub struct MetaDb {
    pub url: String,
    /// Airflow processes that must stay alive while a wait polls.
    pub watch: Vec<(String, i32)>,
}

impl MetaDb {
    /// Fail a wait at once when an Airflow process died (the scheduler
    /// crashes on a result row it cannot decode, for example).
    fn check_alive(&self) -> Result<()> {
        match self.watch.iter().find(|(_, pid)| !super::proc::alive(*pid)) {
            Some((name, pid)) => bail!("the Airflow {name} (pid {pid}) died"),
            None => Ok(()),
        }
    }

    async fn conn(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.url).await?)
    }

    pub async fn serialized_dags(&self) -> Result<BTreeSet<String>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query("SELECT dag_id FROM serialized_dag")
            .fetch_all(&mut c)
            .await?;
        Ok(rows.iter().map(|r| r.get("dag_id")).collect())
    }

    pub async fn run_state(&self, dag_id: &str, run_id: &str) -> Result<Option<String>> {
        let mut c = self.conn().await?;
        let row = sqlx::query("SELECT state FROM dag_run WHERE dag_id = $1 AND run_id = $2")
            .bind(dag_id)
            .bind(run_id)
            .fetch_optional(&mut c)
            .await?;
        Ok(row.and_then(|r| r.get("state")))
    }

    /// DAG run `queued_at` → `end_date`, seconds.
    pub async fn run_total(&self, dag_id: &str, run_id: &str) -> Result<Option<f64>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(
            "SELECT EXTRACT(EPOCH FROM end_date - queued_at)::float8 AS s FROM dag_run WHERE dag_id = $1 AND run_id = $2",
        )
        .bind(dag_id)
        .bind(run_id)
        .fetch_optional(&mut c)
        .await?;
        Ok(row.and_then(|r| r.get("s")))
    }

    pub async fn tis(&self, dag_id: &str, run_id: &str) -> Result<Vec<Ti>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(
            "SELECT task_id, state, try_number, queued_dttm, start_date, end_date, external_executor_id, hostname \
             FROM task_instance WHERE dag_id = $1 AND run_id = $2 ORDER BY task_id",
        )
        .bind(dag_id)
        .bind(run_id)
        .fetch_all(&mut c)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ti {
                task_id: r.get("task_id"),
                state: r.get("state"),
                try_number: r.get("try_number"),
                queued: r.get("queued_dttm"),
                start: r.get("start_date"),
                end: r.get("end_date"),
                external_executor_id: r.get("external_executor_id"),
                hostname: r.get("hostname"),
            })
            .collect())
    }

    /// Every Celery task id the run used: current tries and earlier ones.
    pub async fn external_ids(&self, dag_id: &str, run_id: &str) -> Result<BTreeSet<String>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(
            "SELECT external_executor_id FROM task_instance WHERE dag_id = $1 AND run_id = $2 AND external_executor_id IS NOT NULL \
             UNION SELECT external_executor_id FROM task_instance_history WHERE dag_id = $1 AND run_id = $2 AND external_executor_id IS NOT NULL",
        )
        .bind(dag_id)
        .bind(run_id)
        .fetch_all(&mut c)
        .await?;
        Ok(rows.iter().map(|r| r.get("external_executor_id")).collect())
    }

    /// `(try_number, state)` of earlier tries (`task_instance_history`).
    pub async fn history(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
    ) -> Result<Vec<(i32, Option<String>)>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(
            "SELECT try_number, state FROM task_instance_history WHERE dag_id = $1 AND run_id = $2 AND task_id = $3 ORDER BY try_number",
        )
        .bind(dag_id)
        .bind(run_id)
        .bind(task_id)
        .fetch_all(&mut c)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("try_number"), r.get("state")))
            .collect())
    }

    /// The XCom `return_value` of a task, as JSON text.
    pub async fn xcom(&self, dag_id: &str, run_id: &str, task_id: &str) -> Result<Option<String>> {
        let mut c = self.conn().await?;
        let row = sqlx::query(
            "SELECT value::text AS v FROM xcom WHERE dag_id = $1 AND run_id = $2 AND task_id = $3 AND key = 'return_value'",
        )
        .bind(dag_id)
        .bind(run_id)
        .bind(task_id)
        .fetch_optional(&mut c)
        .await?;
        Ok(row.and_then(|r| r.get("v")))
    }

    /// `(task_id, status)` of the Celery result rows of `ids` (missing = PENDING).
    pub async fn taskmeta(&self, ids: &BTreeSet<String>) -> Result<Vec<(String, String)>> {
        let mut c = self.conn().await?;
        let exists: bool = sqlx::query("SELECT to_regclass('celery_taskmeta') IS NOT NULL AS e")
            .fetch_one(&mut c)
            .await?
            .get("e");
        let mut out = Vec::new();
        for id in ids {
            let status = if exists {
                sqlx::query("SELECT status FROM celery_taskmeta WHERE task_id = $1")
                    .bind(id)
                    .fetch_optional(&mut c)
                    .await?
                    .map(|r| r.get::<String, _>("status"))
            } else {
                None
            };
            out.push((
                id.clone(),
                status.unwrap_or_else(|| "PENDING (no row)".into()),
            ));
        }
        Ok(out)
    }
}

/// States a run or TI does not leave on its own.
pub fn terminal(state: Option<&str>) -> bool {
    matches!(
        state,
        Some("success" | "failed" | "upstream_failed" | "skipped" | "removed")
    )
}

/// What was seen while polling a run: the final TIs and every
/// `(task_id, state)` observed on the way.
pub struct RunOutcome {
    pub state: String,
    pub tis: Vec<Ti>,
    pub seen: BTreeSet<(String, String)>,
    pub elapsed: Duration,
}

impl RunOutcome {
    /// queued → running of every TI that ran, ascending.
    pub fn queued_to_running(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.tis.iter().filter_map(Ti::queued_to_running).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn ti(&self, task_id: &str) -> Option<&Ti> {
        self.tis.iter().find(|t| t.task_id == task_id)
    }

    pub fn states(&self) -> String {
        self.tis
            .iter()
            .map(|t| {
                format!(
                    "{}={}(try {})",
                    t.task_id,
                    t.state.as_deref().unwrap_or("none"),
                    t.try_number
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl MetaDb {
    /// Poll (every 200 ms) until the DAG run is terminal, at most `timeout`.
    pub async fn wait_run(
        &self,
        dag_id: &str,
        run_id: &str,
        timeout: Duration,
    ) -> Result<RunOutcome> {
        let started = Instant::now();
        let mut seen = BTreeSet::new();
        loop {
            self.check_alive()?;
            let tis = self.tis(dag_id, run_id).await?;
            for t in &tis {
                seen.insert((
                    t.task_id.clone(),
                    t.state.clone().unwrap_or_else(|| "none".into()),
                ));
            }
            let state = self.run_state(dag_id, run_id).await?;
            if terminal(state.as_deref()) {
                let state = state.unwrap_or_default();
                return Ok(RunOutcome {
                    state,
                    tis,
                    seen,
                    elapsed: started.elapsed(),
                });
            }
            if started.elapsed() > timeout {
                let outcome = RunOutcome {
                    state: state.unwrap_or_default(),
                    tis,
                    seen,
                    elapsed: started.elapsed(),
                };
                bail!(
                    "run {dag_id}/{run_id} not finished after {timeout:?}: run {}, {}",
                    outcome.state,
                    outcome.states()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Poll until a TI of the run is in `state`.
    pub async fn wait_ti(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<Ti> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            let tis = self.tis(dag_id, run_id).await?;
            if let Some(t) = tis
                .iter()
                .find(|t| t.task_id == task_id && t.state.as_deref() == Some(state))
            {
                return Ok(t.clone());
            }
            if started.elapsed() > timeout {
                bail!("{dag_id}.{task_id} in {run_id} not {state} after {timeout:?}: {tis:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
