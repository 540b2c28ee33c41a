//! Measurements for bench/airflow.md: queued→running and span of the
//! 20-task DAG, and the memory of a worker's whole process tree (the worker,
//! its pool or warm Python servers, and the task processes they run).

use std::collections::BTreeMap;
use std::fs;

use super::metadb::{RunOutcome, Ti};

/// Linux's fixed `USER_HZ`: the unit of the times in `/proc/<pid>/stat`.
const USER_HZ: f64 = 100.0;

/// `(rss_kib, pss_kib, processes)` summed over `root` and its descendants.
pub fn tree_memory(root: i32) -> (u64, u64, usize) {
    let (mut rss, mut pss, mut n) = (0, 0, 0);
    for pid in tree(root) {
        rss += field_kib(&format!("/proc/{pid}/status"), "VmRSS:");
        pss += field_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        n += 1;
    }
    (rss, pss, n)
}

/// CPU seconds (user + system) used so far by `root`'s tree: each live
/// process's own time plus that of its children already reaped (task
/// processes that ended count in their parent's `cutime`/`cstime`).
pub fn tree_cpu(root: i32) -> f64 {
    tree(root).into_iter().map(|pid| cpu(pid, true)).sum()
}

/// CPU seconds of `pid` itself (`with_reaped`: plus its reaped children).
pub fn cpu(pid: i32, with_reaped: bool) -> f64 {
    let ticks = || -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        // utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after the name.
        let n = if with_reaped { 4 } else { 2 };
        Some(
            fields
                .get(11..11 + n)?
                .iter()
                .filter_map(|f| f.parse::<u64>().ok())
                .sum(),
        )
    };
    ticks().unwrap_or(0) as f64 / USER_HZ
}

/// Busy CPU seconds of the whole machine so far (every process: the
/// Airflow api-server and scheduler too), from the first line of /proc/stat.
pub fn machine_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle, iowait.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / USER_HZ
}

/// `root` and all its descendants.
fn tree(root: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for pid in all_pids() {
        if let Some(ppid) = ppid(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        out.push(pid);
        stack.extend(children.get(&pid).cloned().unwrap_or_default());
    }
    out
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn field_kib(path: &str, name: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One run of the 20-task DAG: per-TI queued→running (min, median, max) and
/// start→end (median), the span (first queued → last end), the DAG run's
/// total, and the CPU seconds it cost.
pub struct RunNumbers {
    pub q_run_min: f64,
    pub q_run_median: f64,
    pub running_median: f64,
    pub span: f64,
    pub dag_run: f64,
    pub tree_cpu: f64,
    pub line: String,
}

impl RunNumbers {
    pub fn new(out: &RunOutcome, dag_run: f64, tree_cpu: f64, own_cpu: f64, machine: f64) -> Self {
        let q = out.queued_to_running();
        let running = median(out.tis.iter().filter_map(Ti::running).collect());
        let span = super::checks::span(out);
        let (q_min, q_max) = (
            q.first().copied().unwrap_or(f64::NAN),
            q.last().copied().unwrap_or(f64::NAN),
        );
        let q_median = median(q);
        let line = format!(
            "q→run min {q_min:.3}s median {q_median:.2}s max {q_max:.2}s; running (start→end) median {running:.3}s; span {span:.1}s; DAG run {dag_run:.1}s; CPU worker tree {tree_cpu:.2}s (main process {own_cpu:.2}s), machine {machine:.1}s; {}",
            out.state
        );
        RunNumbers {
            q_run_min: q_min,
            q_run_median: q_median,
            running_median: running,
            span,
            dag_run,
            tree_cpu,
            line,
        }
    }
}

/// The middle value (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
