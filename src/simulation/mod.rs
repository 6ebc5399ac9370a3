//! The whole cluster in a seeded simulator, in the spirit of TigerBeetle's VOPR and
//! FoundationDB's simulation testing.
//!
//! Every member runs the production node core ([`crate::node_core`]); this module is its
//! second driver: a simulated network (delay, reordering, loss, duplication, partitions), a
//! simulated disk (write latency; a crash before or after the fsync; a torn last write), a
//! simulated clock, crashes and restarts, and clients that submit jobs with idempotency keys
//! and retry. One seed derives the whole run, so a failing seed replays exactly; with
//! [`SimConfig::trace`] the run keeps a readable trace.
//!
//! Each seed is one of four kinds of run:
//! - **crashes**: the failure model facto promises to survive — at most one member down at a
//!   time, a reliable network with random delays — where, beyond the invariants below, every
//!   task computed twice must have been in flight when its coordinator crashed or stepped down,
//!   when its batch failed, or when the network duplicated its request;
//! - **rogue** (one seed in six): a crashes run in which one member, once, shows a higher
//!   epoch than any other knows — as a coordinator (a gathering and work at that epoch to
//!   every peer) or as a worker (refusing a batch as if it knew that epoch) — and then falls
//!   silent for good, as a misconfigured member, a stale build or a key holder might; the
//!   others must still elect a coordinator and finish every job;
//! - **promise** (one seed in six): a scripted run in which a peer restarts between its
//!   answer to a new coordinator's gathering and a deposed coordinator's write (see
//!   [`promise`]);
//! - **storm**: several members down at once, partitions, lost and duplicated messages.
//!
//! Checked in every run (see [`checks`]):
//! - an acknowledged job is never lost: once the cluster is healed every client gets its
//!   result within [`SETTLE_MS_MAX`], and a key names one job only;
//! - every result equals n! computed independently (malachite's own factorial);
//! - no operation multiplies more than 4 values; a coordinator never computes;
//! - a node never computes work from an epoch below one it already knew;
//! - no panic (the caller catches one and reports its seed).
//!
//! What the driver does more simply than production: a new coordinator's reading of a
//! finished job's root from a peer reads the peer's simulated disk directly (if the peer is up
//! and reachable), and products are not fingerprinted (nobody forges them here; the checks
//! are tested with real processes in `tests/hostile.rs`).

mod checks;
mod clients;
mod driver;
mod picture;
mod promise;

pub use picture::{html as picture_html, Picture};

use crate::checkpoint::Checkpoint;
use crate::config::Members;
use crate::node_core::{Bugs, NodeCore, Settings};
use facto_elections::kernel::{Kernel, TICK_MS};
use facto_elections::net::Network;
use facto_elections::sim::{Rng, MAX_DELAY_MS, MIN_DELAY_MS};
use facto_elections::{Algorithm, NodeId};

/// Faults happen during this first part of a run; then the cluster is healed.
pub const FAULTS_MS: u64 = 1_500;
/// Once healed, the cluster must have answered every client within this.
pub const SETTLE_MS_MAX: u64 = 30_000;
/// Jobs submitted per run, each by its own client.
pub const CLIENTS: usize = 3;
/// The largest n a simulated client asks for (small plans keep a run fast; they still have
/// several stages of tasks).
pub const N_MAX: u64 = 20_000;
/// Finished jobs a simulated coordinator keeps: one, so that every run with two finished
/// jobs retires one, and a client may find its job gone before it reads it.
const RETAIN_JOBS: usize = 1;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub algorithm: Algorithm,
    pub nodes: usize,
    /// Deliberate bugs in every node's core (the simulator must catch them).
    pub bugs: Bugs,
    /// Keep a readable trace of the run.
    pub trace: bool,
}

/// The outcome of one seed.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub seed: u64,
    /// "crashes", "rogue", "promise" or "storm".
    pub kind: &'static str,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    /// Simulated time the run took, and events handled.
    pub sim_ms: u64,
    pub events: u64,
    /// Tasks computed by workers, and how many of those were computed again.
    pub tasks_computed: u64,
    pub tasks_recomputed: u64,
    /// Finished jobs computed again because no reachable member held their result.
    pub results_lost: u64,
    /// What the run's picture shows (with [`SimConfig::trace`]).
    pub picture: Option<Picture>,
}

/// Runs one seed.
pub fn run(config: &SimConfig, seed: u64) -> RunReport {
    let mut sim = Sim::new(config, seed);
    sim.run();
    sim.report()
}

/// A scheduled happening.
enum Ev {
    Tick {
        node: usize,
    },
    /// A message arrives at `to` (a node index).
    Net {
        from: usize,
        to: usize,
        to_life: u64,
        msg: driver::Msg,
        /// Its place in the picture, when the run is traced.
        traced: Option<usize>,
    },
    /// An input for a node, valid only in the same life of the node.
    Input {
        node: usize,
        life: u64,
        input: crate::node_core::Input,
    },
    /// A node's oldest write in progress reaches the disk.
    Durable {
        node: usize,
        life: u64,
    },
    /// An outgoing request of a node's gives up.
    RpcTimeout {
        node: usize,
        life: u64,
        rpc: u64,
    },
    Crash {
        node: usize,
    },
    /// A member shows a higher epoch, then falls silent for good (rogue runs).
    Rogue,
    /// The rogue falls silent even if no work reached it.
    Silence {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Client(clients::ClientEv),
    /// A step of the promise run's script.
    Promise(promise::Step),
}

/// A member as the simulator holds it.
struct SimNode {
    id: NodeId,
    /// `None` while crashed.
    core: Option<NodeCore>,
    /// Incremented at every crash: events for an earlier life are ignored.
    life: u64,
    disk: driver::Disk,
    /// This life's driver state: writes in progress, waiting requests, outgoing requests.
    io: driver::NodeIo,
    /// The highest epoch this node knew during this life (for the fencing check).
    known_epoch_max: u64,
    /// A rogue worker's: the epoch it claims when it refuses the next work it gets.
    rogue_epoch: Option<u64>,
}

struct Sim<'a> {
    config: &'a SimConfig,
    seed: u64,
    rng: Rng,
    kernel: Kernel<Ev>,
    handled: u64,
    nodes: Vec<SimNode>,
    /// Delays, partitions and (storm runs only) loss and duplication: the model the
    /// elections' simulator drives too.
    net: Network,
    storm: bool,
    rogue: bool,
    /// The promise run's script, where it stands (`None`: another kind of run).
    promise: Option<promise::Stage>,
    /// The rogue member, down for good once it fell silent.
    silenced: Option<usize>,
    healed: bool,
    clients: Vec<clients::Client>,
    checks: checks::Checks,
    next_rpc: u64,
    trace: Vec<String>,
    picture: Option<Picture>,
}

impl<'a> Sim<'a> {
    fn new(config: &'a SimConfig, seed: u64) -> Sim<'a> {
        let mut rng = Rng::new(seed);
        let storm = seed % 2 == 1;
        let rogue = seed % 6 == 2;
        let promise = (seed % 6 == 4).then_some(promise::Stage::Armed);
        let nodes = (1..=config.nodes as NodeId)
            .map(|id| SimNode {
                id,
                core: None,
                life: 0,
                disk: driver::Disk::default(),
                io: driver::NodeIo::default(),
                known_epoch_max: 0,
                rogue_epoch: None,
            })
            .collect();
        let mut net = Network::new(config.nodes, MIN_DELAY_MS, MAX_DELAY_MS);
        if storm {
            net.set_faults(rng.below(10) as f64 / 100.0, rng.below(5) as f64 / 100.0);
        }
        let mut sim = Sim {
            config,
            seed,
            rng,
            kernel: Kernel::default(),
            handled: 0,
            nodes,
            net,
            storm,
            rogue,
            promise,
            silenced: None,
            healed: false,
            clients: Vec::new(),
            checks: checks::Checks::default(),
            next_rpc: 0,
            trace: Vec::new(),
            picture: config.trace.then(Picture::default),
        };
        sim.setup();
        sim
    }

    fn settings(&self, id: NodeId) -> Settings {
        Settings {
            id,
            members: Members((1..=self.config.nodes as NodeId).map(|id| (id, format!("sim-{id}:1"))).collect()),
            algorithm: self.config.algorithm,
            checkpoint: true,
            max_n: 1_000_000,
            delay_ms: 0,
            queue_jobs_max: 64,
            queue_ops_max: 16_000_000,
            retain_jobs: RETAIN_JOBS,
            retain_for_ms: None,
            bugs: self.config.bugs,
        }
    }

    fn setup(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
            let phase = self.rng.below(TICK_MS);
            self.schedule(phase, Ev::Tick { node: i });
        }
        for c in 0..CLIENTS {
            let n = self.rng.below(N_MAX + 1);
            let start_ms = self.rng.range(100, FAULTS_MS);
            self.clients.push(clients::Client::new(c, n));
            self.schedule(start_ms, Ev::Client(clients::ClientEv::Wake { client: c, generation: 0 }));
        }
        if self.promise.is_some() {
            let at_ms = self.rng.range(300, 700);
            self.schedule(at_ms, Ev::Promise(promise::Step::Isolate));
        } else {
            self.plan_faults();
        }
        if self.rogue {
            let at_ms = self.rng.range(200, FAULTS_MS - 300);
            self.schedule(at_ms, Ev::Rogue);
        }
        self.schedule(FAULTS_MS, Ev::Heal);
    }

    /// The faults of this seed: crashes with restarts (one member at a time in a crashes
    /// run), and partitions in a storm.
    fn plan_faults(&mut self) {
        let mut t = self.rng.range(50, 400);
        while t < FAULTS_MS {
            let down_ms = self.rng.range(20, 500);
            if self.storm && self.rng.chance(0.3) {
                self.schedule(t, Ev::Partition);
                self.schedule((t + down_ms).min(FAULTS_MS), Ev::Heal);
            } else {
                // Which node is chosen when it happens (the coordinator half of the time).
                self.schedule(t, Ev::Crash { node: usize::MAX });
                if !self.storm || self.rng.chance(0.7) {
                    self.schedule(t + down_ms, Ev::Restart { node: usize::MAX });
                }
            }
            t += if self.storm { self.rng.range(30, 300) } else { down_ms + self.rng.range(50, 400) };
        }
    }

    fn schedule(&mut self, after_ms: u64, ev: Ev) {
        self.kernel.after(after_ms, ev);
    }

    fn now_ms(&self) -> u64 {
        self.kernel.now_ms()
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.config.trace {
            let line = format!("{:>6} ms  {}", self.now_ms(), line());
            self.trace.push(line);
        }
    }

    fn violation(&mut self, what: String) {
        self.note(|| format!("VIOLATION: {what}"));
        let now_ms = self.now_ms();
        if let Some(picture) = self.picture.as_mut() {
            picture.violation.get_or_insert((now_ms, what.clone()));
        }
        self.checks.violations.push(what);
    }

    fn run(&mut self) {
        while let Some(ev) = self.kernel.next() {
            self.handled += 1;
            self.handle(ev);
            if !self.checks.violations.is_empty() || self.finished() {
                break;
            }
            if self.healed && self.now_ms() > FAULTS_MS + SETTLE_MS_MAX {
                let open = self.clients.iter().filter(|c| !c.done).map(|c| c.describe()).collect::<Vec<_>>();
                self.violation(format!("no progress: {} after the cluster healed: {}", SETTLE_MS_MAX, open.join("; ")));
                break;
            }
        }
        if self.checks.violations.is_empty() {
            self.final_checks();
        }
    }

    fn finished(&self) -> bool {
        self.healed && self.clients.iter().all(|c| c.done)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node } => {
                self.schedule(TICK_MS, Ev::Tick { node });
                self.step(node, crate::node_core::Input::Tick);
            }
            Ev::Net { from, to, to_life, msg, traced } => self.deliver(from, to, to_life, msg, traced),
            Ev::Input { node, life, input } if self.nodes[node].life == life => self.step(node, input),
            Ev::Input { .. } => {}
            Ev::Durable { node, life } if self.nodes[node].life == life => self.durable(node),
            Ev::Durable { .. } => {}
            Ev::RpcTimeout { node, life, rpc } if self.nodes[node].life == life => {
                self.rpc_failed(node, rpc, "timed out")
            }
            Ev::RpcTimeout { .. } => {}
            Ev::Crash { node } => self.crash(node),
            Ev::Rogue => self.go_rogue(),
            Ev::Silence { node } => self.silence(node),
            Ev::Restart { node } => self.restart(node),
            Ev::Partition => self.partition(),
            Ev::Heal => self.heal(),
            Ev::Client(ev) => self.client_event(ev),
            Ev::Promise(step) => self.promise_step(step),
        }
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    fn index(&self, id: NodeId) -> usize {
        id as usize - 1
    }

    /// Starts node `i` from its disk.
    fn start(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let disk = &self.nodes[i].disk;
        let mut checkpoint = Checkpoint::default();
        for fact in &disk.facts {
            checkpoint.apply(fact.clone());
        }
        let core = NodeCore::new(self.settings(id), disk.hard_state, checkpoint, disk.version)
            .expect("a valid simulated configuration");
        self.nodes[i].known_epoch_max = core.known_epoch();
        self.nodes[i].core = Some(core);
        self.nodes[i].io = driver::NodeIo::default();
        self.picture_role(i);
        self.note(|| format!("node {id} starts"));
    }

    /// Crashes `i` (`usize::MAX`: a node chosen now, the coordinator half of the time).
    fn crash(&mut self, i: usize) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&j| self.up(j)).collect();
        if !self.storm && up.len() < self.nodes.len() || up.is_empty() {
            return;
        }
        let leader =
            up.iter().copied().find(|&j| self.nodes[j].core.as_ref().is_some_and(|c| c.coordinating().is_some()));
        let i = match (i, leader) {
            (usize::MAX, Some(l)) if self.rng.chance(0.5) => l,
            (usize::MAX, _) => up[self.rng.below(up.len() as u64) as usize],
            (i, _) => i,
        };
        if self.up(i) {
            self.crash_now(i);
        }
    }

    fn crash_now(&mut self, i: usize) {
        let in_flight = self.nodes[i].core.as_ref().map(|c| c.tasks_in_flight()).unwrap_or_default();
        self.checks.allow_again(in_flight);
        self.tear_writes_in_progress(i);
        let node = &mut self.nodes[i];
        node.core = None;
        node.life += 1;
        let id = node.id;
        self.picture_role(i);
        self.note(|| format!("node {id} CRASHES"));
    }

    /// A member, up and chosen now, shows an epoch above every epoch any member knows: as a
    /// coordinator, a gathering, (empty) work and an (empty) checkpoint write at it to every
    /// peer, then silence; or as a
    /// worker, a refusal claiming it for the next batch it gets, then silence.
    fn go_rogue(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&j| self.up(j)).collect();
        let Some(&i) = up.get(self.rng.below(up.len() as u64) as usize) else { return };
        let highest = self.nodes.iter().filter_map(|n| n.core.as_ref()).map(|c| c.known_epoch()).max().unwrap_or(0);
        // Far above any epoch the crashes of one run can reach: only moving past it elects.
        let epoch = highest + self.rng.range(1_000, 2_000);
        let id = self.nodes[i].id;
        if self.rng.chance(0.5) {
            self.note(|| format!("node {id} GOES ROGUE: coordinates at epoch {epoch}, then falls silent"));
            for to in self.nodes.iter().map(|n| n.id).filter(|&to| to != id).collect::<Vec<_>>() {
                let finished = std::collections::BTreeSet::new();
                self.send(i, to, driver::Msg::Query { rpc: 0, epoch, finished }, 0);
                self.send(i, to, driver::Msg::Work { rpc: 0, epoch, tasks: Vec::new() }, 0);
                self.send(i, to, driver::Msg::Apply { rpc: 0, epoch, facts: Vec::new() }, 0);
            }
            self.silence(i);
        } else {
            self.note(|| format!("node {id} GOES ROGUE: refuses its next work at epoch {epoch}, then falls silent"));
            self.nodes[i].rogue_epoch = Some(epoch);
            self.schedule(300, Ev::Silence { node: i });
        }
    }

    /// The rogue stops for good, once no other member is down (one member down at a time,
    /// as in every crashes run; planned crashes find it down and do nothing from then on).
    fn silence(&mut self, i: usize) {
        if self.silenced.is_some() || !self.up(i) {
            return;
        }
        if (0..self.nodes.len()).any(|j| !self.up(j)) {
            return self.schedule(50, Ev::Silence { node: i });
        }
        self.silenced = Some(i);
        self.crash_now(i);
    }

    /// Restarts `i` (`usize::MAX`: the crashed node that has been down longest... or any).
    fn restart(&mut self, i: usize) {
        let down: Vec<usize> = (0..self.nodes.len()).filter(|&j| !self.up(j) && self.silenced != Some(j)).collect();
        if down.is_empty() {
            return;
        }
        let i = if i == usize::MAX { down[self.rng.below(down.len() as u64) as usize] } else { i };
        if !self.up(i) && self.silenced != Some(i) {
            self.start(i);
        }
    }

    /// Cuts the cluster in two: a random set of nodes (at least one, not all) on side 1.
    fn partition(&mut self) {
        self.net.heal();
        let n = self.nodes.len();
        for _ in 0..self.rng.range(1, n as u64) {
            let i = self.rng.below(n as u64) as usize;
            self.net.set_side(i, 1);
        }
        let sides: Vec<u8> = (0..n).map(|i| self.net.side(i)).collect();
        self.picture_mark(format!("partition {sides:?}"));
        self.note(|| format!("partition {sides:?}"));
    }

    /// Heals partitions; at the end of the faults also restarts every crashed node and
    /// stops loss and duplication.
    fn heal(&mut self) {
        self.net.heal();
        self.picture_mark("heal".into());
        if self.now_ms() >= FAULTS_MS && !self.healed {
            self.healed = true;
            self.net.set_faults(0.0, 0.0);
            for i in 0..self.nodes.len() {
                if !self.up(i) && self.silenced != Some(i) {
                    self.start(i);
                }
            }
            self.note(|| "faults end: cluster healed".into());
        }
    }

    /// Records node `i`'s role now, when the run is traced.
    fn picture_role(&mut self, i: usize) {
        let now_ms = self.now_ms();
        let node = &self.nodes[i];
        let (role, epoch) = match &node.core {
            None => ("down", node.known_epoch_max),
            Some(core) => match core.coordinating() {
                Some(epoch) => ("coordinator", epoch),
                None => ("worker", core.leadership().epoch().unwrap_or_else(|| core.known_epoch())),
            },
        };
        if let Some(picture) = self.picture.as_mut() {
            picture.role(node.id, now_ms, role, epoch);
        }
    }

    fn picture_mark(&mut self, what: String) {
        let now_ms = self.now_ms();
        if let Some(picture) = self.picture.as_mut() {
            picture.marks.push((now_ms, what));
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.net.connected(a, b)
    }

    fn report(self) -> RunReport {
        RunReport {
            seed: self.seed,
            kind: match (self.storm, self.rogue, self.promise.is_some()) {
                (true, ..) => "storm",
                (false, true, _) => "rogue",
                (false, false, true) => "promise",
                (false, false, false) => "crashes",
            },
            violations: self.checks.violations.clone(),
            sim_ms: self.now_ms(),
            trace: self.trace,
            events: self.handled,
            tasks_computed: self.checks.tasks_computed(),
            tasks_recomputed: self.checks.tasks_recomputed(),
            results_lost: self.checks.results_lost,
            picture: self.picture,
        }
    }

    /// After the run (crashes runs): no task computed again beyond what was in flight when
    /// something failed.
    fn final_checks(&mut self) {
        if !self.storm {
            let over = self.checks.recomputed_beyond_allowance();
            if let Some(what) = over {
                self.violation(what);
            }
        }
    }
}
