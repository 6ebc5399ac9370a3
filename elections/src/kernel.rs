//! The simulation kernel both simulators share — the elections' ([`crate::sim`]) and facto's
//! whole-cluster one: a simulated clock and a queue of events, taken earliest first, and in
//! the order they were scheduled when they fall at the same time, so that one seed replays
//! the same run.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Every simulated node ticks this often.
pub const TICK_MS: u64 = 10;

/// A clock and the events scheduled on it.
pub struct Kernel<E> {
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Queued<E>>,
}

impl<E> Default for Kernel<E> {
    fn default() -> Self {
        Kernel { now_ms: 0, seq: 0, queue: BinaryHeap::new() }
    }
}

impl<E> Kernel<E> {
    /// The simulated time: when the event taken last was due.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Schedules `event` at `at_ms` (never before now).
    pub fn at(&mut self, at_ms: u64, event: E) {
        self.seq += 1;
        self.queue.push(Queued { at_ms: at_ms.max(self.now_ms), seq: self.seq, event });
    }

    /// Schedules `event` `after_ms` from now.
    pub fn after(&mut self, after_ms: u64, event: E) {
        self.at(self.now_ms + after_ms, event);
    }

    /// The earliest event, with the clock moved to its time (`None`: nothing is scheduled).
    pub fn next(&mut self) -> Option<E> {
        let Queued { at_ms, event, .. } = self.queue.pop()?;
        self.now_ms = at_ms;
        Some(event)
    }

    /// How many events are scheduled.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

struct Queued<E> {
    at_ms: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl<E> Eq for Queued<E> {}
impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Queued<E> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_earliest_first_and_in_order_at_equal_times() {
        let mut k = Kernel::default();
        k.at(20, "c");
        k.at(10, "a");
        k.at(10, "b");
        assert_eq!(k.next(), Some("a"));
        k.after(10, "d");
        assert_eq!((k.next(), k.now_ms()), (Some("b"), 10));
        assert_eq!((k.next(), k.now_ms()), (Some("c"), 20));
        assert_eq!((k.next(), k.now_ms()), (Some("d"), 20));
        assert_eq!(k.next(), None);
    }
}
