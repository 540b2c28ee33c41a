//! The suite's checks, each against a running stack and worker. A check
//! returns a one-line summary or an error saying exactly what was wrong.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use celeriac_tests::services::redis_conn;
use serde_json::json;

use super::metadb::RunOutcome;
use super::stack::{BrokerKind, Stack, REDIS_DB};
use super::workers::Worker;

const SIMPLE: &str = "celeriac_e2e_simple";
const PARALLEL: &str = "celeriac_e2e_parallel";
const FAIL: &str = "celeriac_e2e_fail";
const SLEEP: &str = "celeriac_e2e_sleep";

/// The results of the checks of one stack, printed as a table at the end.
#[derive(Default)]
pub struct Suite {
    pub results: Vec<(String, Duration, Result<String>)>,
}

impl Suite {
    pub fn record(&mut self, name: &str, started: Instant, r: Result<String>) {
        let took = started.elapsed();
        match &r {
            Ok(s) => eprintln!("[e2e] PASS {name} ({:.1}s): {s}", took.as_secs_f64()),
            Err(e) => eprintln!("[e2e] FAIL {name} ({:.1}s): {e:#}", took.as_secs_f64()),
        }
        self.results.push((name.to_owned(), took, r));
    }

    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|(n, _, r)| r.as_ref().err().map(|e| format!("{n}: {e:#}")))
            .collect()
    }

    pub fn table(&self) -> String {
        self.results
            .iter()
            .map(|(n, t, r)| {
                format!(
                    "  {:<5} {:>6.1}s  {n}",
                    if r.is_ok() { "ok" } else { "FAIL" },
                    t.as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Every Celery result row of the run is terminal (else the scheduler keeps
/// the key in `executor.running`: a leaked slot).
pub async fn results_terminal(
    stack: &Stack,
    dag_id: &str,
    run_id: &str,
    timeout: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(dead) = stack.dead() {
            bail!("{dead}");
        }
        let ids = stack.db.external_ids(dag_id, run_id).await?;
        let rows = stack.db.taskmeta(&ids).await?;
        let open: Vec<_> = rows
            .iter()
            .filter(|(_, s)| s != "SUCCESS" && s != "FAILURE")
            .collect();
        if open.is_empty() && !rows.is_empty() {
            return Ok(rows.len());
        }
        if Instant::now() > deadline {
            bail!("celery_taskmeta rows not terminal after {timeout:?}: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn q_to_run(out: &RunOutcome) -> String {
    let v = out.queued_to_running();
    match (v.first(), v.last()) {
        (Some(min), Some(max)) => format!("q→run min {min:.2}s max {max:.2}s"),
        _ => "q→run n/a".into(),
    }
}

/// First TI queued → last TI end.
pub fn span(out: &RunOutcome) -> f64 {
    let first = out.tis.iter().filter_map(|t| t.queued).min();
    let last = out.tis.iter().filter_map(|t| t.end).max();
    match (first, last) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => f64::NAN,
    }
}

/// bash echo → python return value: both succeed, the XCom is stored.
pub async fn two_task_dag(stack: &Stack) -> Result<String> {
    let run = stack.trigger(SIMPLE, json!({})).await?;
    let out = stack
        .db
        .wait_run(SIMPLE, &run, Duration::from_secs(120))
        .await?;
    ensure!(
        out.state == "success",
        "run {}: {}",
        out.state,
        out.states()
    );
    ensure!(
        out.tis.len() == 2
            && out
                .tis
                .iter()
                .all(|t| t.state.as_deref() == Some("success")),
        "{}",
        out.states()
    );
    let xcom = stack.db.xcom(SIMPLE, &run, "give_value").await?;
    ensure!(
        xcom.as_deref() == Some("\"celeriac-says-42\""),
        "XCom return_value of give_value: {xcom:?}"
    );
    let rows = results_terminal(stack, SIMPLE, &run, Duration::from_secs(30)).await?;
    Ok(format!(
        "run {:.1}s, {}, XCom stored, {rows} SUCCESS rows",
        out.elapsed.as_secs_f64(),
        q_to_run(&out)
    ))
}

/// 20 independent tasks all succeed.
pub async fn parallel_dag(stack: &Stack) -> Result<(String, RunOutcome)> {
    let run = stack.trigger(PARALLEL, json!({})).await?;
    let out = stack
        .db
        .wait_run(PARALLEL, &run, Duration::from_secs(240))
        .await?;
    let ok = out
        .tis
        .iter()
        .filter(|t| t.state.as_deref() == Some("success"))
        .count();
    ensure!(
        out.state == "success" && ok == 20,
        "run {}, {ok}/20 success: {}",
        out.state,
        out.states()
    );
    results_terminal(stack, PARALLEL, &run, Duration::from_secs(30)).await?;
    let s = format!(
        "20/20 success, run {:.1}s, span {:.1}s, {}",
        out.elapsed.as_secs_f64(),
        span(&out),
        q_to_run(&out)
    );
    Ok((s, out))
}

/// `boom` ends failed; `flaky` goes through up_for_retry and succeeds on try 2.
pub async fn failure_and_retry(stack: &Stack) -> Result<String> {
    let run = stack.trigger(FAIL, json!({})).await?;
    let out = stack
        .db
        .wait_run(FAIL, &run, Duration::from_secs(180))
        .await?;
    ensure!(
        out.state == "failed",
        "the run must fail (boom): {} {}",
        out.state,
        out.states()
    );
    let boom = out.ti("boom").context("no boom TI")?;
    ensure!(
        boom.state.as_deref() == Some("failed"),
        "boom: {:?}",
        boom.state
    );
    let flaky = out.ti("flaky").context("no flaky TI")?;
    ensure!(
        flaky.state.as_deref() == Some("success") && flaky.try_number == 2,
        "flaky: {:?} try {}",
        flaky.state,
        flaky.try_number
    );
    let history = stack.db.history(FAIL, &run, "flaky").await?;
    let polled = out
        .seen
        .contains(&("flaky".to_owned(), "up_for_retry".to_owned()));
    let recorded = history
        .iter()
        .any(|(n, s)| *n == 1 && s.as_deref() == Some("up_for_retry"));
    ensure!(
        polled || recorded,
        "flaky never seen up_for_retry (polled states {:?}, history {history:?})",
        out.seen
    );
    let rows = results_terminal(stack, FAIL, &run, Duration::from_secs(30)).await?;
    Ok(format!("boom failed, flaky up_for_retry (polled {polled}, history {history:?}) then success on try 2, {rows} terminal rows"))
}

/// The broker holds nothing for the queue any more (Redis: list and unacked).
async fn broker_empty(stack: &Stack) -> Result<()> {
    if stack.kind != BrokerKind::Redis {
        return Ok(());
    }
    let mut conn = redis_conn(REDIS_DB).await;
    let len: i64 = redis::cmd("LLEN")
        .arg(&stack.queue)
        .query_async(&mut conn)
        .await?;
    let unacked: Vec<String> = redis::cmd("HVALS")
        .arg("unacked")
        .query_async(&mut conn)
        .await?;
    let ours = unacked.iter().filter(|v| v.contains(&stack.queue)).count();
    ensure!(
        len == 0 && ours == 0,
        "Redis still holds {len} queued and {ours} unacked message(s) of {}",
        stack.queue
    );
    Ok(())
}

/// SIGTERM while a 30 s task runs: the worker stops taking work, lets the
/// task finish, writes SUCCESS, exits 0; nothing stays queued or unacked.
pub async fn sigterm_drains(stack: &Stack, worker: &mut Worker) -> Result<String> {
    let run = stack.trigger(SLEEP, json!({"seconds": 30})).await?;
    let ti = stack
        .db
        .wait_ti(SLEEP, &run, "sleep", "running", Duration::from_secs(120))
        .await?;
    let t = Instant::now();
    worker.sigterm()?;
    let status = worker.wait_exit(Duration::from_secs(120)).await;
    let exited_after = t.elapsed().as_secs_f64();
    ensure!(
        status.is_some(),
        "the worker did not exit within 120s of SIGTERM\n{}",
        worker.tail()
    );
    let status = status.unwrap();
    let out = stack
        .db
        .wait_run(SLEEP, &run, Duration::from_secs(60))
        .await?;
    let sleep = out.ti("sleep").context("no sleep TI")?;
    ensure!(
        sleep.state.as_deref() == Some("success"),
        "the drained task ended {:?}, not success\n{}",
        sleep.state,
        worker.tail()
    );
    ensure!(
        status.success(),
        "worker exit status after SIGTERM: {status}\n{}",
        worker.tail()
    );
    ensure!(
        exited_after > 20.0,
        "the worker exited {exited_after:.1}s after SIGTERM: before the 30s task could finish"
    );
    let ids = stack.db.external_ids(SLEEP, &run).await?;
    let rows = stack.db.taskmeta(&ids).await?;
    ensure!(
        rows.iter().all(|(_, s)| s == "SUCCESS"),
        "result rows after the drain: {rows:?}"
    );
    broker_empty(stack).await?;
    let _ = ti;
    Ok(format!("task success, worker exited 0 {exited_after:.1}s after SIGTERM, rows {rows:?}, broker empty"))
}

/// `kill -9` of the worker while a 20 s task runs; a new worker must get the
/// message again (visibility timeout 10 s on Redis; requeue on connection
/// loss on RabbitMQ), the TI must end terminal, every result row must be
/// terminal and the scheduler's `executor.running` must drain. All three are
/// evaluated and reported together.
pub async fn kill9_recovers(stack: &Stack, worker: &mut Worker) -> Result<(String, Worker)> {
    let run = stack.trigger(SLEEP, json!({"seconds": 20})).await?;
    let ti = stack
        .db
        .wait_ti(SLEEP, &run, "sleep", "running", Duration::from_secs(120))
        .await?;
    let old_log = worker.proc.log.clone();
    worker.kill9();
    let killed = Instant::now();
    let new = stack.start_celeriac(&[]).await?;
    let id = ti
        .external_executor_id
        .clone()
        .context("running TI without external_executor_id")?;
    let out = stack
        .db
        .wait_run(SLEEP, &run, Duration::from_secs(150))
        .await;
    let ti_after = killed.elapsed().as_secs_f64();
    let new_log = std::fs::read_to_string(&new.proc.log).unwrap_or_default();
    let redelivered = new_log.contains(&id);
    let ignored = new_log.contains("TaskAlreadyRunningError");
    let mut problems = Vec::new();
    let ti_state = match &out {
        Ok(o) => o.ti("sleep").map(|t| {
            format!(
                "{} (try {})",
                t.state.as_deref().unwrap_or("none"),
                t.try_number
            )
        }),
        Err(e) => {
            problems.push(format!("TI not terminal: {e:#}"));
            None
        }
    };
    if !redelivered {
        problems.push("the message was not redelivered to the new worker".into());
    }
    let rows = results_terminal(stack, SLEEP, &run, Duration::from_secs(30)).await;
    if let Err(e) = &rows {
        problems.push(format!("{e:#}"));
    }
    let drained = stack.wait_executor_drained(Duration::from_secs(60)).await;
    if let Err(e) = &drained {
        problems.push(format!("{e:#}"));
    }
    let facts = format!(
        "TI {} {ti_after:.1}s after the kill; redelivered to the new worker: {redelivered}; \
         duplicate saw TaskAlreadyRunningError: {ignored}; executor.running drained: {}",
        ti_state.as_deref().unwrap_or("?"),
        drained.is_ok()
    );
    if !problems.is_empty() {
        bail!(
            "{facts}\n  - {}\n{}\n{}",
            problems.join("\n  - "),
            super::proc::tail(&old_log, 15),
            new.tail()
        );
    }
    Ok((facts, new))
}
