//! Election timeouts that stretch while a member's elections follow one another closely, and
//! shrink back once it has been calm.
//!
//! On an overloaded machine (a hundred members on two busy cores) messages arrive late, so
//! timeouts fire although the leader lives; each false election adds messages, which makes the
//! next one likelier: a storm that may never settle. Doubling a member's timeouts each time it
//! starts an election soon after its last one (up to [`FACTOR_MAX`]) breaks that loop, as
//! exponential backoff does for retries; a first election after a calm spell, such as a real
//! leader crash, still runs at full speed.

/// The most a timeout is stretched: the liveness bound of the simulator (20 election timeouts
/// after the faults stop) leaves room for a follower's and a candidate's stretched timeouts.
pub(crate) const FACTOR_MAX: u32 = 4;
/// An election less than this many (stretched) timeouts after the previous one doubles the
/// factor; as long a spell without one halves it.
const CALM_TIMEOUTS: u64 = 10;

#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base_ticks: u32,
    factor: u32,
    /// Ticks seen so far: the clock the two marks below are read on.
    now_tick: u64,
    /// When this member last started an election (`None`: never).
    last_election_tick: Option<u64>,
    /// When the factor last changed.
    changed_tick: u64,
}

impl Backoff {
    pub(crate) fn new(base_ticks: u32) -> Backoff {
        Backoff { base_ticks: base_ticks.max(1), factor: 1, now_tick: 0, last_election_tick: None, changed_tick: 0 }
    }

    /// The election timeout now, in ticks.
    pub(crate) fn timeout_ticks(&self) -> u32 {
        self.base_ticks.saturating_mul(self.factor)
    }

    fn calm_ticks(&self) -> u64 {
        CALM_TIMEOUTS * u64::from(self.timeout_ticks())
    }

    pub(crate) fn tick(&mut self) {
        self.now_tick += 1;
        let quiet_since = self.last_election_tick.unwrap_or(0).max(self.changed_tick);
        if self.factor > 1 && self.now_tick - quiet_since >= self.calm_ticks() {
            self.factor /= 2;
            self.changed_tick = self.now_tick;
        }
    }

    pub(crate) fn election_started(&mut self) {
        let soon = self.last_election_tick.is_some_and(|last| self.now_tick - last < self.calm_ticks());
        if soon && self.factor < FACTOR_MAX {
            self.factor *= 2;
            self.changed_tick = self.now_tick;
        }
        self.last_election_tick = Some(self.now_tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_election_runs_at_full_speed() {
        let mut b = Backoff::new(10);
        for _ in 0..5 {
            b.tick();
        }
        b.election_started();
        assert_eq!(b.timeout_ticks(), 10);
    }

    #[test]
    fn elections_in_quick_succession_stretch_the_timeout_up_to_the_cap() {
        let mut b = Backoff::new(10);
        let mut seen = Vec::new();
        for _ in 0..5 {
            b.election_started();
            seen.push(b.timeout_ticks());
            for _ in 0..15 {
                b.tick();
            }
        }
        assert_eq!(seen, vec![10, 20, 40, 40, 40]);
    }

    #[test]
    fn a_calm_spell_shrinks_it_back() {
        let mut b = Backoff::new(10);
        b.election_started();
        b.election_started();
        b.election_started();
        assert_eq!(b.timeout_ticks(), 40);
        for _ in 0..400 {
            b.tick();
        }
        assert_eq!(b.timeout_ticks(), 20);
        for _ in 0..200 {
            b.tick();
        }
        assert_eq!(b.timeout_ticks(), 10);
        // Calm again: the next election is a first one.
        b.election_started();
        assert_eq!(b.timeout_ticks(), 10);
    }
}
