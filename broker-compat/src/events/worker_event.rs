//! `worker-online` / `worker-heartbeat` / `worker-offline` (§5.3), with the
//! fields `celery/worker/heartbeat.py` sends, in its order.

use serde_json::Value;

use super::event::Event;

pub const WORKER_ONLINE: &str = "worker-online";
pub const WORKER_HEARTBEAT: &str = "worker-heartbeat";
pub const WORKER_OFFLINE: &str = "worker-offline";

/// `sw_ident`, `sw_ver`, `sw_sys` (Celery's `SOFTWARE_INFO`), e.g.
/// `celeriac`, the crate version, `Linux`. Monitors accept any ident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Software {
    pub ident: String,
    pub version: String,
    pub system: String,
}

/// What a heartbeat reports about the worker at the moment it is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerStatus {
    /// Heartbeat interval in seconds (Celery: 2.0).
    pub freq: f64,
    /// Tasks executing now.
    pub active: u64,
    /// Tasks accepted since start.
    pub processed: u64,
    /// Raw 1/5/15-minute load averages; the library does no /proc I/O.
    pub loadavg: [f64; 3],
}

impl Event {
    pub fn worker_online(status: &WorkerStatus, sw: &Software) -> Event {
        worker_event(WORKER_ONLINE, status, sw)
    }

    pub fn worker_heartbeat(status: &WorkerStatus, sw: &Software) -> Event {
        worker_event(WORKER_HEARTBEAT, status, sw)
    }

    pub fn worker_offline(status: &WorkerStatus, sw: &Software) -> Event {
        worker_event(WORKER_OFFLINE, status, sw)
    }

    /// The heartbeat the `heartbeat` control command asks for: Celery sends
    /// `freq=5` (an int) and the software fields only.
    pub fn worker_heartbeat_requested(sw: &Software) -> Event {
        with_software(Event::new(WORKER_HEARTBEAT).with("freq", 5), sw)
    }
}

fn worker_event(event_type: &str, status: &WorkerStatus, sw: &Software) -> Event {
    let loadavg: Vec<Value> = status
        .loadavg
        .iter()
        .map(|l| Value::from(ceil2(*l)))
        .collect();
    let event = Event::new(event_type)
        .with("freq", status.freq)
        .with("active", status.active)
        .with("processed", status.processed)
        .with("loadavg", loadavg);
    with_software(event, sw)
}

fn with_software(event: Event, sw: &Software) -> Event {
    event
        .with("sw_ident", sw.ident.as_str())
        .with("sw_ver", sw.version.as_str())
        .with("sw_sys", sw.system.as_str())
}

/// `celery.utils.sysinfo.load_average`: `ceil(l * 1e2) / 1e2`, same float steps.
fn ceil2(load: f64) -> f64 {
    (load * 1e2).ceil() / 1e2
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_is_rounded_up_to_two_decimals() {
        assert_eq!(ceil2(0.591), 0.6);
        assert_eq!(ceil2(1.4), 1.4);
        assert_eq!(ceil2(1.421), 1.43);
        assert_eq!(ceil2(0.0), 0.0);
    }
}
