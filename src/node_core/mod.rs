//! The node as a pure state machine: inputs in, effects out.
//!
//! Modelled on etcd-io/raft's `Step`/`Ready`: [`NodeCore::step`] takes one [`Input`] — a
//! peer's message, a client's request, a tick, a disk write or a replication finished, a
//! worker's answer — with the driver's `now_ms`, and returns the [`Effect`]s to carry out, in
//! order. Nothing here reads a clock, opens a socket, starts a thread, touches the disk or
//! awaits: the production driver ([`crate::node`]) does all of that with tide, surf, sled and
//! compute threads, and the whole-cluster simulator ([`crate::simulation`]) does it with a
//! simulated network, disk and clock. Both run this same code.
//!
//! The contract with a driver:
//! - Effects are carried out in the order returned, across steps. An
//!   [`Effect::SaveHardState`] is reported back as [`Input::HardStateSaved`] once durable;
//!   until then the core itself holds back what must not leave before it (see `barrier`).
//! - A [`Effect::Write`] with a `write` id is reported back as [`Input::Written`], a
//!   checkpoint write to a peer as [`Input::FactsSent`], a checkpoint query as
//!   [`Input::CheckpointAnswered`], a check of gathered facts as [`Input::Gathered`] or
//!   [`Input::Pulled`], a dispatch as [`Input::BatchAnswered`], a decimal conversion as
//!   [`Input::Decimal`] or [`Input::NoDecimal`], a root read as [`Input::RootFetched`].
//!   Writes become durable in the order they were asked for. Which peers are asked, in what
//!   order and for how long is the core's (see `replication`); a driver sends each request
//!   it is given, within its `timeout_ms`.
//! - Every request that names a [`ReplyId`] gets at most one [`Effect::Reply`] or, for a
//!   client's request another member should serve, [`Effect::Forward`]; a client that stops
//!   waiting is reported as [`Input::ClientGone`].

mod barrier;
mod clients;
mod coordinating;
mod durability;
mod replication;
mod retention;
mod role;
mod root_copies;
pub mod validate;
mod waiting_room;
pub mod worker;

pub use replication::Sent;

use crate::api::{JobInfo, LeadershipChange};
use crate::bignum::Big;
use crate::checkpoint::{Checkpoint, Fact};
use crate::config::{Members, NodeConfig};
use crate::coordinator::conversion::Conversion;
use crate::coordinator::{JobId, OpId, OpRef, Task, WorkItem};
use crate::error::Result;
use facto_elections::{Algorithm, AnyElection, AnyMsg, Config, Election, Epoch, HardState, Leadership, NodeId};
use role::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Names a client or peer request the driver waits to answer.
pub type ReplyId = u64;
/// Names a disk write whose completion the core waits for.
pub type WriteId = u64;

/// What the core needs to know of its configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub id: NodeId,
    pub members: Members,
    pub algorithm: Algorithm,
    /// Whether the coordinator checkpoints and replicates its state.
    pub checkpoint: bool,
    pub max_n: u64,
    /// The workers' `--delay` (the scheduler's deadlines allow for it).
    pub delay_ms: u64,
    pub queue_jobs_max: u64,
    pub queue_ops_max: u64,
    /// Finished jobs kept (the newest), and for how long at most (see `retention`).
    pub retain_jobs: usize,
    pub retain_for_ms: Option<u64>,
    /// Deliberate bugs, for showing that the simulator catches them; always off in `facto node`.
    pub bugs: Bugs,
}

impl Settings {
    pub fn of(cfg: &NodeConfig) -> Settings {
        Settings {
            id: cfg.id,
            members: cfg.members.clone(),
            algorithm: cfg.algorithm,
            checkpoint: cfg.checkpoint,
            max_n: cfg.max_n,
            delay_ms: cfg.delay_ms,
            queue_jobs_max: cfg.queue_jobs_max,
            queue_ops_max: cfg.queue_ops_max,
            retain_jobs: cfg.retain_jobs,
            retain_for_ms: cfg.retain_for_ms,
            bugs: Bugs::default(),
        }
    }
}

/// Declares [`Bugs`]: each switch a field under the `simulation` feature, and a method that
/// reads it there and is `false` for good without it (the compiler then drops what it guards).
macro_rules! bug_switches {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Test-only switches that break a promise on purpose (the simulator must notice).
        /// They exist only with the `simulation` feature; `facto` is built without it.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Bugs {
            $($(#[$doc])* #[cfg(feature = "simulation")] pub $name: bool,)*
        }

        impl Bugs {
            $($(#[$doc])* pub fn $name(&self) -> bool {
                #[cfg(feature = "simulation")]
                return self.$name;
                #[cfg(not(feature = "simulation"))]
                return false;
            })*
        }
    };
}

bug_switches! {
    /// Acknowledge a job before it is on any disk.
    ack_before_durable,
    /// Count a round's products done once on this node's disk, before a peer holds them.
    done_before_replicated,
    /// Hold nothing behind a hard-state save: a new coordinator gathers, hands out job ids
    /// and sends work at an epoch that is not yet durable.
    coordinate_before_epoch_durable,
    /// Fence with a higher epoch seen in peers' requests and refusals without telling the
    /// election: workers then refuse a coordinator whose election never moves past it.
    fence_apart_from_election,
    /// Keep a gathering's promise (refuse writes and work from below its epoch) in memory
    /// only, apart from the election's durable epoch: a peer that restarts after its answer
    /// forgets it and may take a deposed coordinator's write the new one never hears of.
    promise_in_memory,
}

/// Everything that can happen to a node.
#[derive(Debug)]
pub enum Input {
    /// Time passed (the driver ticks every `--tick-ms`).
    Tick,
    /// The hard state saved last is durable.
    HardStateSaved,
    /// An election message from a peer (already validated at the edge).
    Election { from: NodeId, msg: AnyMsg },
    /// A peer stopped or started answering.
    PeerReachable { peer: NodeId, reachable: bool },
    /// A coordinator at `epoch` sends tasks to compute.
    Work { from: NodeId, epoch: Epoch, tasks: Vec<(OpRef, Task)>, reply: ReplyId },
    /// A coordinator at `epoch` sends a task of a decimal conversion (already checked).
    Convert { from: NodeId, epoch: Epoch, task: Conversion, reply: ReplyId },
    /// A peer's answer said it knows `epoch` (it refused a request from a lower one).
    PeerEpoch { from: NodeId, epoch: Epoch },
    /// A client submits n! (`request`: its idempotency key; `forwarded`: another member
    /// forwarded it here).
    Submit { n: u64, request: Option<String>, reply: ReplyId, forwarded: bool },
    /// A client asks for a job, or a page of the newest jobs.
    Jobs { query: JobsQuery, reply: ReplyId, forwarded: bool },
    /// The client behind `reply` stopped waiting.
    ClientGone { reply: ReplyId },
    /// The coordinator at `epoch` asks for this node's checkpoint, leaving out `skip`.
    CheckpointQuery { from: NodeId, epoch: Epoch, skip: BTreeSet<JobId>, reply: ReplyId },
    /// The coordinator at `epoch` sends checkpoint facts to keep.
    ApplyFacts { from: NodeId, epoch: Epoch, facts: Vec<Fact>, reply: ReplyId },
    /// A peer's answer to a checkpoint write.
    FactsSent { replication: u64, peer: NodeId, sent: Sent },
    /// A peer's checkpoint, asked for by a gathering (`None`: it refused, failed or did not
    /// answer in time).
    CheckpointAnswered { gathering: u64, peer: NodeId, facts: Option<Vec<Fact>> },
    /// The peers' checkpoints gathered on becoming coordinator at `epoch` (checked by the
    /// driver), this node's own products that failed their check, and the peers that did
    /// not answer (pulled later).
    Gathered { epoch: Epoch, facts: Vec<Fact>, wrong: Vec<(JobId, OpId)>, unanswered: Vec<NodeId> },
    /// One peer's checkpoint (`None`: it did not answer), pulled by the coordinator at
    /// `epoch` because the peer came back or had not answered the gathering.
    Pulled { epoch: Epoch, peer: NodeId, facts: Option<Vec<Fact>> },
    /// A worker answered a batch dispatched at `epoch` (products checked), or why not.
    BatchAnswered { epoch: Epoch, batch: u64, outcome: std::result::Result<Vec<(OpRef, Big)>, String> },
    /// A write is durable (`ok`), or the disk failed.
    Written { write: WriteId, ok: bool },
    /// A finished job's decimal digits.
    Decimal { job: JobId, n: u64, decimal: Arc<str> },
    /// No member that answered holds a right copy of a finished job's result.
    NoDecimal { job: JobId },
    /// A finished job's root product read for copying (`None`: no reachable member holds a
    /// right copy), and whether it came from this node's disk.
    RootFetched { job: JobId, root: Option<Big>, on_this_disk: bool },
}

impl Input {
    /// The input's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Tick => "tick",
            Input::HardStateSaved => "hard state durable",
            Input::Election { .. } => "election message",
            Input::PeerReachable { .. } => "peer reachability",
            Input::Work { .. } => "work",
            Input::Convert { .. } => "conversion",
            Input::PeerEpoch { .. } => "peer's epoch",
            Input::Submit { .. } => "submit",
            Input::Jobs { .. } => "job query",
            Input::ClientGone { .. } => "client gone",
            Input::ApplyFacts { .. } => "checkpoint write",
            Input::CheckpointQuery { .. } => "checkpoint read",
            Input::Gathered { .. } => "gathered checkpoints",
            Input::Pulled { .. } => "pulled checkpoint",
            Input::BatchAnswered { .. } => "batch answer",
            Input::Written { .. } => "write durable",
            Input::FactsSent { .. } => "checkpoint write answered",
            Input::CheckpointAnswered { .. } => "checkpoint query answered",
            Input::Decimal { .. } => "decimal result",
            Input::NoDecimal { .. } => "result not found",
            Input::RootFetched { .. } => "result read for copying",
        }
    }
}

/// What the driver must do.
#[derive(Debug)]
pub enum Effect {
    /// Make the election's state durable; report [`Input::HardStateSaved`].
    SaveHardState(HardState),
    /// Send an election message.
    Send { to: NodeId, msg: AnyMsg },
    /// Write checkpoint facts (`finished`: root products, kept on disk only; `retired`: jobs
    /// whose records all go); report [`Input::Written`] when `write` names it.
    Write {
        write: Option<WriteId>,
        facts: Vec<Fact>,
        finished: Vec<(JobId, Fact)>,
        retired: Vec<JobId>,
        checkpoint_version: u64,
    },
    /// Send checkpoint facts to `peer` to make durable, giving up after `timeout_ms`; report
    /// [`Input::FactsSent`].
    SendFacts { replication: u64, peer: NodeId, epoch: Epoch, facts: Arc<Vec<Fact>>, timeout_ms: u64 },
    /// Ask `peer` for its checkpoint, leaving out `finished` jobs, giving up after
    /// `timeout_ms`; report [`Input::CheckpointAnswered`].
    AskCheckpoint { gathering: u64, peer: NodeId, epoch: Epoch, finished: Arc<BTreeSet<JobId>>, timeout_ms: u64 },
    /// Check the products among the peers' gathered `facts` and this node's `own`; report
    /// [`Input::Gathered`] (`only` is `None`: all peers) or [`Input::Pulled`] (one).
    CheckGathered { epoch: Epoch, only: Option<NodeId>, facts: Vec<Fact>, own: Vec<Fact>, unanswered: Vec<NodeId> },
    /// Send a batch of tasks to `worker`, giving up at `deadline_ms`; report
    /// [`Input::BatchAnswered`].
    Dispatch { epoch: Epoch, batch: u64, worker: NodeId, deadline_ms: u64, items: Vec<WorkItem> },
    /// Compute a coordinator's tasks as a worker and answer `reply` with the products (after
    /// `--delay`).
    Compute { tasks: Vec<(OpRef, Task)>, reply: ReplyId },
    /// Carry out a coordinator's conversion task as a worker and answer `reply` (after
    /// `--delay`).
    Convert { task: Conversion, reply: ReplyId },
    /// Convert a finished job's root product to decimal (`None`: read it from this node's
    /// disk or a peer's first), a large one spread over `workers` (see
    /// [`crate::coordinator::conversion`]) as the coordinator at `epoch`; report
    /// [`Input::Decimal`] or [`Input::NoDecimal`].
    ToDecimal { epoch: Epoch, job: JobId, n: u64, product: Option<Big>, workers: Vec<NodeId> },
    /// Read a finished job's root product (n!) from this node's disk, or else from a peer's,
    /// checked; report [`Input::RootFetched`].
    FetchRoot { job: JobId, n: u64 },
    /// Carry the client request behind `to` to the coordinator `leader` at `addr`, marked
    /// forwarded, and answer it with the coordinator's answer.
    Forward { to: ReplyId, leader: NodeId, addr: String },
    /// Answer a waiting request.
    Reply { to: ReplyId, answer: Answer },
}

impl Effect {
    /// Whether the effect waits behind a hard-state save that is not yet durable. What tells
    /// the world something at an epoch waits (messages, gathers, work sent, replies). Writes
    /// need not (the disk takes them in order, after the save), nor local work: a worker's
    /// computation or conversion for its coordinator, or a read of a root. A worker held
    /// there could even compute after it became the coordinator, which never multiplies. A
    /// conversion to decimal waits: it sends tasks to workers at its epoch.
    fn waits_for_hard_state(&self) -> bool {
        !matches!(
            self,
            Effect::Write { .. }
                | Effect::Compute { .. }
                | Effect::Convert { .. }
                | Effect::FetchRoot { .. }
                | Effect::CheckGathered { .. }
        )
    }
}

/// An answer to a request.
#[derive(Debug)]
pub enum Answer {
    /// To a submission.
    Job(Routed<JobInfo>),
    /// To a job query.
    Jobs(Routed<Vec<JobInfo>>),
    /// To a checkpoint write: durable, or refused.
    Applied(std::result::Result<(), Refusal>),
    /// To work from a deposed or implausible coordinator.
    WorkRefused(Refusal),
    /// To a checkpoint query: the facts, or why not.
    Checkpoint(std::result::Result<Vec<Fact>, Refusal>),
}

/// Why a peer's request was refused, and the highest epoch this node knows: a requester
/// below it has been fenced out and moves its election past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub why: String,
    pub known_epoch: Epoch,
}

/// What a client asks of the jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobsQuery {
    /// One job; with `wait`, the answer waits for its result.
    One { id: String, wait: bool },
    /// The `limit` newest jobs submitted before job `before` (or of all), oldest first.
    Latest { limit: usize, before: Option<String> },
    /// Each of these jobs this node knows, with its digits, at once (a follower's watch of
    /// its clients' long-polls): one question instead of one per job.
    Each { ids: Vec<String> },
}

/// A client request's answer, and whether another member forwarded the request here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Client {
    pub reply: ReplyId,
    pub forwarded: bool,
}

/// Where a client request is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed<T> {
    /// By this node, the coordinator.
    Here(T),
    /// By the coordinator at this address.
    Leader(String),
    /// No coordinator is known right now; try again shortly.
    NoLeader,
    /// The coordinator could not do it (e.g. could not make a job durable); try again.
    Failed(String),
    /// This node cannot serve it yet (it is taking over as coordinator); try again shortly.
    Unavailable(String),
    /// What was asked for is past retention: the cluster forgot it on purpose.
    Gone(String),
    /// The request contradicts what the cluster holds; trying again will not help.
    Refused(String),
    /// The coordinator's queue is full; try again later.
    Busy(String),
}

/// What the core shows of itself in `/status`.
#[derive(Clone, Debug)]
pub struct CoreStatus {
    pub job_counts: Option<crate::coordinator::JobCounts>,
    pub role: &'static str,
    pub leader: Option<NodeId>,
    pub epoch: Epoch,
    pub last_leader_contact_ms: Option<u64>,
    pub checkpoint_version: u64,
    pub taking_over: bool,
    pub jobs: Vec<JobInfo>,
    pub leadership_log: Vec<LeadershipChange>,
}

/// One node's state and decisions.
pub struct NodeCore {
    settings: Settings,
    election: AnyElection,
    /// Following, taking over or coordinating: one value, so the three cannot disagree.
    role: Role,
    /// Every checkpoint fact this node holds (also on disk).
    checkpoint: Checkpoint,
    /// How many facts this node ever applied (Raft-lite voters compare it).
    checkpoint_version: u64,
    /// Peers currently unreachable (a new coordinator gives them no work).
    unreachable: BTreeSet<NodeId>,
    /// Submissions on their way to their acknowledgement.
    acks: BTreeMap<u64, durability::AckJoin>,
    /// Their replication to a peer, grouped.
    ack_replication: durability::AckReplication,
    /// Root products this coordinator wrote to its disk but no peer holds yet. Until one
    /// does they are offered whole to a new coordinator, never as a bare `Finished` mark: a
    /// mark whose only root dies with this node would make the next coordinator drop the
    /// job's products and compute it all again.
    unreplicated_roots: BTreeMap<JobId, Fact>,
    /// Only with [`Bugs::fence_apart_from_election`] or [`Bugs::promise_in_memory`]: a higher
    /// epoch seen outside the election, which then fences apart from it, in memory only.
    epoch_apart_from_election: Epoch,
    /// Finished jobs this node, coordinating, computed again because no reachable member
    /// held their result (since it started).
    results_computed_again: u64,
    /// The driver's clock as of the input being handled.
    now_ms: u64,
    /// The next write id or replication token.
    next_token: u64,
    /// What to do once a write is durable, or facts replicated.
    after_write: BTreeMap<WriteId, durability::AfterWrite>,
    after_replicate: BTreeMap<u64, durability::AfterReplicate>,
    /// Effects of the input being handled.
    effects: Vec<Effect>,
    /// Holds back what waits for the hard state saved last.
    barrier: barrier::Barrier,
    /// Client requests waiting for this node to be able to route them.
    waiting_room: waiting_room::WaitingRoom,
    /// Checkpoint writes to peers and gatherings under way.
    copies: replication::Copies,
    /// Changes of coordinator this node saw (the last [`LEADERSHIP_LOG_LEN`]), why, and when
    /// it lost its last coordinator.
    leadership_log: std::collections::VecDeque<LeadershipChange>,
    lost_coordinator_ms: Option<u64>,
    /// Why the input being handled might change the leadership.
    cause: &'static str,
}

/// How many changes of coordinator a node remembers (`/status` `leadership_log`).
const LEADERSHIP_LOG_LEN: usize = 32;

impl NodeCore {
    /// A node as its disk left it: election state and checkpoint facts.
    pub fn new(
        settings: Settings,
        hard_state: HardState,
        checkpoint: Checkpoint,
        checkpoint_version: u64,
    ) -> Result<NodeCore> {
        let mut election_cfg = Config::new(settings.id, settings.members.ids());
        election_cfg.seed = u64::from(settings.id) ^ 0x9e37_79b9_7f4a_7c15;
        let mut election = settings.algorithm.build(election_cfg, hard_state)?;
        election.set_checkpoint_version(checkpoint_version);
        let barrier = barrier::Barrier::new(settings.bugs.coordinate_before_epoch_durable());
        Ok(NodeCore {
            settings,
            election,
            role: Role::Following { last_contact_ms: None },
            checkpoint,
            checkpoint_version,
            unreachable: BTreeSet::new(),
            acks: BTreeMap::new(),
            ack_replication: Default::default(),
            unreplicated_roots: BTreeMap::new(),
            epoch_apart_from_election: 0,
            results_computed_again: 0,
            now_ms: 0,
            next_token: 1,
            after_write: BTreeMap::new(),
            after_replicate: BTreeMap::new(),
            effects: Vec::new(),
            barrier,
            waiting_room: Default::default(),
            copies: Default::default(),
            leadership_log: std::collections::VecDeque::new(),
            lost_coordinator_ms: Some(0),
            cause: "",
        })
    }

    /// Handles one input at the driver's `now_ms`; returns what to do, in order.
    pub fn step(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        self.now_ms = self.now_ms.max(now_ms);
        self.handle(input);
        self.let_waiting_in();
        self.replicated_alone();
        let effects = std::mem::take(&mut self.effects);
        self.barrier.pass(effects)
    }

    fn handle(&mut self, input: Input) {
        self.cause = match &input {
            Input::Tick => "timeout",
            Input::PeerReachable { reachable: false, .. } => "peer down",
            Input::Election { msg, .. } if msg.epoch() > self.known_epoch() => "higher epoch seen",
            Input::Gathered { .. } => "takeover finished",
            _ => "new coordinator heard",
        };
        let Some(input) = self.wait_if_unroutable(input) else { return };
        match input {
            Input::Tick => self.on_tick(),
            Input::HardStateSaved => {
                let held = self.barrier.open();
                self.effects.extend(held);
            }
            Input::Election { from, msg } => self.on_election_message(from, msg),
            Input::PeerReachable { peer, reachable } => self.on_peer_reachable(peer, reachable),
            Input::Work { from, epoch, tasks, reply } => {
                if self.admit_work(from, epoch, reply) {
                    self.emit(Effect::Compute { tasks, reply });
                }
            }
            Input::Convert { from, epoch, task, reply } => {
                if self.admit_work(from, epoch, reply) {
                    self.emit(Effect::Convert { task, reply });
                }
            }
            Input::PeerEpoch { from, epoch } => self.on_peer_epoch(from, epoch),
            Input::ClientGone { reply } => self.on_client_gone(reply),
            Input::ApplyFacts { from, epoch, facts, reply } => self.on_apply_facts(from, epoch, facts, reply),
            Input::CheckpointQuery { from, epoch, skip, reply } => self.on_checkpoint_query(from, epoch, &skip, reply),
            Input::Written { write, ok } => self.on_written(write, ok),
            Input::FactsSent { replication, peer, sent } => self.on_facts_sent(replication, peer, sent),
            Input::CheckpointAnswered { gathering, peer, facts } => self.on_checkpoint_answered(gathering, peer, facts),
            Input::Gathered { epoch, facts, wrong, unanswered } => {
                // This node's own wrong products go whatever it does now.
                for (job, op) in wrong {
                    self.checkpoint.forget(&job, op);
                }
                match self.role {
                    Role::TakingOver { .. } => self.resume(epoch, facts, unanswered),
                    _ => self.stale("gathered checkpoints"),
                }
            }
            input => match self.role {
                Role::Coordinating(_) => self.step_coordinating(input),
                Role::TakingOver { .. } | Role::Following { .. } => self.step_following(input),
            },
        }
    }

    /// What a coordinator alone handles: clients' requests, and the completions of its own
    /// work (dispatches, pulls, conversions, reads of results).
    fn step_coordinating(&mut self, input: Input) {
        match input {
            Input::Submit { n, request, reply, forwarded } => self.submit(n, request, Client { reply, forwarded }),
            Input::Jobs { query, reply, forwarded } => self.on_jobs_query(query, Client { reply, forwarded }),
            Input::Pulled { epoch, peer, facts } => self.on_pulled(epoch, peer, facts),
            Input::BatchAnswered { epoch, batch, outcome } => self.on_batch_answered(epoch, batch, outcome),
            Input::Decimal { job, n, decimal } => self.on_decimal(job, n, decimal),
            Input::NoDecimal { job } => self.on_no_decimal(job),
            Input::RootFetched { job, root, on_this_disk } => self.on_root_fetched(job, root, on_this_disk),
            other => self.stale(other.kind()),
        }
    }

    /// A member that does not coordinate routes clients' requests to the coordinator it
    /// knows (the waiting room holds them while it knows none, or takes over), and drops
    /// the completions of work it started as coordinator: that coordinator state is gone.
    fn step_following(&mut self, input: Input) {
        match input {
            Input::Submit { n, request, reply, forwarded } => self.submit(n, request, Client { reply, forwarded }),
            Input::Jobs { query, reply, forwarded } => self.on_jobs_query(query, Client { reply, forwarded }),
            other => self.stale(other.kind()),
        }
    }

    /// The completion of something this node started in a role it has left.
    fn stale(&self, kind: &str) {
        log::debug!("node {}: {kind} for a coordinator role it left: dropped", self.me());
    }

    fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    fn reply(&mut self, to: ReplyId, answer: Answer) {
        self.emit(Effect::Reply { to, answer });
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn me(&self) -> NodeId {
        self.settings.id
    }

    /// A tick: the election's clock, requests waiting too long turned away, replication
    /// retried; and a coordinator's deadlines.
    fn on_tick(&mut self) {
        self.step_election(facto_elections::Input::Tick);
        self.copies_tick();
        self.turn_away_waited_too_long();
        if self.coordinating().is_some() {
            self.tick_coordinating();
        }
    }

    /// A coordinator's tick: the scheduler's deadlines, the round made durable once it is
    /// due, rounds and pulls retried, retention, results read again.
    fn tick_coordinating(&mut self) {
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("tick") else { return };
        let actions = c.scheduler.tick(now_ms);
        let epoch = c.epoch;
        self.carry_out(actions);
        if self.role.coordinator_in("tick").is_some_and(|c| c.round.due(now_ms)) {
            self.flush_round(epoch);
        }
        self.replicate_again();
        self.pull_again();
        self.retire_past_retention();
        self.reread_results();
    }

    fn on_election_message(&mut self, from: NodeId, msg: AnyMsg) {
        if self.election.leadership().leader(self.me()) == Some(from) {
            if let Role::Following { last_contact_ms } = &mut self.role {
                *last_contact_ms = Some(self.now_ms);
            }
        }
        self.step_election(facto_elections::Input::Message { from, msg });
    }

    fn on_peer_reachable(&mut self, peer: NodeId, reachable: bool) {
        let input =
            if reachable { facto_elections::Input::PeerUp(peer) } else { facto_elections::Input::PeerDown(peer) };
        self.step_election(input);
        if reachable {
            self.unreachable.remove(&peer);
            self.ask_again_if_gathering(peer);
        } else {
            self.unreachable.insert(peer);
        }
        if self.coordinating().is_some() {
            self.peer_reachable_coordinating(peer, reachable);
        }
    }

    /// A coordinator hands a peer that went away no more work, and pulls the checkpoint of
    /// one that came back.
    fn peer_reachable_coordinating(&mut self, peer: NodeId, reachable: bool) {
        if reachable {
            self.pull_checkpoint(peer);
        }
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("peer reachability") else { return };
        let actions = c.scheduler.set_reachable(peer, reachable, now_ms);
        self.carry_out(actions);
    }

    /// Whether work from a coordinator (tasks or a conversion) is to be done here: not if it
    /// is fenced off, nor on a coordinator; refused work is answered here.
    fn admit_work(&mut self, from: NodeId, epoch: Epoch, reply: ReplyId) -> bool {
        if let Err(why) = self.admit(from, epoch) {
            self.refuse_work(reply, why);
            return false;
        }
        self.see_epoch(epoch);
        if !matches!(self.role, Role::Following { .. }) {
            // A coordinator never multiplies: work from a newer coordinator reaches one that
            // has not yet heard it was deposed, and is refused (it goes to another worker).
            let why = format!("node {} coordinates and never computes", self.me());
            self.refuse_work(reply, why);
            return false;
        }
        true
    }

    fn refuse_work(&mut self, reply: ReplyId, why: String) {
        let known_epoch = self.known_epoch();
        self.reply(reply, Answer::WorkRefused(Refusal { why, known_epoch }));
    }

    /// Work from a coordinator at `epoch`: not from a deposed one (fencing: a deposed
    /// coordinator can neither hand out work nor write checkpoints), nor from beyond reason.
    fn admit(&self, from: NodeId, epoch: Epoch) -> std::result::Result<(), String> {
        let known = self.known_epoch();
        if epoch < known {
            return Err(format!("stale epoch {epoch} from node {from}: this node knows epoch {known}"));
        }
        crate::node_core::validate::epoch_ahead(known, epoch)
    }

    /// A peer refused a request of this node's at a lower epoch than its own: this node's
    /// election moves past it (a coordinator fenced out steps down), as for any higher epoch
    /// a peer shows.
    fn on_peer_epoch(&mut self, from: NodeId, epoch: Epoch) {
        match crate::node_core::validate::epoch_ahead(self.known_epoch(), epoch) {
            Ok(()) => self.see_epoch(epoch),
            Err(why) => log::warn!("node {from} claims an epoch this node ignores: {why}"),
        }
    }

    /// The one way a higher epoch from outside the election enters: the election moves up to
    /// it (durably: the save comes before every later reply), so the epoch that fences work
    /// and the epoch elections run at never drift apart. The caller has bounded `epoch`.
    fn see_epoch(&mut self, epoch: Epoch) {
        if epoch <= self.known_epoch() {
            return;
        }
        if self.settings.bugs.fence_apart_from_election() {
            self.epoch_apart_from_election = epoch;
            return;
        }
        self.cause = "higher epoch seen";
        self.step_election(facto_elections::Input::EpochSeen(epoch));
    }

    /// A new coordinator gathers: this node answers with its facts and, from now on, refuses
    /// writes and work from lower epochs. Without that promise a deposed coordinator could
    /// have a job acknowledged through this node after the answer left, and the new
    /// coordinator would never hear of it. The promise is the election's epoch, on disk
    /// before the answer leaves, so it survives a restart. A gathering from below the epoch
    /// this node knows is refused with that epoch: its coordinator has been fenced out.
    fn on_checkpoint_query(&mut self, from: NodeId, epoch: Epoch, skip: &BTreeSet<JobId>, reply: ReplyId) {
        if let Err(why) = self.admit(from, epoch) {
            let known_epoch = self.known_epoch();
            return self.reply(reply, Answer::Checkpoint(Err(Refusal { why, known_epoch })));
        }
        if epoch > self.known_epoch() {
            log::debug!("node {from} gathers at epoch {epoch}: writes from lower epochs refused from now on");
        }
        if self.settings.bugs.promise_in_memory() {
            self.epoch_apart_from_election = self.epoch_apart_from_election.max(epoch);
        } else {
            self.see_epoch(epoch);
        }
        let facts = self.checkpoint_facts_except(skip);
        self.reply(reply, Answer::Checkpoint(Ok(facts)));
    }

    /// A coordinator's checkpoint write: acknowledged once on disk.
    fn on_apply_facts(&mut self, from: NodeId, epoch: Epoch, facts: Vec<Fact>, reply: ReplyId) {
        if let Err(why) = self.admit_facts(from, epoch, &facts) {
            let known_epoch = self.known_epoch();
            self.reply(reply, Answer::Applied(Err(Refusal { why, known_epoch })));
            return;
        }
        self.see_epoch(epoch);
        // Before the write that answers: the disk takes writes in order.
        let copies = self.root_copies(&facts);
        self.write_root_copies(copies);
        let write = self.token();
        self.after_write.insert(write, durability::AfterWrite::Reply(reply, Box::new(Answer::Applied(Ok(())))));
        let new = self.record(facts, Some(write));
        if self.coordinating().is_some() {
            self.learn(new);
        }
    }

    /// A checkpoint write: from the leader of its epoch, with facts that fit their plans.
    fn admit_facts(&self, from: NodeId, epoch: Epoch, facts: &[Fact]) -> std::result::Result<(), String> {
        use crate::node_core::validate;
        validate::checkpoint_writer(self.election.leadership(), self.known_epoch(), from, epoch)?;
        validate::replicated_facts(epoch, facts, self.settings.max_n, |job| self.checkpoint.jobs.get(job).map(|j| j.n))
    }

    fn step_election(&mut self, input: facto_elections::Input<AnyMsg>) {
        let actions = self.election.step(input);
        if let Some(hard_state) = actions.persist {
            self.emit(Effect::SaveHardState(hard_state));
        }
        for (to, msg) in actions.messages {
            self.emit(Effect::Send { to, msg });
        }
        if let Some(leadership) = actions.leadership {
            self.on_leadership(leadership);
        }
    }

    /// Notes a change of coordinator for the web view's timeline.
    pub(super) fn note_leadership(&mut self, leader: Option<NodeId>, epoch: Epoch, reason: &str) {
        let at_ms = self.now_ms;
        let took_ms = match leader {
            Some(_) => self.lost_coordinator_ms.take().map(|lost| at_ms.saturating_sub(lost)),
            None => {
                self.lost_coordinator_ms.get_or_insert(at_ms);
                None
            }
        };
        if self.leadership_log.len() == LEADERSHIP_LOG_LEN {
            self.leadership_log.pop_front();
        }
        self.leadership_log.push_back(LeadershipChange { at_ms, leader, epoch, reason: reason.into(), took_ms });
    }

    fn on_leadership(&mut self, leadership: Leadership) {
        let me = self.me();
        let reason = if matches!(leadership, Leadership::Leading { .. }) { "elected" } else { self.cause };
        let leader = leadership.leader(me);
        self.note_leadership(leader, leadership.epoch().unwrap_or(self.known_epoch()), reason);
        match leadership {
            Leadership::Leading { epoch } => {
                log::info!("node {me} is the coordinator at epoch {epoch}; gathering checkpoints");
                self.step_down(Role::TakingOver { epoch });
                if !self.settings.checkpoint {
                    return self.resume(epoch, Vec::new(), Vec::new());
                }
                let finished = self.checkpoint.finished_jobs();
                let own = self.checkpoint.facts_except(&finished);
                self.gather(epoch, None, finished, own);
            }
            Leadership::Following { leader, epoch } => {
                log::info!("node {me} follows coordinator {leader} at epoch {epoch}");
                self.step_down(Role::Following { last_contact_ms: Some(self.now_ms) });
            }
            Leadership::Unknown => {
                log::info!("node {me}: no coordinator known, election under way");
                let last_contact_ms = match &self.role {
                    Role::Following { last_contact_ms } => *last_contact_ms,
                    _ => None,
                };
                self.step_down(Role::Following { last_contact_ms });
            }
        }
    }

    /// Leaves the current role for `next`.
    fn step_down(&mut self, next: Role) {
        if let Role::Coordinating(c) = std::mem::replace(&mut self.role, next) {
            let unfinished = c.scheduler.progress().iter().filter(|p| !p.finished).count();
            log::warn!("node {} stops coordinating epoch {} with {unfinished} unfinished jobs", self.me(), c.epoch);
        }
    }

    /// The highest epoch this node knows, the one it fences with: its election's (which
    /// every higher epoch a peer shows moves up, see [`NodeCore::see_epoch`]).
    pub fn known_epoch(&self) -> Epoch {
        let election = self.election.hard_state().epoch.max(self.election.leadership().epoch().unwrap_or(0));
        election.max(self.epoch_apart_from_election)
    }

    /// Whether this node is taking over (client requests wait meanwhile).
    pub fn taking_over(&self) -> bool {
        self.role.taking_over().is_some()
    }

    /// Whether this node coordinates (leads, with its checkpoint gathered).
    pub fn coordinating(&self) -> Option<Epoch> {
        self.role.coordinator().map(|c| c.epoch)
    }

    pub fn leadership(&self) -> Leadership {
        self.election.leadership()
    }

    /// This node's checkpoint facts, leaving out the jobs in `skip`.
    fn checkpoint_facts_except(&self, skip: &BTreeSet<JobId>) -> Vec<Fact> {
        let mut facts = self.checkpoint.facts_except(skip);
        facts.extend(self.unreplicated_roots.iter().filter(|(job, _)| !skip.contains(*job)).map(|(_, f)| f.clone()));
        facts
    }

    /// Tasks the coordinator has handed out and not yet counted done (none unless it
    /// coordinates): what a crash now may make it compute again.
    pub fn tasks_in_flight(&self) -> Vec<OpRef> {
        self.role.coordinator().map_or_else(Vec::new, |c| c.scheduler.tasks_in_flight())
    }

    /// Finished jobs this node computed again because no reachable member held their
    /// result, since it started.
    pub fn results_computed_again(&self) -> u64 {
        self.results_computed_again
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Member 1's settings in a Raft-lite cluster of three, checkpoints on.
    pub(crate) fn three_members() -> Settings {
        Settings {
            id: 1,
            members: Members::parse("1=h:1,2=h:2,3=h:3").unwrap(),
            algorithm: Algorithm::Raft,
            checkpoint: true,
            max_n: 1_000,
            delay_ms: 0,
            queue_jobs_max: 64,
            queue_ops_max: 1_000,
            retain_jobs: 100,
            retain_for_ms: None,
            bugs: Bugs::default(),
        }
    }
}
