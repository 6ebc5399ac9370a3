//! Raft-lite: the leader election of Raft (§5.2 of the Raft paper) without the log, plus the
//! pre-vote and check-quorum extensions of §9.6 of Ongaro's thesis.
//!
//! * The epoch is the Raft term. A node votes at most once per term and persists
//!   `(term, voted_for)` before answering, so a majority of votes makes at most one leader per
//!   term, even across restarts.
//! * Pre-vote: a node whose election timeout fires first asks for pre-votes at `term + 1`
//!   without bumping its own term. A partitioned node therefore cannot inflate its term and
//!   depose a healthy leader when it rejoins.
//! * Check-quorum: a leader that has not heard from a majority within an election timeout steps
//!   down. The leadership is a fencing token for facto's coordinator, so an old leader cut off
//!   from the majority must stop acting as one.
//! * Freshness: the candidate's checkpoint version travels in its vote requests, and a voter
//!   refuses a candidate less fresh than itself (Raft's election restriction, applied to the
//!   coordinator checkpoint instead of a log).

use crate::rng::{mix, Rng};
use crate::{Actions, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use serde::{Deserialize, Serialize};

/// Raft-lite's wire messages. `term` is always the sender's view of the term the message is
/// about (for a pre-vote request: the term the candidate would campaign at).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// RequestVote (or, with `pre_vote`, a pre-vote probe that changes no one's term).
    RequestVote {
        term: Epoch,
        pre_vote: bool,
        /// How much of the checkpoint the candidate holds (named `freshness` on the wire before).
        #[serde(alias = "freshness")]
        checkpoint_version: u64,
    },
    /// The answer to a [`Msg::RequestVote`].
    Vote { term: Epoch, pre_vote: bool, granted: bool },
    /// AppendEntries without entries: the leader's heartbeat.
    Heartbeat { term: Epoch },
    /// The answer to a heartbeat: proves to the leader that this follower is reachable
    /// (check-quorum), or tells a stale leader about a newer term.
    HeartbeatAck { term: Epoch },
}

impl Msg {
    /// The message's kind, for traces: `pre_vote_request`, `vote_request`, `vote`,
    /// `vote_denied`, `heartbeat` or `heartbeat_ack`.
    pub fn kind(&self) -> &'static str {
        match *self {
            Msg::RequestVote { pre_vote: true, .. } => "pre_vote_request",
            Msg::RequestVote { .. } => "vote_request",
            Msg::Vote { granted: true, .. } => "vote",
            Msg::Vote { .. } => "vote_denied",
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::HeartbeatAck { .. } => "heartbeat_ack",
        }
    }

    /// The term the message speaks for.
    pub fn epoch(&self) -> Epoch {
        match *self {
            Msg::RequestVote { term, .. }
            | Msg::Vote { term, .. }
            | Msg::Heartbeat { term }
            | Msg::HeartbeatAck { term } => term,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// One node's Raft-lite state machine.
#[derive(Clone, Debug)]
pub struct Raft {
    id: NodeId,
    /// Every other member, sorted (so broadcasts go out in a deterministic order).
    peers: Vec<NodeId>,
    heartbeat_ticks: u32,
    election_ticks: u32,
    hard: HardState,
    role: Role,
    /// The leader of the current term, once known (ourselves when leading).
    leader: Option<NodeId>,
    checkpoint_version: u64,
    rng: Rng,
    /// Ticks since the leader was last heard from, or since the current campaign started.
    elapsed_ticks: u32,
    /// This round's randomized election timeout, in `[election_ticks, 2 * election_ticks)`.
    timeout_ticks: u32,
    /// Leader only: ticks since the last heartbeat broadcast.
    heartbeat_elapsed_ticks: u32,
    /// Leader only: ticks since the last check-quorum.
    quorum_elapsed_ticks: u32,
    /// Candidates: the peers that granted this campaign (pre-)votes. Leader: the peers heard
    /// from since the last check-quorum.
    granted: Vec<NodeId>,
}

impl Raft {
    /// A follower that knows no leader, restored from `hard_state` (so it cannot vote twice
    /// in a term it already voted in before a restart).
    pub fn new(config: Config, hard_state: HardState) -> Raft {
        let mut peers: Vec<NodeId> = config.members.into_iter().filter(|&m| m != config.id).collect();
        peers.sort_unstable();
        peers.dedup();
        let mut raft = Raft {
            id: config.id,
            peers,
            heartbeat_ticks: config.heartbeat_ticks.max(1),
            election_ticks: config.election_ticks.max(2),
            hard: hard_state,
            role: Role::Follower,
            leader: None,
            checkpoint_version: 0,
            // Mixing in the id keeps two nodes given the same seed from timing out in lockstep.
            rng: Rng::new(mix(config.seed ^ mix(u64::from(config.id)))),
            elapsed_ticks: 0,
            timeout_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            quorum_elapsed_ticks: 0,
            granted: Vec::new(),
        };
        raft.reset_timeout();
        raft
    }

    /// The current term.
    pub fn term(&self) -> Epoch {
        self.hard.epoch
    }

    /// A majority of the members (this node included).
    fn quorum(&self) -> usize {
        let members = self.peers.len() + 1;
        members / 2 + 1
    }

    fn reset_timeout(&mut self) {
        self.elapsed_ticks = 0;
        let base = u64::from(self.election_ticks);
        self.timeout_ticks = self.rng.range(base, 2 * base) as u32;
    }

    /// True while this node believes a live leader exists: a leader that has not failed its
    /// check-quorum, or a follower that heard from its leader within the minimum election
    /// timeout. Such a node refuses to help start an election (it would disrupt the leader).
    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            Role::Follower => self.leader.is_some() && self.elapsed_ticks < self.election_ticks,
            Role::PreCandidate | Role::Candidate => false,
        }
    }

    fn become_follower(&mut self, term: Epoch, leader: Option<NodeId>) {
        if term > self.hard.epoch {
            self.hard = HardState { epoch: term, voted_for: None };
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.granted.clear();
        self.reset_timeout();
    }

    fn broadcast(&self, msg: Msg, out: &mut Actions<Msg>) {
        out.messages.extend(self.peers.iter().map(|&p| (p, msg.clone())));
    }

    /// The election timeout fired: probe with a pre-vote first (no term change).
    fn start_pre_vote(&mut self, out: &mut Actions<Msg>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.granted.clear();
        self.reset_timeout();
        let msg = Msg::RequestVote {
            term: self.hard.epoch.saturating_add(1),
            pre_vote: true,
            checkpoint_version: self.checkpoint_version,
        };
        self.broadcast(msg, out);
        self.tally(out);
    }

    /// A majority would vote for us: campaign for real at the next term.
    fn start_campaign(&mut self, out: &mut Actions<Msg>) {
        self.role = Role::Candidate;
        self.leader = None;
        self.hard = HardState { epoch: self.hard.epoch.saturating_add(1), voted_for: Some(self.id) };
        self.granted.clear();
        self.reset_timeout();
        let msg =
            Msg::RequestVote { term: self.hard.epoch, pre_vote: false, checkpoint_version: self.checkpoint_version };
        self.broadcast(msg, out);
        self.tally(out);
    }

    /// Moves a (pre-)candidate on once it holds a majority (its own vote included).
    fn tally(&mut self, out: &mut Actions<Msg>) {
        if self.granted.len() + 1 < self.quorum() {
            return;
        }
        match self.role {
            Role::PreCandidate => self.start_campaign(out),
            Role::Candidate => self.become_leader(out),
            Role::Follower | Role::Leader => {}
        }
    }

    fn become_leader(&mut self, out: &mut Actions<Msg>) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.granted.clear();
        self.heartbeat_elapsed_ticks = 0;
        self.quorum_elapsed_ticks = 0;
        // Announce at once so the other candidates of this term stand down.
        self.broadcast(Msg::Heartbeat { term: self.hard.epoch }, out);
    }

    fn tick(&mut self, out: &mut Actions<Msg>) {
        if self.role == Role::Leader {
            self.heartbeat_elapsed_ticks += 1;
            if self.heartbeat_elapsed_ticks >= self.heartbeat_ticks {
                self.heartbeat_elapsed_ticks = 0;
                self.broadcast(Msg::Heartbeat { term: self.hard.epoch }, out);
            }
            self.quorum_elapsed_ticks += 1;
            if self.quorum_elapsed_ticks >= self.election_ticks {
                self.quorum_elapsed_ticks = 0;
                if self.granted.len() + 1 < self.quorum() {
                    // Check-quorum failed: we may be the minority side of a partition.
                    self.become_follower(self.hard.epoch, None);
                } else {
                    self.granted.clear();
                }
            }
            return;
        }
        self.elapsed_ticks += 1;
        if self.elapsed_ticks >= self.timeout_ticks {
            self.start_pre_vote(out);
        }
    }

    fn on_request_vote(
        &mut self,
        from: NodeId,
        term: Epoch,
        pre_vote: bool,
        checkpoint_version: u64,
        out: &mut Actions<Msg>,
    ) {
        let refuse = Msg::Vote { term: self.hard.epoch, pre_vote, granted: false };
        if term < self.hard.epoch {
            // Tell the stale candidate about the newer term.
            out.messages.push((from, refuse));
            return;
        }
        if term > self.hard.epoch && self.in_lease() {
            // A live leader exists: do not let this candidate disrupt it, and do not adopt its
            // term either (it may be a node returning from a partition).
            out.messages.push((from, refuse));
            return;
        }
        let up_to_date = checkpoint_version >= self.checkpoint_version;
        if pre_vote {
            // A pre-vote changes nothing here: it only asks "would you vote for me?".
            let granted = term > self.hard.epoch && up_to_date;
            let reply_term = if granted { term } else { self.hard.epoch };
            out.messages.push((from, Msg::Vote { term: reply_term, pre_vote: true, granted }));
            return;
        }
        if term > self.hard.epoch {
            self.become_follower(term, None);
        }
        let can_vote = self.hard.voted_for == Some(from) || (self.hard.voted_for.is_none() && self.leader.is_none());
        let granted = can_vote && up_to_date;
        if granted {
            self.hard.voted_for = Some(from);
            self.elapsed_ticks = 0;
        }
        out.messages.push((from, Msg::Vote { term: self.hard.epoch, pre_vote: false, granted }));
    }

    fn on_vote(&mut self, from: NodeId, term: Epoch, pre_vote: bool, granted: bool, out: &mut Actions<Msg>) {
        if term > self.hard.epoch && !(pre_vote && granted) {
            // A granted pre-vote carries the proposed term, not a newer real one.
            self.become_follower(term, None);
            return;
        }
        let expected = match self.role {
            Role::PreCandidate => pre_vote && term == self.hard.epoch.saturating_add(1),
            Role::Candidate => !pre_vote && term == self.hard.epoch,
            Role::Follower | Role::Leader => false,
        };
        if expected && granted && !self.granted.contains(&from) {
            self.granted.push(from);
            self.tally(out);
        }
    }

    fn on_heartbeat(&mut self, from: NodeId, term: Epoch, out: &mut Actions<Msg>) {
        if term < self.hard.epoch {
            // A deposed leader: the ack at our term makes it step down.
            out.messages.push((from, Msg::HeartbeatAck { term: self.hard.epoch }));
            return;
        }
        if term == self.hard.epoch && self.role == Role::Leader {
            // Impossible while votes are counted right (one leader per term); refuse to trust it.
            return;
        }
        if term > self.hard.epoch || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        } else {
            self.elapsed_ticks = 0;
        }
        out.messages.push((from, Msg::HeartbeatAck { term }));
    }

    fn on_heartbeat_ack(&mut self, from: NodeId, term: Epoch) {
        if term > self.hard.epoch {
            self.become_follower(term, None);
        } else if term == self.hard.epoch && self.role == Role::Leader && !self.granted.contains(&from) {
            self.granted.push(from);
        }
    }
}

impl Election for Raft {
    type Msg = Msg;

    fn name(&self) -> &'static str {
        "raft"
    }

    fn step(&mut self, input: Input<Msg>) -> Actions<Msg> {
        let hard_before = self.hard;
        let leadership_before = self.leadership();
        let mut out = Actions::default();
        match input {
            Input::Tick => self.tick(&mut out),
            // Messages from ourselves or from non-members are ignored, not trusted.
            Input::Message { from, msg } if from != self.id && self.peers.binary_search(&from).is_ok() => match msg {
                Msg::RequestVote { term, pre_vote, checkpoint_version } => {
                    self.on_request_vote(from, term, pre_vote, checkpoint_version, &mut out)
                }
                Msg::Vote { term, pre_vote, granted } => self.on_vote(from, term, pre_vote, granted, &mut out),
                Msg::Heartbeat { term } => self.on_heartbeat(from, term, &mut out),
                Msg::HeartbeatAck { term } => self.on_heartbeat_ack(from, term),
            },
            // As for a message at a higher term (Raft §5.1): a follower of no one at that term.
            Input::EpochSeen(term) if term > self.hard.epoch => self.become_follower(term, None),
            // Raft-lite relies on its own timeouts, not on the failure detector.
            Input::Message { .. } | Input::PeerDown(_) | Input::PeerUp(_) | Input::EpochSeen(_) => {}
        }
        if self.hard != hard_before {
            out.persist = Some(self.hard);
        }
        let leadership = self.leadership();
        if leadership != leadership_before {
            out.leadership = Some(leadership);
        }
        out
    }

    fn leadership(&self) -> Leadership {
        match (self.role, self.leader) {
            (Role::Leader, _) => Leadership::Leading { epoch: self.hard.epoch },
            (Role::Follower, Some(leader)) => Leadership::Following { leader, epoch: self.hard.epoch },
            _ => Leadership::Unknown,
        }
    }

    fn hard_state(&self) -> HardState {
        self.hard
    }

    fn set_checkpoint_version(&mut self, checkpoint_version: u64) {
        self.checkpoint_version = checkpoint_version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_node_elects_itself() {
        let mut raft = Raft::new(Config::new(1, vec![1]), HardState::default());
        let mut leadership = None;
        for _ in 0..20 {
            if let Some(l) = raft.step(Input::Tick).leadership {
                leadership = Some(l);
            }
        }
        assert_eq!(leadership, Some(Leadership::Leading { epoch: 1 }));
        assert_eq!(raft.hard_state(), HardState { epoch: 1, voted_for: Some(1) });
    }
}
