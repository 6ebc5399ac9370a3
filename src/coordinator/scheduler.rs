//! The coordinator's scheduling as a pure state machine.
//!
//! Events in — a job submitted, time passed (`now_ms` supplied by the runtime), a batch answered
//! or failed, a worker joined or left — and [`Action`]s out: dispatch this batch to that worker,
//! this job finished. It never multiplies, never reads a clock and never does I/O, so every
//! scenario (slow workers, lost batches, late answers) runs in unit tests without a network.
//!
//! The scheduler deals in tasks (see [`super::plan`]): whole subtrees that one worker computes,
//! of which only the root's product comes back. Work goes out in batches of tasks: one request
//! carries several, so 1,000,000! costs a few dozen round trips, not one per operation. A batch that is not answered by its deadline is failed:
//! its operations go back to the ready set and its worker is quarantined for a while that grows
//! with every consecutive failure (see [`QUARANTINE_MS_BASE`]). An answer that arrives after its
//! batch was failed is still used for the operations nobody else finished yet, since a product
//! is a deterministic fact; it never overwrites anything.

use super::plan::{OpId, Plan, TaskInputs};
use crate::bignum::Big;
use facto_elections::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// The most tasks one batch carries (small batches keep every worker busy and let the next
/// stage start while the last tasks of this one still run).
pub const BATCH_TASKS_MAX: usize = 8;
/// How many batches one worker may hold at once (so it is never idle while a reply travels).
pub const BATCHES_PER_WORKER_MAX: usize = 2;
/// First quarantine of a worker whose batch failed; doubles per consecutive failure.
pub const QUARANTINE_MS_BASE: u64 = 250;
/// The longest quarantine.
pub const QUARANTINE_MS_MAX: u64 = 8_000;

/// A job, numbered by the coordinator that accepted it.
pub type JobId = String;

/// One operation of one job.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpRef {
    pub job: JobId,
    pub op: OpId,
}

/// A task, ready to send: its root operation, its job's n (the worker derives the task's
/// shape from the plan of n), and the products it starts from (none for leaf tasks, whose
/// integers the worker derives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub op: OpRef,
    pub n: u64,
    pub operands: Vec<Big>,
}

/// What a restored job brings along.
enum Known {
    /// Products of some of its tasks.
    Products(BTreeMap<OpId, Big>),
    /// Its result is known, elsewhere.
    Finished,
}

/// What the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these operations to `worker`; answer with [`Scheduler::batch_done`] or
    /// [`Scheduler::batch_failed`] (the runtime must give up on the request by `deadline_ms`).
    Dispatch { batch: u64, worker: NodeId, deadline_ms: u64, items: Vec<WorkItem> },
    /// The job's root product is known.
    JobFinished { job: JobId, n: u64, result: Big },
}

/// Timing the scheduler needs to set deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The workers' configured processing delay (they wait this long before replying).
    pub worker_delay_ms: u64,
    /// How long beyond the delay a batch may take before it is given up.
    pub batch_timeout_ms: u64,
}

/// Extra time a batch gets per MiB of operands it carries (large products take long to move
/// and multiply on a loaded machine).
const BATCH_MS_PER_MIB: u64 = 200;
/// Extra time per MiB of the products a batch's leaf tasks will make: building a product from
/// hundreds of thousands of small integers costs far more than moving it. Measured at
/// 100,000,000!: batches of eight leaf tasks (about 10 MiB of products) took over 20 s with
/// five workers on two cores.
const LEAF_MS_PER_MIB: u64 = 4_000;
/// A task whose batch missed its deadline gets twice the time at its next dispatch, up to
/// 2^this times: however slow the machine, a task is eventually given long enough, so huge
/// jobs cannot livelock on timeouts (each retry redoing work that was nearly done).
const OVERDUE_DOUBLINGS_MAX: u32 = 6;

/// Progress of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    pub id: JobId,
    pub n: u64,
    pub ops_total: u64,
    pub ops_done: u64,
    pub ops_reexecuted: u64,
    /// Operations assigned to a worker right now.
    pub ops_in_flight: u64,
    /// Workers holding tasks of the job right now.
    pub workers: Vec<NodeId>,
    pub finished: bool,
}

/// How many jobs a scheduler holds, by state (`/status` shows them: the job list itself
/// is only the newest few).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobCounts {
    pub total: u64,
    pub queued: u64,
    pub running: u64,
    pub finished: u64,
    /// Operations computed again, over all jobs held.
    pub reexecuted: u64,
}

#[derive(Debug)]
struct Job {
    seq: u64,
    plan: Plan,
    /// Task products in hand and not yet consumed by a done parent task.
    products: BTreeMap<OpId, Big>,
    /// Tasks whose product is in hand, durable or not: a parent whose inputs are all known
    /// is dispatched at once, while its inputs are still being made durable.
    known: BTreeSet<OpId>,
    /// Tasks whose product is durable, or covered by a durable product above them.
    done: BTreeSet<OpId>,
    /// Operations of the plan inside the tasks in `done`.
    ops_done: u64,
    /// Tasks above the lowest stage: how many of their input tasks are still missing.
    waiting: BTreeMap<OpId, u64>,
    /// Tasks ever handed to a worker (by this coordinator or, per the checkpoint, an
    /// earlier one).
    dispatched: BTreeSet<OpId>,
    /// Operations of tasks dispatched again after an earlier dispatch (a worker failed, was
    /// too slow, or a coordinator crashed while they were in flight).
    reexecuted: u64,
    /// Tasks whose batches missed their deadline, and how many times.
    overdue: BTreeMap<OpId, u32>,
    finished: bool,
}

#[derive(Debug)]
struct Batch {
    worker: NodeId,
    ops: Vec<OpRef>,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
struct Worker {
    /// False while the failure detector reports it down: it gets no work at all.
    unreachable: bool,
    batches: usize,
    consecutive_failures: u32,
    quarantined_until_ms: u64,
}

/// Ready tasks in dispatch order: older jobs first, then higher levels first (finishing
/// inner tasks frees the products they consume), then by index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyKey {
    job_seq: u64,
    level_rev: u32,
    index: u64,
}

impl ReadyKey {
    fn new(job_seq: u64, op: OpId) -> ReadyKey {
        ReadyKey { job_seq, level_rev: u32::MAX - op.level, index: op.index }
    }

    fn op(&self) -> OpId {
        OpId { level: u32::MAX - self.level_rev, index: self.index }
    }
}

/// The coordinator's scheduling state.
#[derive(Debug)]
pub struct Scheduler {
    timing: Timing,
    jobs: BTreeMap<JobId, Job>,
    job_by_seq: BTreeMap<u64, JobId>,
    /// The jobs not finished (admission asks for their open work on every submission).
    open_jobs: BTreeSet<JobId>,
    /// Internal order of jobs (submitted or restored).
    next_job_seq: u64,
    /// The number in the next new job's id.
    next_job_number: u64,
    job_prefix: String,
    ready: BTreeSet<ReadyKey>,
    /// Operation → the batch it is assigned to.
    assigned: BTreeMap<OpRef, u64>,
    batches: BTreeMap<u64, Batch>,
    /// Batches answered but not yet durable: their operations stay assigned meanwhile.
    answered: BTreeMap<u64, Vec<OpRef>>,
    next_batch: u64,
    workers: BTreeMap<NodeId, Worker>,
}

impl Scheduler {
    /// A scheduler whose job ids start with `job_prefix` (the coordinator's epoch, so that
    /// ids from different coordinators never collide).
    pub fn new(job_prefix: String, timing: Timing) -> Scheduler {
        Scheduler {
            timing,
            jobs: BTreeMap::new(),
            job_by_seq: BTreeMap::new(),
            open_jobs: BTreeSet::new(),
            next_job_seq: 1,
            next_job_number: 1,
            job_prefix,
            ready: BTreeSet::new(),
            assigned: BTreeMap::new(),
            batches: BTreeMap::new(),
            answered: BTreeMap::new(),
            next_batch: 1,
            workers: BTreeMap::new(),
        }
    }

    /// Accepts n! as a new job; returns its id and, for 0! and 1!, the finished result.
    pub fn submit(&mut self, n: u64) -> (JobId, Vec<Action>) {
        let id = format!("{}-{}", self.job_prefix, self.next_job_number);
        self.next_job_number += 1;
        let actions = self.insert_job(id.clone(), n, Known::Products(BTreeMap::new()), BTreeSet::new());
        (id, actions)
    }

    /// Resumes a job from a checkpoint: operations whose product is known, or is covered by a
    /// known product higher in the tree, are not computed again. Call in submission order.
    pub fn restore_job(
        &mut self,
        id: JobId,
        n: u64,
        products: BTreeMap<OpId, Big>,
        dispatched: BTreeSet<OpId>,
    ) -> Vec<Action> {
        if self.jobs.contains_key(&id) {
            return Vec::new();
        }
        self.insert_job(id, n, Known::Products(products), dispatched)
    }

    /// A job whose result is known but not in hand (its root product lies on disk): it
    /// counts as finished, nothing of it is computed, and no [`Action::JobFinished`] follows.
    pub fn restore_finished_job(&mut self, id: JobId, n: u64) {
        if !self.jobs.contains_key(&id) {
            self.insert_job(id, n, Known::Finished, BTreeSet::new());
        }
    }

    /// Computes a finished job again from nothing: its result was found wrong, or lost, on
    /// every node that should hold it. No-op for a job not finished or not known.
    pub fn restart_finished_job(&mut self, id: &str) -> Vec<Action> {
        let Some(job) = self.jobs.get(id).filter(|j| j.finished) else { return Vec::new() };
        let (n, seq) = (job.plan.n(), job.seq);
        self.jobs.remove(id);
        self.job_by_seq.remove(&seq);
        self.insert_job(id.to_string(), n, Known::Products(BTreeMap::new()), BTreeSet::new())
    }

    fn insert_job(&mut self, id: JobId, n: u64, known: Known, dispatched: BTreeSet<OpId>) -> Vec<Action> {
        let seq = self.next_job_seq;
        self.next_job_seq += 1;
        let plan = Plan::new(n);
        let mut job = Job {
            seq,
            plan,
            products: BTreeMap::new(),
            known: BTreeSet::new(),
            done: BTreeSet::new(),
            ops_done: 0,
            waiting: BTreeMap::new(),
            dispatched,
            reexecuted: 0,
            overdue: BTreeMap::new(),
            finished: false,
        };
        let mut actions = Vec::new();
        match known {
            Known::Finished => {
                job.finished = true;
                job.ops_done = job.plan.total_ops();
            }
            Known::Products(mut known) => {
                // Products that are not task roots (a forged fact, or a checkpoint written by
                // an older version) are not trusted to cover anything.
                known.retain(|&op, _| job.plan.is_task(op));
                let finished_with = match job.plan.root() {
                    None => Some(Big::one()),
                    Some(root) => known.remove(&root),
                };
                if let Some(result) = finished_with {
                    job.finished = true;
                    job.ops_done = job.plan.total_ops();
                    actions.push(Action::JobFinished { job: id.clone(), n, result });
                } else {
                    self.resume(&mut job, known);
                }
            }
        }
        self.job_by_seq.insert(seq, id.clone());
        if !job.finished {
            self.open_jobs.insert(id.clone());
        }
        self.jobs.insert(id, job);
        actions
    }

    /// Marks what `known` products cover as done (top-down: a known product covers its whole
    /// subtree), keeps the products an unfinished parent still needs, and queues every
    /// task whose inputs are all known.
    fn resume(&mut self, job: &mut Job, mut known: BTreeMap<OpId, Big>) {
        let stages = job.plan.stages().to_vec();
        for &level in stages.iter().rev() {
            for op in job.plan.tasks_at(level) {
                let parent_done = job.plan.task_parent(op).is_some_and(|p| job.done.contains(&p));
                if parent_done {
                    job.done.insert(op);
                } else if let Some(product) = known.remove(&op) {
                    job.done.insert(op);
                    job.products.insert(op, product);
                }
            }
        }
        job.ops_done = job.done.iter().map(|&op| job.plan.task_ops(op)).sum();
        job.known = job.done.clone();
        for &level in &stages {
            for op in job.plan.tasks_at(level) {
                if job.done.contains(&op) {
                    continue;
                }
                let inputs = job.plan.task_inputs(op);
                let missing = inputs.children().iter().filter(|c| !job.done.contains(c)).count() as u64;
                if missing == 0 {
                    self.ready.insert(ReadyKey::new(job.seq, op));
                } else {
                    job.waiting.insert(op, missing);
                }
            }
        }
    }

    /// A member that can take work (it answered, or quarantine lets it try again).
    pub fn add_worker(&mut self, worker: NodeId) {
        self.workers.entry(worker).or_default();
    }

    /// The workers the failure detector does not report down.
    pub fn reachable_workers(&self) -> Vec<NodeId> {
        self.workers.iter().filter(|(_, w)| !w.unreachable).map(|(&id, _)| id).collect()
    }

    /// The failure detector lost `worker` (`reachable == false`): its batches are reassigned
    /// now, not at their deadlines, and it gets no work until it is reachable again, and then
    /// only after its quarantine.
    pub fn set_reachable(&mut self, worker: NodeId, reachable: bool, now_ms: u64) -> Vec<Action> {
        let Some(w) = self.workers.get_mut(&worker) else { return Vec::new() };
        w.unreachable = !reachable;
        if !reachable {
            let batches: Vec<u64> =
                self.batches.iter().filter(|(_, b)| b.worker == worker).map(|(&id, _)| id).collect();
            for batch in batches {
                self.fail_batch(batch, now_ms);
            }
        }
        self.dispatch(now_ms)
    }

    /// Time passed: fail overdue batches, then hand ready operations to free workers.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let overdue: Vec<u64> =
            self.batches.iter().filter(|(_, b)| b.deadline_ms <= now_ms).map(|(&id, _)| id).collect();
        for batch in overdue {
            for op in self.batches.get(&batch).map(|b| b.ops.clone()).unwrap_or_default() {
                if let Some(job) = self.jobs.get_mut(&op.job) {
                    *job.overdue.entry(op.op).or_insert(0) += 1;
                }
            }
            self.fail_batch(batch, now_ms);
        }
        self.dispatch(now_ms)
    }

    /// `batch`'s products are durable (those learned by [`Scheduler::batch_answered`] need not
    /// be passed again), or the batch was answered with checkpoints off: they count as done. Products for tasks that are unknown or already done are ignored: a late
    /// or replayed answer is harmless; tasks of the batch the answer left out are queued
    /// again. Returns the finished jobs and new dispatches.
    pub fn batch_done(&mut self, batch: u64, products: Vec<(OpRef, Big)>, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.free_worker_of(batch);
        let mut ops = self.answered.remove(&batch).unwrap_or_default();
        // Products are deterministic: one for any task still unknown is used, even from a
        // batch that was given up on (a late answer); the runtime checked it against its
        // operands before it got here.
        for (op, product) in products {
            self.learn_product(&op, product);
            ops.push(op);
        }
        for op in &ops {
            self.commit_product(op, &mut actions);
        }
        // An answer that left operations out (a short or mangled reply) must not strand them.
        for op in &ops {
            if self.assigned.get(op) == Some(&batch) {
                self.assigned.remove(op);
                self.requeue_unless_done(op);
            }
        }
        actions.extend(self.dispatch(now_ms));
        actions
    }

    /// A worker answered `batch`, but its products are not durable yet: the worker may take
    /// new work at once, and a task whose inputs are now all in hand is dispatched at once
    /// (computing it needs no durability; counting it done will). The batch's tasks stay in
    /// flight until [`Scheduler::batch_done`], which the caller must send, whether or not
    /// durability succeeded.
    pub fn batch_answered(&mut self, batch: u64, products: Vec<(OpRef, Big)>, now_ms: u64) -> Vec<Action> {
        self.free_worker_of(batch);
        for (op, product) in products {
            self.learn_product(&op, product);
            // Committed by `batch_done`, even when this is a late answer to a failed batch.
            self.answered.entry(batch).or_default().push(op);
        }
        self.dispatch(now_ms)
    }

    /// Ends `batch`'s claim on its worker (no deadline applies to it any more).
    fn free_worker_of(&mut self, batch: u64) {
        if let Some(b) = self.batches.remove(&batch) {
            if let Some(w) = self.workers.get_mut(&b.worker) {
                w.batches -= 1;
                w.consecutive_failures = 0;
            }
            self.answered.insert(batch, b.ops);
        }
    }

    /// Products learned outside any batch (from a peer's checkpoint): used like late answers.
    pub fn learn(&mut self, products: Vec<(OpRef, Big)>, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for (op, product) in products {
            self.learn_product(&op, product);
            self.commit_product(&op, &mut actions);
        }
        actions.extend(self.dispatch(now_ms));
        actions
    }

    /// `batch` failed (the request errored, was refused or timed out).
    pub fn batch_failed(&mut self, batch: u64, now_ms: u64) -> Vec<Action> {
        self.fail_batch(batch, now_ms);
        self.dispatch(now_ms)
    }

    /// Progress of every job, oldest first.
    pub fn progress(&self) -> Vec<JobProgress> {
        self.job_by_seq.values().filter_map(|id| self.job_progress(id)).collect()
    }

    /// Progress of the `limit` newest jobs submitted before job `before` (or of all), oldest
    /// first: pages of a long history.
    pub fn latest(&self, limit: usize, before: Option<&str>) -> Vec<JobProgress> {
        let end = before.map_or(u64::MAX, |id| self.jobs.get(id).map_or(0, |j| j.seq));
        let mut latest: Vec<JobProgress> =
            self.job_by_seq.range(..end).rev().take(limit).filter_map(|(_, id)| self.job_progress(id)).collect();
        latest.reverse();
        latest
    }

    /// How many jobs it holds: (all, queued, running, finished), and their re-executions.
    pub fn counts(&self) -> JobCounts {
        let open = self.open_jobs.iter().filter_map(|id| self.jobs.get(id));
        let queued = open.filter(|j| j.ops_done == 0).count() as u64;
        let total = self.jobs.len() as u64;
        let finished = total - self.open_jobs.len() as u64;
        let reexecuted = self.jobs.values().map(|j| j.reexecuted).sum();
        JobCounts { total, queued, running: total - finished - queued, finished, reexecuted }
    }

    /// Forgets a finished job (past retention). No-op for a job not finished.
    pub fn retire(&mut self, id: &str) {
        if let Some(job) = self.jobs.get(id).filter(|j| j.finished) {
            self.job_by_seq.remove(&job.seq);
            self.jobs.remove(id);
        }
    }

    /// Progress of one job.
    pub fn job_progress(&self, id: &str) -> Option<JobProgress> {
        let job = self.jobs.get(id)?;
        Some(JobProgress {
            id: id.to_string(),
            n: job.plan.n(),
            ops_total: job.plan.total_ops(),
            ops_done: job.ops_done,
            ops_reexecuted: job.reexecuted,
            ops_in_flight: self.assigned_of(id).map(|(op, _)| job.plan.task_ops(op.op)).sum(),
            workers: self
                .assigned_of(id)
                .filter_map(|(_, batch)| self.batches.get(batch).map(|b| b.worker))
                .collect::<BTreeSet<NodeId>>()
                .into_iter()
                .collect(),
            finished: job.finished,
        })
    }

    /// The job's operations assigned to a batch (a range of `assigned`, which is ordered by
    /// job first: a lookup costs the job's own tasks, not everyone's).
    fn assigned_of<'a>(&'a self, id: &str) -> impl Iterator<Item = (&'a OpRef, &'a u64)> + 'a {
        let first = OpRef { job: id.to_string(), op: OpId { level: 0, index: 0 } };
        let last = OpRef { job: id.to_string(), op: OpId { level: u32::MAX, index: u64::MAX } };
        self.assigned.range(first..=last)
    }

    /// Jobs not finished, and the operations they still need.
    pub fn open_work(&self) -> (u64, u64) {
        self.open_jobs
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .fold((0, 0), |(jobs, ops), j| (jobs + 1, ops + j.plan.total_ops().saturating_sub(j.ops_done)))
    }

    /// Tasks currently assigned to workers.
    pub fn in_flight(&self) -> usize {
        self.assigned.len()
    }

    /// The tasks currently assigned to workers (answered ones too, until durable).
    pub fn tasks_in_flight(&self) -> Vec<OpRef> {
        self.assigned.keys().cloned().collect()
    }

    /// Keeps a task's product in hand; its parent becomes ready once all its inputs are.
    fn learn_product(&mut self, op: &OpRef, product: Big) {
        let Some(job) = self.jobs.get_mut(&op.job) else {
            return;
        };
        if job.finished || !job.plan.is_task(op.op) || !job.known.insert(op.op) {
            return;
        }
        // Still queued for a retry elsewhere? This answer makes that unnecessary.
        self.ready.remove(&ReadyKey::new(job.seq, op.op));
        job.products.insert(op.op, product);
        let Some(parent) = job.plan.task_parent(op.op) else { return };
        let missing = job.waiting.entry(parent).or_insert_with(|| job.plan.task_inputs(parent).children().len() as u64);
        *missing = missing.saturating_sub(1);
        if *missing == 0 {
            job.waiting.remove(&parent);
            self.ready.insert(ReadyKey::new(job.seq, parent));
        }
    }

    /// Counts a known task as done; the root finishes its job.
    fn commit_product(&mut self, op: &OpRef, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.get_mut(&op.job) else {
            return;
        };
        if job.finished || !job.known.contains(&op.op) || job.done.contains(&op.op) {
            return;
        }
        Self::mark_done(job, op.op);
        if job.plan.task_parent(op.op).is_none() {
            job.finished = true;
            self.open_jobs.remove(&op.job);
            if let Some(result) = job.products.remove(&op.op) {
                actions.push(Action::JobFinished { job: op.job.clone(), n: job.plan.n(), result });
            }
            job.products.clear();
        }
    }

    /// Marks `op` done, and with it the tasks below it that are not done yet (a durable product
    /// covers its whole subtree), counting each once; their products are no longer needed.
    fn mark_done(job: &mut Job, op: OpId) {
        if !job.done.insert(op) {
            return;
        }
        job.known.insert(op);
        job.ops_done += job.plan.task_ops(op);
        if let TaskInputs::Products(children) = job.plan.task_inputs(op) {
            for child in children {
                Self::mark_done(job, child);
                job.products.remove(&child);
            }
        }
    }

    fn fail_batch(&mut self, batch: u64, now_ms: u64) {
        let Some(b) = self.batches.remove(&batch) else {
            return;
        };
        if let Some(w) = self.workers.get_mut(&b.worker) {
            w.batches -= 1;
            w.consecutive_failures += 1;
            w.quarantined_until_ms = now_ms + quarantine_ms(w.consecutive_failures);
        }
        for op in b.ops {
            if self.assigned.get(&op) != Some(&batch) {
                continue;
            }
            self.assigned.remove(&op);
            self.requeue_unless_done(&op);
        }
    }

    /// Puts a task that lost its worker back in the ready set, unless its product is in hand.
    fn requeue_unless_done(&mut self, op: &OpRef) {
        let Some(job) = self.jobs.get_mut(&op.job) else {
            return;
        };
        if job.finished || job.known.contains(&op.op) {
            return;
        }
        self.ready.insert(ReadyKey::new(job.seq, op.op));
    }

    fn dispatch(&mut self, now_ms: u64) -> Vec<Action> {
        let free: Vec<NodeId> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.unreachable && w.batches < BATCHES_PER_WORKER_MAX && w.quarantined_until_ms <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        if free.is_empty() || self.ready.is_empty() {
            return Vec::new();
        }
        // Spread small amounts of work over every free worker rather than one full batch.
        let per_batch = self.ready.len().div_ceil(free.len()).clamp(1, BATCH_TASKS_MAX);
        let mut actions = Vec::new();
        for worker in free {
            let keys: Vec<ReadyKey> = self.ready.iter().take(per_batch).cloned().collect();
            if keys.is_empty() {
                break;
            }
            let batch = self.next_batch;
            self.next_batch += 1;
            let mut items = Vec::with_capacity(keys.len());
            for key in keys {
                self.ready.remove(&key);
                if let Some(item) = self.work_item(&key) {
                    self.assigned.insert(item.op.clone(), batch);
                    items.push(item);
                }
            }
            if items.is_empty() {
                continue;
            }
            let deadline_ms = now_ms + self.timing.worker_delay_ms + self.batch_allowance_ms(&items);
            let ops = items.iter().map(|i| i.op.clone()).collect();
            self.batches.insert(batch, Batch { worker, ops, deadline_ms });
            if let Some(w) = self.workers.get_mut(&worker) {
                w.batches += 1;
            }
            actions.push(Action::Dispatch { batch, worker, deadline_ms, items });
        }
        actions
    }
}

impl Scheduler {
    /// How long a batch of `items` may take beyond the workers' delay: the base timeout, time
    /// for its work ([`BATCH_MS_PER_MIB`] of operands, [`LEAF_MS_PER_MIB`] of leaf products),
    /// doubled for each deadline its tasks missed before.
    fn batch_allowance_ms(&self, items: &[WorkItem]) -> u64 {
        let (mut operand_bytes, mut leaf_bytes, mut overdue) = (0u64, 0u64, 0u32);
        for item in items {
            let Some(job) = self.jobs.get(&item.op.job) else { continue };
            match job.plan.task_inputs(item.op.op) {
                TaskInputs::Integers { first, last } => {
                    leaf_bytes += (last + 1).saturating_sub(first) * u64::from(u64::BITS - last.leading_zeros()) / 8
                }
                // swing(m) has about m bits.
                TaskInputs::Swing { m } => leaf_bytes += m / 8,
                TaskInputs::Products(_) => {
                    operand_bytes += item.operands.iter().map(|o| o.byte_len() as u64).sum::<u64>()
                }
            }
            overdue = overdue.max(job.overdue.get(&item.op.op).copied().unwrap_or(0));
        }
        let work_ms =
            (operand_bytes >> 20).saturating_mul(BATCH_MS_PER_MIB) + (leaf_bytes >> 20).saturating_mul(LEAF_MS_PER_MIB);
        (self.timing.batch_timeout_ms + work_ms) << overdue.min(OVERDUE_DOUBLINGS_MAX)
    }

    /// The task `key` names, with its operands, counted as dispatched. `None` (never expected)
    /// when its job or an input product is missing: the task is then left out, not a panic.
    fn work_item(&mut self, key: &ReadyKey) -> Option<WorkItem> {
        let job_id = self.job_by_seq.get(&key.job_seq)?.clone();
        let job = self.jobs.get_mut(&job_id)?;
        let op = key.op();
        let inputs = job.plan.task_inputs(op);
        let operands = inputs.children().iter().map(|c| job.products.get(c).cloned()).collect::<Option<Vec<Big>>>()?;
        if !job.dispatched.insert(op) {
            job.reexecuted += job.plan.task_ops(op);
        }
        Some(WorkItem { op: OpRef { job: job_id, op }, n: job.plan.n(), operands })
    }
}

/// Quarantine after the `failures`-th consecutive failure: doubles from the base, capped.
fn quarantine_ms(failures: u32) -> u64 {
    QUARANTINE_MS_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(QUARANTINE_MS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::Task;
    use crate::node_core::worker::{self, WorkerStats};

    const TIMING: Timing = Timing { worker_delay_ms: 0, batch_timeout_ms: 1_000 };

    /// Answers every dispatch by computing its tasks, as a worker would.
    fn answer(items: &[WorkItem]) -> Vec<(OpRef, Big)> {
        let stats = WorkerStats::default();
        items
            .iter()
            .map(|i| {
                let task = Task { n: i.n, op: i.op.op, operands: i.operands.clone() };
                worker::check(&task, u64::MAX).expect("the scheduler sends well-formed tasks");
                (i.op.clone(), worker::compute(task, &stats))
            })
            .collect()
    }

    fn task_ops(items: &[WorkItem]) -> u64 {
        items.iter().map(|i| Plan::new(i.n).task_ops(i.op.op)).sum()
    }

    /// Runs jobs to the end with the given workers answering at once; returns the results.
    fn run_to_end(s: &mut Scheduler, mut actions: Vec<Action>) -> BTreeMap<JobId, Big> {
        let mut results = BTreeMap::new();
        let mut now_ms = 0;
        actions.extend(s.tick(now_ms));
        while !actions.is_empty() {
            now_ms += 1;
            let mut next = Vec::new();
            for action in actions {
                match action {
                    Action::Dispatch { batch, items, .. } => {
                        assert!(items.len() <= BATCH_TASKS_MAX);
                        next.extend(s.batch_done(batch, answer(&items), now_ms));
                    }
                    Action::JobFinished { job, result, .. } => {
                        results.insert(job, result);
                    }
                }
            }
            actions = next;
        }
        results
    }

    #[test]
    fn computes_factorials_task_by_task() {
        let mut s = Scheduler::new("1".into(), TIMING);
        for w in [2, 3, 4] {
            s.add_worker(w);
        }
        let mut actions = Vec::new();
        let mut ids = Vec::new();
        for n in [0, 1, 2, 20, 20, 10_000, 100_000] {
            let (id, a) = s.submit(n);
            ids.push((id, n));
            actions.extend(a);
        }
        let results = run_to_end(&mut s, actions);
        assert_eq!(results.len(), 7, "the same n twice is two jobs");
        for (id, n) in ids {
            assert_eq!(results[&id], Big::factorial(n), "{n}!");
        }
        assert!(s.progress().iter().all(|p| p.finished && p.ops_done == p.ops_total && p.ops_reexecuted == 0));
        assert_eq!(s.in_flight(), 0);
    }

    /// A worker's answer that leaves tasks out does not strand them.
    #[test]
    fn a_short_answer_requeues_what_it_left_out() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        let (id, _) = s.submit(40_000);
        let first = s.tick(0);
        let Action::Dispatch { batch, items, .. } = &first[0] else { panic!("{first:?}") };
        assert!(items.len() > 2);
        let mut next = s.batch_done(*batch, answer(&items[..1]), 1);
        next.extend(first.into_iter().skip(1));
        let results = run_to_end(&mut s, next);
        assert_eq!(results[&id], Big::factorial(40_000));
    }

    #[test]
    fn without_workers_nothing_is_dispatched_and_work_resumes_when_one_joins() {
        let mut s = Scheduler::new("1".into(), TIMING);
        let (id, actions) = s.submit(30);
        assert!(actions.is_empty());
        assert!(s.tick(10).is_empty());
        s.add_worker(7);
        let results = run_to_end(&mut s, Vec::new());
        assert_eq!(results[&id], Big::factorial(30));
    }

    #[test]
    fn an_overdue_batch_is_reassigned_and_its_late_answer_is_harmless() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        s.add_worker(3);
        let (id, _) = s.submit(8_194); // two leaf tasks, one root task
        let first = s.tick(0);
        assert_eq!(first.len(), 2, "one leaf task to each worker");
        let Action::Dispatch { batch: slow_batch, worker: slow, items: slow_items, .. } = first[0].clone() else {
            panic!()
        };
        let Action::Dispatch { batch: fast_batch, items: fast_items, .. } = first[1].clone() else { panic!() };
        assert!(s.batch_done(fast_batch, answer(&fast_items), 5).is_empty(), "the root waits for the slow task");
        // The slow worker misses its deadline: its task goes to the other worker.
        let retry = s.tick(1_001);
        let Action::Dispatch { batch: retry_batch, worker, items, .. } = retry[0].clone() else { panic!() };
        assert_ne!(worker, slow, "the failed worker is quarantined");
        assert_eq!(items, slow_items);
        assert_eq!(s.job_progress(&id).unwrap().ops_reexecuted, task_ops(&items), "every operation of the task");
        // The late answer arrives first and is still useful: the root becomes ready.
        let after_late = s.batch_done(slow_batch, answer(&slow_items), 1_002);
        assert!(matches!(after_late.as_slice(), [Action::Dispatch { .. }]));
        // The retry's answer changes nothing.
        let dup = s.batch_done(retry_batch, answer(&items), 1_003);
        assert!(dup.iter().all(|a| !matches!(a, Action::JobFinished { .. })));
        let results = run_to_end(&mut s, after_late);
        assert_eq!(results[&id], Big::factorial(8_194));
    }

    #[test]
    fn a_task_that_missed_its_deadline_gets_twice_the_time_each_retry() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        s.submit(20_000);
        let mut now_ms = 0;
        let first = s.tick(now_ms);
        let [Action::Dispatch { deadline_ms, items, .. }] = first.as_slice() else { panic!("{first:?}") };
        let (ops, mut allowed_ms) = (items.iter().map(|i| i.op.clone()).collect::<Vec<_>>(), deadline_ms - now_ms);
        assert!(allowed_ms >= TIMING.batch_timeout_ms);
        for doublings in 1..=OVERDUE_DOUBLINGS_MAX + 2 {
            // The deadline passes (the only worker is quarantined), then the quarantine: the
            // tasks go out again.
            now_ms += allowed_ms;
            assert!(s.tick(now_ms).is_empty());
            now_ms += QUARANTINE_MS_MAX;
            let retry = s.tick(now_ms);
            let Some(Action::Dispatch { deadline_ms, items, .. }) = retry.first() else { panic!("{retry:?}") };
            assert_eq!(items.iter().map(|i| i.op.clone()).collect::<Vec<_>>(), ops);
            let expected = allowed_ms * if doublings <= OVERDUE_DOUBLINGS_MAX { 2 } else { 1 };
            assert_eq!(deadline_ms - now_ms, expected, "after {doublings} missed deadlines");
            allowed_ms = expected;
        }
    }

    #[test]
    fn a_leaf_task_of_a_huge_factorial_gets_time_for_the_product_it_will_make() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        s.submit(100_000_000);
        let first = s.tick(0);
        let Some(Action::Dispatch { deadline_ms, items, .. }) = first.first() else { panic!("{first:?}") };
        assert!(items.iter().all(|i| i.operands.is_empty()), "leaf tasks carry no operands");
        // Eight leaf tasks of 390,625 integers each: about 10 MiB of products.
        assert!(*deadline_ms >= TIMING.batch_timeout_ms + 9 * LEAF_MS_PER_MIB, "{deadline_ms}");
    }

    #[test]
    fn an_answered_batch_frees_its_worker_before_its_products_are_durable() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        let (id, _) = s.submit(20_000); // five leaf tasks, two above them, the root
        let first = s.tick(0);
        let [Action::Dispatch { batch, items, .. }] = first.as_slice() else { panic!("{first:?}") };
        assert_eq!(items.len(), 5);
        assert!(s.tick(1).is_empty(), "one batch holds all five leaf tasks");
        // Answered: the tasks stay in flight (not done, not re-dispatched at the deadline).
        assert!(s.batch_answered(*batch, Vec::new(), 2).is_empty(), "no products came with it");
        assert_eq!(s.job_progress(&id).unwrap().ops_in_flight, task_ops(items));
        assert!(s.tick(TIMING.batch_timeout_ms + 10).is_empty(), "no deadline on an answered batch");
        // Durable: done, and the next stage goes out.
        let next = s.batch_done(*batch, answer(items), 3);
        assert!(matches!(next.as_slice(), [Action::Dispatch { .. }]));
        let p = s.job_progress(&id).unwrap();
        assert_eq!((p.ops_done, p.ops_reexecuted), (task_ops(items), 0));
    }

    /// A task whose inputs are in hand goes out before they are durable; nothing counts as
    /// done, and the job does not finish, before its products are durable.
    #[test]
    fn the_next_stage_starts_before_the_last_is_durable() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        let (id, _) = s.submit(8_194); // two leaf tasks, one root task
        let first = s.tick(0);
        let [Action::Dispatch { batch, items, .. }] = first.as_slice() else { panic!("{first:?}") };
        let root_out = s.batch_answered(*batch, answer(items), 1);
        let [Action::Dispatch { batch: root_batch, items: root_items, .. }] = root_out.as_slice() else {
            panic!("{root_out:?}")
        };
        assert_eq!(s.job_progress(&id).unwrap().ops_done, 0, "answered is not durable");
        // The root's answer is in before the leaves are durable, and it is a late answer.
        assert!(s.batch_failed(*root_batch, 2).is_empty());
        assert!(s.batch_answered(*root_batch, answer(root_items), 3).is_empty(), "in hand, not done");
        assert!(s.batch_done(*batch, Vec::new(), 4).is_empty(), "the leaves are done, the root is not");
        let p = s.job_progress(&id).unwrap();
        assert_eq!(p.ops_done, task_ops(items));
        let finished = s.batch_done(*root_batch, Vec::new(), 5);
        assert!(matches!(&finished[..], [Action::JobFinished { result, .. }] if *result == Big::factorial(8_194)));
        let p = s.job_progress(&id).unwrap();
        assert_eq!((p.ops_done, p.ops_total, p.ops_reexecuted), (p.ops_total, Plan::new(8_194).total_ops(), 0));
    }

    #[test]
    fn a_wrong_or_foreign_answer_changes_nothing() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        let (id, _) = s.submit(10_000);
        let foreign = vec![
            (OpRef { job: "9-9".into(), op: OpId { level: 0, index: 0 } }, Big::from(1)),
            (OpRef { job: id.clone(), op: OpId { level: 9, index: 0 } }, Big::from(1)),
            (OpRef { job: id.clone(), op: OpId { level: 1, index: 0 } }, Big::from(1)),
        ];
        assert!(s.batch_done(999, foreign, 0).iter().all(|a| matches!(a, Action::Dispatch { .. })));
        assert_eq!(s.job_progress(&id).unwrap().ops_done, 0, "not a task of the plan: ignored");
    }

    #[test]
    fn quarantine_grows_with_consecutive_failures() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        s.submit(5);
        let Action::Dispatch { mut batch, .. } = s.tick(0)[0].clone() else { panic!() };
        let mut now_ms = 0;
        let mut waits_ms = Vec::new();
        for _ in 0..3 {
            assert!(s.batch_failed(batch, now_ms).is_empty(), "the only worker is quarantined");
            let failed_at_ms = now_ms;
            let next = loop {
                now_ms += 10;
                let actions = s.tick(now_ms);
                if !actions.is_empty() {
                    break actions;
                }
            };
            waits_ms.push(now_ms - failed_at_ms);
            let Action::Dispatch { batch: b, .. } = next[0].clone() else { panic!() };
            batch = b;
        }
        assert_eq!(waits_ms, vec![QUARANTINE_MS_BASE, QUARANTINE_MS_BASE * 2, QUARANTINE_MS_BASE * 4]);
    }

    #[test]
    fn a_restored_job_computes_only_what_the_checkpoint_lacks() {
        // Run 100000! partly on one scheduler, "crash", and resume from its products.
        let mut first = Scheduler::new("1".into(), TIMING);
        first.add_worker(2);
        first.add_worker(3);
        let (id, _) = first.submit(100_000);
        let mut known = BTreeMap::new();
        let mut dispatched = BTreeSet::new();
        let mut in_flight_ops = 0;
        for (round, action) in first.tick(0).into_iter().enumerate() {
            let Action::Dispatch { items, .. } = action else { panic!() };
            for (item, (_, product)) in items.iter().zip(answer(&items)) {
                dispatched.insert(item.op.op);
                if round == 0 {
                    known.insert(item.op.op, product);
                } else {
                    in_flight_ops += Plan::new(100_000).task_ops(item.op.op);
                }
            }
        }
        assert!(in_flight_ops > 0 && !known.is_empty());
        let mut second = Scheduler::new("2".into(), TIMING);
        second.add_worker(3);
        let actions = second.restore_job(id.clone(), 100_000, known.clone(), dispatched);
        assert!(actions.is_empty());
        let known_ops: u64 = known.keys().map(|&op| Plan::new(100_000).task_ops(op)).sum();
        assert_eq!(second.job_progress(&id).unwrap().ops_done, known_ops);
        let results = run_to_end(&mut second, Vec::new());
        assert_eq!(results[&id], Big::factorial(100_000));
        let p = second.job_progress(&id).unwrap();
        assert_eq!(p.ops_reexecuted, in_flight_ops, "only what was in flight is redone");
        assert_eq!(p.ops_done, p.ops_total);
        // New jobs get the new coordinator's prefix; the restored id is kept.
        assert_eq!(second.submit(5).0, "2-1");
    }

    #[test]
    fn a_restored_inner_product_covers_its_subtree_and_a_known_root_finishes_the_job() {
        let n = 20_000;
        let plan = Plan::new(n);
        let inner = OpId { level: 6, index: 0 };
        let inner_value = Big::product(&(2..=16_385).map(Big::from).collect::<Vec<_>>());
        let mut s = Scheduler::new("5".into(), TIMING);
        s.add_worker(1);
        let not_a_task = OpId { level: 4, index: 0 };
        s.restore_job(
            "4-1".into(),
            n,
            BTreeMap::from([(inner, inner_value), (not_a_task, Big::from(7))]),
            BTreeSet::new(),
        );
        assert_eq!(s.job_progress("4-1").unwrap().ops_done, plan.subtree_ops(inner));
        let results = run_to_end(&mut s, Vec::new());
        assert_eq!(results["4-1"], Big::factorial(n));
        let root = plan.root().unwrap();
        let actions = s.restore_job("4-2".into(), n, BTreeMap::from([(root, Big::factorial(n))]), BTreeSet::new());
        assert!(matches!(&actions[..], [Action::JobFinished { result, .. }] if *result == Big::factorial(n)));
    }

    #[test]
    fn a_lost_worker_has_its_batches_reassigned_at_once() {
        let mut s = Scheduler::new("1".into(), TIMING);
        s.add_worker(2);
        s.add_worker(3);
        let (id, _) = s.submit(8_194);
        let first = s.tick(0);
        let Action::Dispatch { worker: lost, items: lost_items, .. } = first[0].clone() else { panic!() };
        let again = s.set_reachable(lost, false, 10);
        let [Action::Dispatch { worker, .. }] = again.as_slice() else { panic!("{again:?}") };
        assert_ne!(*worker, lost);
        assert_eq!(s.job_progress(&id).unwrap().ops_reexecuted, task_ops(&lost_items));
        // Unreachable, it gets nothing, even after its quarantine; reachable again, it does.
        s.submit(100_000);
        let later = s.tick(QUARANTINE_MS_MAX + 10);
        assert!(later.iter().all(|a| !matches!(a, Action::Dispatch { worker, .. } if *worker == lost)));
        let back = s.set_reachable(lost, true, QUARANTINE_MS_MAX + 20);
        assert!(back.iter().any(|a| matches!(a, Action::Dispatch { worker, .. } if *worker == lost)));
    }
}
