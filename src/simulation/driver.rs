//! The simulator as a node's driver: carries out the core's effects over the simulated disk
//! and network, and turns what arrives into the core's inputs.

use super::{Ev, Sim};
use crate::bignum::Big;
use crate::checkpoint::Fact;
use crate::coordinator::Task;
use crate::coordinator::{JobId, OpRef, WorkItem};
use crate::node_core::worker::{self, WorkerStats};
use crate::node_core::{Answer, Effect, Input, ReplyId, Sent, WriteId};
use facto_elections::net::Route;
use facto_elections::sim::NOTICE_DELAY_MS;
use facto_elections::{AnyMsg, Epoch, HardState, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// Longest time a write takes to reach the disk...
const WRITE_MS_MAX: u64 = 3;
/// ... except for stalls (a busy disk, a slow fsync): this often, a write takes up to
/// [`STALL_MS_MAX`].
const STALL_CHANCE: f64 = 0.03;
const STALL_MS_MAX: u64 = 300;
/// In crashes runs, the chance that a coordinator crashes a moment after it handled a
/// worker's answer or a write: the moments its promises hinge on.
const CRASH_AFTER_PROGRESS_CHANCE: f64 = 0.03;

/// What travels between members.
#[derive(Clone, Debug)]
pub(super) enum Msg {
    Election(AnyMsg),
    Work {
        rpc: u64,
        epoch: Epoch,
        tasks: Vec<(OpRef, Task)>,
    },
    /// `known_epoch`: set by a worker that refused the work, as in production's 409 answer.
    WorkAnswer {
        rpc: u64,
        outcome: Result<Vec<(OpRef, Big)>, String>,
        known_epoch: Option<Epoch>,
    },
    Apply {
        rpc: u64,
        epoch: Epoch,
        facts: Vec<Fact>,
    },
    Applied {
        rpc: u64,
        ok: bool,
        known_epoch: Option<Epoch>,
    },
    Query {
        rpc: u64,
        epoch: Epoch,
        finished: BTreeSet<JobId>,
    },
    QueryAnswer {
        rpc: u64,
        facts: Option<Vec<Fact>>,
        known_epoch: Option<Epoch>,
    },
}

impl Msg {
    /// The request a refused or lost message belongs to.
    fn request_rpc(&self) -> Option<u64> {
        match self {
            Msg::Work { rpc, .. } | Msg::Apply { rpc, .. } | Msg::Query { rpc, .. } => Some(*rpc),
            _ => None,
        }
    }
}

/// What survives a crash.
#[derive(Default)]
pub(super) struct Disk {
    pub hard_state: HardState,
    pub facts: Vec<Fact>,
    pub roots: BTreeMap<JobId, Big>,
    pub version: u64,
}

/// A write on its way to the disk.
pub(super) struct Write {
    write: Option<WriteId>,
    hard_state: Option<HardState>,
    facts: Vec<Fact>,
    finished: Vec<(JobId, Fact)>,
    version: u64,
}

/// Who waits for an answer the core will give.
enum ReplyTo {
    Client { client: usize, generation: u64 },
    Work { to: NodeId, rpc: u64 },
    Apply { to: NodeId, rpc: u64 },
    Query { to: NodeId, rpc: u64 },
}

/// A request this node sent and waits on.
enum Rpc {
    Batch { epoch: Epoch, batch: u64, worker: NodeId, tasks: Vec<OpRef> },
    Apply { replication: u64, peer: NodeId },
    Query { gathering: u64, peer: NodeId },
}

/// One life of a node's driver state (a crash loses all of it).
#[derive(Default)]
pub(super) struct NodeIo {
    writes: VecDeque<Write>,
    disk_free_at_ms: u64,
    replies: HashMap<ReplyId, ReplyTo>,
    next_reply: ReplyId,
    rpcs: HashMap<u64, Rpc>,
    unreachable: BTreeSet<NodeId>,
}

impl Sim<'_> {
    /// Feeds `input` to node `i` (if up) and carries out its effects.
    pub(super) fn step(&mut self, i: usize, input: Input) {
        let now_ms = self.now_ms();
        let storm = self.storm;
        if self.nodes[i].core.is_none() {
            return;
        }
        let core = self.nodes[i].core.as_ref().expect("checked");
        // What a coordinator has in flight may be computed again if it stops coordinating.
        let before = if storm { None } else { core.coordinating().map(|e| (e, core.tasks_in_flight())) };
        let work_epoch = match &input {
            Input::Work { epoch, .. } => Some(*epoch),
            _ => None,
        };
        if let Input::PeerReachable { peer, reachable: false } = input {
            // The coordinator hands the peer's batches to others at once.
            let on_peer = self.nodes[i].io.rpcs.values().filter_map(|rpc| match rpc {
                Rpc::Batch { worker, tasks, .. } if *worker == peer => Some(tasks.clone()),
                _ => None,
            });
            self.checks.allow_again(on_peer.flatten().collect());
        }
        let no_decimal = match &input {
            Input::NoDecimal { job } => Some(job.clone()),
            _ => None,
        };
        let Some(core) = self.nodes[i].core.as_mut() else { return };
        let kind = input.kind();
        let computed_again = core.results_computed_again();
        let effects = core.step(now_ms, input);
        if let Some(job) = no_decimal.filter(|_| core.results_computed_again() > computed_again) {
            self.result_computed_again(job);
        }
        let Some(core) = self.nodes[i].core.as_ref() else { return };
        let (coordinating, known) = (core.coordinating(), core.known_epoch());
        if let Some((epoch, in_flight)) = before.filter(|(e, _)| coordinating != Some(*e)) {
            self.checks.allow_again(in_flight);
            self.note(|| format!("node {} stops coordinating epoch {epoch}", i + 1));
        }
        if let Some(epoch) = work_epoch {
            let computes = effects.iter().any(|e| matches!(e, Effect::Compute { .. }));
            if computes && epoch < self.nodes[i].known_epoch_max {
                let seen = self.nodes[i].known_epoch_max;
                self.violation(format!("node {} computes work of epoch {epoch} after seeing epoch {seen}", i + 1));
            }
        }
        self.nodes[i].known_epoch_max = self.nodes[i].known_epoch_max.max(known);
        let progress = matches!(kind, "batch answer" | "write durable" | "checkpoint write answered");
        if progress
            && !storm
            && coordinating.is_some()
            && self.now_ms() < super::FAULTS_MS
            && self.rng.chance(CRASH_AFTER_PROGRESS_CHANCE)
        {
            let after = self.rng.range(0, 10);
            self.schedule(after, Ev::Crash { node: i });
        }
        self.picture_role(i);
        if kind != "tick" || effects.iter().any(|e| !matches!(e, Effect::Send { .. })) {
            self.note(|| format!("node {} <- {kind}: {}", i + 1, describe(&effects)));
        }
        self.carry_out(i, effects);
    }

    /// Carries out a node's effects in order.
    pub(super) fn carry_out(&mut self, i: usize, effects: Vec<Effect>) {
        for effect in effects {
            self.carry_out_one(i, effect);
        }
    }

    fn carry_out_one(&mut self, i: usize, effect: Effect) {
        if let Effect::AskCheckpoint { epoch, .. } | Effect::Dispatch { epoch, .. } | Effect::SendFacts { epoch, .. } =
            &effect
        {
            self.check_epoch_durable(i, *epoch);
        }
        match effect {
            Effect::SaveHardState(hs) => {
                let write =
                    Write { write: None, hard_state: Some(hs), facts: Vec::new(), finished: Vec::new(), version: 0 };
                self.write(i, write);
                let (life, at_ms) = (self.nodes[i].life, self.nodes[i].io.disk_free_at_ms);
                self.schedule(at_ms - self.now_ms(), Ev::Input { node: i, life, input: Input::HardStateSaved });
            }
            Effect::Send { to, msg } => self.send(i, to, Msg::Election(msg), 0),
            // Retired jobs go from the simulated disk as it applies the `Retired` fact.
            Effect::Write { write, facts, finished, checkpoint_version, .. } => {
                self.write(i, Write { write, hard_state: None, facts, finished, version: checkpoint_version })
            }
            Effect::SendFacts { replication, peer, epoch, facts, timeout_ms } => {
                let rpc = self.new_rpc(i, Rpc::Apply { replication, peer }, timeout_ms);
                self.send(i, peer, Msg::Apply { rpc, epoch, facts: facts.to_vec() }, 0);
            }
            Effect::AskCheckpoint { gathering, peer, epoch, finished, timeout_ms } => {
                let rpc = self.new_rpc(i, Rpc::Query { gathering, peer }, timeout_ms);
                self.send(i, peer, Msg::Query { rpc, epoch, finished: finished.as_ref().clone() }, 0);
            }
            Effect::CheckGathered { epoch, only, facts, unanswered, .. } => {
                // Products are not fingerprinted here: nothing to check.
                let input = match only {
                    None => Input::Gathered { epoch, facts, wrong: Vec::new(), unanswered },
                    Some(peer) => Input::Pulled { epoch, peer, facts: Some(facts) },
                };
                let life = self.nodes[i].life;
                self.schedule(0, Ev::Input { node: i, life, input });
            }
            Effect::Dispatch { epoch, batch, worker, deadline_ms, items } => {
                self.dispatch(i, (epoch, batch), worker, deadline_ms, items)
            }
            Effect::Compute { tasks, reply } => self.compute(i, tasks, reply),
            Effect::ToDecimal { job, n, product, .. } => self.convert_to_decimal(i, job, n, product),
            // The simulated products are all below conversion::SPREAD_BITS_MIN: converted in
            // one piece, never sent to a worker.
            Effect::Convert { .. } => self.violation(format!("node {} was sent a conversion task", i + 1)),
            Effect::FetchRoot { job, .. } => self.fetch_root(i, job),
            Effect::Forward { to, leader, .. } => self.forward(i, to, leader),
            Effect::Reply { to, answer } => self.answer(i, to, answer),
        }
    }

    /// A coordinator acts at an epoch only once its disk holds that epoch: otherwise a crash
    /// could let it lead at the same epoch again and give its job ids to other jobs.
    fn check_epoch_durable(&mut self, i: usize, epoch: u64) {
        let on_disk = self.nodes[i].disk.hard_state.epoch;
        if on_disk < epoch {
            self.violation(format!("node {} acts as coordinator at epoch {epoch}, its disk holds {on_disk}", i + 1));
        }
    }

    /// Queues a write; writes reach the disk in order, each after a random latency.
    fn write(&mut self, i: usize, write: Write) {
        let latency = if self.rng.chance(STALL_CHANCE) {
            self.rng.range(WRITE_MS_MAX, STALL_MS_MAX + 1)
        } else {
            self.rng.range(0, WRITE_MS_MAX + 1)
        };
        let now_ms = self.now_ms();
        let io = &mut self.nodes[i].io;
        io.disk_free_at_ms = io.disk_free_at_ms.max(now_ms) + latency;
        io.writes.push_back(write);
        let (after, life) = (io.disk_free_at_ms - now_ms, self.nodes[i].life);
        self.schedule(after, Ev::Durable { node: i, life });
    }

    /// The oldest write in progress is on disk (its completion reaches the core a moment
    /// later: a crash in between leaves it durable but unreported).
    pub(super) fn durable(&mut self, i: usize) {
        let Some(write) = self.nodes[i].io.writes.pop_front() else { return };
        let disk = &mut self.nodes[i].disk;
        if let Some(hs) = write.hard_state {
            disk.hard_state = hs;
        }
        disk.facts.extend(write.facts);
        for (job, fact) in write.finished {
            if let Fact::Product { product, .. } = fact {
                disk.roots.insert(job.clone(), product);
            }
            disk.facts.push(Fact::Finished { job });
        }
        disk.version = disk.version.max(write.version);
        if let Some(write) = write.write {
            let (after, life) = (self.rng.range(0, 2), self.nodes[i].life);
            self.schedule(after, Ev::Input { node: i, life, input: Input::Written { write, ok: true } });
        }
    }

    /// A crash: writes in progress are lost, the first perhaps torn (a prefix of its facts
    /// reached the disk; the store reads the records it holds whole).
    pub(super) fn tear_writes_in_progress(&mut self, i: usize) {
        let writes = std::mem::take(&mut self.nodes[i].io.writes);
        if let Some(first) = writes.into_iter().next() {
            if self.rng.chance(0.5) {
                let keep = self.rng.below(first.facts.len() as u64 + 1) as usize;
                self.nodes[i].disk.facts.extend(first.facts.into_iter().take(keep));
            }
        }
    }

    /// Sends `msg` from node `i` to member `to`, `extra_ms` later than the network alone.
    pub(super) fn send(&mut self, i: usize, to: NodeId, msg: Msg, extra_ms: u64) {
        let j = self.index(to);
        if self.promise_drops(i, j, &msg) {
            self.traced_send(i, to, &msg);
            return self.note(|| format!("lost by the promise run: node {} -> node {to}", i + 1));
        }
        // An unreachable peer (partitioned, like the admin API's partitions, or down)
        // refuses at once; a lost message is only noticed by a request's timeout.
        let route = self.net.route(&mut self.rng, i, j);
        if !matches!(route, Route::Deliver(_)) || !self.up(j) {
            self.traced_send(i, to, &msg);
        }
        let delays = match route {
            Route::Partitioned => return self.refused(i, to, msg),
            _ if !self.up(j) => return self.refused(i, to, msg),
            Route::Lost => return self.note(|| format!("lost: node {} -> node {to}", i + 1)),
            Route::Deliver(delays) => delays,
        };
        if let (Msg::Work { tasks, .. }, true) = (&msg, delays.len() > 1) {
            self.checks.allow_again(tasks.iter().map(|(op, _)| op.clone()).collect());
        }
        let to_life = self.nodes[j].life;
        for delay_ms in delays {
            let traced = self.traced_send(i, to, &msg);
            self.schedule(delay_ms + extra_ms, Ev::Net { from: i, to: j, to_life, msg: msg.clone(), traced });
        }
    }

    /// Puts a message node `i` sends in the picture, when the run is traced.
    fn traced_send(&mut self, i: usize, to: NodeId, msg: &Msg) -> Option<usize> {
        let (from, now_ms) = (self.nodes[i].id, self.now_ms());
        self.picture.as_mut().map(|picture| picture.sent(msg, from, to, now_ms))
    }

    /// A connection refused: an election message's failure is news to the sender (as its
    /// links report every failure in production), and a request fails.
    fn refused(&mut self, i: usize, to: NodeId, msg: Msg) {
        let life = self.nodes[i].life;
        if let Msg::Election(_) = msg {
            self.nodes[i].io.unreachable.insert(to);
            let input = Input::PeerReachable { peer: to, reachable: false };
            self.schedule(NOTICE_DELAY_MS, Ev::Input { node: i, life, input });
        }
        if let Some(rpc) = msg.request_rpc() {
            self.schedule(NOTICE_DELAY_MS, Ev::RpcTimeout { node: i, life, rpc });
        }
    }

    /// A message arrives at node `j` (sent to its life `to_life`).
    pub(super) fn deliver(&mut self, from: usize, j: usize, to_life: u64, msg: Msg, traced: Option<usize>) {
        if !self.up(j) || self.nodes[j].life != to_life {
            // The connection died with the process: the sender's request fails.
            if let (Some(rpc), true) = (msg.request_rpc(), self.up(from)) {
                let life = self.nodes[from].life;
                self.schedule(NOTICE_DELAY_MS, Ev::RpcTimeout { node: from, life, rpc });
            }
            return;
        }
        let now_ms = self.now_ms();
        if let (Some(picture), Some(k)) = (self.picture.as_mut(), traced) {
            picture.messages[k].received_ms = Some(now_ms);
        }
        let (from_id, to_id) = (self.nodes[from].id, self.nodes[j].id);
        if let (Msg::Election(_), true) = (&msg, self.up(from)) {
            // The sender's links see the send succeed: news after a run of failures.
            if self.nodes[from].io.unreachable.remove(&to_id) {
                self.step(from, Input::PeerReachable { peer: to_id, reachable: true });
            }
        }
        match msg {
            Msg::Election(msg) => self.step(j, Input::Election { from: from_id, msg }),
            Msg::Work { rpc, .. } if self.nodes[j].rogue_epoch.is_some() => {
                let why = "refused by a rogue member".to_string();
                if self.up(from) {
                    self.note(|| format!("node {to_id} SHOWS its rogue epoch to node {from_id}"));
                }
                let answer = Msg::WorkAnswer { rpc, outcome: Err(why), known_epoch: self.nodes[j].rogue_epoch };
                self.send(j, from_id, answer, 0);
                self.silence(j);
            }
            Msg::Work { rpc, epoch, tasks } => {
                let reply = self.keep_reply(j, ReplyTo::Work { to: from_id, rpc });
                self.step(j, Input::Work { from: from_id, epoch, tasks, reply });
            }
            Msg::Apply { rpc, epoch, facts } => {
                let reply = self.keep_reply(j, ReplyTo::Apply { to: from_id, rpc });
                self.step(j, Input::ApplyFacts { from: from_id, epoch, facts, reply });
            }
            Msg::Query { rpc, epoch, finished } => {
                let reply = self.keep_reply(j, ReplyTo::Query { to: from_id, rpc });
                self.step(j, Input::CheckpointQuery { from: from_id, epoch, skip: finished, reply });
            }
            Msg::WorkAnswer { rpc, outcome, known_epoch } => {
                self.heard_epoch(j, from_id, known_epoch);
                self.rpc_answered(j, rpc, RpcAnswer::Work(outcome))
            }
            Msg::Applied { rpc, ok, known_epoch } => {
                self.heard_epoch(j, from_id, known_epoch);
                self.rpc_answered(j, rpc, RpcAnswer::Applied(ok))
            }
            Msg::QueryAnswer { rpc, facts, known_epoch } => {
                self.heard_epoch(j, from_id, known_epoch);
                self.rpc_answered(j, rpc, RpcAnswer::Facts(facts))
            }
        }
    }

    /// A peer that refused a request of node `i`'s named the epoch it knows.
    fn heard_epoch(&mut self, i: usize, from: NodeId, known_epoch: Option<Epoch>) {
        if let Some(epoch) = known_epoch {
            self.step(i, Input::PeerEpoch { from, epoch });
        }
    }

    fn keep_reply(&mut self, i: usize, to: ReplyTo) -> ReplyId {
        let io = &mut self.nodes[i].io;
        io.next_reply += 1;
        io.replies.insert(io.next_reply, to);
        io.next_reply
    }

    /// A client's request reaches node `i`: returns the id the core answers it by.
    pub(super) fn client_reply_id(&mut self, i: usize, client: usize, generation: u64) -> ReplyId {
        self.keep_reply(i, ReplyTo::Client { client, generation })
    }

    /// A client stopped waiting for `reply` at node `i`.
    pub(super) fn client_gone(&mut self, i: usize, reply: ReplyId) {
        if self.nodes[i].io.replies.remove(&reply).is_some() {
            self.step(i, Input::ClientGone { reply });
        }
    }

    fn rpc_answered(&mut self, i: usize, rpc: u64, answer: RpcAnswer) {
        match (self.nodes[i].io.rpcs.remove(&rpc), answer) {
            (Some(Rpc::Batch { epoch, batch, tasks, .. }), RpcAnswer::Work(outcome)) => {
                if outcome.is_err() {
                    self.checks.allow_again(tasks);
                }
                self.step(i, Input::BatchAnswered { epoch, batch, outcome });
            }
            (Some(Rpc::Apply { replication, peer }), RpcAnswer::Applied(ok)) => {
                let sent = if ok { Sent::Durable } else { Sent::Failed };
                self.step(i, Input::FactsSent { replication, peer, sent });
            }
            (Some(Rpc::Query { gathering, peer }), RpcAnswer::Facts(facts)) => {
                self.step(i, Input::CheckpointAnswered { gathering, peer, facts })
            }
            _ => {}
        }
    }

    /// An outgoing request failed or timed out.
    pub(super) fn rpc_failed(&mut self, i: usize, rpc: u64, why: &str) {
        match self.nodes[i].io.rpcs.get(&rpc) {
            Some(Rpc::Batch { .. }) => self.rpc_answered(i, rpc, RpcAnswer::Work(Err(why.to_string()))),
            Some(Rpc::Apply { .. }) => self.rpc_answered(i, rpc, RpcAnswer::Applied(false)),
            Some(Rpc::Query { .. }) => self.rpc_answered(i, rpc, RpcAnswer::Facts(None)),
            None => {}
        }
    }

    fn new_rpc(&mut self, i: usize, rpc: Rpc, timeout_ms: u64) -> u64 {
        self.next_rpc += 1;
        let id = self.next_rpc;
        self.nodes[i].io.rpcs.insert(id, rpc);
        let life = self.nodes[i].life;
        self.schedule(timeout_ms, Ev::RpcTimeout { node: i, life, rpc: id });
        id
    }

    fn dispatch(
        &mut self,
        i: usize,
        (epoch, batch): (Epoch, u64),
        worker: NodeId,
        deadline_ms: u64,
        items: Vec<WorkItem>,
    ) {
        let ops = items.iter().map(|item| item.op.clone()).collect();
        let timeout_ms = deadline_ms.saturating_sub(self.now_ms()).max(1);
        let rpc = self.new_rpc(i, Rpc::Batch { epoch, batch, worker, tasks: ops }, timeout_ms);
        let tasks = items
            .into_iter()
            .map(|it| (it.op.clone(), Task { n: it.n, op: it.op.op, operands: it.operands }))
            .collect();
        self.send(i, worker, Msg::Work { rpc, epoch, tasks }, 0);
    }

    /// A worker computes: checked (a coordinator never computes; at most 4 operands per
    /// operation) and answered over the network.
    fn compute(&mut self, i: usize, tasks: Vec<(OpRef, Task)>, reply: ReplyId) {
        let core = self.nodes[i].core.as_ref().expect("computing node is up");
        if core.coordinating().is_some() || core.taking_over() {
            self.violation(format!("node {} computes while it coordinates", i + 1));
        }
        let stats = WorkerStats::default();
        let products: Vec<(OpRef, Big)> = tasks
            .into_iter()
            .map(|(op, task)| {
                self.checks.computed(op.clone());
                (op, worker::compute(task, &stats))
            })
            .collect();
        let operands = stats.max_operands.load(std::sync::atomic::Ordering::Relaxed);
        if operands > crate::coordinator::MAX_OPERANDS {
            self.violation(format!("node {} multiplied {operands} values in one operation", i + 1));
        }
        if let Some(ReplyTo::Work { to, rpc }) = self.nodes[i].io.replies.remove(&reply) {
            let compute_ms = self.rng.range(0, 5);
            self.send(i, to, Msg::WorkAnswer { rpc, outcome: Ok(products), known_epoch: None }, compute_ms);
        }
    }

    /// Carries a client's request on to the coordinator, as a member's HTTP edge does.
    fn forward(&mut self, i: usize, to: ReplyId, leader: NodeId) {
        match self.nodes[i].io.replies.remove(&to) {
            Some(ReplyTo::Client { client, generation }) => self.client_forwarded(client, generation, leader),
            Some(_) => self.violation(format!("node {} forwards a request that is not a client's", i + 1)),
            None => {}
        }
    }

    fn answer(&mut self, i: usize, to: ReplyId, answer: Answer) {
        match (self.nodes[i].io.replies.remove(&to), answer) {
            (Some(ReplyTo::Client { client, generation }), answer) => self.client_answer(client, generation, answer),
            (Some(ReplyTo::Work { to, rpc }), Answer::WorkRefused(r)) => {
                self.send(i, to, Msg::WorkAnswer { rpc, outcome: Err(r.why), known_epoch: Some(r.known_epoch) }, 0)
            }
            (Some(ReplyTo::Apply { to, rpc }), Answer::Applied(r)) => {
                let known_epoch = r.as_ref().err().map(|r| r.known_epoch);
                self.send(i, to, Msg::Applied { rpc, ok: r.is_ok(), known_epoch }, 0)
            }
            (Some(ReplyTo::Query { to, rpc }), Answer::Checkpoint(facts)) => {
                let known_epoch = facts.as_ref().err().map(|r| r.known_epoch);
                let answered = facts.is_ok();
                self.send(i, to, Msg::QueryAnswer { rpc, facts: facts.ok(), known_epoch }, 0);
                if answered {
                    self.promise_answered_gathering(i);
                }
            }
            (Some(_), answer) => {
                self.violation(format!("node {} answers {answer:?} to a request of another kind", i + 1))
            }
            (None, _) => {}
        }
    }

    /// A result to decimal; a root not in hand is read from this node's disk or an
    /// up and reachable peer's.
    fn convert_to_decimal(&mut self, i: usize, job: JobId, n: u64, product: Option<Big>) {
        let product = product.or_else(|| self.find_root(i, &job).map(|(root, _)| root));
        let life = self.nodes[i].life;
        if product.is_none() {
            let holders: Vec<NodeId> =
                self.nodes.iter().filter(|n| n.disk.roots.contains_key(&job)).map(|n| n.id).collect();
            self.note(|| format!("node {}: no reachable root of {job}; held by {holders:?}", i + 1));
        }
        let input = match product {
            Some(p) => Input::Decimal { job, n, decimal: Arc::from(p.to_decimal()) },
            None => Input::NoDecimal { job },
        };
        let after = self.rng.range(1, 5);
        self.schedule(after, Ev::Input { node: i, life, input });
    }

    /// A finished job the core decided to compute again (its result out of reach after every
    /// read): a failure each of its tasks may be redone for.
    fn result_computed_again(&mut self, job: JobId) {
        self.checks.allow_job_again(&job);
        self.checks.results_lost += 1;
    }

    /// A finished job's root from this node's disk, or else an up and reachable peer's, and
    /// whether it came from this node's disk.
    fn find_root(&self, i: usize, job: &str) -> Option<(Big, bool)> {
        if let Some(root) = self.nodes[i].disk.roots.get(job) {
            return Some((root.clone(), true));
        }
        let holders = (0..self.nodes.len()).filter(|&j| j != i && self.up(j) && self.connected(i, j));
        holders.into_iter().find_map(|j| self.nodes[j].disk.roots.get(job).map(|root| (root.clone(), false)))
    }

    fn fetch_root(&mut self, i: usize, job: JobId) {
        let (root, on_this_disk) = self.find_root(i, &job).map_or((None, false), |(root, here)| (Some(root), here));
        let (after, life) = (self.rng.range(1, 5), self.nodes[i].life);
        self.schedule(after, Ev::Input { node: i, life, input: Input::RootFetched { job, root, on_this_disk } });
    }
}

/// The effects of one step, briefly (for traces).
fn describe(effects: &[Effect]) -> String {
    let one = |e: &Effect| match e {
        Effect::SaveHardState(hs) => format!("save epoch {}", hs.epoch),
        Effect::Send { to, .. } => format!("send {to}"),
        Effect::Write { facts, finished, .. } => format!("write {}+{} facts", facts.len(), finished.len()),
        Effect::SendFacts { peer, facts, .. } => format!("send {} facts to {peer}", facts.len()),
        Effect::AskCheckpoint { peer, .. } => format!("ask {peer} for its checkpoint"),
        Effect::CheckGathered { only, .. } => format!("check gathered {only:?}"),
        Effect::Dispatch { batch, worker, items, .. } => {
            let ops: Vec<String> =
                items.iter().map(|i| format!("{}:{}:{}", i.op.job, i.op.op.level, i.op.op.index)).collect();
            format!("batch {batch} to {worker} [{}]", ops.join(" "))
        }
        Effect::Compute { tasks, .. } => format!("compute {} tasks", tasks.len()),
        Effect::Convert { .. } => "convert a piece".to_string(),
        Effect::ToDecimal { job, .. } => format!("decimal {job}"),
        Effect::FetchRoot { job, .. } => format!("read root {job}"),
        Effect::Forward { leader, .. } => format!("forward to {leader}"),
        Effect::Reply { answer, .. } => format!("reply {}", format!("{answer:?}").chars().take(60).collect::<String>()),
    };
    effects.iter().map(one).collect::<Vec<_>>().join(", ")
}

enum RpcAnswer {
    Work(Result<Vec<(OpRef, Big)>, String>),
    Applied(bool),
    Facts(Option<Vec<Fact>>),
}
