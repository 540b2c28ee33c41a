//! Lamport logical clock, as `kombu.clocks.LamportClock` keeps it.
//!
//! One clock is shared (behind an `Arc`) by everything a worker sends and
//! receives: events, control requests and replies, gossip and mingle.
//! Peers only use the value as an ordering hint, so relaxed atomics are
//! enough as long as each step is a single atomic read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct LamportClock {
    value: AtomicU64,
}

impl LamportClock {
    pub fn new(initial: u64) -> Self {
        LamportClock {
            value: AtomicU64::new(initial),
        }
    }

    /// A local event happened: `value += 1`, returns the new value.
    pub fn forward(&self) -> u64 {
        self.value.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// A message stamped `other` was received: `value = max(value, other) + 1`.
    /// Returns the new value.
    pub fn adjust(&self, other: u64) -> u64 {
        let mut current = self.value.load(Ordering::Acquire);
        loop {
            let next = current.max(other).wrapping_add(1);
            match self.value.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn value(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn forward_and_adjust_follow_kombu() {
        let c = LamportClock::default();
        assert_eq!(c.forward(), 1);
        assert_eq!(c.adjust(10), 11);
        // An older stamp still moves the clock on by one.
        assert_eq!(c.adjust(3), 12);
        assert_eq!(c.adjust(0), 13);
        assert_eq!(c.value(), 13);
    }

    #[test]
    fn concurrent_forwards_never_lose_a_tick() {
        let c = Arc::new(LamportClock::new(5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.forward();
                        c.adjust(0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.value(), 5 + 8000);
    }
}
