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

/// Measurements for bench/airflow.md (by hand, one machine):
/// `cargo test --release -p celeriac-worker --test e2e_airflow -- --ignored --nocapture bench_`
///
/// Concurrency 2: `CELERIAC_BENCH_RUNS` rounds (default 3), each starting
/// celeriac-worker and then `airflow celery worker` for one run of the
/// 20-task DAG, so that both see the same drift of a shared machine; then
/// the medians over the rounds. Concurrency 16: memory idle and with 16
/// tasks running (`CELERIAC_BENCH_ONLY=c2` skips it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement for bench/airflow.md, run by hand"]
async fn bench_celeriac_vs_python_worker() {
    use e2e_support::bench::{median, RunNumbers};
    let stack = Stack::start(BrokerKind::Redis, ResultTable::CreatedByAirflowCelery, &[])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let only_c2 = std::env::var("CELERIAC_BENCH_ONLY").is_ok_and(|v| v == "c2");
    let rounds: usize = std::env::var("CELERIAC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut report = Vec::new();
    let mut numbers: [Vec<RunNumbers>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for python in [false, true] {
            let mut w = bench_worker(&stack, python, 2).await;
            let n = bench_parallel_run(&stack, &w).await;
            report.push(format!(
                "{} c=2 round {round}: {}",
                worker_name(python),
                n.line
            ));
            numbers[usize::from(python)].push(n);
            stop_bench_worker(&mut w, python).await;
        }
    }
    for python in [false, true] {
        let runs = &numbers[usize::from(python)];
        let m = |f: fn(&RunNumbers) -> f64| median(runs.iter().map(f).collect());
        report.push(format!(
            "{} c=2, median of {} rounds: q→run min {:.3}s, median {:.2}s; running median {:.3}s; span {:.1}s; DAG run {:.1}s; CPU worker tree {:.2}s",
            worker_name(python),
            runs.len(),
            m(|n| n.q_run_min),
            m(|n| n.q_run_median),
            m(|n| n.running_median),
            m(|n| n.span),
            m(|n| n.dag_run),
            m(|n| n.tree_cpu),
        ));
    }
    if !only_c2 {
        for python in [false, true] {
            let mut w = bench_worker(&stack, python, 16).await;
            report.extend(bench_memory_16(&stack, &w, worker_name(python)).await);
            stop_bench_worker(&mut w, python).await;
        }
    }
    eprintln!("[bench]\n{}", report.join("\n"));
}

fn worker_name(python: bool) -> &'static str {
    if python {
        "airflow celery worker"
    } else {
        "celeriac-worker"
    }
}

/// A started worker that ran one warm-up DAG.
async fn bench_worker(stack: &Stack, python: bool, concurrency: usize) -> Worker {
    let w = if python {
        stack.start_python_worker(concurrency).await
    } else {
        let c = concurrency.to_string();
        stack
            .start_celeriac(&[("AIRFLOW__CELERY__WORKER_CONCURRENCY", c.as_str())])
            .await
    }
    .unwrap_or_else(|e| panic!("{e:#}"));
    let warm = stack
        .trigger("celeriac_e2e_simple", serde_json::json!({}))
        .await
        .unwrap();
    stack
        .db
        .wait_run("celeriac_e2e_simple", &warm, Duration::from_secs(180))
        .await
        .unwrap();
    w
}

async fn stop_bench_worker(w: &mut Worker, python: bool) {
    w.sigterm().unwrap();
    assert!(
        w.wait_exit(Duration::from_secs(120)).await.is_some(),
        "{} did not stop\n{}",
        worker_name(python),
        w.tail()
    );
}

/// One run of the 20-task DAG, with the CPU it cost.
async fn bench_parallel_run(stack: &Stack, w: &Worker) -> e2e_support::bench::RunNumbers {
    use e2e_support::bench::{cpu, machine_cpu, tree_cpu, RunNumbers};
    let pid = w.proc.pid();
    let (cpu0, own0, all0) = (tree_cpu(pid), cpu(pid, false), machine_cpu());
    let run = stack
        .trigger("celeriac_e2e_parallel", serde_json::json!({}))
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
    RunNumbers::new(&out, total, tree, own, all)
}

/// Memory idle and at the peak of 16 tasks running at once.
async fn bench_memory_16(stack: &Stack, w: &Worker, name: &str) -> Vec<String> {
    use e2e_support::bench::tree_memory;
    let mut report = Vec::new();
    let (rss, pss, n) = tree_memory(w.proc.pid());
    report.push(format!(
        "{name} c=16 idle: RSS {} MiB, PSS {} MiB, {n} processes",
        rss / 1024,
        pss / 1024
    ));
    let run = stack
        .trigger("celeriac_e2e_busy16", serde_json::json!({"seconds": 20}))
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
    report
}
