//! Bounded places for requests that hold work on a member (client requests, `/cluster`
//! views): past the bound the caller answers 429 with `Retry-After`, so a flood waits at the
//! clients' side instead of in the node's memory and event queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A number of places shared by the requests of one kind.
#[derive(Clone)]
pub struct Slots {
    taken: Arc<AtomicUsize>,
    max: usize,
}

/// A place held until dropped (also when its client goes away mid-way).
pub struct Slot {
    taken: Arc<AtomicUsize>,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots { taken: Arc::default(), max }
    }

    /// A place, or `None` when all are taken.
    pub fn take(&self) -> Option<Slot> {
        let slot = Slot { taken: self.taken.clone() };
        (self.taken.fetch_add(1, Ordering::AcqRel) < self.max).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn places_are_bounded_and_given_back() {
        let slots = Slots::new(2);
        let (a, _b) = (slots.take(), slots.take());
        assert!(a.is_some());
        assert!(slots.take().is_none(), "the third is refused (and its place given back)");
        drop(a);
        assert!(slots.take().is_some());
    }
}
