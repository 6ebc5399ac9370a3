//! The node's door to its peers, which `facto chaos` can close (a partition) or hold (a
//! stall) through the admin endpoints. The server and the client both pass through it, so a
//! fault cuts traffic in both directions while the admin API keeps answering.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest partition or stall an admin request may ask for.
pub const DISRUPTION_MS_MAX: u64 = 10 * 60 * 1000;
/// How often a held request looks whether the disruption is over.
const POLL_MS: u64 = 20;

#[derive(Default)]
pub struct Gate {
    partitioned_until: Mutex<Option<Instant>>,
    stalled_until: Mutex<Option<Instant>>,
}

/// What a request met at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// Nothing in the way.
    Open,
    /// Held until a stall ended; then let through.
    Held,
    /// Cut off by a partition: the message is dropped.
    Dropped,
}

fn active(slot: &Mutex<Option<Instant>>) -> bool {
    let mut until = slot.lock().unwrap_or_else(|e| e.into_inner());
    match *until {
        Some(t) if Instant::now() < t => true,
        Some(_) => {
            *until = None;
            false
        }
        None => false,
    }
}

fn set(slot: &Mutex<Option<Instant>>, value: Option<Instant>) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = value;
}

impl Gate {
    /// Cuts the node off from its peers for `duration_ms`.
    pub fn partition(&self, duration_ms: u64) {
        set(&self.partitioned_until, Some(Instant::now() + Duration::from_millis(duration_ms)));
    }

    /// Holds every request and reply for `duration_ms`.
    pub fn stall(&self, duration_ms: u64) {
        set(&self.stalled_until, Some(Instant::now() + Duration::from_millis(duration_ms)));
    }

    /// Ends every disruption now.
    pub fn heal(&self) {
        set(&self.partitioned_until, None);
        set(&self.stalled_until, None);
    }

    pub fn partitioned(&self) -> bool {
        active(&self.partitioned_until)
    }

    pub fn stalled(&self) -> bool {
        active(&self.stalled_until)
    }

    /// Waits out a stall (and, for peer traffic, a partition: a dropped message's sender
    /// hears nothing until its own timeout).
    pub async fn pass(&self, peer_traffic: bool) -> Passage {
        let mut passage = Passage::Open;
        loop {
            if peer_traffic && self.partitioned() {
                passage = Passage::Dropped;
            } else if self.stalled() {
                if passage == Passage::Open {
                    passage = Passage::Held;
                }
            } else {
                return passage;
            }
            async_std::task::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disruptions_end_by_themselves_or_when_healed() {
        let gate = Gate::default();
        assert!(!gate.partitioned() && !gate.stalled());
        gate.partition(60_000);
        gate.stall(60_000);
        assert!(gate.partitioned() && gate.stalled());
        gate.heal();
        assert!(!gate.partitioned() && !gate.stalled());
        gate.stall(0);
        assert!(!gate.stalled());
    }

    #[test]
    fn a_partition_drops_peer_traffic_and_a_stall_holds_everything() {
        let gate = Gate::default();
        assert_eq!(async_std::task::block_on(gate.pass(true)), Passage::Open);
        gate.stall(60);
        assert_eq!(async_std::task::block_on(gate.pass(false)), Passage::Held);
        gate.partition(60);
        assert_eq!(async_std::task::block_on(gate.pass(false)), Passage::Open);
        assert_eq!(async_std::task::block_on(gate.pass(true)), Passage::Dropped);
    }
}
