//! The ring algorithm: Chang and Roberts (1979), with LeLann's skipping of dead successors.
//!
//! The members form a ring in ascending id order (wrapping). A node that misses its leader
//! sends an ELECTION token naming itself to its successor. A node forwards a token naming a
//! higher id; a token naming a lower id is replaced by one naming itself, unless the node
//! already takes part in an election, in which case it is swallowed (a higher token is already
//! on its way). The token that comes back to the id it names has passed every live node: that
//! node wins and sends a COORDINATOR once around the ring.
//!
//! Every hop is acknowledged. A successor that does not acknowledge within the timeout is
//! suspected and skipped: the message goes to the next member instead. Suspicion ends when the
//! peer is heard from, when the failure detector reports it up, or after a while (so a peer that
//! was only slow is tried again). A participant that sees no COORDINATOR in time assumes the
//! token was lost and starts over. The leader heartbeats everyone so its loss is noticed.
//!
//! Epochs are fencing tokens (see `fencing.rs`). The ELECTION token also gathers the highest
//! epoch of every node it passes, so the winner leads at an epoch above all of them.

use crate::fencing::{self, Roster};
use crate::{Actions, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A ring message. `epoch` is the sender's highest seen epoch, except in COORDINATOR where it is
/// the new leader's epoch (which a node only forwards once it has accepted it, so both agree).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// The election token, naming the highest candidate seen on its way so far. `round` is the
    /// highest epoch its initiator had seen: a node that has since accepted a leadership above
    /// it knows the election is over and swallows the token.
    Election { candidate: NodeId, round: Epoch, epoch: Epoch, seq: u64 },
    /// The winner's announcement, sent once around the ring.
    Coordinator { leader: NodeId, epoch: Epoch, seq: u64 },
    /// The successor got the ELECTION or COORDINATOR numbered `seq`.
    Ack { seq: u64, epoch: Epoch },
    /// "I still lead at `epoch`": sent by the leader to everyone every `heartbeat_ticks`.
    Heartbeat { epoch: Epoch },
}

impl Msg {
    /// The message's kind, for traces: `election` (the token), `coordinator`, `ack` or
    /// `heartbeat`.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Election { .. } => "election",
            Msg::Coordinator { .. } => "coordinator",
            Msg::Ack { .. } => "ack",
            Msg::Heartbeat { .. } => "heartbeat",
        }
    }

    /// The epoch the message speaks for.
    pub fn epoch(&self) -> Epoch {
        match *self {
            Msg::Election { epoch, .. }
            | Msg::Coordinator { epoch, .. }
            | Msg::Ack { epoch, .. }
            | Msg::Heartbeat { epoch } => epoch,
        }
    }
}

/// What travels around the ring, hop by hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    Election { candidate: NodeId, round: Epoch },
    Coordinator { leader: NodeId, epoch: Epoch },
}

/// A relayed message the successor has not acknowledged yet.
#[derive(Clone, Debug)]
struct Hop {
    to: NodeId,
    seq: u64,
    relay: Relay,
    /// The message as sent, for the one resend.
    msg: Msg,
    /// Whether it was sent a second time already: one lost message or acknowledgement should
    /// not get a live successor skipped.
    resent: bool,
    waited_ticks: u32,
}

/// Who leads, as this node sees it; the timers count ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// No leader known (after a start, or after our own leadership was fenced out).
    Unknown {
        silent_ticks: u32,
    },
    Following {
        leader: NodeId,
        epoch: Epoch,
        silent_ticks: u32,
    },
    Leading {
        epoch: Epoch,
        since_heartbeat_ticks: u32,
    },
}

/// One node's ring state machine.
#[derive(Clone, Debug)]
pub struct Ring {
    members: Roster,
    heartbeat_ticks: u32,
    election_ticks: u32,
    /// The highest epoch seen in any message or led at; durable (`HardState::epoch`).
    max_seen_epoch: Epoch,
    role: Role,
    /// Ticks since this node joined the current election (Chang–Roberts' "participant"), if
    /// it takes part in one.
    participating_ticks: Option<u32>,
    /// Relayed messages awaiting their acknowledgement.
    hops: Vec<Hop>,
    next_seq: u64,
    /// Successors skipped for not acknowledging, with the ticks left until they are tried again.
    suspected: BTreeMap<NodeId, u32>,
    /// The last COORDINATOR relayed, so a duplicate does not go round again.
    relayed_coordinator: Option<(NodeId, Epoch)>,
}

impl Ring {
    /// A node that has just started (or restarted with `hard_state`) and knows no leader.
    pub fn new(config: Config, hard_state: HardState) -> Ring {
        Ring {
            members: Roster::new(config.id, &config.members),
            heartbeat_ticks: config.heartbeat_ticks.max(1),
            election_ticks: config.election_ticks.max(1),
            max_seen_epoch: hard_state.epoch,
            role: Role::Unknown { silent_ticks: 0 },
            participating_ticks: None,
            hops: Vec::new(),
            next_seq: 0,
            suspected: BTreeMap::new(),
            relayed_coordinator: None,
        }
    }

    /// How long a hop may stay unacknowledged before it is sent again, and then before its
    /// successor is skipped: a round trip with room to spare.
    fn ack_timeout_ticks(&self) -> u32 {
        self.heartbeat_ticks.saturating_mul(2)
    }

    /// How long a participant waits for the COORDINATOR: the token and then the announcement
    /// each go once around the ring, every hop possibly waiting out an acknowledgement.
    fn round_timeout_ticks(&self) -> u32 {
        let hops = u32::try_from(self.members.others().count() + 1).unwrap_or(u32::MAX).saturating_mul(2);
        self.election_ticks.saturating_add(hops.saturating_mul(self.ack_timeout_ticks()))
    }

    fn tick(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        self.suspected.retain(|_, left_ticks| {
            *left_ticks = left_ticks.saturating_sub(1);
            *left_ticks > 0
        });
        self.tick_hops(out);

        let election_ticks = self.election_ticks;
        let alone = self.members.others().next().is_none();
        match &mut self.role {
            Role::Leading { epoch, since_heartbeat_ticks } => {
                *since_heartbeat_ticks += 1;
                if *since_heartbeat_ticks >= self.heartbeat_ticks {
                    *since_heartbeat_ticks = 0;
                    let epoch = *epoch;
                    self.broadcast_heartbeat(epoch, out);
                }
            }
            Role::Unknown { silent_ticks } | Role::Following { silent_ticks, .. } => {
                *silent_ticks += 1;
                let timed_out = *silent_ticks >= election_ticks || alone;
                if timed_out && self.participating_ticks.is_none() {
                    self.start_election(out);
                }
            }
        }

        if let Some(waited_ticks) = &mut self.participating_ticks {
            *waited_ticks += 1;
            if *waited_ticks >= self.round_timeout_ticks() {
                // The token or the announcement was lost on the way.
                self.start_election(out);
            }
        }
    }

    /// Skips every successor that left a hop unacknowledged for too long.
    fn tick_hops(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        let timeout = self.ack_timeout_ticks();
        let mut late = BTreeSet::new();
        for hop in &mut self.hops {
            hop.waited_ticks += 1;
            if hop.waited_ticks < timeout {
                continue;
            }
            if hop.resent {
                late.insert(hop.to);
            } else {
                hop.resent = true;
                hop.waited_ticks = 0;
                out.push((hop.to, hop.msg.clone()));
            }
        }
        for peer in late {
            self.suspect(peer, out);
        }
    }

    /// Skips `peer` from now on: whatever waits on its acknowledgement goes round it.
    fn suspect(&mut self, peer: NodeId, out: &mut Vec<(NodeId, Msg)>) {
        self.suspected.insert(peer, self.round_timeout_ticks());
        let (stuck, waiting): (Vec<Hop>, Vec<Hop>) =
            std::mem::take(&mut self.hops).into_iter().partition(|hop| hop.to == peer);
        self.hops = waiting;
        for hop in stuck {
            self.relay(hop.relay, out);
        }
    }

    fn receive(&mut self, from: NodeId, msg: Msg, out: &mut Vec<(NodeId, Msg)>) {
        self.suspected.remove(&from);
        let stale = msg.epoch() < self.max_seen_epoch;
        self.observe_epoch(msg.epoch());
        match msg {
            Msg::Ack { seq, .. } => self.hops.retain(|hop| !(hop.to == from && hop.seq == seq)),
            Msg::Election { candidate, round, seq, .. } => {
                out.push((from, Msg::Ack { seq, epoch: self.max_seen_epoch }));
                self.on_token(candidate, round, out);
            }
            Msg::Coordinator { leader, epoch, seq } => {
                out.push((from, Msg::Ack { seq, epoch: self.max_seen_epoch }));
                if !stale {
                    self.on_coordinator(leader, epoch, out);
                }
            }
            Msg::Heartbeat { epoch } => {
                if !stale {
                    self.follow(from, epoch);
                }
            }
        }
    }

    /// Raises the highest seen epoch. A leader whose epoch is now below it has been fenced
    /// out by a leadership it did not know of, and steps down.
    fn observe_epoch(&mut self, epoch: Epoch) {
        if epoch <= self.max_seen_epoch {
            return;
        }
        self.max_seen_epoch = epoch;
        if let Role::Leading { .. } = self.role {
            self.role = Role::Unknown { silent_ticks: 0 };
        }
    }

    /// Chang–Roberts forwarding of an ELECTION token naming `candidate`.
    fn on_token(&mut self, candidate: NodeId, round: Epoch, out: &mut Vec<(NodeId, Msg)>) {
        let me = self.members.me();
        if self.leadership().epoch().is_some_and(|accepted| round < accepted) {
            // Started before the leadership we accepted was won: a late copy (a resend, a
            // duplicate) that would otherwise set the ring electing again.
            return;
        }
        if let Role::Leading { epoch, .. } = self.role {
            // Someone missed our heartbeats, yet we lead at the highest epoch it knows:
            // remind everyone now instead of electing anew, and swallow the token.
            if candidate != me {
                self.role = Role::Leading { epoch, since_heartbeat_ticks: 0 };
                self.broadcast_heartbeat(epoch, out);
            }
            return;
        }
        if candidate == me {
            // Our token passed every live node. A token from an election we already gave up
            // (we heard of a leader since) proves nothing.
            if self.participating_ticks.is_some() {
                self.become_leader(out);
            }
            return;
        }
        let participating = self.participating_ticks.is_some();
        if candidate < me && participating {
            return; // our own, higher, token is already on its way
        }
        self.participating_ticks.get_or_insert(0);
        self.relay(Relay::Election { candidate: candidate.max(me), round }, out);
    }

    fn on_coordinator(&mut self, leader: NodeId, epoch: Epoch, out: &mut Vec<(NodeId, Msg)>) {
        if leader == self.members.me() {
            return; // our announcement went round the ring
        }
        self.follow(leader, epoch);
        if self.relayed_coordinator != Some((leader, epoch)) {
            self.relayed_coordinator = Some((leader, epoch));
            self.relay(Relay::Coordinator { leader, epoch }, out);
        }
    }

    fn follow(&mut self, leader: NodeId, epoch: Epoch) {
        self.role = Role::Following { leader, epoch, silent_ticks: 0 };
        self.participating_ticks = None;
    }

    fn start_election(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        self.role = Role::Unknown { silent_ticks: 0 };
        self.participating_ticks = Some(0);
        self.relay(Relay::Election { candidate: self.members.me(), round: self.max_seen_epoch }, out);
    }

    fn become_leader(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        let epoch = self.members.next_owned_epoch(self.max_seen_epoch);
        self.max_seen_epoch = epoch;
        self.role = Role::Leading { epoch, since_heartbeat_ticks: 0 };
        self.participating_ticks = None;
        let me = self.members.me();
        self.relayed_coordinator = Some((me, epoch));
        self.relay(Relay::Coordinator { leader: me, epoch }, out);
    }

    fn broadcast_heartbeat(&self, epoch: Epoch, out: &mut Vec<(NodeId, Msg)>) {
        out.extend(self.members.others().map(|id| (id, Msg::Heartbeat { epoch })));
    }

    /// Sends `relay` to the first successor not suspected, and waits for its acknowledgement.
    fn relay(&mut self, relay: Relay, out: &mut Vec<(NodeId, Msg)>) {
        let successor = self.members.after_me().find(|id| !self.suspected.contains_key(id));
        let Some(to) = successor else {
            // Every other member is suspected: a token would come straight back to us.
            if let Relay::Election { .. } = relay {
                if !matches!(self.role, Role::Leading { .. }) {
                    self.become_leader(out);
                }
            }
            return;
        };
        let relay = match relay {
            Relay::Coordinator { leader, .. } if self.passes(leader, to) => {
                return; // the leader is suspected: the announcement has gone round
            }
            // The candidate is suspected, so its token could never come back to it. Every node
            // above it was dead too, or the token would not name it: we are the highest live
            // node the token knows of, and stand in its place.
            Relay::Election { candidate, round } if self.passes(candidate, to) => {
                Relay::Election { candidate: self.members.me(), round }
            }
            relay => relay,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let epoch = self.max_seen_epoch;
        let msg = match relay {
            Relay::Election { candidate, round } => Msg::Election { candidate, round, epoch, seq },
            Relay::Coordinator { leader, epoch } => Msg::Coordinator { leader, epoch, seq },
        };
        out.push((to, msg.clone()));
        self.hops.push(Hop { to, seq, relay, msg, resent: false, waited_ticks: 0 });
    }

    /// Whether going from this node to `to` skips over `node` (ring order).
    fn passes(&self, node: NodeId, to: NodeId) -> bool {
        node != self.members.me() && self.members.after_me().take_while(|&id| id != to).any(|id| id == node)
    }
}

impl Election for Ring {
    type Msg = Msg;

    fn name(&self) -> &'static str {
        "ring"
    }

    fn step(&mut self, input: Input<Msg>) -> Actions<Msg> {
        let before = (self.hard_state(), self.leadership());
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(&mut out),
            Input::Message { from, msg } => {
                if from != self.members.me() && self.members.contains(from) {
                    self.receive(from, msg, &mut out);
                }
            }
            Input::PeerDown(peer) => {
                if self.members.contains(peer) && peer != self.members.me() {
                    self.suspect(peer, &mut out);
                    if matches!(self.role, Role::Following { leader, .. } if leader == peer) {
                        self.start_election(&mut out);
                    }
                }
            }
            Input::PeerUp(peer) => {
                self.suspected.remove(&peer);
            }
            // A leader below it steps down; a leader followed below it is fenced out (its
            // heartbeats are stale now), and the election timeout runs on from here.
            Input::EpochSeen(epoch) => {
                self.observe_epoch(epoch);
                if let Role::Following { epoch: followed, silent_ticks, .. } = self.role {
                    if followed < self.max_seen_epoch {
                        self.role = Role::Unknown { silent_ticks };
                    }
                }
            }
        }
        fencing::actions(out, before, (self.hard_state(), self.leadership()))
    }

    fn leadership(&self) -> Leadership {
        match self.role {
            Role::Leading { epoch, .. } => Leadership::Leading { epoch },
            Role::Following { leader, epoch, .. } => Leadership::Following { leader, epoch },
            Role::Unknown { .. } => Leadership::Unknown,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState { epoch: self.max_seen_epoch, voted_for: None }
    }

    /// The ring elects by id alone; checkpoint_version does not enter.
    fn set_checkpoint_version(&mut self, _freshness: u64) {}
}
