//! The promise run: a peer restarts between its answer to a new coordinator's gathering
//! and a deposed coordinator's write.
//!
//! A peer's answer to a gathering promises to refuse writes from lower epochs, so nothing a
//! deposed coordinator writes afterwards is acknowledged without the new coordinator hearing
//! of it. The promise must survive a restart of the peer. The run scripts the moment where
//! it matters:
//! 1. the coordinator (the old one) is cut off from every member but its first replica (the
//!    peer), and the others' messages to the peer are lost too, except gatherings (the
//!    network reorders: a gathering overtakes the rest of the new epoch's news);
//! 2. the others elect a new coordinator, which gathers; the peer answers, crashes at once
//!    and restarts;
//! 3. a client submits a job to the old coordinator, which writes it to the peer;
//! 4. the old coordinator dies for good, and the network heals.
//!
//! A peer that kept its promise refuses the write and names the new epoch, and the old
//! coordinator acknowledges nothing. One that forgot it takes the write, the job is
//! acknowledged, and the new coordinator never hears of it: the run's checks report the
//! client's job lost. (Raft-lite's check-quorum deposes the cut-off coordinator, but only
//! about when a successor gathers: a write can still slip in.)

use super::clients::{Client, ClientEv};
use super::driver::Msg;
use super::{Ev, Sim, FAULTS_MS};

/// When the script gives up waiting for the peer's answer, after the isolation.
const ANSWER_WAIT_MS: u64 = 2_000;
/// How long the old coordinator has for the client's job once the peer restarted.
const WRITE_WINDOW_MS: u64 = 600;

pub(super) enum Step {
    Isolate,
    End,
}

pub(super) enum Stage {
    /// Waiting for a coordinator to isolate.
    Armed,
    /// `old` is cut off from all but `peer`, which has not yet answered a gathering.
    Isolated {
        old: usize,
        peer: usize,
    },
    /// The peer answered and restarts; the old coordinator gets a client's job.
    Restarted {
        old: usize,
        peer: usize,
    },
    Over,
}

impl Sim<'_> {
    pub(super) fn promise_step(&mut self, step: Step) {
        match step {
            Step::Isolate => self.isolate_coordinator(),
            Step::End => self.end_promise_run(),
        }
    }

    /// Cuts the coordinator off from all but its first replica (once every member is up and
    /// one coordinates).
    fn isolate_coordinator(&mut self) {
        if !matches!(self.promise, Some(Stage::Armed)) {
            return;
        }
        let all_up = (0..self.nodes.len()).all(|i| self.up(i));
        let old =
            (0..self.nodes.len()).find(|&i| self.nodes[i].core.as_ref().is_some_and(|c| c.coordinating().is_some()));
        let Some(old) = old.filter(|_| all_up) else {
            if self.now_ms() + 50 < FAULTS_MS {
                self.schedule(50, Ev::Promise(Step::Isolate));
            } else {
                self.promise = Some(Stage::Over);
            }
            return;
        };
        // Its first replica: the member after it, as a coordinator replicates.
        let peer = (old + 1) % self.nodes.len();
        self.promise = Some(Stage::Isolated { old, peer });
        self.note(|| format!("PROMISE: node {} is cut off from all but node {}", old + 1, peer + 1));
        self.schedule(ANSWER_WAIT_MS, Ev::Promise(Step::End));
    }

    /// Whether the script loses this message.
    pub(super) fn promise_drops(&self, from: usize, to: usize, msg: &Msg) -> bool {
        let (old, peer) = match self.promise {
            Some(Stage::Isolated { old, peer } | Stage::Restarted { old, peer }) => (old, peer),
            _ => return false,
        };
        let cut_off = (from == old && to != peer) || (to == old && from != peer);
        cut_off || (to == peer && from != old && !matches!(msg, Msg::Query { .. }))
    }

    /// Node `i` answered a gathering: the peer crashes at once, restarts, and a client
    /// sends a job to the old coordinator.
    pub(super) fn promise_answered_gathering(&mut self, i: usize) {
        let Some(Stage::Isolated { old, peer }) = self.promise else { return };
        if i != peer {
            return;
        }
        self.promise = Some(Stage::Restarted { old, peer });
        self.note(|| format!("PROMISE: node {} answered a gathering; it crashes and restarts", peer + 1));
        self.schedule(0, Ev::Crash { node: peer });
        let restart_ms = self.rng.range(1, 10);
        self.schedule(restart_ms, Ev::Restart { node: peer });
        let client = self.clients.len();
        let n = self.rng.range(2, 5_000);
        self.clients.push(Client::new(client, n).aimed_at(old));
        let submit_ms = restart_ms + self.rng.range(1, 5);
        self.schedule(submit_ms, Ev::Client(ClientEv::Wake { client, generation: 0 }));
        self.schedule(restart_ms + WRITE_WINDOW_MS, Ev::Promise(Step::End));
    }

    /// The old coordinator dies for good; the network heals.
    fn end_promise_run(&mut self) {
        let old = match self.promise {
            Some(Stage::Isolated { old, .. } | Stage::Restarted { old, .. }) => old,
            _ => return,
        };
        self.promise = Some(Stage::Over);
        self.note(|| format!("PROMISE: node {} dies for good; the network heals", old + 1));
        if self.up(old) && self.silenced.is_none() {
            self.silenced = Some(old);
            self.crash_now(old);
        }
    }
}
