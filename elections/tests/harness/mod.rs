//! A tiny hand-driven network for the textbook tests: every message sent during a tick is
//! delivered within that tick, in the order sent, unless its destination is crashed or cut off.
//! Whether a message gets through is decided by the same [`Network`] model the seeded
//! simulators use, here with no delay, loss or duplication.

// Each test file uses its own part of the harness.
#![allow(dead_code)]

use facto_elections::net::{Network, Route};
use facto_elections::rng::Rng;
use facto_elections::{Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub struct Net<E: Election> {
    build: fn(Config, HardState) -> E,
    members: Vec<NodeId>,
    nodes: BTreeMap<NodeId, E>,
    /// What each node last asked to persist: all that survives its crash.
    persisted: BTreeMap<NodeId, HardState>,
    /// Partitions; messages only flow within a side. Node `id` is index `id - 1`.
    net: Network,
    /// The network model's draws (none matter without loss, duplication or delay).
    rng: Rng,
    in_flight: VecDeque<(NodeId, NodeId, E::Msg)>,
    /// Every message sent, in order: (from, to, message).
    pub sent: Vec<(NodeId, NodeId, E::Msg)>,
    /// Every leadership change reported, in order.
    pub changes: Vec<(NodeId, Leadership)>,
}

impl<E: Election> Net<E> {
    /// Nodes `1..=n`, all up, none of them started yet.
    pub fn new(n: u32, build: fn(Config, HardState) -> E) -> Net<E> {
        let members: Vec<NodeId> = (1..=n).collect();
        let mut net = Net {
            build,
            members: members.clone(),
            nodes: BTreeMap::new(),
            persisted: BTreeMap::new(),
            net: Network::new(n as usize, 0, 0),
            rng: Rng::new(0),
            in_flight: VecDeque::new(),
            sent: Vec::new(),
            changes: Vec::new(),
        };
        for id in members {
            net.restart(id);
        }
        net
    }

    pub fn config(&self, id: NodeId) -> Config {
        Config::new(id, self.members.clone())
    }

    /// Feeds `input` to node `id` (if it is up) and carries out the actions.
    pub fn step(&mut self, id: NodeId, input: Input<E::Msg>) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let actions = node.step(input);
        if let Some(hard) = actions.persist {
            self.persisted.insert(id, hard);
        }
        for (to, msg) in actions.messages {
            self.sent.push((id, to, msg.clone()));
            self.in_flight.push_back((id, to, msg));
        }
        if let Some(leadership) = actions.leadership {
            self.changes.push((id, leadership));
        }
    }

    /// Delivers messages until the next one `pick` selects, which is taken out of the network
    /// and returned (`None` once nothing is left in flight).
    pub fn deliver_until(
        &mut self,
        mut pick: impl FnMut(NodeId, NodeId, &E::Msg) -> bool,
    ) -> Option<(NodeId, NodeId, E::Msg)> {
        while let Some((from, to, msg)) = self.in_flight.pop_front() {
            if pick(from, to, &msg) {
                return Some((from, to, msg));
            }
            if let Route::Deliver(_) = self.net.route(&mut self.rng, from as usize - 1, to as usize - 1) {
                self.step(to, Input::Message { from, msg });
            }
        }
        None
    }

    pub fn deliver_all(&mut self) {
        self.deliver_until(|_, _, _| false);
    }

    /// One tick for every live node, in id order; what they send stays in flight.
    pub fn tick_nodes(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.step(id, Input::Tick);
        }
    }

    /// One tick for every live node, then every message delivered.
    pub fn tick(&mut self) {
        self.tick_nodes();
        self.deliver_all();
    }

    pub fn run(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Ticks until every live node agrees on one leader; returns how many ticks it took.
    pub fn run_until_agreed(&mut self, max_ticks: u32) -> Option<u32> {
        (1..=max_ticks).find(|_| {
            self.tick();
            self.agreed().is_some()
        })
    }

    pub fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
    }

    /// (Re)starts node `id` from what it persisted.
    pub fn restart(&mut self, id: NodeId) {
        let hard = self.persisted.get(&id).copied().unwrap_or_default();
        let node = (self.build)(self.config(id), hard);
        self.nodes.insert(id, node);
    }

    /// Splits the network: nodes talk only within their own group.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for (side, group) in groups.iter().enumerate() {
            for &id in group.iter() {
                self.net.set_side(id as usize - 1, side as u8 + 1);
            }
        }
    }

    pub fn heal(&mut self) {
        self.net.heal();
    }

    pub fn leadership(&self, id: NodeId) -> Leadership {
        self.nodes.get(&id).map_or(Leadership::Unknown, |n| n.leadership())
    }

    pub fn hard_state(&self, id: NodeId) -> HardState {
        self.nodes[&id].hard_state()
    }

    /// The leader and epoch every live node agrees on, if they do.
    pub fn agreed(&self) -> Option<(NodeId, Epoch)> {
        let mut views = self.nodes.iter().map(|(&id, n)| {
            let l = n.leadership();
            Some((l.leader(id)?, l.epoch()?))
        });
        let (leader, epoch) = views.next()??;
        let leads = self.leadership(leader) == Leadership::Leading { epoch };
        (leads && views.all(|v| v == Some((leader, epoch)))).then_some((leader, epoch))
    }

    /// Every (leader, epoch) that was ever reported as leading, in order.
    pub fn leaderships(&self) -> Vec<(NodeId, Epoch)> {
        let mut seen = BTreeSet::new();
        self.changes
            .iter()
            .filter_map(|&(id, l)| match l {
                Leadership::Leading { epoch } => Some((id, epoch)),
                _ => None,
            })
            .filter(|&l| seen.insert(l))
            .collect()
    }

    /// How many messages sent so far `pick` selects.
    pub fn count(&self, pick: impl Fn(&E::Msg) -> bool) -> usize {
        self.sent.iter().filter(|(_, _, m)| pick(m)).count()
    }
}
