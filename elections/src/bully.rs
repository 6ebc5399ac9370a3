//! The bully algorithm (Garcia-Molina, 1982): the highest live id leads.
//!
//! A node that misses its leader sends ELECTION to every higher id. Any higher live node
//! answers (ANSWER) and runs its own election, so the node that hears no ANSWER within the
//! timeout is the highest live one: it wins and tells everyone (COORDINATOR). A node that was
//! answered but then hears no COORDINATOR in time starts over. A restarted node first listens
//! for a while; if the leader it hears has a lower id, it bullies its way in with an election.
//! The leader heartbeats everyone so its crash is noticed through silence.
//!
//! Epochs are fencing tokens (see `fencing.rs`): every message carries the sender's highest
//! seen epoch, a winner leads at an epoch it owns above every epoch it has seen, and a claim at
//! an epoch below the highest one seen is ignored. A leader that learns of a higher epoch than
//! its own has been fenced out and runs a new election, which it wins at a higher epoch if it is
//! still the highest live id.

use crate::backoff::Backoff;
use crate::fencing::{self, Roster};
use crate::{Actions, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A bully message. `epoch` is always the sender's highest seen epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// "I am holding an election": sent to every higher id.
    Election { epoch: Epoch },
    /// "I am alive and higher than you; I take the election over": reply to an ELECTION.
    Answer { epoch: Epoch },
    /// "I lead at `epoch`": the winner's announcement to everyone.
    Coordinator { epoch: Epoch },
    /// "I still lead at `epoch`": sent by the leader every `heartbeat_ticks`.
    Heartbeat { epoch: Epoch },
}

impl Msg {
    /// The message's kind, for traces: `election`, `answer`, `coordinator` or `heartbeat`.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Election { .. } => "election",
            Msg::Answer { .. } => "answer",
            Msg::Coordinator { .. } => "coordinator",
            Msg::Heartbeat { .. } => "heartbeat",
        }
    }

    /// The epoch the message speaks for.
    pub fn epoch(&self) -> Epoch {
        match *self {
            Msg::Election { epoch } | Msg::Answer { epoch } | Msg::Coordinator { epoch } | Msg::Heartbeat { epoch } => {
                epoch
            }
        }
    }
}

/// Where a node stands; every timer counts ticks since the state was entered or refreshed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// No leader known and no election of ours under way (after a start or restart): listen for
    /// a leader before disturbing the cluster.
    Listening {
        silent_ticks: u32,
    },
    /// We asked every higher id; whoever is alive will ANSWER.
    Electing {
        waited_ticks: u32,
    },
    /// A higher id answered; it owes us a COORDINATOR.
    AwaitingCoordinator {
        waited_ticks: u32,
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

/// One node's bully state machine.
#[derive(Clone, Debug)]
pub struct Bully {
    members: Roster,
    heartbeat_ticks: u32,
    /// The election timeout, stretched each time a suspected leader proves alive.
    election_timeout: Backoff,
    /// The leader (and its epoch) whose silence or failure started our last election.
    suspected: Option<(NodeId, Epoch)>,
    /// The highest epoch seen in any message or led at; durable (`HardState::epoch`).
    max_seen_epoch: Epoch,
    role: Role,
    /// Peers the failure detector reported down since our election began and that have not
    /// been heard from since. A candidate whose higher peers are all down need not wait for
    /// their ANSWER.
    down: BTreeSet<NodeId>,
}

impl Bully {
    /// A node that has just started (or restarted with `hard_state`) and knows no leader.
    pub fn new(config: Config, hard_state: HardState) -> Bully {
        Bully {
            members: Roster::new(config.id, &config.members),
            heartbeat_ticks: config.heartbeat_ticks.max(1),
            election_timeout: Backoff::new(config.election_ticks),
            suspected: None,
            max_seen_epoch: hard_state.epoch,
            role: Role::Listening { silent_ticks: 0 },
            down: BTreeSet::new(),
        }
    }

    /// How long a candidate waits for an ANSWER: a round trip with room to spare.
    fn answer_timeout_ticks(&self) -> u32 {
        self.election_ticks()
    }

    /// How long a member hears nothing from a leader before it elects.
    fn election_ticks(&self) -> u32 {
        self.election_timeout.timeout_ticks()
    }

    /// How long an answered candidate waits for the COORDINATOR: the answering node first runs
    /// its own election (one answer timeout), then announces.
    fn coordinator_timeout_ticks(&self) -> u32 {
        self.election_ticks().saturating_mul(3)
    }

    fn tick(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        self.election_timeout.tick();
        let election_ticks = self.election_ticks();
        let answer_timeout = self.answer_timeout_ticks();
        let coordinator_timeout = self.coordinator_timeout_ticks();
        let alone = self.members.others().next().is_none();
        match &mut self.role {
            Role::Leading { epoch, since_heartbeat_ticks } => {
                *since_heartbeat_ticks += 1;
                if *since_heartbeat_ticks >= self.heartbeat_ticks {
                    *since_heartbeat_ticks = 0;
                    let epoch = *epoch;
                    self.broadcast(Msg::Heartbeat { epoch }, out);
                }
            }
            Role::Listening { silent_ticks } | Role::Following { silent_ticks, .. } => {
                *silent_ticks += 1;
                // A lone node has nobody to listen for.
                if *silent_ticks >= election_ticks || alone {
                    self.elect_on_suspicion(out);
                }
            }
            Role::Electing { waited_ticks } => {
                *waited_ticks += 1;
                if *waited_ticks >= answer_timeout {
                    // Nobody higher is alive.
                    self.become_leader(out);
                }
            }
            Role::AwaitingCoordinator { waited_ticks } => {
                *waited_ticks += 1;
                if *waited_ticks >= coordinator_timeout {
                    // The node that answered died before announcing.
                    self.elect_on_suspicion(out);
                }
            }
        }
    }

    fn receive(&mut self, from: NodeId, msg: Msg, out: &mut Vec<(NodeId, Msg)>) {
        // Only a leader's own claims disprove: a restarted node answers at its old epoch too.
        let leads = matches!(msg, Msg::Heartbeat { .. } | Msg::Coordinator { .. });
        if leads && self.suspected == Some((from, msg.epoch())) {
            self.suspected = None;
            self.election_timeout.suspicion_disproved();
        }
        let me = self.members.me();
        let stale = msg.epoch() < self.max_seen_epoch;
        self.observe_epoch(msg.epoch(), out);
        match msg {
            Msg::Election { .. } if from < me => {
                out.push((from, Msg::Answer { epoch: self.max_seen_epoch }));
                match self.role {
                    // A live leader settles the question for the candidate directly.
                    Role::Leading { epoch, .. } => out.push((from, Msg::Coordinator { epoch })),
                    // The candidate also asked our leader, which is higher and alive.
                    Role::Following { leader, silent_ticks, .. }
                        if leader > me && silent_ticks < self.election_ticks() => {}
                    Role::Electing { .. } | Role::AwaitingCoordinator { .. } => {}
                    _ => self.elect_on_suspicion(out),
                }
            }
            Msg::Answer { .. } if from > me => {
                if let Role::Electing { .. } = self.role {
                    self.role = Role::AwaitingCoordinator { waited_ticks: 0 };
                }
            }
            Msg::Coordinator { epoch } | Msg::Heartbeat { epoch } if !stale => self.leader_claim(from, epoch, out),
            // A claim at a fenced-out epoch, or a message the protocol never sends this way.
            _ => {}
        }
    }

    /// `leader` claims to lead at `epoch`, no lower than any epoch we have seen.
    fn leader_claim(&mut self, leader: NodeId, epoch: Epoch, out: &mut Vec<(NodeId, Msg)>) {
        if leader > self.members.me() {
            // A newer leadership settles an old suspicion (it was right, or it no longer matters).
            if self.suspected.is_some_and(|(_, suspected_epoch)| epoch > suspected_epoch) {
                self.suspected = None;
            }
            self.role = Role::Following { leader, epoch, silent_ticks: 0 };
            return;
        }
        // A lower id leads: bully it out, unless our own election is already under way or we
        // already lead above its epoch (our announcement is on its way to it).
        match self.role {
            Role::Electing { .. } | Role::AwaitingCoordinator { .. } => {}
            Role::Leading { epoch: ours, .. } if ours > epoch => {}
            _ => self.start_election(out),
        }
    }

    /// Raises the highest seen epoch. A leader whose epoch is now below it has been fenced
    /// out by a leadership it did not know of, and must win again at a higher epoch.
    fn observe_epoch(&mut self, epoch: Epoch, out: &mut Vec<(NodeId, Msg)>) {
        if epoch <= self.max_seen_epoch {
            return;
        }
        self.max_seen_epoch = epoch;
        if let Role::Leading { .. } = self.role {
            self.start_election(out);
        }
    }

    /// An election because the leader seems gone (silence, a failure report, a candidate's
    /// question, a missing COORDINATOR). The leader we followed is remembered: if it speaks
    /// again at that epoch, it was only late, and the timeout backs off.
    fn elect_on_suspicion(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        if let Role::Following { leader, epoch, .. } = self.role {
            self.suspected = Some((leader, epoch));
        }
        self.start_election(out);
    }

    fn start_election(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        let me = self.members.me();
        let higher: Vec<NodeId> = self.members.others().filter(|&id| id > me).collect();
        if higher.is_empty() {
            self.become_leader(out);
            return;
        }
        // Only failures of this election's own messages count: a report from an earlier one
        // may be stale (an overloaded peer that timed out then answers now), and acting on it
        // makes starved members of a 100-member cluster crown themselves over live higher ones,
        // one after another (an election storm that never settles).
        self.down.clear();
        for id in higher {
            out.push((id, Msg::Election { epoch: self.max_seen_epoch }));
        }
        self.role = Role::Electing { waited_ticks: 0 };
    }

    /// Whether the failure detector reports every higher id down (a hint only: a wrong one
    /// costs an extra election when the higher node bullies back, never a shared epoch).
    fn all_higher_down(&self) -> bool {
        let me = self.members.me();
        self.members.others().filter(|&id| id > me).all(|id| self.down.contains(&id))
    }

    fn become_leader(&mut self, out: &mut Vec<(NodeId, Msg)>) {
        let epoch = self.members.next_owned_epoch(self.max_seen_epoch);
        self.max_seen_epoch = epoch;
        self.role = Role::Leading { epoch, since_heartbeat_ticks: 0 };
        self.broadcast(Msg::Coordinator { epoch }, out);
    }

    fn broadcast(&self, msg: Msg, out: &mut Vec<(NodeId, Msg)>) {
        out.extend(self.members.others().map(|id| (id, msg.clone())));
    }
}

impl Election for Bully {
    type Msg = Msg;

    fn name(&self) -> &'static str {
        "bully"
    }

    fn step(&mut self, input: Input<Msg>) -> Actions<Msg> {
        let before = (self.hard_state(), self.leadership());
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(&mut out),
            Input::Message { from, msg } => {
                if from != self.members.me() && self.members.contains(from) {
                    self.down.remove(&from);
                    self.receive(from, msg, &mut out);
                }
            }
            Input::PeerDown(peer) => {
                if matches!(self.role, Role::Following { leader, .. } if leader == peer) {
                    self.elect_on_suspicion(&mut out);
                }
                // After the start: this report is news for the election it may have begun.
                self.down.insert(peer);
                if matches!(self.role, Role::Electing { .. }) && self.all_higher_down() {
                    self.become_leader(&mut out);
                }
            }
            // The recovered peer runs its own election if it outranks the leader.
            Input::PeerUp(peer) => {
                self.down.remove(&peer);
            }
            // A leader below it elects again; a leader followed below it is fenced out (its
            // heartbeats are stale now), and the election timeout runs on from here.
            Input::EpochSeen(epoch) => {
                self.observe_epoch(epoch, &mut out);
                if let Role::Following { epoch: followed, silent_ticks, .. } = self.role {
                    if followed < self.max_seen_epoch {
                        self.role = Role::Listening { silent_ticks };
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
            _ => Leadership::Unknown,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState { epoch: self.max_seen_epoch, voted_for: None }
    }

    /// Bully elects by id alone; checkpoint_version does not enter.
    fn set_checkpoint_version(&mut self, _freshness: u64) {}
}
