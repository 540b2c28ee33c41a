//! The policy: table tests of each rule, property tests of its invariants.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use celeriac_scaler::policy::{decide, Decision, History, PolicyConfig, PolicyInput, Reason};
use proptest::prelude::*;

fn cfg() -> PolicyConfig {
    PolicyConfig {
        concurrency: 2,
        min_replicas: 0,
        max_replicas: 10,
        idle_replicas: None,
        fallback_replicas: 2,
        cooldown: Duration::from_secs(30),
        stabilization: Duration::from_secs(60),
        max_step_up: None,
    }
}

fn input(running: u64, queued: u64, current: u32) -> PolicyInput {
    PolicyInput {
        running,
        queued,
        busy_workers: None,
        current,
        source_error: false,
    }
}

/// Decide at `t0 + at` from a history started at `t0` with `current`.
fn one(cfg: &PolicyConfig, i: PolicyInput, at: u64) -> Decision {
    let t0 = Instant::now();
    let h = History::new(t0, i.current);
    decide(cfg, &i, &h, t0 + Duration::from_secs(at))
}

#[test]
fn table() {
    let c = cfg();
    let err = PolicyInput {
        source_error: true,
        ..input(0, 0, 0)
    };
    let busy = PolicyInput {
        busy_workers: Some(4),
        ..input(1, 0, 5)
    };
    let stepped = PolicyConfig {
        max_step_up: Some(2),
        ..cfg()
    };
    let idle = PolicyConfig {
        min_replicas: 2,
        idle_replicas: Some(0),
        ..cfg()
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, &PolicyConfig, PolicyInput, u64, u32, Reason)> = vec![
        ("spec §8: 22 queued, c=2 -> 11, capped at 10", &c, input(0, 22, 0), 0, 10, Reason::ScaleUp),
        ("2 running + 3 queued -> ceil(5/2) = 3", &c, input(2, 3, 0), 0, 3, Reason::ScaleUp),
        ("matching load is steady", &c, input(2, 3, 3), 0, 3, Reason::Steady),
        ("one task still needs a worker", &c, input(1, 0, 0), 0, 1, Reason::ScaleUp),
        ("up is limited by the step", &stepped, input(0, 20, 1), 0, 3, Reason::ScaleUp),
        ("down waits for the window", &c, input(1, 0, 5), 10, 5, Reason::Stabilizing),
        ("down after the window", &c, input(1, 0, 5), 61, 1, Reason::ScaleDown),
        ("busy workers hold scale-in", &c, busy, 61, 4, Reason::ScaleDown),
        ("zero load holds during cooldown", &c, input(0, 0, 4), 10, 4, Reason::Cooldown),
        ("zero load goes idle after cooldown", &c, input(0, 0, 4), 31, 0, Reason::Idle),
        ("idleReplicaCount below min", &idle, input(0, 0, 3), 31, 0, Reason::Idle),
        ("active with idle count uses min", &idle, input(1, 0, 0), 0, 2, Reason::ScaleUp),
        ("already idle stays idle", &c, input(0, 0, 0), 0, 0, Reason::Steady),
        ("source error: fallback from zero", &c, err, 0, 2, Reason::SourceErrorFallback),
        ("source error: never below current", &c, PolicyInput { current: 7, ..err }, 0, 7, Reason::SourceErrorFallback),
        ("above max comes down to max", &c, input(0, 100, 14), 0, 10, Reason::ScaleDown),
    ];
    for (name, cfg, i, at, want, reason) in cases {
        let d = one(cfg, i, at);
        assert_eq!((d.desired, d.reason), (want, reason), "{name}");
    }
}

#[test]
fn reasons_serialize_as_their_names() {
    for r in Reason::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
}

#[test]
fn busy_workers_block_the_scale_in_the_window_would_allow() {
    let c = cfg();
    let i = PolicyInput {
        busy_workers: Some(5),
        ..input(1, 0, 5)
    };
    let d = one(&c, i, 61);
    assert_eq!((d.desired, d.reason), (5, Reason::BusyWorkers));
}

#[test]
fn load_rising_never_scales_down() {
    let c = cfg();
    let t0 = Instant::now();
    let mut h = History::new(t0, 8);
    let first = input(1, 0, 8);
    let later = t0 + Duration::from_secs(120);
    let d = decide(&c, &first, &h, later);
    assert_eq!(d.reason, Reason::ScaleDown);
    h.record(&c, &first, &d, later);
    let rising = input(2, 1, 8);
    let d = decide(&c, &rising, &h, later + Duration::from_secs(120));
    assert_eq!((d.desired, d.reason), (8, Reason::LoadRising));
}

#[test]
fn a_failed_poll_restarts_the_cooldown() {
    let c = cfg();
    let t0 = Instant::now();
    let mut h = History::new(t0, 3);
    let at = |s| t0 + Duration::from_secs(s);
    let err = PolicyInput {
        source_error: true,
        ..input(0, 0, 3)
    };
    let d = decide(&c, &err, &h, at(25));
    h.record(&c, &err, &d, at(25));
    let d = decide(&c, &input(0, 0, 3), &h, at(40));
    assert_eq!(d.reason, Reason::Cooldown, "only 15 s of known-zero load");
    let d = decide(&c, &input(0, 0, 3), &h, at(56));
    assert_eq!((d.desired, d.reason), (0, Reason::Idle));
}

#[derive(Debug, Clone)]
struct Step {
    running: u64,
    queued: u64,
    busy: Option<u32>,
    error: bool,
    dt: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u64..60,
        0u64..60,
        proptest::option::of(0u32..15),
        proptest::bool::weighted(0.1),
        1u64..40,
    )
        .prop_map(|(running, queued, busy, error, dt)| Step {
            running,
            queued,
            busy,
            error,
            dt,
        })
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (
        1u32..8,
        0u32..4,
        1u32..20,
        proptest::option::of(0u32..3),
        0u32..20,
        0u64..90,
        0u64..200,
        proptest::option::of(1u32..5),
    )
        .prop_filter_map(
            "valid bounds",
            |(conc, min, span, idle, fb, cool, stab, step)| {
                let max = min + span;
                let idle = idle.filter(|i| *i < min);
                Some(PolicyConfig {
                    concurrency: conc,
                    min_replicas: min,
                    max_replicas: max,
                    idle_replicas: idle,
                    fallback_replicas: fb.min(max),
                    cooldown: Duration::from_secs(cool),
                    stabilization: Duration::from_secs(stab),
                    max_step_up: step,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Run a random sequence, with the target following each decision.
    #[test]
    fn invariants_hold_over_any_sequence(cfg in config(), start in 0u32..25, steps in prop::collection::vec(step(), 1..40)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut current = start;
        let mut h = History::new(t0, current);
        let mut last_load: Option<u64> = None;
        for s in steps {
            now += Duration::from_secs(s.dt);
            let i = PolicyInput { running: s.running, queued: s.queued, busy_workers: s.busy, current, source_error: s.error };
            let d = decide(&cfg, &i, &h, now);
            let idle = cfg.idle_target();
            // Bounds: [min, max], or exactly the idle count.
            prop_assert!(d.desired <= cfg.max_replicas, "{d:?} above max");
            prop_assert!(d.desired >= cfg.min_replicas || d.desired == idle, "{d:?} below min");
            let held = current.min(cfg.max_replicas);
            if s.error {
                prop_assert!(d.desired >= held && d.desired >= cfg.fallback_replicas, "error scaled down: {d:?}");
            } else {
                let load = s.running + s.queued;
                if last_load.is_some_and(|l| load > l) {
                    prop_assert!(d.desired >= held, "down while load rises: {d:?}");
                }
                if load > 0 {
                    prop_assert!(d.desired >= 1, "no worker for {load} tasks");
                    if let Some(b) = s.busy {
                        prop_assert!(d.desired >= b.min(cfg.max_replicas).min(held.max(d.desired)), "below busy");
                    }
                }
                if let Some(step) = cfg.max_step_up {
                    prop_assert!(d.desired <= current.saturating_add(step).max(cfg.min_replicas), "step exceeded");
                }
                last_load = Some(load);
            }
            h.record(&cfg, &i, &d, now);
            current = d.desired;
        }
    }

    /// Busy workers are never scaled away while there is load.
    #[test]
    fn never_below_busy_workers(cfg in config(), current in 0u32..25, busy in 0u32..25, load in 1u64..100, at in 0u64..500) {
        let i = PolicyInput { running: load, queued: 0, busy_workers: Some(busy), current, source_error: false };
        let t0 = Instant::now();
        let d = decide(&cfg, &i, &History::new(t0, current), t0 + Duration::from_secs(at));
        let floor = busy.min(current).min(cfg.max_replicas);
        prop_assert!(d.desired >= floor, "{d:?} below busy {busy} (current {current})");
    }

    /// Constant load converges to exactly ceil(load / concurrency) within bounds.
    #[test]
    fn constant_load_converges(cfg in config(), start in 0u32..25, load in 1u64..200) {
        let t0 = Instant::now();
        let mut h = History::new(t0, start);
        let mut current = start;
        let mut now = t0;
        for _ in 0..60 {
            now += cfg.stabilization / 4 + Duration::from_secs(1);
            let i = PolicyInput { running: 0, queued: load, busy_workers: None, current, source_error: false };
            let d = decide(&cfg, &i, &h, now);
            h.record(&cfg, &i, &d, now);
            current = d.desired;
        }
        let want = u32::try_from(load.div_ceil(u64::from(cfg.concurrency))).unwrap().clamp(cfg.min_replicas, cfg.max_replicas);
        prop_assert_eq!(current, want);
    }
}
