//! End to end: a real Airflow 3.3 (api-server, scheduler, dag-processor,
//! CeleryExecutor) on this machine's PostgreSQL and Redis or RabbitMQ, with
//! celeriac-worker as its ONLY worker, started from the same `AIRFLOW__*`
//! environment as the Airflow processes (as an operator swaps it in for
//! `airflow celery worker`). One stack per broker; the checks run in order
//! on it and all are reported, with the logs' tails on failure.
//!
//! Redis runs a fresh deployment (the worker creates `celery_taskmeta`);
//! RabbitMQ the swap-in (the table was created by Airflow's own Celery, as
//! where `airflow celery worker` ran before).
//!
//! Needs the Airflow venv (`tests/airflow/install.sh`, cached in the target
//! dir; PyPI on first use), Redis, RabbitMQ and PostgreSQL.
//! `cargo test -p celeriac-worker --test e2e_airflow -- --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::checks::{self, Suite};
use e2e_support::stack::{BrokerKind, ResultTable, Stack};
use e2e_support::workers::Worker;

/// Start a worker if the previous check left none running.
async fn ensure_worker(stack: &Stack, worker: &mut Option<Worker>) -> anyhow::Result<()> {
    if let Some(w) = worker.as_mut() {
        if w.proc.exited().is_none() {
            return Ok(());
        }
    }
    *worker = Some(stack.start_celeriac(&[]).await?);
    Ok(())
}

fn finish(kind: BrokerKind, suite: &Suite, stack: &Stack, started: Instant) {
    eprintln!(
        "[e2e] {kind:?} suite: {:.1}s\n{}",
        started.elapsed().as_secs_f64(),
        suite.table()
    );
    let failures = suite.failures();
    if !failures.is_empty() {
        panic!(
            "{} check(s) failed on {kind:?}:\n{}\n{}",
            failures.len(),
            failures.join("\n"),
            stack.tails()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_on_redis() {
    let started = Instant::now();
    let stack = Stack::start(BrokerKind::Redis, ResultTable::CreatedByWorker, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut suite = Suite::default();
    let mut worker = None;
    let t = Instant::now();
    if let Err(e) = ensure_worker(&stack, &mut worker).await {
        suite.record("worker starts from the AIRFLOW__ environment", t, Err(e));
        return finish(BrokerKind::Redis, &suite, &stack, started);
    }

    let t = Instant::now();
    suite.record(
        "two-task DAG, XCom stored",
        t,
        checks::two_task_dag(&stack).await,
    );
    let t = Instant::now();
    suite.record(
        "20 parallel tasks",
        t,
        checks::parallel_dag(&stack).await.map(|r| r.0),
    );
    let t = Instant::now();
    suite.record(
        "failed task, retry via up_for_retry",
        t,
        checks::failure_and_retry(&stack).await,
    );

    let t = Instant::now();
    let r = match ensure_worker(&stack, &mut worker).await {
        Ok(()) => checks::sigterm_drains(&stack, worker.as_mut().unwrap()).await,
        Err(e) => Err(e),
    };
    suite.record("SIGTERM drains a 30s task", t, r);

    let t = Instant::now();
    let r = match ensure_worker(&stack, &mut worker).await {
        Ok(()) => checks::kill9_recovers(&stack, worker.as_mut().unwrap()).await,
        Err(e) => Err(e),
    };
    let r = r.map(|(s, w)| {
        worker = Some(w);
        s
    });
    suite.record("kill -9 mid-task recovered, no slot leaked", t, r);

    let t = Instant::now();
    let r = match ensure_worker(&stack, &mut worker).await {
        Ok(()) => checks::two_task_dag(&stack).await,
        Err(e) => Err(e),
    };
    suite.record("new tasks still scheduled afterwards", t, r);
    let t = Instant::now();
    suite.record(
        "executor.running drained at the end",
        t,
        stack
            .wait_executor_drained(Duration::from_secs(60))
            .await
            .map(|()| "0".into()),
    );
    finish(BrokerKind::Redis, &suite, &stack, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_on_rabbitmq() {
    let started = Instant::now();
    let stack = Stack::start(
        BrokerKind::RabbitMq,
        ResultTable::CreatedByAirflowCelery,
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut suite = Suite::default();
    let mut worker = None;
    let t = Instant::now();
    if let Err(e) = ensure_worker(&stack, &mut worker).await {
        suite.record("worker starts from the AIRFLOW__ environment", t, Err(e));
        return finish(BrokerKind::RabbitMq, &suite, &stack, started);
    }
    let t = Instant::now();
    suite.record(
        "two-task DAG, XCom stored",
        t,
        checks::two_task_dag(&stack).await,
    );

    let t = Instant::now();
    let r = match ensure_worker(&stack, &mut worker).await {
        Ok(()) => checks::kill9_recovers(&stack, worker.as_mut().unwrap()).await,
        Err(e) => Err(e),
    };
    let r = r.map(|(s, w)| {
        worker = Some(w);
        s
    });
    suite.record("kill -9 mid-task recovered, no slot leaked", t, r);

    let t = Instant::now();
    let r = match ensure_worker(&stack, &mut worker).await {
        Ok(()) => checks::two_task_dag(&stack).await,
        Err(e) => Err(e),
    };
    suite.record("new tasks still scheduled afterwards", t, r);
    finish(BrokerKind::RabbitMq, &suite, &stack, started);
}

/// Measurements for bench/airflow.md (by hand, one machine, one run):
/// `cargo test -p celeriac-worker --test e2e_airflow -- --ignored --nocapture bench_`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement for bench/airflow.md, run by hand"]
async fn bench_celeriac_vs_python_worker() {
    use e2e_support::bench::{cpu, latency, machine_cpu, tree_cpu, tree_memory};
    use serde_json::json;
    let stack = Stack::start(BrokerKind::Redis, ResultTable::CreatedByAirflowCelery, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut report = Vec::new();
    // CELERIAC_BENCH_ONLY=c2 skips the concurrency-16 memory runs;
    // CELERIAC_BENCH_RUNS sets the 20-task DAG runs per worker (default 2).
    let only_c2 = std::env::var("CELERIAC_BENCH_ONLY").is_ok_and(|v| v == "c2");
    let runs: usize = std::env::var("CELERIAC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for python in [false, true] {
        let name = if python {
            "airflow celery worker"
        } else {
            "celeriac-worker"
        };
        for concurrency in [2usize, 16] {
            if only_c2 && concurrency != 2 {
                continue;
            }
            let mut w = if python {
                stack.start_python_worker(concurrency).await
            } else {
                let c = concurrency.to_string();
                stack
                    .start_celeriac(&[("AIRFLOW__CELERY__WORKER_CONCURRENCY", c.as_str())])
                    .await
            }
            .unwrap_or_else(|e| panic!("{e:#}"));
            let warm = stack
                .trigger("celeriac_e2e_simple", json!({}))
                .await
                .unwrap();
            stack
                .db
                .wait_run("celeriac_e2e_simple", &warm, Duration::from_secs(180))
                .await
                .unwrap();
            let (rss, pss, n) = tree_memory(w.proc.pid());
            report.push(format!(
                "{name} c={concurrency} idle: RSS {} MiB, PSS {} MiB, {n} processes",
                rss / 1024,
                pss / 1024
            ));
            if concurrency == 2 {
                for i in 1..=runs {
                    let pid = w.proc.pid();
                    let (cpu0, own0, all0) = (tree_cpu(pid), cpu(pid, false), machine_cpu());
                    let run = stack
                        .trigger("celeriac_e2e_parallel", json!({}))
                        .await
                        .unwrap();
                    let out = stack
                        .db
                        .wait_run("celeriac_e2e_parallel", &run, Duration::from_secs(300))
                        .await
                        .unwrap();
                    let total = stack
                        .db
                        .run_total("celeriac_e2e_parallel", &run)
                        .await
                        .unwrap()
                        .unwrap_or(f64::NAN);
                    let tree = tree_cpu(pid) - cpu0;
                    let (own, all) = (cpu(pid, false) - own0, machine_cpu() - all0);
                    report.push(format!(
                        "{name} c=2 20 parallel #{i}: {}; DAG run {total:.1}s; CPU worker tree {tree:.1}s (main process {own:.2}s), machine {all:.1}s; {}",
                        latency(&out),
                        out.state
                    ));
                }
            } else {
                let run = stack
                    .trigger("celeriac_e2e_busy16", json!({"seconds": 20}))
                    .await
                    .unwrap();
                let (mut peak, mut busiest) = ((0, 0, 0), 0);
                loop {
                    let tis = stack.db.tis("celeriac_e2e_busy16", &run).await.unwrap();
                    let running = tis
                        .iter()
                        .filter(|t| t.state.as_deref() == Some("running"))
                        .count();
                    let m = tree_memory(w.proc.pid());
                    if m.0 > peak.0 {
                        peak = m;
                    }
                    busiest = busiest.max(running);
                    if e2e_support::metadb::terminal(
                        stack
                            .db
                            .run_state("celeriac_e2e_busy16", &run)
                            .await
                            .unwrap()
                            .as_deref(),
                    ) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                report.push(format!(
                    "{name} c=16 busy (peak, {busiest} TIs running at most): RSS {} MiB, PSS {} MiB, {} processes",
                    peak.0 / 1024,
                    peak.1 / 1024,
                    peak.2
                ));
            }
            w.sigterm().unwrap();
            assert!(
                w.wait_exit(Duration::from_secs(120)).await.is_some(),
                "{name} did not stop\n{}",
                w.tail()
            );
        }
    }
    eprintln!("[bench]\n{}", report.join("\n"));
}
