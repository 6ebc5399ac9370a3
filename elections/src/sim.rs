//! A seeded, deterministic network simulator in the spirit of TigerBeetle's VOPR.
//!
//! One seed derives the whole faulty run: message delays (hence reordering), loss, duplication,
//! node crashes and restarts, partitions, the nodes' tick phases and the seeds of their own
//! random streams. Replaying the seed replays the run exactly, so a failing seed is a bug
//! report. The simulator drives any [`Election`] through a factory `Fn(Config, HardState) -> E`
//! and checks invariants after every step:
//!
//! 1. **One leader per epoch**: no two different nodes ever lead with the same epoch during the
//!    whole run.
//! 2. **Monotonic acceptance**: the epoch of the leadership a node accepts (leading or
//!    following) never decreases for that node, across its crashes too.
//! 3. **Honest reports**: [`Actions::leadership`] reports every change of
//!    [`Election::leadership`], with the new value.
//! 4. **Liveness**: once faults stop, every live node agrees on one leader (all following it
//!    at one epoch, the leader leading at that epoch) within [`liveness_bound_ticks`].

use crate::kernel::Kernel;
pub use crate::kernel::TICK_MS;
use crate::net::{Network, Route};
use crate::rng::mix;
pub use crate::rng::Rng;
use crate::{Actions, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Shortest one-way message delay.
pub const MIN_DELAY_MS: u64 = 1;
/// Longest one-way message delay. Random delays in between also reorder messages.
pub const MAX_DELAY_MS: u64 = 20;
/// How long a refused connection takes to be noticed by the sender (fixed, so that the
/// `PeerDown`/`PeerUp` notices about one peer reach a node in the order they happened).
pub const NOTICE_DELAY_MS: u64 = 1;
/// Liveness bound, part one: this many election timeouts (`Config::election_ticks`)...
pub const LIVENESS_BOUND_ELECTION_TIMEOUTS: u64 = 20;
/// ...plus this many ticks per node (the ring needs O(n) hops, a few per tick at most).
pub const LIVENESS_BOUND_TICKS_PER_NODE: u64 = 10;
/// A run stops with a violation when more events than this are pending: the algorithm is
/// flooding the network (a message storm), which would otherwise exhaust memory.
pub const MAX_PENDING_EVENTS: usize = 1_000_000;
/// A run stops with a violation after this many events (a livelock that never converges).
pub const MAX_EVENTS_PER_RUN: u64 = 20_000_000;
/// How long the leader-crash scenario lets a fresh leadership settle before crashing it.
pub const STABILISE_TICKS: u64 = 10;

/// The liveness bound, in ticks, for a cluster of `nodes` members: after the faults stop (or
/// from the start of a cold start, or from a leader's crash) every live node must agree on one
/// leader within `20 * election_ticks + 10 * nodes` ticks. With the default timing that is
/// 2.6 s at 6 nodes and 3.0 s at 25; every algorithm needs far less (see docs/ELECTIONS.md).
pub fn liveness_bound_ticks(nodes: usize, election_ticks: u32) -> u64 {
    LIVENESS_BOUND_ELECTION_TIMEOUTS * u64::from(election_ticks) + LIVENESS_BOUND_TICKS_PER_NODE * nodes as u64
}

/// What a run exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A random fault schedule (crashes, restarts, partitions, loss, duplication) for 1-3
    /// simulated seconds, then the faults stop (a minority may stay crashed) and the cluster
    /// must agree. Measures from the end of the faults.
    Random,
    /// All nodes start together, no faults. Measures from the start until agreement.
    ColdStart,
    /// Cold start, agree, let it settle, crash the leader. Measures from the crash until the
    /// survivors agree.
    LeaderCrash,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 3] = [Scenario::Random, Scenario::ColdStart, Scenario::LeaderCrash];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Random => "random",
            Scenario::ColdStart => "cold-start",
            Scenario::LeaderCrash => "leader-crash",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown scenario '{s}' (choose one of: random, cold-start, leader-crash)"))
    }
}

/// The shape of a simulated cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Cluster size; the members are `1..=nodes`.
    pub nodes: usize,
    pub scenario: Scenario,
    pub heartbeat_ticks: u32,
    pub election_ticks: u32,
    /// Record a readable event trace in [`RunReport::trace`] (slow; for replaying a seed).
    pub trace: bool,
}

impl SimConfig {
    /// `nodes` members with the default timing of [`Config::new`], no trace.
    pub fn new(nodes: usize, scenario: Scenario) -> SimConfig {
        let defaults = Config::new(1, vec![1]);
        SimConfig {
            nodes,
            scenario,
            heartbeat_ticks: defaults.heartbeat_ticks,
            election_ticks: defaults.election_ticks,
            trace: false,
        }
    }
}

/// The outcome of one seeded run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub seed: u64,
    /// Leaderships established in the measured window: distinct (leader, epoch) pairs seen
    /// leading. The window is the whole run for [`Scenario::Random`], start to agreement for
    /// [`Scenario::ColdStart`], crash to agreement for [`Scenario::LeaderCrash`].
    pub elections: u64,
    /// Messages the algorithm sent in the measured window (lost ones included, duplicates
    /// made by the network not).
    pub messages: u64,
    /// Simulated time from the start of the measured phase (faults stopped, cold start, leader
    /// crash) until every live node agreed; `None` when they never did.
    pub time_to_agree_ms: Option<u64>,
    /// Invariant violations (empty for a good run). The run stops at the first one.
    pub violations: Vec<String>,
    /// The readable event trace, when [`SimConfig::trace`] asked for it.
    pub trace: Vec<String>,
}

/// Runs one seed of `config.scenario` with nodes built by `factory`.
pub fn run<E, F>(config: &SimConfig, seed: u64, factory: F) -> RunReport
where
    E: Election,
    F: Fn(Config, HardState) -> E,
{
    let mut sim = Sim::new(config, seed, factory);
    sim.run();
    sim.report()
}

/// Aggregated reports of many seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub runs: u64,
    pub elections: u64,
    pub messages: u64,
    /// Every run's time to agree, in run order.
    pub times_to_agree_ms: Vec<u64>,
    /// Runs with at least one violation.
    pub failed_runs: u64,
    /// The first failing run (in the order added).
    pub first_failure: Option<RunReport>,
}

impl Summary {
    pub fn add(&mut self, report: RunReport) {
        self.runs += 1;
        self.elections += report.elections;
        self.messages += report.messages;
        self.times_to_agree_ms.extend(report.time_to_agree_ms);
        if !report.violations.is_empty() {
            self.failed_runs += 1;
            if self.first_failure.is_none() {
                self.first_failure = Some(report);
            }
        }
    }

    /// Adds another summary of later seeds.
    pub fn merge(&mut self, other: Summary) {
        self.runs += other.runs;
        self.elections += other.elections;
        self.messages += other.messages;
        self.times_to_agree_ms.extend(other.times_to_agree_ms);
        self.failed_runs += other.failed_runs;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    pub fn messages_per_election(&self) -> f64 {
        self.messages as f64 / self.elections.max(1) as f64
    }

    /// Median and maximum time to agree, in simulated ms.
    pub fn time_to_agree_median_max_ms(&self) -> Option<(u64, u64)> {
        let mut times = self.times_to_agree_ms.clone();
        times.sort_unstable();
        Some((times.get(times.len() / 2).copied()?, *times.last()?))
    }
}

/// Something scheduled to happen at a simulated time.
enum Event<M> {
    Tick {
        node: usize,
        incarnation: u32,
    },
    Deliver {
        from: usize,
        to: usize,
        msg: M,
    },
    /// A failure-detector notice (`PeerDown`/`PeerUp`) for node `to`.
    Notice {
        to: usize,
        input: Input<M>,
    },
    /// Random scenario: apply the next random fault.
    Fault,
    /// Random scenario: the faults stop.
    Quiet,
    /// Leader-crash scenario: crash the agreed leader.
    CrashLeader {
        node: usize,
    },
    /// The liveness bound of measured phase `phase` expires.
    Deadline {
        phase: u32,
    },
}

struct Node<E> {
    /// `None` while crashed.
    election: Option<E>,
    /// Bumped at every crash, so the ticks of a dead incarnation are dropped.
    incarnation: u32,
    /// The last hard state the node asked to persist: all that survives a crash.
    persisted: HardState,
    /// Last observed leadership (`Unknown` while crashed).
    leadership: Leadership,
    /// The highest epoch this node ever accepted, across crashes (invariant 2).
    accepted_epoch: Option<Epoch>,
    /// The node's checkpoint version, durable across crashes.
    checkpoint_version: u64,
}

struct Sim<'a, E: Election, F> {
    config: &'a SimConfig,
    factory: F,
    seed: u64,
    rng: Rng,
    kernel: Kernel<Event<E::Msg>>,
    nodes: Vec<Node<E>>,
    members: Vec<NodeId>,
    /// Delays, loss, duplication (during the faults) and partitions.
    net: Network,
    /// Whether senders hear `PeerDown`/`PeerUp` about crashed peers in this run.
    peer_notices: bool,
    /// `[sender * n + peer]`: the sender was told `PeerDown(peer)` and not yet `PeerUp`.
    told_down: Vec<bool>,
    fault_end_ms: u64,
    /// Invariant 1: the first node seen leading each epoch.
    leaders_by_epoch: BTreeMap<Epoch, usize>,
    elections: u64,
    messages: u64,
    /// Counters at the start of the measured window.
    base_elections: u64,
    base_messages: u64,
    /// Start of the measured phase while agreement is awaited.
    measuring_since_ms: Option<u64>,
    /// Counts measured phases, so a stale deadline is ignored.
    phase: u32,
    /// Some leadership changed since agreement was last checked.
    dirty: bool,
    done: bool,
    time_to_agree_ms: Option<u64>,
    violations: Vec<String>,
    trace: Option<Vec<String>>,
}

impl<'a, E, F> Sim<'a, E, F>
where
    E: Election,
    F: Fn(Config, HardState) -> E,
{
    fn new(config: &'a SimConfig, seed: u64, factory: F) -> Self {
        let n = config.nodes;
        let mut sim = Sim {
            config,
            factory,
            seed,
            rng: Rng::new(mix(seed)),
            kernel: Kernel::default(),
            nodes: Vec::with_capacity(n),
            members: (1..=n as NodeId).collect(),
            net: Network::new(n, MIN_DELAY_MS, MAX_DELAY_MS),
            peer_notices: false,
            told_down: vec![false; n * n],
            fault_end_ms: 0,
            leaders_by_epoch: BTreeMap::new(),
            elections: 0,
            messages: 0,
            base_elections: 0,
            base_messages: 0,
            measuring_since_ms: None,
            phase: 0,
            dirty: false,
            done: false,
            time_to_agree_ms: None,
            violations: Vec::new(),
            trace: config.trace.then(Vec::new),
        };
        for _ in 0..n {
            sim.nodes.push(Node {
                election: None,
                incarnation: 0,
                persisted: HardState::default(),
                leadership: Leadership::Unknown,
                accepted_epoch: None,
                checkpoint_version: 0,
            });
        }
        sim
    }

    fn run(&mut self) {
        if self.config.nodes == 0 {
            self.violations.push("a cluster needs at least one node".into());
            return;
        }
        if self.config.scenario == Scenario::LeaderCrash && self.config.nodes < 3 {
            // With fewer than 3 nodes the survivors of a crash are no majority.
            self.violations.push("the leader-crash scenario needs at least 3 nodes".into());
            return;
        }
        self.setup();
        let mut events: u64 = 0;
        while !self.done {
            events += 1;
            if events > MAX_EVENTS_PER_RUN || self.kernel.pending() > MAX_PENDING_EVENTS {
                let pending = self.kernel.pending();
                self.violation(format!("runaway run: {events} events processed, {pending} pending"));
                break;
            }
            let Some(event) = self.kernel.next() else {
                self.violations.push("the simulation ran out of events".into());
                break;
            };
            self.handle(event);
            if self.dirty {
                self.dirty = false;
                self.check_agreement();
            }
        }
    }

    fn setup(&mut self) {
        if self.config.scenario == Scenario::Random {
            self.fault_end_ms = self.rng.range(1_000, 3_001);
            let loss = [0.0, 0.01, 0.05, 0.2][self.rng.below(4) as usize];
            let duplication = [0.0, 0.02, 0.1][self.rng.below(3) as usize];
            self.net.set_faults(loss, duplication);
            self.peer_notices = self.rng.chance(0.5);
            if self.rng.chance(0.3) {
                for i in 0..self.config.nodes {
                    self.nodes[i].checkpoint_version = self.rng.below(3);
                }
            }
            let fault_end_ms = self.fault_end_ms;
            let first_fault_ms = self.rng.range(0, 300);
            self.schedule(first_fault_ms, Event::Fault);
            self.schedule(fault_end_ms, Event::Quiet);
            let ((loss, duplication), notices) = (self.net.faults(), self.peer_notices);
            self.note(|| {
                format!(
                    "faults until {fault_end_ms}ms, loss {loss}, duplication {duplication}, \
                     peer-down notices {notices}"
                )
            });
        } else {
            self.peer_notices = self.rng.chance(0.5);
            self.start_measuring();
        }
        for i in 0..self.config.nodes {
            self.start(i);
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event<E::Msg>) {
        self.kernel.at(at_ms, event);
    }

    fn now_ms(&self) -> u64 {
        self.kernel.now_ms()
    }

    /// Appends to the trace; the line is only formatted when a trace is being recorded.
    fn note(&mut self, line: impl FnOnce() -> String) {
        let now_ms = self.now_ms();
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{now_ms:>6}ms {}", line()));
        }
    }

    /// Records a violation and ends the run: what follows would only obscure the trace.
    fn violation(&mut self, what: String) {
        self.note(|| format!("VIOLATION: {what}"));
        self.violations.push(what);
        self.done = true;
    }

    fn id(&self, i: usize) -> NodeId {
        self.members[i]
    }

    fn index(&self, id: NodeId) -> Option<usize> {
        let i = (id as usize).checked_sub(1)?;
        (i < self.config.nodes).then_some(i)
    }

    fn is_up(&self, i: usize) -> bool {
        self.nodes[i].election.is_some()
    }

    fn handle(&mut self, event: Event<E::Msg>) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.is_up(node) {
                    self.step(node, Input::Tick);
                    self.schedule(self.now_ms() + TICK_MS, Event::Tick { node, incarnation });
                }
            }
            Event::Deliver { from, to, msg } => {
                if self.is_up(to) && self.net.connected(from, to) {
                    let from_id = self.id(from);
                    self.step(to, Input::Message { from: from_id, msg });
                }
            }
            Event::Notice { to, input } => {
                if self.is_up(to) {
                    self.step(to, input);
                }
            }
            Event::Fault => self.random_fault(),
            Event::Quiet => self.quiet(),
            Event::CrashLeader { node } => {
                self.crash(node);
                self.start_measuring();
            }
            Event::Deadline { phase } => {
                if phase == self.phase && self.measuring_since_ms.is_some() {
                    let bound = liveness_bound_ticks(self.config.nodes, self.config.election_ticks);
                    let live = self.describe_live();
                    self.violation(format!("liveness: no agreement within {bound} ticks; live nodes: {live}"));
                }
            }
        }
    }

    /// Feeds one input to node `i` and carries out the actions: persist, send, then check the
    /// reported leadership.
    fn step(&mut self, i: usize, input: Input<E::Msg>) {
        let Some(election) = self.nodes[i].election.as_mut() else {
            return;
        };
        let actions: Actions<E::Msg> = election.step(input);
        let leadership = election.leadership();
        if let Some(hard) = actions.persist {
            self.nodes[i].persisted = hard;
        }
        if let Some(reported) = actions.leadership {
            if reported != leadership {
                let id = self.id(i);
                self.violation(format!("node {id} reported {reported:?} but its leadership() is {leadership:?}"));
            }
        }
        if leadership != self.nodes[i].leadership {
            if actions.leadership.is_none() {
                let id = self.id(i);
                self.violation(format!("node {id} changed to {leadership:?} without reporting it"));
            }
            self.observe(i, leadership);
        }
        for (to, msg) in actions.messages {
            self.send(i, to, msg);
        }
    }

    /// Records node `i`'s new leadership and checks invariants 1 and 2.
    fn observe(&mut self, i: usize, leadership: Leadership) {
        let id = self.id(i);
        self.nodes[i].leadership = leadership;
        self.dirty = true;
        self.note(|| format!("node {id}: {leadership:?}"));
        let Some(epoch) = leadership.epoch() else {
            return;
        };
        match self.nodes[i].accepted_epoch {
            Some(accepted) if epoch < accepted => {
                self.violation(format!("node {id} accepted epoch {epoch} after having accepted epoch {accepted}"))
            }
            _ => self.nodes[i].accepted_epoch = Some(epoch),
        }
        if let Leadership::Leading { epoch } = leadership {
            match self.leaders_by_epoch.get(&epoch) {
                None => {
                    self.leaders_by_epoch.insert(epoch, i);
                    self.elections += 1;
                }
                Some(&first) if first != i => {
                    let first_id = self.id(first);
                    self.violation(format!("nodes {first_id} and {id} both led epoch {epoch}"));
                }
                Some(_) => {}
            }
        }
    }

    fn send(&mut self, from: usize, to_id: NodeId, msg: E::Msg) {
        self.messages += 1;
        let from_id = self.id(from);
        let Some(to) = self.index(to_id) else {
            self.note(|| format!("{from_id} -> {to_id} dropped (no such node): {msg:?}"));
            return;
        };
        let delays = match self.net.route(&mut self.rng, from, to) {
            Route::Lost => return self.note(|| format!("{from_id} -> {to_id} lost: {msg:?}")),
            Route::Partitioned => return self.note(|| format!("{from_id} -> {to_id} partitioned: {msg:?}")),
            Route::Deliver(delays) => delays,
        };
        if !self.is_up(to) {
            self.note(|| format!("{from_id} -> {to_id} refused (crashed): {msg:?}"));
            let told = from * self.config.nodes + to;
            if self.peer_notices && !self.told_down[told] {
                self.told_down[told] = true;
                let at_ms = self.now_ms() + NOTICE_DELAY_MS;
                self.schedule(at_ms, Event::Notice { to: from, input: Input::PeerDown(to_id) });
            }
            return;
        }
        for (copy, delay_ms) in delays.into_iter().enumerate().rev() {
            let remark = if copy > 0 { " (duplicate)" } else { "" };
            self.deliver_later(from, to, msg.clone(), delay_ms, remark);
        }
    }

    /// Puts one copy of a message in flight, `delay_ms` from now.
    fn deliver_later(&mut self, from: usize, to: usize, msg: E::Msg, delay_ms: u64, remark: &str) {
        let (from_id, to_id) = (self.id(from), self.id(to));
        self.note(|| format!("{from_id} -> {to_id} in {delay_ms}ms{remark}: {msg:?}"));
        self.schedule(self.now_ms() + delay_ms, Event::Deliver { from, to, msg });
    }

    /// Builds node `i` from its persisted state and starts its ticks at a random phase.
    fn start(&mut self, i: usize) {
        let id = self.id(i);
        let node = &mut self.nodes[i];
        let config = Config {
            id,
            members: self.members.clone(),
            heartbeat_ticks: self.config.heartbeat_ticks,
            election_ticks: self.config.election_ticks,
            // Each incarnation gets its own stream, all derived from the run's seed.
            seed: mix(self.seed ^ mix(u64::from(id) << 32 | u64::from(node.incarnation))),
        };
        let mut election = (self.factory)(config, node.persisted);
        election.set_checkpoint_version(node.checkpoint_version);
        let leadership = election.leadership();
        node.election = Some(election);
        let (incarnation, persisted) = (node.incarnation, node.persisted);
        self.note(|| format!("node {id} starts from {persisted:?}"));
        if leadership != Leadership::Unknown {
            self.observe(i, leadership);
        }
        self.dirty = true;
        let first_tick_ms = self.now_ms() + self.rng.range(1, TICK_MS + 1);
        self.schedule(first_tick_ms, Event::Tick { node: i, incarnation });
        if self.peer_notices {
            let n = self.config.nodes;
            for sender in 0..n {
                if std::mem::take(&mut self.told_down[sender * n + i]) {
                    let at_ms = self.now_ms() + NOTICE_DELAY_MS;
                    self.schedule(at_ms, Event::Notice { to: sender, input: Input::PeerUp(id) });
                }
            }
        }
    }

    /// Node `i` loses its volatile state; only `persisted` survives.
    fn crash(&mut self, i: usize) {
        let id = self.id(i);
        let n = self.config.nodes;
        let node = &mut self.nodes[i];
        node.election = None;
        node.incarnation += 1;
        node.leadership = Leadership::Unknown;
        // What the node had been told about its peers was volatile too.
        self.told_down[i * n..(i + 1) * n].iter_mut().for_each(|t| *t = false);
        self.dirty = true;
        self.note(|| format!("node {id} crashes"));
    }

    fn crashed(&self) -> Vec<usize> {
        (0..self.config.nodes).filter(|&i| !self.is_up(i)).collect()
    }

    fn random_fault(&mut self) {
        if self.now_ms() >= self.fault_end_ms {
            return;
        }
        let n = self.config.nodes;
        // At most a minority down at a time (but at least one node may crash and come back).
        let max_down = ((n - 1) / 2).max(1);
        match self.rng.below(4) {
            0 => {
                let up: Vec<usize> = (0..n).filter(|&i| self.is_up(i)).collect();
                if n - up.len() < max_down {
                    let victim = up[self.rng.below(up.len() as u64) as usize];
                    self.crash(victim);
                }
            }
            1 => {
                let down = self.crashed();
                if !down.is_empty() {
                    let lucky = down[self.rng.below(down.len() as u64) as usize];
                    self.start(lucky);
                }
            }
            2 if n >= 2 => {
                for i in 0..n {
                    let side = u8::from(self.rng.chance(0.5));
                    self.net.set_side(i, side);
                }
                // Both sides non-empty: move one random node across if needed.
                if !self.net.partitioned() {
                    let i = self.rng.below(n as u64) as usize;
                    self.net.set_side(i, 1 - self.net.side(i));
                }
                let groups = self.describe_partition();
                self.note(|| format!("partition {groups}"));
            }
            _ => self.heal(),
        }
        let next_ms = self.now_ms() + self.rng.range(20, 400);
        self.schedule(next_ms, Event::Fault);
    }

    fn heal(&mut self) {
        if self.net.partitioned() {
            self.net.heal();
            self.note(|| "partition healed".to_string());
        }
    }

    /// The faults stop: heal, restart the crashed nodes except possibly a minority, and start
    /// waiting for agreement.
    fn quiet(&mut self) {
        self.net.set_faults(0.0, 0.0);
        self.heal();
        let max_left_down = (self.config.nodes - 1) / 2;
        let left_down = if self.rng.chance(0.5) { 0 } else { self.rng.below(max_left_down as u64 + 1) as usize };
        for i in self.crashed().into_iter().skip(left_down) {
            self.start(i);
        }
        self.note(|| "faults stop".to_string());
        self.start_measuring();
        // The random scenario counts messages and elections over the whole run.
        self.base_elections = 0;
        self.base_messages = 0;
    }

    fn start_measuring(&mut self) {
        self.phase += 1;
        self.measuring_since_ms = Some(self.now_ms());
        self.base_elections = self.elections;
        self.base_messages = self.messages;
        self.dirty = true;
        let bound_ms = liveness_bound_ticks(self.config.nodes, self.config.election_ticks) * TICK_MS;
        let phase = self.phase;
        self.schedule(self.now_ms() + bound_ms, Event::Deadline { phase });
    }

    /// Invariant 4: once every live node agrees, the measured phase ends.
    fn check_agreement(&mut self) {
        let Some(since_ms) = self.measuring_since_ms else {
            return;
        };
        let Some(leader) = self.agreed_leader() else {
            return;
        };
        let took_ms = self.now_ms() - since_ms;
        self.measuring_since_ms = None;
        let (leader_id, leadership) = (self.id(leader), self.nodes[leader].leadership);
        self.note(|| format!("agreement on leader {leader_id} ({leadership:?}) after {took_ms}ms"));
        if self.config.scenario == Scenario::LeaderCrash && self.phase == 1 {
            // The cold start that precedes the crash is not measured.
            let at_ms = self.now_ms() + STABILISE_TICKS * TICK_MS;
            self.schedule(at_ms, Event::CrashLeader { node: leader });
            return;
        }
        self.time_to_agree_ms = Some(took_ms);
        self.freeze_counters();
        self.done = true;
    }

    fn freeze_counters(&mut self) {
        self.elections -= self.base_elections;
        self.messages -= self.base_messages;
        self.base_elections = 0;
        self.base_messages = 0;
    }

    /// The leader every live node agrees on, when they do: all follow one leader at one epoch
    /// and that leader, live, leads at that epoch.
    fn agreed_leader(&self) -> Option<usize> {
        let mut agreed: Option<(NodeId, Epoch)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.election.is_none() {
                continue;
            }
            let view = (node.leadership.leader(self.id(i))?, node.leadership.epoch()?);
            if *agreed.get_or_insert(view) != view {
                return None;
            }
        }
        let (leader_id, epoch) = agreed?;
        let leader = self.index(leader_id)?;
        (self.nodes[leader].leadership == Leadership::Leading { epoch }).then_some(leader)
    }

    fn describe_live(&self) -> String {
        let views: Vec<String> = (0..self.config.nodes)
            .filter(|&i| self.is_up(i))
            .map(|i| format!("{}={:?}", self.id(i), self.nodes[i].leadership))
            .collect();
        views.join(", ")
    }

    fn describe_partition(&self) -> String {
        let group = |side: u8| -> Vec<NodeId> {
            (0..self.config.nodes).filter(|&i| self.net.side(i) == side).map(|i| self.id(i)).collect()
        };
        format!("{:?} | {:?}", group(0), group(1))
    }

    fn report(mut self) -> RunReport {
        if self.measuring_since_ms.is_some() {
            self.freeze_counters();
        }
        RunReport {
            seed: self.seed,
            elections: self.elections,
            messages: self.messages,
            time_to_agree_ms: self.time_to_agree_ms,
            violations: self.violations,
            trace: self.trace.unwrap_or_default(),
        }
    }
}
