//! The simulated network that every simulator of this project drives: the elections' seeded
//! simulator ([`crate::sim`]), the elections' textbook test harness, and facto's
//! whole-cluster simulator. One model of delay (hence reordering), loss, duplication and
//! partitions, so a property checked under one is checked under the same faults everywhere.
//! Whether the receiver is up is the caller's business: a message to a crashed node is
//! refused, and what the sender hears of that differs by transport.

use crate::rng::Rng;

/// What the network does with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Delivered once after each of these delays (a second one is a duplicate).
    Deliver(Vec<u64>),
    /// Dropped on the way.
    Lost,
    /// Sender and receiver are on different sides of a partition.
    Partitioned,
}

/// Nodes `0..n`, each on a side of a possible partition.
#[derive(Clone, Debug)]
pub struct Network {
    side: Vec<u8>,
    loss: f64,
    duplication: f64,
    min_delay_ms: u64,
    max_delay_ms: u64,
}

impl Network {
    /// `nodes` nodes all on one side, no loss or duplication, delays in
    /// `[min_delay_ms, max_delay_ms]`.
    pub fn new(nodes: usize, min_delay_ms: u64, max_delay_ms: u64) -> Network {
        Network { side: vec![0; nodes], loss: 0.0, duplication: 0.0, min_delay_ms, max_delay_ms }
    }

    /// Loss and duplication chances from now on (0 and 0: a reliable network).
    pub fn set_faults(&mut self, loss: f64, duplication: f64) {
        self.loss = loss;
        self.duplication = duplication;
    }

    pub fn faults(&self) -> (f64, f64) {
        (self.loss, self.duplication)
    }

    /// Moves node `i` to partition side `side`.
    pub fn set_side(&mut self, i: usize, side: u8) {
        self.side[i] = side;
    }

    pub fn side(&self, i: usize) -> u8 {
        self.side[i]
    }

    /// Everyone back on one side.
    pub fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
    }

    pub fn partitioned(&self) -> bool {
        self.side.iter().any(|&s| s != self.side[0])
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.side[a] == self.side[b]
    }

    /// The fate of a message from `from` to `to`, drawn from `rng`.
    pub fn route(&self, rng: &mut Rng, from: usize, to: usize) -> Route {
        if !self.connected(from, to) {
            return Route::Partitioned;
        }
        if rng.chance(self.loss) {
            return Route::Lost;
        }
        let mut delays = vec![rng.range(self.min_delay_ms, self.max_delay_ms + 1)];
        if rng.chance(self.duplication) {
            delays.push(rng.range(self.min_delay_ms, self.max_delay_ms + 1));
        }
        Route::Deliver(delays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_loss_and_duplicates() {
        let mut rng = Rng::new(1);
        let mut net = Network::new(3, 1, 20);
        assert!(matches!(net.route(&mut rng, 0, 1), Route::Deliver(d) if d.len() == 1 && (1..=20).contains(&d[0])));
        net.set_side(2, 1);
        assert!(net.partitioned() && !net.connected(0, 2));
        assert_eq!(net.route(&mut rng, 0, 2), Route::Partitioned);
        net.heal();
        net.set_faults(1.0, 0.0);
        assert_eq!(net.route(&mut rng, 0, 2), Route::Lost);
        net.set_faults(0.0, 1.0);
        assert!(matches!(net.route(&mut rng, 0, 2), Route::Deliver(d) if d.len() == 2));
    }
}
