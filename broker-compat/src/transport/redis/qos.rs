//! Client-side QoS, as kombu's `virtual.QoS.can_consume`: no new pop while
//! `delivered - settled >= prefetch` (0 = unlimited).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Qos {
    prefetch: AtomicU32,
    in_flight: AtomicU64,
    /// Woken when a slot frees up or the limit changes.
    pub(crate) changed: Notify,
}

impl Qos {
    pub(crate) fn new(prefetch: u16) -> Self {
        let q = Qos::default();
        q.prefetch.store(prefetch.into(), Ordering::SeqCst);
        q
    }

    pub(crate) fn can_consume(&self) -> bool {
        let p = u64::from(self.prefetch.load(Ordering::SeqCst));
        p == 0 || self.in_flight.load(Ordering::SeqCst) < p
    }

    /// How many messages the next pop may take: the free slots, but at most
    /// half the prefetch window (and `cap`; `cap` when unlimited). Half, so
    /// that two batches are in flight: Redis pops the next one while the
    /// worker processes the last, instead of each waiting for the other.
    pub(crate) fn available(&self, cap: usize) -> usize {
        let p = u64::from(self.prefetch.load(Ordering::SeqCst));
        if p == 0 {
            return cap;
        }
        let free = p.saturating_sub(self.in_flight.load(Ordering::SeqCst));
        let half = p.div_ceil(2);
        usize::try_from(free.min(half)).unwrap_or(cap).min(cap)
    }

    pub(crate) fn set_prefetch(&self, prefetch: u16) {
        self.prefetch.store(prefetch.into(), Ordering::SeqCst);
        self.changed.notify_one();
    }

    pub(crate) fn delivered(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn settled(&self) {
        // Saturating: a settle can never make the count wrap.
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::Qos;

    #[test]
    fn a_pop_takes_at_most_half_the_window_and_never_more_than_is_free() {
        let q = Qos::new(8);
        assert_eq!(q.available(16), 4, "half of 8");
        for _ in 0..6 {
            q.delivered();
        }
        assert_eq!(q.available(16), 2, "only 2 free");
        assert!(q.can_consume());
        q.delivered();
        q.delivered();
        assert!(!q.can_consume() && q.available(16) == 0);
        q.settled();
        assert_eq!(q.available(16), 1);
        assert_eq!(Qos::new(1).available(16), 1, "a window of 1 still pops 1");
        assert_eq!(Qos::new(0).available(16), 16, "unlimited: the cap");
        assert_eq!(
            Qos::new(64).available(16),
            16,
            "the cap bounds a large window"
        );
    }
}
