//! The one task that owns a node's state. It reads the clock, feeds events to the election
//! and (while this node leads) to the coordinator's scheduler, and carries out their actions.
//! Stale epochs are refused here, in one place, before any state machine sees the request.

use super::links::Links;
use super::{Event, Handle, Routed};
use crate::api::{JobInfo, NodeStatus, WireOp, WorkRequest, WorkRequestItem, WorkResponse};
use crate::bignum::{abbreviate, Big};
use crate::coordinator::{Action, JobId, OpRef, Scheduler, Timing};
use crate::error::Result;
use crate::store::Store;
use async_std::channel::Receiver;
use facto_elections::{
    Actions, AnyElection, AnyMsg, Config, Election, Epoch, Input, Leadership, NodeId,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Beyond the workers' delay, how long a batch may take before it is reassigned.
const BATCH_TIMEOUT_MS: u64 = 5_000;

/// The coordinator's state; exists only while this node leads.
struct Coordinator {
    epoch: Epoch,
    scheduler: Scheduler,
    /// Decimal results of finished jobs (converted off the runtime task).
    results: BTreeMap<JobId, String>,
}

pub(crate) struct Runtime {
    handle: Handle,
    store: Store,
    election: AnyElection,
    links: Links,
    coordinator: Option<Coordinator>,
    started: Instant,
    last_leader_contact: Option<Instant>,
    tick_pending: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(handle: Handle, store: Store) -> Result<Runtime> {
        let cfg = &handle.config;
        let mut election_cfg = Config::new(cfg.id, cfg.members.ids());
        election_cfg.seed = u64::from(cfg.id) ^ 0x9e37_79b9_7f4a_7c15;
        let election = cfg.algorithm.build(election_cfg, store.hard_state()?)?;
        let links = Links::start(&handle);
        Ok(Runtime {
            handle,
            store,
            election,
            links,
            coordinator: None,
            started: Instant::now(),
            last_leader_contact: None,
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
            self.handle_event(event)?;
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
            loop {
                async_std::task::sleep(tick).await;
                if !pending.swap(true, Ordering::AcqRel) {
                    handle.send(Event::Tick);
                }
            }
        });
    }

    fn handle_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Tick => {
                self.tick_pending.store(false, Ordering::Release);
                self.step_election(Input::Tick)?;
                let now_ms = self.now_ms();
                if let Some(c) = &mut self.coordinator {
                    let actions = c.scheduler.tick(now_ms);
                    self.carry_out(actions);
                }
            }
            Event::Election { from, msg } => {
                if self.election.leadership().leader(self.me()) == Some(from) {
                    self.last_leader_contact = Some(Instant::now());
                }
                self.step_election(Input::Message { from, msg })?;
            }
            Event::PeerReachable { peer, reachable } => {
                let input = if reachable {
                    Input::PeerUp(peer)
                } else {
                    Input::PeerDown(peer)
                };
                self.step_election(input)?;
            }
            Event::AdmitWork { from, epoch, reply } => {
                let _ = reply.try_send(self.admit_work(from, epoch));
            }
            Event::Submit { n, reply } => {
                let routed = match self.route() {
                    Routed::Here(()) => Routed::Here(self.submit(n)),
                    Routed::Leader(a) => Routed::Leader(a),
                    Routed::NoLeader => Routed::NoLeader,
                };
                let _ = reply.try_send(routed);
            }
            Event::Jobs { id, reply } => {
                let routed = match self.route() {
                    Routed::Here(()) => Routed::Here(self.jobs(id.as_deref())),
                    Routed::Leader(a) => Routed::Leader(a),
                    Routed::NoLeader => Routed::NoLeader,
                };
                let _ = reply.try_send(routed);
            }
            Event::Status { reply } => {
                let _ = reply.try_send(self.status());
            }
            Event::BatchAnswered { batch, outcome } => {
                let now_ms = self.now_ms();
                if let Some(c) = &mut self.coordinator {
                    let actions = match outcome {
                        Ok(products) => c.scheduler.batch_done(batch, products, now_ms),
                        Err(why) => {
                            log::warn!("batch {batch} failed: {why}");
                            c.scheduler.batch_failed(batch, now_ms)
                        }
                    };
                    self.carry_out(actions);
                }
            }
            Event::Decimal { job, n, decimal } => {
                log::info!("{n}! = {}", abbreviate(&decimal));
                if let Some(c) = &mut self.coordinator {
                    c.results.insert(job, decimal);
                }
            }
        }
        Ok(())
    }

    fn step_election(&mut self, input: Input<AnyMsg>) -> Result<()> {
        let actions = self.election.step(input);
        self.apply_election(actions)
    }

    /// Persist, then send, then act on leadership: a vote or a higher epoch must be on disk
    /// before any message that depends on it leaves.
    fn apply_election(&mut self, actions: Actions<AnyMsg>) -> Result<()> {
        if let Some(hard_state) = actions.persist {
            self.store.save_hard_state(&hard_state)?;
        }
        for (to, msg) in actions.messages {
            self.links.send(to, msg);
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
                log::info!("node {me} is the coordinator at epoch {epoch}");
                let timing = Timing {
                    worker_delay_ms: self.handle.config.delay_ms,
                    batch_timeout_ms: BATCH_TIMEOUT_MS,
                };
                let mut scheduler = Scheduler::new(epoch.to_string(), timing);
                for id in self
                    .handle
                    .config
                    .members
                    .ids()
                    .into_iter()
                    .filter(|&id| id != me)
                {
                    scheduler.add_worker(id);
                }
                self.coordinator = Some(Coordinator {
                    epoch,
                    scheduler,
                    results: BTreeMap::new(),
                });
                self.last_leader_contact = None;
            }
            Leadership::Following { leader, epoch } => {
                log::info!("node {me} follows coordinator {leader} at epoch {epoch}");
                self.step_down();
                self.last_leader_contact = Some(Instant::now());
            }
            Leadership::Unknown => {
                log::info!("node {me}: no coordinator known, election under way");
                self.step_down();
            }
        }
    }

    fn step_down(&mut self) {
        if let Some(c) = self.coordinator.take() {
            let unfinished = c
                .scheduler
                .progress()
                .iter()
                .filter(|p| !p.finished)
                .count();
            log::warn!(
                "node {} stops coordinating epoch {} with {unfinished} unfinished jobs",
                self.me(),
                c.epoch
            );
        }
    }

    /// A worker refuses a coordinator whose epoch is older than one it knows (fencing).
    fn admit_work(&self, from: NodeId, epoch: Epoch) -> std::result::Result<(), String> {
        let known = self
            .election
            .hard_state()
            .epoch
            .max(self.election.leadership().epoch().unwrap_or(0));
        if epoch < known {
            return Err(format!(
                "stale epoch {epoch} from node {from}: this node knows epoch {known}"
            ));
        }
        Ok(())
    }

    fn route(&self) -> Routed<()> {
        match self.election.leadership() {
            Leadership::Leading { .. } if self.coordinator.is_some() => Routed::Here(()),
            Leadership::Following { leader, .. } => match self.handle.config.members.addr(leader) {
                Some(addr) => Routed::Leader(addr.to_string()),
                None => Routed::NoLeader,
            },
            _ => Routed::NoLeader,
        }
    }

    fn submit(&mut self, n: u64) -> JobInfo {
        let c = self
            .coordinator
            .as_mut()
            .expect("route() checked that this node coordinates");
        let (id, actions) = c.scheduler.submit(n);
        log::info!("job {id}: {n}! accepted");
        let now_ms = self.now_ms();
        let c = self.coordinator.as_mut().expect("still coordinating");
        let mut actions = actions;
        actions.extend(c.scheduler.tick(now_ms));
        let progress = c.scheduler.job_progress(&id).expect("just submitted");
        self.carry_out(actions);
        JobInfo::new(&progress, None)
    }

    fn jobs(&self, id: Option<&str>) -> Vec<JobInfo> {
        let Some(c) = &self.coordinator else {
            return Vec::new();
        };
        c.scheduler
            .progress()
            .iter()
            .filter(|p| id.is_none_or(|id| id == p.id))
            .map(|p| JobInfo::new(p, c.results.get(&p.id).cloned()))
            .collect()
    }

    fn status(&self) -> NodeStatus {
        let cfg = &self.handle.config;
        let leadership = self.election.leadership();
        let role = match leadership {
            Leadership::Leading { .. } => "coordinator",
            Leadership::Following { .. } => "worker",
            Leadership::Unknown => "candidate",
        };
        let jobs = match &self.coordinator {
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
            epoch: leadership
                .epoch()
                .unwrap_or(self.election.hard_state().epoch),
            election: cfg.algorithm.to_string(),
            operations_computed: self
                .handle
                .stats
                .operations_computed
                .load(Ordering::Relaxed),
            max_operands: self.handle.stats.max_operands.load(Ordering::Relaxed),
            last_leader_contact_ms: match leadership {
                Leadership::Leading { .. } => Some(0),
                _ => self
                    .last_leader_contact
                    .map(|t| t.elapsed().as_millis() as u64),
            },
            uptime_ms: self.now_ms(),
            jobs,
        }
    }

    /// Carries out the scheduler's actions: batches go out on their own tasks and come back
    /// as [`Event::BatchAnswered`]; finished results are converted to decimal off this task.
    fn carry_out(&mut self, actions: Vec<crate::coordinator::Action>) {
        let Some(c) = &self.coordinator else { return };
        let epoch = c.epoch;
        for action in actions {
            match action {
                Action::Dispatch {
                    batch,
                    worker,
                    deadline_ms,
                    items,
                } => {
                    let Some(addr) = self.handle.config.members.addr(worker).map(str::to_string)
                    else {
                        continue;
                    };
                    let timeout =
                        Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()).max(1));
                    let request = WorkRequest {
                        from: self.me(),
                        epoch,
                        batch,
                        items: items
                            .into_iter()
                            .map(|i| WorkRequestItem {
                                op: WireOp::from(&i.op),
                                operands: i.operands,
                            })
                            .collect(),
                    };
                    let handle = self.handle.clone();
                    async_std::task::spawn(async move {
                        let answer: std::result::Result<WorkResponse, _> = handle
                            .client
                            .post(&addr, "/internal/work", &request, timeout, &[])
                            .await;
                        let outcome = answer
                            .map(|r| {
                                r.results
                                    .into_iter()
                                    .map(|w| (OpRef::from(w.op), w.product))
                                    .collect()
                            })
                            .map_err(|e| e.to_string());
                        handle.send(Event::BatchAnswered { batch, outcome });
                    });
                }
                Action::JobFinished { job, n, result } => {
                    let handle = self.handle.clone();
                    async_std::task::spawn(async move {
                        let decimal =
                            async_std::task::spawn_blocking(move || Big::to_decimal(&result)).await;
                        handle.send(Event::Decimal { job, n, decimal });
                    });
                }
            }
        }
    }
}
