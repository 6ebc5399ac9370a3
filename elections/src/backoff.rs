//! An election timeout that stretches each time a suspicion proves false, and shrinks back
//! once none has for a while.
//!
//! On an overloaded machine (a hundred members on one busy core) messages arrive late, so
//! timeouts fire although the leader lives; each false election adds messages, which makes the
//! next one likelier: a storm that may never settle. A member that suspected its leader and
//! then hears from that very leader at the same epoch has proof that its timeout is too short
//! for this machine: it doubles it (up to [`FACTOR_MAX`]), as an adaptive failure detector
//! would. A leader that really crashed never speaks at its old epoch again, so failovers, even
//! back to back, keep the base timeout.

/// The most a timeout is stretched. A suspicion is disproved only by a leader speaking at
/// the epoch it was suspected at, and a newer leadership forgets it, so after a partition
/// heals the factor rarely grows; the simulator's liveness bound (20 election timeouts after
/// the faults stop) holds over 10,000 seeds.
pub(crate) const FACTOR_MAX: u32 = 4;
/// This many (stretched) timeouts without a false suspicion halve the factor.
const CALM_TIMEOUTS: u64 = 10;

#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base_ticks: u32,
    factor: u32,
    /// Ticks seen so far.
    now_tick: u64,
    /// When the factor last changed or was confirmed by a false suspicion.
    changed_tick: u64,
}

impl Backoff {
    pub(crate) fn new(base_ticks: u32) -> Backoff {
        Backoff { base_ticks: base_ticks.max(1), factor: 1, now_tick: 0, changed_tick: 0 }
    }

    /// The election timeout now, in ticks.
    pub(crate) fn timeout_ticks(&self) -> u32 {
        self.base_ticks.saturating_mul(self.factor)
    }

    pub(crate) fn tick(&mut self) {
        self.now_tick += 1;
        let calm_ticks = CALM_TIMEOUTS * u64::from(self.timeout_ticks());
        if self.factor > 1 && self.now_tick - self.changed_tick >= calm_ticks {
            self.factor /= 2;
            self.changed_tick = self.now_tick;
        }
    }

    /// The leader this member suspected turned out to be alive.
    pub(crate) fn suspicion_disproved(&mut self) {
        self.factor = (self.factor * 2).min(FACTOR_MAX);
        self.changed_tick = self.now_tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_suspicions_stretch_the_timeout_up_to_the_cap() {
        let mut b = Backoff::new(10);
        let mut seen = vec![b.timeout_ticks()];
        for _ in 0..3 {
            b.suspicion_disproved();
            seen.push(b.timeout_ticks());
        }
        assert_eq!(seen, vec![10, 20, 40, 40]);
    }

    #[test]
    fn a_calm_spell_shrinks_it_back() {
        let mut b = Backoff::new(10);
        b.suspicion_disproved();
        b.suspicion_disproved();
        assert_eq!(b.timeout_ticks(), 40);
        for _ in 0..399 {
            b.tick();
        }
        assert_eq!(b.timeout_ticks(), 40, "not yet ten timeouts");
        b.tick();
        assert_eq!(b.timeout_ticks(), 20);
        for _ in 0..200 {
            b.tick();
        }
        assert_eq!(b.timeout_ticks(), 10);
    }
}
