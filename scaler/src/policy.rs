//! The scaling decision: a pure function of the observed load, the replica
//! count now, what was recommended recently and the clock. No I/O here, so
//! every rule is table- and property-tested (`tests/policy.rs`).
//!
//! Rules, in the order they apply:
//! 1. A source failed → hold at least the current count and at least the
//!    fallback count (KEDA's `fallback`), so a broken query never scales to zero.
//! 2. No load and no busy worker for `cooldown` → the idle count
//!    (`idleReplicaCount`, else `minReplicaCount`), as KEDA deactivates.
//! 3. Otherwise the recommendation is `ceil((running + queued) / concurrency)`,
//!    raised to the busy-worker count and clamped to `[min, max]`.
//!    Up: immediately (at most `max_step_up` at once). Down: only to the
//!    highest recommendation of the stabilization window (the HPA's rule), and
//!    never while the load is rising.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The bounds and timings, validated once from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Tasks one worker runs at once (`worker_concurrency`).
    pub concurrency: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Replicas while inactive (KEDA `idleReplicaCount`); `None` = `min_replicas`.
    pub idle_replicas: Option<u32>,
    /// Replicas to hold at least while a source fails.
    pub fallback_replicas: u32,
    /// Zero load this long before going idle (KEDA `cooldownPeriod`).
    pub cooldown: Duration,
    /// Scale down only to the highest recommendation of this window.
    pub stabilization: Duration,
    /// At most this many replicas added per decision.
    pub max_step_up: Option<u32>,
}

impl PolicyConfig {
    /// What the deployment scales to when nothing is left to do.
    pub fn idle_target(&self) -> u32 {
        self.idle_replicas.unwrap_or(self.min_replicas)
    }
}

/// One observation, merged over the load sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyInput {
    pub running: u64,
    pub queued: u64,
    /// Workers with a task active or reserved, when the workers source knows.
    pub busy_workers: Option<u32>,
    /// Replicas the target has now.
    pub current: u32,
    /// At least one load source failed this poll.
    pub source_error: bool,
}

impl PolicyInput {
    pub fn load(&self) -> u64 {
        self.running.saturating_add(self.queued)
    }

    fn active(&self) -> bool {
        self.load() > 0 || self.busy_workers.unwrap_or(0) > 0
    }
}

/// Why the decision is what it is: a fixed vocabulary (logs, JSON, metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ScaleUp,
    ScaleDown,
    Steady,
    Stabilizing,
    LoadRising,
    BusyWorkers,
    Cooldown,
    Idle,
    SourceErrorFallback,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::ScaleUp,
        Reason::ScaleDown,
        Reason::Steady,
        Reason::Stabilizing,
        Reason::LoadRising,
        Reason::BusyWorkers,
        Reason::Cooldown,
        Reason::Idle,
        Reason::SourceErrorFallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ScaleUp => "scale_up",
            Reason::ScaleDown => "scale_down",
            Reason::Steady => "steady",
            Reason::Stabilizing => "stabilizing",
            Reason::LoadRising => "load_rising",
            Reason::BusyWorkers => "busy_workers",
            Reason::Cooldown => "cooldown",
            Reason::Idle => "idle",
            Reason::SourceErrorFallback => "source_error_fallback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub desired: u32,
    pub reason: Reason,
    /// The unstabilized recommendation (what the window remembers); `None`
    /// when there was nothing to recommend (source error, inactive).
    pub recommendation: Option<u32>,
}

/// What the policy remembers between decisions. Starts "active" so a
/// restarted scaler waits a full cooldown and window before scaling in.
#[derive(Debug, Clone)]
pub struct History {
    recommendations: VecDeque<(Instant, u32)>,
    last_active: Instant,
    last_load: Option<u64>,
}

impl History {
    /// Seeded with the current replica count as if it had just been recommended.
    pub fn new(now: Instant, current: u32) -> Self {
        History {
            recommendations: VecDeque::from([(now, current)]),
            last_active: now,
            last_load: None,
        }
    }

    /// Remember this decision (call after each [`decide`]).
    pub fn record(&mut self, cfg: &PolicyConfig, input: &PolicyInput, d: &Decision, now: Instant) {
        // An error is not known-zero load: it restarts the cooldown.
        if input.source_error || input.active() {
            self.last_active = now;
        }
        if !input.source_error {
            self.last_load = Some(input.load());
        }
        if let Some(rec) = d.recommendation {
            self.recommendations.push_back((now, rec));
        }
        while let Some(&(t, _)) = self.recommendations.front() {
            if now.saturating_duration_since(t) >= cfg.stabilization {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
    }

    fn window_max(&self, cfg: &PolicyConfig, now: Instant) -> u32 {
        self.recommendations
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) < cfg.stabilization)
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(0)
    }

    fn load_rising(&self, input: &PolicyInput) -> bool {
        self.last_load.is_some_and(|l| input.load() > l)
    }
}

/// The decision for this poll.
pub fn decide(
    cfg: &PolicyConfig,
    input: &PolicyInput,
    history: &History,
    now: Instant,
) -> Decision {
    let (min, max) = (cfg.min_replicas, cfg.max_replicas);
    if input.source_error {
        let desired = input.current.max(cfg.fallback_replicas).clamp(min, max);
        return decision(desired, Reason::SourceErrorFallback, None);
    }
    if !input.active() {
        return inactive(cfg, input, history, now);
    }
    let raw = ceil_div(input.load(), cfg.concurrency).max(1);
    let by_load = raw.clamp(min, max);
    let rec = raw.max(input.busy_workers.unwrap_or(0)).clamp(min, max);
    let current = input.current;
    if rec > current {
        let stepped = cfg
            .max_step_up
            .map_or(rec, |step| rec.min(current.saturating_add(step)));
        return decision(stepped.clamp(min, max), Reason::ScaleUp, Some(rec));
    }
    if rec == current {
        let reason = if by_load < rec {
            Reason::BusyWorkers
        } else {
            Reason::Steady
        };
        return decision(current, reason, Some(rec));
    }
    if history.load_rising(input) {
        return decision(current.min(max), Reason::LoadRising, Some(rec));
    }
    let stabilized = history.window_max(cfg, now).max(rec).min(current).min(max);
    let reason = if stabilized < current {
        Reason::ScaleDown
    } else if by_load < rec {
        Reason::BusyWorkers
    } else {
        Reason::Stabilizing
    };
    decision(stabilized, reason, Some(rec))
}

/// No load and no busy worker: hold during the cooldown, then go idle.
fn inactive(cfg: &PolicyConfig, input: &PolicyInput, history: &History, now: Instant) -> Decision {
    let idle = cfg.idle_target();
    let current = input.current;
    if current <= idle {
        // Already idle (or below it after a manual change): settle on the idle count.
        let reason = if current == idle {
            Reason::Steady
        } else {
            Reason::ScaleUp
        };
        return decision(idle, reason, None);
    }
    if now.saturating_duration_since(history.last_active) >= cfg.cooldown {
        return decision(idle, Reason::Idle, None);
    }
    let held = current.clamp(cfg.min_replicas, cfg.max_replicas);
    decision(held, Reason::Cooldown, None)
}

fn decision(desired: u32, reason: Reason, recommendation: Option<u32>) -> Decision {
    Decision {
        desired,
        reason,
        recommendation,
    }
}

/// `ceil(load / concurrency)`, saturating at `u32::MAX`.
pub fn ceil_div(load: u64, concurrency: u32) -> u32 {
    let c = u64::from(concurrency.max(1));
    u32::try_from(load.div_ceil(c)).unwrap_or(u32::MAX)
}
