//! A leader election written outside `facto_elections`, run in its simulator.
//!
//! "Lowest live id with leases": every node beats to everyone every `heartbeat_ticks`; a peer
//! heard within the last `election_ticks` holds a lease on being alive. The lowest id holding a
//! lease (counting oneself) leads. Epochs stay fencing tokens the same way the built-in bully and
//! ring keep them: member `i` of `n` (in id order) only leads at epochs `e` with `e % n == i`,
//! always above every epoch it has seen, and nobody follows a leader below an epoch it has seen.
//!
//! ```text
//! cargo run --release --example custom_election   (from the workspace root)
//! ```

use facto_elections::sim::{self, Scenario, SimConfig, Summary};
use facto_elections::{Actions, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The one message: "I am alive, I have seen `epoch`, and I lead at it if `leading`".
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Beat {
    epoch: Epoch,
    leading: bool,
}

struct LowestAlive {
    me: NodeId,
    /// Every member, ascending.
    members: Vec<NodeId>,
    heartbeat_ticks: u64,
    lease_ticks: u64,
    now_ticks: u64,
    /// When each peer was last heard from.
    heard_at: BTreeMap<NodeId, u64>,
    max_seen_epoch: Epoch,
    leadership: Leadership,
}

impl LowestAlive {
    fn new(config: Config, hard_state: HardState) -> LowestAlive {
        let mut members = config.members;
        members.sort_unstable();
        LowestAlive {
            me: config.id,
            members,
            heartbeat_ticks: u64::from(config.heartbeat_ticks.max(1)),
            lease_ticks: u64::from(config.election_ticks.max(1)),
            now_ticks: 0,
            heard_at: BTreeMap::new(),
            max_seen_epoch: hard_state.epoch,
            leadership: Leadership::Unknown,
        }
    }

    /// The lowest id whose lease is current. A node that has just (re)started claims nothing
    /// for one lease, so that it first hears whoever is alive below it.
    fn lowest_alive(&self) -> Option<NodeId> {
        let alive = |&(&id, &at): &(&NodeId, &u64)| at + self.lease_ticks > self.now_ticks && id < self.me;
        match self.heard_at.iter().find(alive) {
            Some((&id, _)) => Some(id),
            None if self.now_ticks >= self.lease_ticks => Some(self.me),
            None => None,
        }
    }

    /// The smallest epoch above every epoch seen that this node owns.
    fn next_owned_epoch(&self) -> Epoch {
        let n = self.members.len() as u64;
        let mine = self.members.iter().position(|&id| id == self.me).unwrap_or(0) as u64;
        let first = self.max_seen_epoch + 1;
        first + (mine + n - first % n) % n
    }

    /// Leads, follows or waits, as the leases and the highest seen epoch say.
    fn settle(&mut self) {
        match (self.lowest_alive(), self.leadership) {
            // Still leading at the highest epoch anyone has shown us.
            (Some(l), Leadership::Leading { epoch }) if l == self.me && epoch == self.max_seen_epoch => {}
            (Some(l), _) if l == self.me => {
                let epoch = self.next_owned_epoch();
                self.max_seen_epoch = epoch;
                self.leadership = Leadership::Leading { epoch };
            }
            // Following the lowest live node: it is set when its beat arrives.
            (Some(l), Leadership::Following { leader, .. }) if l == leader => {}
            _ => self.leadership = Leadership::Unknown,
        }
    }

    fn receive(&mut self, from: NodeId, beat: Beat) {
        if from == self.me || self.members.binary_search(&from).is_err() {
            return;
        }
        self.heard_at.insert(from, self.now_ticks);
        let fresh = beat.epoch >= self.max_seen_epoch;
        self.max_seen_epoch = self.max_seen_epoch.max(beat.epoch);
        if beat.leading && fresh && self.lowest_alive() == Some(from) {
            self.leadership = Leadership::Following { leader: from, epoch: beat.epoch };
        }
    }
}

impl Election for LowestAlive {
    type Msg = Beat;

    fn name(&self) -> &'static str {
        "lowest-alive"
    }

    fn step(&mut self, input: Input<Beat>) -> Actions<Beat> {
        let before = (self.hard_state(), self.leadership);
        let mut messages = Vec::new();
        match input {
            Input::Tick => {
                self.now_ticks += 1;
                if self.now_ticks.is_multiple_of(self.heartbeat_ticks) {
                    let beat = Beat {
                        epoch: self.max_seen_epoch,
                        leading: matches!(self.leadership, Leadership::Leading { .. }),
                    };
                    let peers = self.members.iter().filter(|&&id| id != self.me);
                    messages.extend(peers.map(|&id| (id, beat.clone())));
                }
            }
            Input::Message { from, msg } => self.receive(from, msg),
            Input::PeerDown(peer) => {
                self.heard_at.remove(&peer);
            }
            Input::PeerUp(_) => {}
            // `settle` then takes a leadership of its own above it.
            Input::EpochSeen(epoch) => self.max_seen_epoch = self.max_seen_epoch.max(epoch),
        }
        self.settle();
        let hard = self.hard_state();
        Actions {
            messages,
            persist: (hard != before.0).then_some(hard),
            leadership: (self.leadership != before.1).then_some(self.leadership),
        }
    }

    fn leadership(&self) -> Leadership {
        self.leadership
    }

    fn hard_state(&self) -> HardState {
        HardState { epoch: self.max_seen_epoch, voted_for: None }
    }

    fn set_checkpoint_version(&mut self, _freshness: u64) {}
}

fn main() {
    let seeds = 300;
    println!("lowest-alive (an election defined outside facto_elections), {seeds} seeds each");
    let mut violations = 0;
    for nodes in [6, 25] {
        for scenario in Scenario::ALL {
            let config = SimConfig::new(nodes, scenario);
            let mut summary = Summary::default();
            for seed in 0..seeds {
                summary.add(sim::run(&config, seed, LowestAlive::new));
            }
            let (median_ms, max_ms) = summary.time_to_agree_median_max_ms().unwrap_or_default();
            println!(
                "  {nodes:>2} nodes, {:<12}: {:.1} messages per election, agreement median \
                 {median_ms} ms, max {max_ms} ms, failed runs {}",
                scenario.name(),
                summary.messages_per_election(),
                summary.failed_runs,
            );
            if let Some(failure) = &summary.first_failure {
                println!("    seed {}: {:?}", failure.seed, failure.violations);
            }
            violations += summary.failed_runs;
        }
    }
    println!("violations: {violations}");
}
