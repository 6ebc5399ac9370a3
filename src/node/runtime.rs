//! The one task that owns a node's state. It reads the clock, feeds events to the election
//! and (while this node leads) to the coordinator's scheduler, and carries out their actions.
//! Stale epochs are refused here, in one place, before any state machine sees the request.

use super::compute;
use super::links::Links;
use super::replication::{find_root, gather, replicate, verify};
use super::{validate, worker, Event, Handle, Routed, WorkRefused};
use crate::api::{self, JobInfo, NodeStatus};
use crate::bignum::{abbreviate, Big};
use crate::checkpoint::{Checkpoint, Fact};
use crate::coordinator::{fingerprint, Action, JobId, OpRef, Plan, Scheduler, Timing, WorkItem};
use crate::error::Result;
use crate::store::{Durable, Store, Writer};
use async_std::channel::{Receiver, Sender};
use facto_elections::{Actions, AnyElection, AnyMsg, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The epoch of the coordinator state (0 when there is none; callers check first).
fn c_epoch(c: Option<&Coordinator>) -> Epoch {
    c.map_or(0, |c| c.epoch)
}

/// What this node does, as the election left it.
enum Role {
    /// Following a coordinator, or waiting for an election to name one; `last_contact` is
    /// when the coordinator was last heard from.
    Following { last_contact: Option<Instant> },
    /// Leading at `epoch`, gathering the peers' checkpoints before resuming the jobs. Client
    /// requests that arrive meanwhile are `parked` and answered once it coordinates (or
    /// routed elsewhere if it stops leading first); the HTTP edge bounds their wait.
    TakingOver { epoch: Epoch, parked: Vec<Event> },
    /// Leading, with the coordinator's state.
    Coordinating(Box<Coordinator>),
}

impl Role {
    fn coordinator(&self) -> Option<&Coordinator> {
        match self {
            Role::Coordinating(c) => Some(c),
            _ => None,
        }
    }

    fn coordinator_mut(&mut self) -> Option<&mut Coordinator> {
        match self {
            Role::Coordinating(c) => Some(c),
            _ => None,
        }
    }

    fn taking_over(&self) -> Option<Epoch> {
        match self {
            Role::TakingOver { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

/// An event that takes this long delays every heartbeat behind it and is logged.
const SLOW_EVENT_MS: u128 = 20;
/// Decimal digits of finished jobs kept in memory (10,000,000! has 65 million): beyond this
/// the oldest are dropped, and converted again from the root product if a client asks.
const RESULT_BYTES_MAX: usize = 128 << 20;
/// Beyond the workers' delay, how long a batch may take before it is reassigned.
const BATCH_TIMEOUT_MS: u64 = 5_000;

/// The coordinator's state; exists only while this node leads.
struct Coordinator {
    epoch: Epoch,
    scheduler: Scheduler,
    /// Decimal results of finished jobs (converted off the runtime task), the oldest dropped
    /// beyond [`RESULT_BYTES_MAX`] (converted again from the root product when asked for).
    results: BTreeMap<JobId, Arc<str>>,
    results_oldest_first: std::collections::VecDeque<JobId>,
    results_bytes: usize,
    /// Jobs whose decimal conversion is under way.
    converting: std::collections::BTreeSet<JobId>,
    /// When this coordinator received each job it accepted (its clock), and how long the
    /// job took to its root product from there (`facto bench` reports it).
    accepted_ms: BTreeMap<JobId, u64>,
    product_ms: BTreeMap<JobId, u64>,
    /// Clients waiting for a job's result (`GET /jobs/<id>?wait_ms=N`).
    waiters: BTreeMap<JobId, Vec<Sender<Routed<Vec<JobInfo>>>>>,
}

impl Coordinator {
    fn new(epoch: Epoch, scheduler: Scheduler) -> Coordinator {
        Coordinator {
            epoch,
            scheduler,
            results: BTreeMap::new(),
            results_oldest_first: Default::default(),
            results_bytes: 0,
            converting: Default::default(),
            accepted_ms: BTreeMap::new(),
            product_ms: BTreeMap::new(),
            waiters: BTreeMap::new(),
        }
    }

    /// Keeps a job's digits, dropping the oldest others' beyond `max_bytes`.
    fn keep_result(&mut self, job: JobId, decimal: Arc<str>, max_bytes: usize) {
        self.converting.remove(&job);
        self.results_bytes += decimal.len();
        if let Some(old) = self.results.insert(job.clone(), decimal) {
            self.results_bytes -= old.len();
        } else {
            self.results_oldest_first.push_back(job);
        }
        while self.results_bytes > max_bytes && self.results_oldest_first.len() > 1 {
            let Some(oldest) = self.results_oldest_first.pop_front() else { break };
            if let Some(dropped) = self.results.remove(&oldest) {
                self.results_bytes -= dropped.len();
            }
        }
    }

    /// Jobs as clients see them: every job, or the one named `id`.
    fn jobs(&self, id: Option<&str>) -> Vec<JobInfo> {
        self.scheduler
            .progress()
            .iter()
            .filter(|p| id.is_none_or(|id| id == p.id))
            .map(|p| JobInfo {
                product_ms: self.product_ms.get(&p.id).copied(),
                ..JobInfo::new(p, self.results.get(&p.id).cloned())
            })
            .collect()
    }
}

pub(crate) struct Runtime {
    handle: Handle,
    writer: Writer,
    election: AnyElection,
    links: Links,
    /// Following, taking over or coordinating: one value, so the three cannot disagree.
    role: Role,
    /// Every checkpoint fact this node holds (also on disk).
    checkpoint: Checkpoint,
    /// How many facts this node ever applied (Raft-lite voters compare it; `/status` shows it).
    checkpoint_version: u64,
    /// Peers the election links currently cannot reach (a new coordinator gives them no work).
    unreachable: std::collections::BTreeSet<NodeId>,
    /// Dispatch facts waiting to go to the peers with the next tick (they only make the
    /// re-execution count exact, so they need not hold anything up).
    unreplicated: Vec<Fact>,
    started: Instant,
    /// The same moment on the wall clock, for `/status` (tells a restart from a long run).
    started_unix_ms: u64,
    tick_pending: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(handle: Handle, store: Store, hard_state: HardState, loaded: (Checkpoint, u64)) -> Result<Runtime> {
        let cfg = &handle.config;
        let mut election_cfg = Config::new(cfg.id, cfg.members.ids());
        election_cfg.seed = u64::from(cfg.id) ^ 0x9e37_79b9_7f4a_7c15;
        let (checkpoint, checkpoint_version) = loaded;
        let mut election = cfg.algorithm.build(election_cfg, hard_state)?;
        election.set_checkpoint_version(checkpoint_version);
        let links = Links::start(&handle);
        let writer = store.start_writer();
        // The HTTP edge bounds peers' epochs by this from the first message on.
        handle.known_epoch.store(election.hard_state().epoch, Ordering::Relaxed);
        Ok(Runtime {
            handle,
            writer,
            election,
            links,
            role: Role::Following { last_contact: None },
            checkpoint,
            checkpoint_version,
            unreplicated: Vec::new(),
            unreachable: Default::default(),
            started: Instant::now(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            tick_pending: Arc::new(AtomicBool::new(false)),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn me(&self) -> NodeId {
        self.handle.config.id
    }

    /// Handles events until the process ends; returns only on a fatal storage error.
    pub async fn run(mut self, inbox: Receiver<Event>) -> Result<()> {
        self.start_ticker();
        while let Ok(event) = inbox.recv().await {
            let started = Instant::now();
            let kind = event.kind();
            self.handle_event(event)?;
            let took_ms = started.elapsed().as_millis();
            if took_ms >= SLOW_EVENT_MS {
                // Everything waits behind one event, heartbeats included: say so.
                log::warn!("handling {kind} took {took_ms} ms");
            }
        }
        Ok(())
    }

    /// Sends a tick every `tick_ms`, but never queues a second one behind an unhandled one:
    /// a busy runtime sees time pass in fewer, not piled-up, ticks.
    fn start_ticker(&self) {
        let handle = self.handle.clone();
        let pending = self.tick_pending.clone();
        let tick = Duration::from_millis(handle.config.tick_ms);
        async_std::task::spawn(async move {
            let mut last_roll = Instant::now();
            loop {
                async_std::task::sleep(tick).await;
                if !pending.swap(true, Ordering::AcqRel) {
                    handle.send(Event::Tick);
                }
                // The slow timer that gives an idle node its chances to crash too.
                if last_roll.elapsed() >= Duration::from_secs(1) {
                    last_roll = Instant::now();
                    handle.faults.maybe_crash("idle");
                }
            }
        });
    }

    fn handle_event(&mut self, event: Event) -> Result<()> {
        if let (Role::TakingOver { parked, .. }, Event::Submit { .. } | Event::Jobs { .. }) = (&mut self.role, &event) {
            parked.push(event);
            return Ok(());
        }
        match event {
            Event::Tick => self.on_tick()?,
            Event::Election { from, msg } => {
                if self.election.leadership().leader(self.me()) == Some(from) {
                    if let Role::Following { last_contact } = &mut self.role {
                        *last_contact = Some(Instant::now());
                    }
                }
                self.step_election(Input::Message { from, msg })?;
            }
            Event::PeerReachable { peer, reachable } => self.on_peer_reachable(peer, reachable)?,
            Event::Work { from, epoch, tasks, reply } => match self.admit(from, epoch) {
                Ok(()) => self.compute(tasks, reply),
                Err(why) => {
                    let _ = reply.try_send(Err(WorkRefused::Fenced(why)));
                }
            },
            Event::ApplyFacts { from, epoch, facts, reply } => self.on_apply_facts(from, epoch, facts, reply),
            Event::CheckpointQuery { skip, reply } => {
                let _ = reply.try_send(self.checkpoint.facts_except(&skip));
            }
            Event::Gathered { epoch, facts, wrong } => {
                for (job, op) in wrong {
                    self.checkpoint.forget(&job, op);
                }
                self.resume(epoch, facts)?
            }
            Event::Pulled { epoch, facts } => {
                if self.role.coordinator().is_some_and(|c| c.epoch == epoch) {
                    let (new, _) = self.record(facts);
                    self.learn(new);
                }
            }
            Event::Submit { n, request, reply } => match self.route() {
                Routed::Here(()) => self.submit(n, request, reply)?,
                Routed::Leader(a) => {
                    let _ = reply.try_send(Routed::Leader(a));
                }
                _ => {
                    let _ = reply.try_send(Routed::NoLeader);
                }
            },
            Event::Jobs { id, wait, reply } => self.on_jobs_query(id, wait, reply),
            Event::Status { reply } => {
                let _ = reply.try_send(self.status());
            }
            Event::BatchAnswered { batch, outcome } => self.on_batch_answered(batch, outcome)?,
            Event::BatchDurable { batch } => {
                log::debug!("batch {batch}: products durable");
                self.batch_durable(batch, Vec::new())?
            }
            Event::NoDecimal { job } => self.on_no_decimal(job)?,
            Event::Decimal { job, n, decimal } => self.on_decimal(job, n, decimal),
        }
        Ok(())
    }

    /// A tick: the election's clock, the scheduler's deadlines, and dispatch records sent on.
    fn on_tick(&mut self) -> Result<()> {
        self.tick_pending.store(false, Ordering::Release);
        self.step_election(Input::Tick)?;
        let now_ms = self.now_ms();
        if let Some(c) = self.role.coordinator_mut() {
            let actions = c.scheduler.tick(now_ms);
            self.carry_out(actions)?;
            if !self.unreplicated.is_empty() {
                let pending = std::mem::take(&mut self.unreplicated);
                let facts = self.with_jobs(pending);
                let (handle, epoch) = (self.handle.clone(), c_epoch(self.role.coordinator()));
                async_std::task::spawn(async move { replicate(&handle, epoch, facts).await });
            }
        }
        Ok(())
    }

    fn on_peer_reachable(&mut self, peer: NodeId, reachable: bool) -> Result<()> {
        let input = if reachable { Input::PeerUp(peer) } else { Input::PeerDown(peer) };
        self.step_election(input)?;
        if reachable {
            self.unreachable.remove(&peer);
            self.pull_checkpoint(peer);
        } else {
            self.unreachable.insert(peer);
        }
        let now_ms = self.now_ms();
        if let Some(c) = self.role.coordinator_mut() {
            let actions = c.scheduler.set_reachable(peer, reachable, now_ms);
            self.carry_out(actions)?;
        }
        Ok(())
    }

    /// A coordinator's checkpoint write: acknowledged once on disk, without holding up this
    /// loop meanwhile.
    fn on_apply_facts(
        &mut self,
        from: NodeId,
        epoch: Epoch,
        facts: Vec<Fact>,
        reply: Sender<std::result::Result<(), String>>,
    ) {
        if let Err(why) = self.admit_facts(from, epoch, &facts) {
            let _ = reply.try_send(Err(why));
            return;
        }
        let (new, durable) = self.record(facts);
        self.learn(new);
        async_std::task::spawn(async move {
            if durable.wait().await {
                let _ = reply.send(Ok(())).await;
            }
        });
    }

    /// `GET /jobs[/<id>]`; with `wait`, held until the job's result is known (the handler
    /// bounds the wait).
    fn on_jobs_query(&mut self, id: Option<String>, wait: bool, reply: Sender<Routed<Vec<JobInfo>>>) {
        let routed = match self.route() {
            Routed::Here(()) => {
                if let Some(id) = &id {
                    self.convert_again_if_dropped(id);
                }
                let jobs = self.jobs(id.as_deref());
                match (self.role.coordinator_mut(), id) {
                    (Some(c), Some(id)) if wait && jobs.len() == 1 && jobs[0].result.is_none() => {
                        let waiting = c.waiters.entry(id).or_default();
                        waiting.retain(|w| !w.is_closed());
                        waiting.push(reply);
                        return;
                    }
                    _ => Routed::Here(jobs),
                }
            }
            Routed::Leader(a) => Routed::Leader(a),
            _ => Routed::NoLeader,
        };
        let _ = reply.try_send(routed);
    }

    /// A worker's answer (already checked), or why there is none.
    fn on_batch_answered(&mut self, batch: u64, outcome: std::result::Result<Vec<(OpRef, Big)>, String>) -> Result<()> {
        if self.role.coordinator().is_none() {
            return Ok(());
        }
        match outcome {
            Ok(products) if self.handle.config.checkpoint => {
                self.make_durable(batch, &products)?;
                let now_ms = self.now_ms();
                if let Some(c) = self.role.coordinator_mut() {
                    let actions = c.scheduler.batch_answered(batch, products, now_ms);
                    self.carry_out(actions)?;
                }
            }
            Ok(products) => self.batch_durable(batch, products)?,
            Err(why) => {
                log::warn!("batch {batch} failed: {why}");
                let now_ms = self.now_ms();
                if let Some(c) = self.role.coordinator_mut() {
                    let actions = c.scheduler.batch_failed(batch, now_ms);
                    self.carry_out(actions)?;
                }
            }
        }
        Ok(())
    }

    /// No member that answered holds a right copy of the result (a forged or damaged record,
    /// or both holders gone): computed again, never answered wrong.
    fn on_no_decimal(&mut self, job: JobId) -> Result<()> {
        if let Some(c) = self.role.coordinator_mut() {
            c.converting.remove(&job);
            log::warn!("job {job}: computing its result again");
            self.checkpoint.restart(&job);
            let actions = c.scheduler.restart_finished_job(&job);
            self.carry_out(actions)?;
        }
        Ok(())
    }

    /// A result's digits: kept (within the cap) and handed to the clients waiting for them.
    fn on_decimal(&mut self, job: JobId, n: u64, decimal: Arc<str>) {
        log::info!("{n}! = {}", abbreviate(&decimal));
        if let Some(c) = self.role.coordinator_mut() {
            // Without checkpoints the digits are the only copy of the result: kept.
            let max_bytes = if self.handle.config.checkpoint { RESULT_BYTES_MAX } else { usize::MAX };
            c.keep_result(job.clone(), decimal, max_bytes);
            let answer = c.jobs(Some(&job));
            for waiter in c.waiters.remove(&job).unwrap_or_default() {
                let _ = waiter.try_send(Routed::Here(answer.clone()));
            }
        }
    }

    fn step_election(&mut self, input: Input<AnyMsg>) -> Result<()> {
        let actions = self.election.step(input);
        self.handle.known_epoch.store(self.known_epoch(), Ordering::Relaxed);
        self.apply_election(actions)
    }

    /// Persist, then send, then act on leadership: a vote or a higher epoch must be on disk
    /// before any message that depends on it leaves.
    fn apply_election(&mut self, actions: Actions<AnyMsg>) -> Result<()> {
        match actions.persist {
            // The messages wait for the disk on their own task; this loop goes on meanwhile.
            Some(hard_state) if !actions.messages.is_empty() => {
                let durable = self.writer.write_hard_state(hard_state);
                let (links, messages) = (self.links.clone(), actions.messages);
                async_std::task::spawn(async move {
                    if durable.wait().await {
                        for (to, msg) in messages {
                            links.send(to, msg);
                        }
                    }
                });
            }
            persist => {
                if let Some(hard_state) = persist {
                    self.writer.write_hard_state(hard_state);
                }
                for (to, msg) in actions.messages {
                    self.links.send(to, msg);
                }
            }
        }
        if let Some(leadership) = actions.leadership {
            self.on_leadership(leadership);
        }
        Ok(())
    }

    fn on_leadership(&mut self, leadership: Leadership) {
        let me = self.me();
        match leadership {
            Leadership::Leading { epoch } => {
                log::info!("node {me} is the coordinator at epoch {epoch}; gathering checkpoints");
                // Requests parked during an earlier takeover keep waiting for this one.
                let parked = self.step_down(Role::TakingOver { epoch, parked: Vec::new() });
                self.role = Role::TakingOver { epoch, parked };
                let handle = self.handle.clone();
                let checkpoint = self.handle.config.checkpoint;
                let finished = self.checkpoint.finished_jobs();
                let own = if checkpoint { self.checkpoint.facts_except(&finished) } else { Vec::new() };
                async_std::task::spawn(async move {
                    let facts = if checkpoint { gather(&handle, None, finished).await } else { Vec::new() };
                    let (facts, wrong) = verify(&handle, facts, own).await;
                    handle.send(Event::Gathered { epoch, facts, wrong });
                });
            }
            Leadership::Following { leader, epoch } => {
                log::info!("node {me} follows coordinator {leader} at epoch {epoch}");
                let parked = self.step_down(Role::Following { last_contact: Some(Instant::now()) });
                self.replay(parked);
            }
            Leadership::Unknown => {
                log::info!("node {me}: no coordinator known, election under way");
                let last_contact = match &self.role {
                    Role::Following { last_contact } => *last_contact,
                    _ => None,
                };
                let parked = self.step_down(Role::Following { last_contact });
                self.replay(parked);
            }
        }
    }

    /// Takes over at `epoch` once the peers' checkpoints are in: merges them into this
    /// node's, and resumes every job from what is known, so finished operations are not
    /// computed again.
    fn resume(&mut self, epoch: Epoch, facts: Vec<Fact>) -> Result<()> {
        if self.role.taking_over() != Some(epoch) || self.election.leadership() != (Leadership::Leading { epoch }) {
            return Ok(());
        }
        self.record(facts);
        let me = self.me();
        let timing = Timing { worker_delay_ms: self.handle.config.delay_ms, batch_timeout_ms: BATCH_TIMEOUT_MS };
        let mut scheduler = Scheduler::new(epoch.to_string(), timing);
        let mut actions = Vec::new();
        let mut unfinished = 0;
        for id in self.checkpoint.jobs_in_order() {
            let job = &self.checkpoint.jobs[&id];
            if job.n > self.handle.config.max_n {
                // Written by a forged or buggy peer, or before --max-n was lowered: planning
                // it could take the coordinator's whole memory and time.
                log::error!("job {id} asks for {}!, beyond --max-n {}: not resumed", job.n, self.handle.config.max_n);
                continue;
            }
            if job.finished {
                scheduler.restore_finished_job(id, job.n);
                continue;
            }
            let restored = scheduler.restore_job(id.clone(), job.n, job.products.clone(), job.dispatched.clone());
            if restored.is_empty() {
                unfinished += 1;
            }
            // A job found finished is converted to decimal when a client asks for it, not
            // now: a coordinator that took over from a long-lived one would otherwise convert
            // every result it ever computed.
            actions.extend(restored.into_iter().filter(|a| !matches!(a, Action::JobFinished { .. })));
        }
        let now_ms = self.now_ms();
        for id in self.handle.config.members.ids().into_iter().filter(|&id| id != me) {
            scheduler.add_worker(id);
            if self.unreachable.contains(&id) {
                actions.extend(scheduler.set_reachable(id, false, now_ms));
            }
        }
        log::info!(
            "node {me} coordinates at epoch {epoch}: {} jobs in the checkpoint, {unfinished} to resume",
            self.checkpoint.jobs.len()
        );
        let parked = self.step_down(Role::Coordinating(Box::new(Coordinator::new(epoch, scheduler))));
        self.carry_out(actions)?;
        self.replay(parked);
        Ok(())
    }

    /// Hands the client requests held during a takeover to the node as it now stands.
    fn replay(&mut self, parked: Vec<Event>) {
        for event in parked {
            // A client that gave up (the HTTP edge answered 503) must not get a job it
            // never heard of: it will retry.
            if let Event::Submit { reply, .. } = &event {
                if reply.is_closed() {
                    continue;
                }
            }
            if let Err(e) = self.handle_event(event) {
                log::error!("{e}");
            }
        }
    }

    /// A peer that comes back may hold facts the coordinator missed while gathering (it
    /// was down then, and may hold the only other copy of a job): pull them.
    fn pull_checkpoint(&self, peer: NodeId) {
        let Some(c) = self.role.coordinator() else { return };
        if !self.handle.config.checkpoint {
            return;
        }
        let (handle, epoch, finished) = (self.handle.clone(), c.epoch, self.checkpoint.finished_jobs());
        async_std::task::spawn(async move {
            let (facts, _) = verify(&handle, gather(&handle, Some(peer), finished).await, Vec::new()).await;
            if !facts.is_empty() {
                handle.send(Event::Pulled { epoch, facts });
            }
        });
    }

    /// A coordinator told of facts it did not know (a peer's checkpoint or write): jobs it
    /// had not heard of are resumed, products are used like late answers.
    fn learn(&mut self, new: Vec<Fact>) {
        let now_ms = self.now_ms();
        let Some(c) = self.role.coordinator_mut() else { return };
        let mut actions = Vec::new();
        let mut products = Vec::new();
        for fact in new {
            match fact {
                Fact::Job { id, n, .. } if n > self.handle.config.max_n => {
                    log::error!("job {id} asks for {n}!, beyond --max-n: not resumed");
                }
                Fact::Job { id, .. } => {
                    if let Some(job) = self.checkpoint.jobs.get(&id).filter(|j| j.finished) {
                        c.scheduler.restore_finished_job(id, job.n);
                    } else if let Some(job) = self.checkpoint.jobs.get(&id) {
                        log::info!("job {id} learned from a peer's checkpoint; resuming it");
                        actions.extend(c.scheduler.restore_job(
                            id.clone(),
                            job.n,
                            job.products.clone(),
                            job.dispatched.clone(),
                        ));
                    }
                }
                Fact::Product { job, op, product } => products.push((OpRef { job, op }, product)),
                // A job under way here that a peer says finished: its root is on that peer's
                // disk, not in hand; computing it again costs work but loses nothing.
                Fact::Dispatched { .. } | Fact::Finished { .. } => {}
            }
        }
        actions.extend(c.scheduler.learn(products, now_ms));
        if let Err(e) = self.carry_out(actions) {
            log::error!("{e}");
        }
    }

    /// Applies facts to this node's checkpoint and hands the new ones to the fact writer.
    /// Returns the facts that were new and what resolves once they are on disk.
    fn record(&mut self, facts: Vec<Fact>) -> (Vec<Fact>, Durable) {
        let mut new = Vec::new();
        let mut finished = Vec::new();
        for fact in facts {
            let root = match &fact {
                Fact::Product { job, op, .. } => self
                    .checkpoint
                    .jobs
                    .get(job)
                    .and_then(|j| Plan::new(j.n).root())
                    .filter(|root| root == op)
                    .map(|_| job.clone()),
                Fact::Finished { job } if self.checkpoint.jobs.contains_key(job) => Some(job.clone()),
                _ => None,
            };
            if self.checkpoint.apply(fact.clone()) {
                match root {
                    Some(job) => finished.push((job, fact)),
                    None => new.push(fact),
                }
            }
        }
        self.checkpoint_version += (new.len() + finished.len()) as u64;
        self.election.set_checkpoint_version(self.checkpoint_version);
        let mut written = new.clone();
        written.extend(finished.iter().map(|(_, f)| f.clone()));
        let durable = self.writer.write(new, finished, self.checkpoint_version);
        (written, durable)
    }

    /// Puts the `Job` fact of every job the facts touch in front of them, so a replica that
    /// has not seen the job yet (replicas change with the coordinator) can place them.
    fn with_jobs(&self, facts: Vec<Fact>) -> Vec<Fact> {
        let jobs: std::collections::BTreeSet<&str> = facts
            .iter()
            .filter_map(|f| match f {
                Fact::Dispatched { job, .. } | Fact::Product { job, .. } | Fact::Finished { job } => Some(job.as_str()),
                Fact::Job { .. } => None,
            })
            .collect();
        let mut out: Vec<Fact> =
            jobs.into_iter().filter_map(|id| self.checkpoint.jobs.get(id).map(|j| j.job_fact(id))).collect();
        out.extend(facts);
        out
    }

    /// Records a batch's products on this node's disk and on a peer's, in parallel, then
    /// reports them durable: only then do they count as done, so what the coordinator treats
    /// as finished survives its crash.
    fn make_durable(&mut self, batch: u64, products: &[(OpRef, Big)]) -> Result<()> {
        // The coordinator's unit of work is a batch answer it records (a worker's is one
        // task): one chance to crash here.
        self.handle.faults.maybe_crash("recording a batch");
        let facts: Vec<Fact> = products
            .iter()
            .map(|(op, p)| Fact::Product { job: op.job.clone(), op: op.op, product: p.clone() })
            .collect();
        let (new, durable) = self.record(facts);
        let new = if new.is_empty() { new } else { self.with_jobs(new) };
        let (handle, epoch) = (self.handle.clone(), c_epoch(self.role.coordinator()));
        async_std::task::spawn(async move {
            let replicated = async { new.is_empty() || replicate(&handle, epoch, new).await };
            let (on_disk, replicated) = futures::join!(durable.wait(), replicated);
            if !on_disk {
                return;
            }
            if !replicated {
                log::warn!("batch {batch}: no peer took the checkpoint; it is on this node only");
            }
            handle.send(Event::BatchDurable { batch });
        });
        Ok(())
    }

    fn batch_durable(&mut self, batch: u64, products: Vec<(OpRef, Big)>) -> Result<()> {
        let now_ms = self.now_ms();
        if let Some(c) = self.role.coordinator_mut() {
            let actions = c.scheduler.batch_done(batch, products, now_ms);
            self.carry_out(actions)?;
        }
        Ok(())
    }

    /// Leaves the current role for `next`; returns the client requests parked during a
    /// takeover, for the caller to answer as the node now stands.
    fn step_down(&mut self, next: Role) -> Vec<Event> {
        self.handle.taking_over.store(next.taking_over().is_some(), Ordering::Relaxed);
        match std::mem::replace(&mut self.role, next) {
            Role::Coordinating(c) => {
                let unfinished = c.scheduler.progress().iter().filter(|p| !p.finished).count();
                log::warn!("node {} stops coordinating epoch {} with {unfinished} unfinished jobs", self.me(), c.epoch);
                Vec::new()
            }
            Role::TakingOver { parked, .. } => parked,
            Role::Following { .. } => Vec::new(),
        }
    }

    /// Computes a coordinator's tasks as a worker, on a compute thread, and answers with the
    /// products' frame after `--delay`. Each task is one chance to crash (`--fail-prob`).
    fn compute(&self, tasks: Vec<(OpRef, worker::Task)>, reply: Sender<std::result::Result<Vec<u8>, WorkRefused>>) {
        for _ in &tasks {
            self.handle.faults.maybe_crash("a task");
        }
        let handle = self.handle.clone();
        async_std::task::spawn(async move {
            let (stats, faults) = (handle.stats.clone(), handle.faults.clone());
            let computed = compute::low_priority(move || {
                let products: Vec<_> = tasks
                    .into_iter()
                    .map(|(op, task)| (op, faults.maybe_corrupt(worker::compute(task, &stats))))
                    .collect();
                api::encode_products(&products)
            })
            .await
            .and_then(|r| r);
            let stall_ms = handle.faults.maybe_stall_ms().unwrap_or(0);
            async_std::task::sleep(Duration::from_millis(handle.config.delay_ms + stall_ms)).await;
            let _ = reply.send(computed.map_err(WorkRefused::Failed)).await;
        });
    }

    /// The highest epoch this node knows.
    fn known_epoch(&self) -> Epoch {
        self.election.hard_state().epoch.max(self.election.leadership().epoch().unwrap_or(0))
    }

    /// Work from a coordinator at `epoch`: not from a deposed one (fencing: a deposed
    /// coordinator can neither hand out work nor write checkpoints), nor from beyond reason.
    fn admit(&self, from: NodeId, epoch: Epoch) -> std::result::Result<(), String> {
        let known = self.known_epoch();
        if epoch < known {
            return Err(format!("stale epoch {epoch} from node {from}: this node knows epoch {known}"));
        }
        validate::epoch_ahead(known, epoch)
    }

    /// A checkpoint write: from the leader of its epoch, with facts that fit their plans.
    fn admit_facts(&self, from: NodeId, epoch: Epoch, facts: &[Fact]) -> std::result::Result<(), String> {
        validate::checkpoint_writer(self.election.leadership(), self.known_epoch(), from, epoch)?;
        validate::replicated_facts(facts, self.handle.config.max_n, |job| self.checkpoint.jobs.get(job).map(|j| j.n))
    }

    fn route(&self) -> Routed<()> {
        match self.election.leadership() {
            Leadership::Leading { .. } if self.role.coordinator().is_some() => Routed::Here(()),
            Leadership::Following { leader, .. } => match self.handle.config.members.addr(leader) {
                Some(addr) => Routed::Leader(addr.to_string()),
                None => Routed::NoLeader,
            },
            _ => Routed::NoLeader,
        }
    }

    /// Accepts a job; the client hears 202 only once the job is on this node's disk and on
    /// at least one peer's, so it survives the crash of any single node.
    fn submit(&mut self, n: u64, request: Option<String>, reply: Sender<Routed<JobInfo>>) -> Result<()> {
        let now_ms = self.now_ms();
        if let Some(job) = self.resubmitted(request.as_deref()) {
            if job.n != n {
                let why = format!("request key already names job {} ({}!), not {n}!", job.id, job.n);
                let _ = reply.try_send(Routed::Refused(why));
                return Ok(());
            }
            // A retry of a submission this cluster already took (its answer was lost, or it
            // was not acknowledged): the same job, acknowledged once it is durable.
            log::info!("job {}: {n}! submitted again by its client", job.id);
            let facts = vec![self.checkpoint.jobs[&job.id].job_fact(&job.id)];
            let durable = self.writer.write(Vec::new(), Vec::new(), self.checkpoint_version);
            self.acknowledge(job, facts, durable, reply);
            return Ok(());
        }
        if let Some(refusal) = self.admission(n) {
            let _ = reply.try_send(refusal);
            return Ok(());
        }
        let c = self.role.coordinator_mut().expect("route() checked that this node coordinates");
        let (id, mut actions) = c.scheduler.submit(n);
        c.accepted_ms.insert(id.clone(), now_ms);
        let progress = c.scheduler.job_progress(&id).expect("just submitted");
        log::info!("job {id}: {n}! accepted");
        let job = JobInfo::new(&progress, None);
        if self.handle.config.checkpoint {
            let (facts, durable) = self.record(vec![Fact::Job { id, n, request }]);
            self.acknowledge(job, facts, durable, reply);
        } else {
            let _ = reply.try_send(Routed::Here(job));
        }
        if let Some(c) = self.role.coordinator_mut() {
            actions.extend(c.scheduler.tick(now_ms));
        }
        self.carry_out(actions)
    }

    /// Whether a new job for n! may be taken: a coordinator never multiplies, so a cluster of
    /// one cannot compute; and the queue of open work is bounded (`--queue-jobs-max`,
    /// `--queue-ops-max`), beyond which clients are told to come back (429) rather than the
    /// cluster taking work it would finish only after their patience, or its memory, ran out.
    fn admission(&self, n: u64) -> Option<Routed<JobInfo>> {
        let cfg = &self.handle.config;
        let ops = Plan::new(n).total_ops();
        if cfg.members.0.len() < 2 && ops > 0 {
            return Some(Routed::Refused(
                "this cluster has one member, its coordinator, and a coordinator never multiplies: add members".into(),
            ));
        }
        let (jobs_open, ops_open) = self.role.coordinator()?.scheduler.open_work();
        if jobs_open >= cfg.queue_jobs_max || (jobs_open > 0 && ops_open.saturating_add(ops) > cfg.queue_ops_max) {
            return Some(Routed::Busy(format!(
                "the coordinator's queue is full ({jobs_open} jobs, {ops_open} operations open); retry in 1 s"
            )));
        }
        None
    }

    /// The job an earlier submission with the client's idempotency key `request` created.
    fn resubmitted(&self, request: Option<&str>) -> Option<JobInfo> {
        let c = self.role.coordinator()?;
        let id = self.checkpoint.job_for_request(request?)?;
        let progress = c.scheduler.job_progress(id)?;
        Some(JobInfo::new(&progress, c.results.get(id).cloned()))
    }

    /// Answers a submission once its `Job` fact is on this node's disk and on a peer's.
    fn acknowledge(&self, job: JobInfo, facts: Vec<Fact>, durable: Durable, reply: Sender<Routed<JobInfo>>) {
        let Some(epoch) = self.role.coordinator().map(|c| c.epoch) else { return };
        let handle = self.handle.clone();
        async_std::task::spawn(async move {
            if !durable.wait().await {
                return;
            }
            let routed = if replicate(&handle, epoch, facts).await {
                Routed::Here(job)
            } else {
                Routed::Failed(format!("job {} could not be replicated to any peer; not acknowledged", job.id))
            };
            let _ = reply.send(routed).await;
        });
    }

    fn jobs(&self, id: Option<&str>) -> Vec<JobInfo> {
        self.role.coordinator().map_or_else(Vec::new, |c| c.jobs(id))
    }

    fn status(&self) -> NodeStatus {
        let cfg = &self.handle.config;
        let leadership = self.election.leadership();
        let role = match leadership {
            Leadership::Leading { .. } => "coordinator",
            Leadership::Following { .. } => "worker",
            Leadership::Unknown => "candidate",
        };
        let jobs = match self.role.coordinator() {
            Some(c) => c
                .scheduler
                .progress()
                .iter()
                .map(|p| JobInfo::new(p, None))
                .map(|mut j| {
                    if c.results.contains_key(&j.id) {
                        j.state = "done".into();
                    }
                    j
                })
                .collect(),
            None => Vec::new(),
        };
        NodeStatus {
            id: cfg.id,
            address: cfg.members.addr(cfg.id).unwrap_or(&cfg.listen).to_string(),
            role: role.into(),
            leader: leadership.leader(cfg.id),
            epoch: leadership.epoch().unwrap_or(self.election.hard_state().epoch),
            election: cfg.algorithm.to_string(),
            operations_computed: self.handle.stats.operations_computed.load(Ordering::Relaxed),
            max_operands: self.handle.stats.max_operands.load(Ordering::Relaxed),
            last_leader_contact_ms: match leadership {
                Leadership::Leading { .. } => Some(0),
                _ => match &self.role {
                    Role::Following { last_contact } => last_contact.map(|t| t.elapsed().as_millis() as u64),
                    _ => None,
                },
            },
            uptime_ms: self.now_ms(),
            started_unix_ms: self.started_unix_ms,
            restarts: cfg.restarts,
            checkpoint_version: self.checkpoint_version,
            partitioned: self.handle.gate.partitioned(),
            peer_bytes: self.handle.client.bytes_moved(),
            refused_messages: self.handle.refusals.count(),
            taking_over: self.role.taking_over().is_some(),
            jobs,
        }
    }

    /// Converts a finished job's product to decimal off the runtime (`None`: the root
    /// product is on disk here or on a peer; it is read first); it comes back as
    /// [`Event::Decimal`], or [`Event::NoDecimal`] when no node has the root.
    fn convert_to_decimal(&mut self, job: JobId, n: u64, product: Option<Big>) {
        let Some(c) = self.role.coordinator_mut() else { return };
        if !c.converting.insert(job.clone()) {
            return;
        }
        let handle = self.handle.clone();
        async_std::task::spawn(async move {
            let product = match product {
                Some(p) => Some(p),
                None => find_root(&handle, &job, n).await,
            };
            let Some(product) = product else {
                log::error!("job {job}: no member that answered holds its result");
                return handle.send(Event::NoDecimal { job });
            };
            match compute::low_priority(move || Arc::<str>::from(Big::to_decimal(&product))).await {
                Ok(decimal) => handle.send(Event::Decimal { job, n, decimal }),
                Err(why) => log::error!("job {job}: no decimal result: {why}"),
            }
        });
    }

    /// A finished job whose digits are not in memory (dropped, or finished under another
    /// coordinator) is converted again from its root product.
    fn convert_again_if_dropped(&mut self, id: &str) {
        let Some(c) = self.role.coordinator() else { return };
        if c.results.contains_key(id) || !c.scheduler.job_progress(id).is_some_and(|p| p.finished) {
            return;
        }
        let Some(job) = self.checkpoint.jobs.get(id) else { return };
        let n = job.n;
        let product = if Plan::new(n).root().is_none() { Some(Big::one()) } else { None };
        self.convert_to_decimal(id.to_string(), n, product);
    }

    /// Carries out the scheduler's actions: batches go out on their own tasks and come back
    /// as [`Event::BatchAnswered`]; finished results are converted to decimal off this task.
    fn carry_out(&mut self, actions: Vec<Action>) -> Result<()> {
        let Some(c) = self.role.coordinator() else {
            return Ok(());
        };
        let epoch = c.epoch;
        for action in actions {
            match action {
                Action::Dispatch { batch, worker, deadline_ms, items } => {
                    if let Some(stall_ms) = self.handle.faults.maybe_stall_ms() {
                        // An injected stall of the whole coordinator: no heartbeats, no
                        // answers, until every peer has given up on it.
                        log::warn!("injected stall of the coordinator for {stall_ms} ms");
                        std::thread::sleep(Duration::from_millis(stall_ms));
                    }
                    if self.handle.config.checkpoint {
                        let facts =
                            items.iter().map(|i| Fact::Dispatched { job: i.op.job.clone(), op: i.op.op }).collect();
                        let (new, _) = self.record(facts);
                        self.unreplicated.extend(new);
                    }
                    log::debug!("batch {batch}: {} tasks to node {worker}", items.len());
                    let Some(addr) = self.handle.config.members.addr(worker).map(str::to_string) else {
                        continue;
                    };
                    let timeout = Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()).max(1));
                    let (handle, me) = (self.handle.clone(), self.me());
                    async_std::task::spawn(async move {
                        let outcome = send_batch(&handle, &addr, (me, epoch, batch), items, timeout).await;
                        handle.send(Event::BatchAnswered { batch, outcome });
                    });
                }
                Action::JobFinished { job, n, result } => {
                    let now_ms = self.now_ms();
                    if let Some(c) = self.role.coordinator_mut() {
                        if let Some(&accepted_ms) = c.accepted_ms.get(&job) {
                            c.product_ms.insert(job.clone(), now_ms.saturating_sub(accepted_ms));
                        }
                    }
                    self.convert_to_decimal(job, n, Some(result));
                }
            }
        }
        Ok(())
    }
}

/// Sends a batch of tasks as a frame, decodes the products that come back and checks them
/// against their operands ([`fingerprint::check_answer`]): a product that fails is never
/// used, the batch fails and its tasks are dispatched again. Frames are built, read and
/// checked on the blocking pool: near the top of a large factorial they are megabytes.
async fn send_batch(
    handle: &Handle,
    addr: &str,
    (from, epoch, batch): (NodeId, Epoch, u64),
    items: Vec<WorkItem>,
    timeout: Duration,
) -> std::result::Result<Vec<(OpRef, Big)>, String> {
    let (body, items) =
        async_std::task::spawn_blocking(move || (api::encode_work(from, epoch, batch, &items), items)).await;
    let answer = handle.client.post_bytes(addr, "/internal/work", body?, timeout).await.map_err(|e| e.to_string())?;
    let fp = handle.fingerprint;
    async_std::task::spawn_blocking(move || {
        let products = api::decode_products(&answer)?;
        fingerprint::check_answer(&fp, &items, &products)?;
        Ok(products)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_digits_are_dropped_beyond_the_limit_but_never_the_last() {
        let timing = Timing { worker_delay_ms: 0, batch_timeout_ms: 1 };
        let mut c = Coordinator::new(1, Scheduler::new("1".into(), timing));
        for (job, digits) in [("1-1", "1111"), ("1-2", "22"), ("1-3", "333")] {
            c.keep_result(job.into(), Arc::from(digits), 6);
        }
        assert_eq!(c.results.keys().collect::<Vec<_>>(), ["1-2", "1-3"]);
        assert_eq!(c.results_bytes, 5);
        c.keep_result("1-4".into(), Arc::from("4444444444"), 6);
        assert_eq!(c.results.keys().collect::<Vec<_>>(), ["1-4"], "the newest stays, whatever its size");
    }
}
