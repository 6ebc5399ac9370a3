//! Where checkpoint facts go, and how a coordinator gathers its peers': one policy, pure,
//! that both drivers carry out one peer request at a time ([`Effect::SendFacts`],
//! [`Effect::AskCheckpoint`]) and whose clock is the tick.
//!
//! **Replication** makes facts durable on one peer besides this node. The peers are asked in
//! successor order ((id - me) mod n, which spreads replicas when coordinators change), one at
//! a time: the next one is asked too whenever every peer asked so far failed, or none has
//! answered within a hedge ([`HEDGE_MS`], more for large writes). So a stalled peer costs a
//! hedge, not a timeout. One copy elsewhere and this node's own survive the crash of any
//! single node; writing to two peers every time would cost a third more checkpoint work for
//! a margin beyond the failure model.
//!
//! **Gathering** asks every peer (or one, to pull its checkpoint) for the facts it holds,
//! and goes on once each answered or failed, or after [`GATHER_TIMEOUT_MS`]: a peer that is
//! down refuses at once, only a stalled one makes a new coordinator wait that long. The facts
//! are then checked off the core ([`Effect::CheckGathered`]).

use super::{Effect, NodeCore};
use crate::bignum::Big;
use crate::checkpoint::Fact;
use crate::coordinator::JobId;
use facto_elections::{Epoch, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// How long a peer may take to make a checkpoint write durable before the write also goes
/// to the next peer...
const HEDGE_MS: u64 = 100;
/// ... plus this long per MiB the write carries (moving and syncing tens of megabytes takes
/// longer than 100 ms on a healthy peer, and a hedge then only doubles the work).
const HEDGE_MS_PER_MIB: u64 = 25;
/// How long one checkpoint write may take (facts of a large factorial are megabytes).
const SEND_TIMEOUT_MS: u64 = 10_000;
/// How long a new coordinator waits for its peers' checkpoints before it resumes with what it
/// has.
const GATHER_TIMEOUT_MS: u64 = 2_000;

/// Replications and gatherings under way.
#[derive(Default)]
pub(super) struct Copies {
    replications: BTreeMap<u64, Replication>,
    gatherings: BTreeMap<u64, Gathering>,
    /// Replications that had no peer to go to (a cluster of one), answered after the input:
    /// the local copy is all there is.
    alone: Vec<u64>,
}

struct Replication {
    /// What the core waits on (`None`: nothing does).
    token: Option<u64>,
    epoch: Epoch,
    facts: Arc<Vec<Fact>>,
    hedge_ms: u64,
    not_asked: VecDeque<NodeId>,
    asked: BTreeSet<NodeId>,
    last_ask_ms: u64,
}

struct Gathering {
    epoch: Epoch,
    only: Option<NodeId>,
    own: Vec<Fact>,
    asked: Vec<NodeId>,
    waiting: BTreeSet<NodeId>,
    answered: BTreeSet<NodeId>,
    facts: Vec<Fact>,
    deadline_ms: u64,
}

/// How a peer's answer to a checkpoint write came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The peer holds the facts on its disk.
    Durable,
    /// It refused, failed or did not answer in time.
    Failed,
}

impl NodeCore {
    /// The peers in successor order: those after this node's id, then those before.
    fn successors(&self) -> Vec<NodeId> {
        let me = self.me();
        let mut peers: Vec<NodeId> = self.settings.members.ids().into_iter().filter(|&id| id != me).collect();
        peers.sort_by_key(|&id| (id < me, id));
        peers
    }

    /// Makes `facts` durable on one peer; [`NodeCore::on_replicated`] hears of `token`.
    pub(super) fn replicate(&mut self, token: Option<u64>, epoch: Epoch, facts: Vec<Fact>) {
        let id = self.token();
        let bytes: u64 = facts.iter().map(fact_bytes).sum();
        let replication = Replication {
            token,
            epoch,
            facts: Arc::new(facts),
            hedge_ms: HEDGE_MS + (bytes >> 20) * HEDGE_MS_PER_MIB,
            not_asked: self.successors().into(),
            asked: BTreeSet::new(),
            last_ask_ms: self.now_ms,
        };
        if replication.not_asked.is_empty() {
            self.copies.alone.extend(token);
            return;
        }
        self.copies.replications.insert(id, replication);
        self.ask_next_peer(id);
    }

    fn ask_next_peer(&mut self, id: u64) {
        let now_ms = self.now_ms;
        let Some(r) = self.copies.replications.get_mut(&id) else { return };
        let Some(peer) = r.not_asked.pop_front() else { return };
        r.asked.insert(peer);
        r.last_ask_ms = now_ms;
        let (epoch, facts) = (r.epoch, r.facts.clone());
        self.emit(Effect::SendFacts { replication: id, peer, epoch, facts, timeout_ms: SEND_TIMEOUT_MS });
    }

    /// A peer's answer to a checkpoint write.
    pub(super) fn on_facts_sent(&mut self, id: u64, peer: NodeId, sent: Sent) {
        let Some(r) = self.copies.replications.get_mut(&id) else { return };
        if !r.asked.remove(&peer) {
            return;
        }
        let done = match sent {
            Sent::Durable => Some(true),
            Sent::Failed if r.asked.is_empty() && r.not_asked.is_empty() => Some(false),
            Sent::Failed => None,
        };
        match done {
            Some(ok) => {
                let token = self.copies.replications.remove(&id).and_then(|r| r.token);
                if let Some(token) = token {
                    self.on_replicated(token, ok);
                }
            }
            None if r.asked.is_empty() => self.ask_next_peer(id),
            None => {}
        }
    }

    /// On a tick: replications whose peers have been slow past their hedge ask the next
    /// peer too; gatherings past their time go on with what they have.
    pub(super) fn copies_tick(&mut self) {
        let now_ms = self.now_ms;
        let slow: Vec<u64> = self
            .copies
            .replications
            .iter()
            .filter(|(_, r)| !r.not_asked.is_empty() && now_ms >= r.last_ask_ms + r.hedge_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in slow {
            self.ask_next_peer(id);
        }
        let late: Vec<u64> =
            self.copies.gatherings.iter().filter(|(_, g)| now_ms >= g.deadline_ms).map(|(&id, _)| id).collect();
        for id in late {
            self.end_gathering(id);
        }
    }

    /// Replications with no peer to go to count as done once the input is handled.
    pub(super) fn replicated_alone(&mut self) {
        while let Some(token) = self.copies.alone.pop() {
            self.on_replicated(token, true);
        }
    }

    /// Asks the peers (`only` one of them) for their checkpoints, leaving out `finished` jobs;
    /// the answers and this node's `own` facts are then checked and come back as
    /// [`super::Input::Gathered`] or [`super::Input::Pulled`].
    pub(super) fn gather(&mut self, epoch: Epoch, only: Option<NodeId>, finished: BTreeSet<JobId>, own: Vec<Fact>) {
        let id = self.token();
        let peers: Vec<NodeId> = self.successors().into_iter().filter(|&p| only.is_none_or(|o| o == p)).collect();
        let deadline_ms = self.now_ms + GATHER_TIMEOUT_MS;
        let gathering = Gathering {
            epoch,
            only,
            own,
            asked: peers.clone(),
            waiting: peers.iter().copied().collect(),
            answered: BTreeSet::new(),
            facts: Vec::new(),
            deadline_ms,
        };
        self.copies.gatherings.insert(id, gathering);
        let finished = Arc::new(finished);
        for peer in peers {
            let finished = finished.clone();
            self.emit(Effect::AskCheckpoint { gathering: id, peer, epoch, finished, timeout_ms: GATHER_TIMEOUT_MS });
        }
        if self.copies.gatherings.get(&id).is_some_and(|g| g.waiting.is_empty()) {
            self.end_gathering(id);
        }
    }

    /// A peer that failed a gathering under way and is back is asked again: a member that
    /// restarts while a new coordinator still waits for a stalled one may hold the only
    /// copy of what finished under the old coordinator.
    pub(super) fn ask_again_if_gathering(&mut self, peer: NodeId) {
        let finished = self.checkpoint.finished_jobs();
        let again: Vec<(u64, Epoch)> = self
            .copies
            .gatherings
            .iter_mut()
            .filter(|(_, g)| g.asked.contains(&peer) && !g.answered.contains(&peer) && !g.waiting.contains(&peer))
            .map(|(&id, g)| {
                g.waiting.insert(peer);
                (id, g.epoch)
            })
            .collect();
        let finished = Arc::new(finished);
        for (gathering, epoch) in again {
            let finished = finished.clone();
            self.emit(Effect::AskCheckpoint { gathering, peer, epoch, finished, timeout_ms: GATHER_TIMEOUT_MS });
        }
    }

    /// A peer's checkpoint (`None`: it refused, failed or did not answer in time).
    pub(super) fn on_checkpoint_answered(&mut self, id: u64, peer: NodeId, facts: Option<Vec<Fact>>) {
        let Some(g) = self.copies.gatherings.get_mut(&id) else { return };
        if !g.waiting.remove(&peer) {
            return;
        }
        if let Some(facts) = facts {
            g.answered.insert(peer);
            g.facts.extend(facts);
        }
        if g.waiting.is_empty() {
            self.end_gathering(id);
        }
    }

    /// Every peer answered or failed, or the time is up: the facts go to be checked (a
    /// single peer's only if it answered).
    fn end_gathering(&mut self, id: u64) {
        let Some(g) = self.copies.gatherings.remove(&id) else { return };
        let unanswered: Vec<NodeId> = g.asked.iter().filter(|p| !g.answered.contains(p)).copied().collect();
        match g.only {
            Some(peer) if !unanswered.is_empty() => self.on_pulled(g.epoch, peer, None),
            only => self.emit(Effect::CheckGathered { epoch: g.epoch, only, facts: g.facts, own: g.own, unanswered }),
        }
    }
}

/// About how many bytes a fact takes on the wire.
fn fact_bytes(fact: &Fact) -> u64 {
    match fact {
        Fact::Product { product, .. } => Big::significant_bits(product) / 8,
        _ => 64,
    }
}
