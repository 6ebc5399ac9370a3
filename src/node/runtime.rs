//! The driver: the one task that owns the node core and carries out its effects. It reads
//! the clock, turns requests into inputs (keeping their answer channels), writes to disk,
//! talks to peers, runs the compute threads, and feeds every completion back as an input.
//! All decisions are the core's ([`crate::node_core`]); nothing here decides.

use super::links::Links;
use super::replication::{ask_checkpoint, check_gathered, fetch_root, find_root, send_facts};
use super::{compute, conversion, converter, status};
use super::{Event, Handle, Inboxes, Routed, WorkRefused};
use crate::api::{self, JobInfo};
use crate::bignum::Big;
use crate::checkpoint::{Checkpoint, Fact};
use crate::coordinator::conversion::{Conversion, Layout};
use crate::coordinator::{fingerprint, JobId, OpRef, Task, WorkItem};
use crate::error::Result;
use crate::node_core::worker;
use crate::node_core::{Answer, Effect, Input, NodeCore, ReplyId, Settings};
use crate::store::{Durable, FactsWrite, Store, Writer};
use async_std::channel::Sender;
use facto_elections::{AnyMsg, Epoch, HardState, Leadership, NodeId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An event that takes this long delays every heartbeat behind it and is logged.
const SLOW_EVENT_MS: u128 = 20;

/// A request's answer channel, kept while the core works on it.
enum Waiting {
    Job(Sender<Routed<JobInfo>>),
    Jobs(Sender<Routed<Vec<JobInfo>>>),
    Applied(Sender<std::result::Result<(), crate::node_core::Refusal>>),
    Work(Sender<std::result::Result<Vec<u8>, WorkRefused>>),
    Checkpoint(Sender<std::result::Result<Vec<Fact>, crate::node_core::Refusal>>),
}

impl Waiting {
    fn is_closed(&self) -> bool {
        match self {
            Waiting::Job(tx) => tx.is_closed(),
            Waiting::Jobs(tx) => tx.is_closed(),
            Waiting::Applied(tx) => tx.is_closed(),
            Waiting::Work(tx) => tx.is_closed(),
            Waiting::Checkpoint(tx) => tx.is_closed(),
        }
    }
}

pub(crate) struct Runtime {
    handle: Handle,
    writer: Writer,
    core: NodeCore,
    links: Links,
    /// Requests the core has not answered yet, by the id it knows them by.
    waiting: BTreeMap<ReplyId, Waiting>,
    next_reply: ReplyId,
    started: Instant,
    /// The same moment on the wall clock, for `/status` (tells a restart from a long run).
    started_unix_ms: u64,
    tick_pending: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(handle: Handle, store: Store, hard_state: HardState, loaded: (Checkpoint, u64)) -> Result<Runtime> {
        let (checkpoint, checkpoint_version) = loaded;
        let core = NodeCore::new(Settings::of(&handle.config), hard_state, checkpoint, checkpoint_version)?;
        let links = Links::start(&handle);
        let metrics = handle.metrics.clone();
        let writer = store.start_writer(move |took| metrics.fsync(took.as_secs_f64()));
        // The HTTP edge bounds peers' epochs by this from the first message on.
        handle.known_epoch.store(core.known_epoch(), Ordering::Relaxed);
        Ok(Runtime {
            handle,
            writer,
            core,
            links,
            waiting: BTreeMap::new(),
            next_reply: 0,
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

    /// Handles events until the process ends, control traffic first.
    pub async fn run(mut self, inboxes: Inboxes) -> Result<()> {
        use futures::FutureExt;
        self.start_ticker();
        loop {
            let next = match inboxes.control.try_recv() {
                Ok(event) => Ok(event),
                Err(_) => futures::select_biased! {
                    event = inboxes.control.recv().fuse() => event,
                    event = inboxes.other.recv().fuse() => event,
                },
            };
            let Ok(event) = next else { break };
            let started = Instant::now();
            let kind = event.kind();
            self.handle_event(event);
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
                    handle.send(Event::Input(Input::Tick));
                }
                // The slow timer that gives an idle node its chances to crash too.
                if last_roll.elapsed() >= Duration::from_secs(1) {
                    last_roll = Instant::now();
                    handle.faults.maybe_crash("idle");
                }
            }
        });
    }

    fn handle_event(&mut self, event: Event) {
        let input = match event {
            Event::Input(Input::Tick) => {
                self.tick_pending.store(false, Ordering::Release);
                self.report_clients_gone();
                Input::Tick
            }
            Event::Input(input @ Input::BatchAnswered { outcome: Ok(_), .. }) => {
                // The coordinator's unit of work is a batch answer it takes (a worker's is
                // one task): one chance to crash here.
                if self.handle.config.checkpoint {
                    self.handle.faults.maybe_crash("taking a batch answer");
                }
                input
            }
            Event::Input(input) => input,
            Event::Work { from, epoch, tasks, reply } => {
                Input::Work { from, epoch, tasks, reply: self.keep(Waiting::Work(reply)) }
            }
            Event::Convert { from, epoch, task, reply } => {
                Input::Convert { from, epoch, task, reply: self.keep(Waiting::Work(reply)) }
            }
            Event::Submit { n, request, forwarded, reply } => {
                Input::Submit { n, request, reply: self.keep(Waiting::Job(reply)), forwarded }
            }
            Event::Jobs { query, forwarded, reply } => {
                Input::Jobs { query, reply: self.keep(Waiting::Jobs(reply)), forwarded }
            }
            Event::ApplyFacts { from, epoch, facts, reply } => {
                Input::ApplyFacts { from, epoch, facts, reply: self.keep(Waiting::Applied(reply)) }
            }
            Event::Status { jobs_limit, reply } => {
                let now_ms = self.now_ms();
                let core = self.core.status(now_ms, jobs_limit);
                let _ = reply.try_send(status::node_status(&self.handle, core, now_ms, self.started_unix_ms));
                return;
            }
            Event::CheckpointQuery { from, epoch, skip, reply } => {
                Input::CheckpointQuery { from, epoch, skip, reply: self.keep(Waiting::Checkpoint(reply)) }
            }
            Event::HardStateDurable => Input::HardStateSaved,
        };
        self.step(input);
    }

    /// Keeps a request's answer channel; returns the id the core will answer it by.
    fn keep(&mut self, waiting: Waiting) -> ReplyId {
        self.next_reply += 1;
        self.waiting.insert(self.next_reply, waiting);
        self.next_reply
    }

    /// Clients that stopped waiting (the HTTP edge gave up on them) are told to the core.
    fn report_clients_gone(&mut self) {
        let gone: Vec<ReplyId> = self.waiting.iter().filter(|(_, w)| w.is_closed()).map(|(&id, _)| id).collect();
        for reply in gone {
            self.waiting.remove(&reply);
            self.step(Input::ClientGone { reply });
        }
    }

    fn step(&mut self, input: Input) {
        self.count_received(&input);
        let own_timer = matches!(input, Input::Tick | Input::PeerReachable { reachable: false, .. });
        let before = (self.core.leadership(), self.core.known_epoch());
        let effects = self.core.step(self.now_ms(), input);
        let after = (self.core.leadership(), self.core.known_epoch());
        self.handle.known_epoch.store(after.1, Ordering::Relaxed);
        if after != before {
            let m = &self.handle.metrics;
            m.leadership(after.0.leader(self.handle.config.id), after.0.epoch().unwrap_or(after.1));
            // This node's own timer or failure detector moved it: it started an election.
            if own_timer && (after.1 > before.1 || (after.0 == Leadership::Unknown && before.0 != Leadership::Unknown))
            {
                m.election_started();
            }
        }
        self.carry_out(effects);
    }

    /// Peer messages, counted by kind for `/metrics`.
    fn count_received(&self, input: &Input) {
        let kind = match input {
            Input::Election { .. } => "election",
            Input::Work { .. } | Input::Convert { .. } => "work",
            Input::ApplyFacts { .. } => "checkpoint_write",
            Input::CheckpointQuery { .. } => "checkpoint_query",
            Input::BatchAnswered { outcome: Err(_), .. } => return self.handle.metrics.batch_reexecuted(),
            _ => return,
        };
        self.handle.metrics.message_received(kind);
    }

    /// Carries out the core's effects in order.
    fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            self.carry_out_one(effect);
        }
    }

    /// Saves the hard state; the core hears when it is on disk.
    fn save_hard_state(&mut self, hard_state: HardState) {
        let durable = self.writer.write_hard_state(hard_state);
        let handle = self.handle.clone();
        async_std::task::spawn(async move {
            // False only when the writer is gone: the process is stopping.
            if durable.wait().await {
                handle.send(Event::HardStateDurable);
            }
        });
    }

    fn carry_out_one(&mut self, effect: Effect) {
        match effect {
            Effect::SaveHardState(hard_state) => self.save_hard_state(hard_state),
            Effect::Send { to, msg } => self.send(to, msg),
            Effect::Write { write, facts, finished, retired, checkpoint_version } => {
                let durable = self.writer.write(FactsWrite { facts, finished, retired, checkpoint_version });
                self.when_durable(durable, write);
            }
            Effect::SendFacts { replication, peer, epoch, facts, timeout_ms } => {
                self.handle.metrics.message_sent("checkpoint_write");
                self.spawn_input(send_facts(self.handle.clone(), replication, (peer, epoch), facts, timeout_ms))
            }
            Effect::AskCheckpoint { gathering, peer, epoch, finished, timeout_ms } => {
                self.handle.metrics.message_sent("checkpoint_query");
                self.spawn_input(ask_checkpoint(self.handle.clone(), gathering, (peer, epoch), finished, timeout_ms))
            }
            Effect::CheckGathered { epoch, only, facts, own, unanswered } => {
                self.spawn_input(check_gathered(self.handle.clone(), (epoch, only), (facts, own), unanswered))
            }
            Effect::Dispatch { epoch, batch, worker, deadline_ms, items } => {
                self.handle.metrics.message_sent("work");
                self.dispatch(epoch, batch, worker, deadline_ms, items)
            }
            Effect::Compute { tasks, reply } => match self.waiting.remove(&reply) {
                Some(Waiting::Work(reply)) => self.compute(tasks, reply),
                _ => log::debug!("work {reply}: its coordinator stopped waiting"),
            },
            Effect::Convert { task, reply } => match self.waiting.remove(&reply) {
                Some(Waiting::Work(reply)) => self.convert(task, reply),
                _ => log::debug!("conversion {reply}: its coordinator stopped waiting"),
            },
            Effect::ToDecimal { epoch, job, n, product, workers } => self.to_decimal(epoch, job, n, product, workers),
            Effect::FetchRoot { job, n } => self.spawn_input(fetch_root(self.handle.clone(), job, n)),
            Effect::Forward { to, addr, .. } => self.forward(to, addr),
            Effect::Reply { to, answer } => self.answer(to, answer),
        }
    }

    fn send(&self, to: NodeId, msg: AnyMsg) {
        self.handle.metrics.message_sent("election");
        self.links.send(to, msg);
    }

    /// Times a write to the disk (`/metrics`) and reports it to the core when it names one.
    fn when_durable(&self, durable: Durable, write: Option<crate::node_core::WriteId>) {
        let (handle, started) = (self.handle.clone(), Instant::now());
        async_std::task::spawn(async move {
            let ok = durable.wait().await;
            handle.metrics.checkpoint_written(started.elapsed().as_secs_f64());
            if let Some(write) = write {
                handle.send(Event::Input(Input::Written { write, ok }));
            }
        });
    }

    /// Hands a client request to the HTTP edge that holds it, to carry it to the coordinator.
    fn forward(&mut self, to: ReplyId, addr: String) {
        match self.waiting.remove(&to) {
            Some(Waiting::Job(tx)) => drop(tx.try_send(Routed::Leader(addr))),
            Some(Waiting::Jobs(tx)) => drop(tx.try_send(Routed::Leader(addr))),
            Some(_) => log::error!("forward {to} is not a client's request"),
            None => {}
        }
    }

    fn answer(&mut self, to: ReplyId, answer: Answer) {
        let Some(waiting) = self.waiting.remove(&to) else { return };
        match (waiting, answer) {
            (Waiting::Job(tx), Answer::Job(routed)) => drop(tx.try_send(routed)),
            (Waiting::Jobs(tx), Answer::Jobs(routed)) => drop(tx.try_send(routed)),
            (Waiting::Applied(tx), Answer::Applied(result)) => drop(tx.try_send(result)),
            (Waiting::Work(tx), Answer::WorkRefused(why)) => drop(tx.try_send(Err(WorkRefused::Fenced(why)))),
            (Waiting::Checkpoint(tx), Answer::Checkpoint(facts)) => drop(tx.try_send(facts)),
            (_, answer) => log::error!("answer {to} does not fit its request: {answer:?}"),
        }
    }

    /// Runs `work` on a task of its own and steps the input it ends with.
    fn spawn_input(&self, work: impl std::future::Future<Output = Input> + Send + 'static) {
        let handle = self.handle.clone();
        async_std::task::spawn(async move { handle.send(Event::Input(work.await)) });
    }

    /// Sends a batch to its worker on its own task; the answer comes back as an input.
    fn dispatch(&self, epoch: Epoch, batch: u64, worker: NodeId, deadline_ms: u64, items: Vec<WorkItem>) {
        if let Some(stall_ms) = self.handle.faults.maybe_stall_ms() {
            // An injected stall of the whole coordinator: no heartbeats, no answers, until
            // every peer has given up on it.
            log::warn!("injected stall of the coordinator for {stall_ms} ms");
            std::thread::sleep(Duration::from_millis(stall_ms));
        }
        let handle = self.handle.clone();
        let Some(addr) = handle.config.members.addr(worker).map(str::to_string) else {
            let outcome = Err(format!("node {worker} is not a member"));
            return handle.send(Event::Input(Input::BatchAnswered { epoch, batch, outcome }));
        };
        let timeout = Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()).max(1));
        let me = self.handle.config.id;
        async_std::task::spawn(async move {
            let outcome = send_batch(&handle, (worker, &addr), (me, epoch, batch), items, timeout).await;
            handle.send(Event::Input(Input::BatchAnswered { epoch, batch, outcome }));
        });
    }

    /// Converts a finished job's product to decimal off the runtime (`None`: read from disk
    /// here or on a peer first): a large one spread over `workers`, or, if they cannot, in a
    /// child process here.
    fn to_decimal(&self, epoch: Epoch, job: JobId, n: u64, product: Option<Big>, workers: Vec<NodeId>) {
        let handle = self.handle.clone();
        if let Some(p) = product.as_ref().filter(|p| p.significant_bits() <= worker::LIGHT_BITS_MAX) {
            let decimal = Arc::from(p.to_decimal());
            return handle.send(Event::Input(Input::Decimal { job, n, decimal }));
        }
        async_std::task::spawn(async move {
            let product = match product {
                Some(p) => Some(p),
                None => find_root(&handle, &job, n).await.map(|(root, _)| root),
            };
            let Some(product) = product else {
                log::error!("job {job}: no member that answered holds its result");
                return handle.send(Event::Input(Input::NoDecimal { job }));
            };
            if let Some(layout) = Layout::of(product.significant_bits(), workers.len()) {
                match conversion::spread(&handle, epoch, product.clone(), layout, &workers).await {
                    Ok(decimal) => return handle.send(Event::Input(Input::Decimal { job, n, decimal })),
                    Err(why) => {
                        log::warn!("job {job}: the workers did not convert its result ({why}); converting here")
                    }
                }
            }
            let (program, peak) = (handle.config.converter.clone(), handle.converter_peak_rss_bytes.clone());
            let converted = compute::low_priority(move || converter::to_decimal(&product, program.as_deref()));
            match converted.await {
                Ok(c) => {
                    if let Some(bytes) = c.child_peak_rss_bytes {
                        peak.store(bytes, Ordering::Relaxed);
                    }
                    handle.send(Event::Input(Input::Decimal { job, n, decimal: Arc::from(c.decimal) }))
                }
                Err(why) => log::error!("job {job}: no decimal result: {why}"),
            }
        });
    }

    /// Carries out a coordinator's conversion task as a worker, on a compute thread, and
    /// answers after `--delay`. One chance to crash (`--fail-prob`).
    fn convert(&self, task: Conversion, reply: Sender<std::result::Result<Vec<u8>, WorkRefused>>) {
        self.handle.faults.maybe_crash("a conversion task");
        let handle = self.handle.clone();
        async_std::task::spawn(async move {
            let (stats, program) = (handle.stats.clone(), handle.config.converter.clone());
            stats.conversion_tasks_running.fetch_add(1, Ordering::Relaxed);
            let answer = compute::low_priority(move || conversion::carry_out(task, program.as_deref())).await;
            let answer = answer.and_then(|r| r).map(|(bytes, child_peak_rss_bytes)| {
                if let Some(peak) = child_peak_rss_bytes {
                    handle.converter_peak_rss_bytes.store(peak, Ordering::Relaxed);
                }
                bytes
            });
            let stall_ms = handle.faults.maybe_stall_ms().unwrap_or(0);
            async_std::task::sleep(Duration::from_millis(handle.config.delay_ms + stall_ms)).await;
            stats.conversion_tasks_running.fetch_sub(1, Ordering::Relaxed);
            if answer.is_ok() {
                stats.conversion_tasks_done.fetch_add(1, Ordering::Relaxed);
            }
            let _ = reply.send(answer.map_err(WorkRefused::Failed)).await;
        });
    }

    /// Computes a coordinator's tasks as a worker, on a compute thread, and answers with the
    /// products' frame after `--delay`. Each task is one chance to crash (`--fail-prob`).
    fn compute(&self, tasks: Vec<(OpRef, Task)>, reply: Sender<std::result::Result<Vec<u8>, WorkRefused>>) {
        for _ in &tasks {
            self.handle.faults.maybe_crash("a task");
        }
        let handle = self.handle.clone();
        let light = tasks.iter().all(|(_, task)| worker::is_light(task));
        async_std::task::spawn(async move {
            let (stats, faults) = (handle.stats.clone(), handle.faults.clone());
            let work = move || {
                let products: Vec<_> = tasks
                    .into_iter()
                    .map(|(op, task)| (op, faults.maybe_corrupt(worker::compute(task, &stats))))
                    .collect();
                api::encode_products(&products)
            };
            let computed = match light {
                true => work(),
                false => compute::low_priority(work).await.and_then(|r| r),
            };
            let stall_ms = handle.faults.maybe_stall_ms().unwrap_or(0);
            async_std::task::sleep(Duration::from_millis(handle.config.delay_ms + stall_ms)).await;
            let _ = reply.send(computed.map_err(WorkRefused::Failed)).await;
        });
    }
}

/// Sends a batch of tasks as a frame, decodes the products that come back and checks them
/// against their operands ([`fingerprint::check_answer`]): a product that fails is never
/// used, the batch fails and its tasks are dispatched again. Frames are built, read and
/// checked on the blocking pool: near the top of a large factorial they are megabytes.
async fn send_batch(
    handle: &Handle,
    (worker, addr): (NodeId, &str),
    (from, epoch, batch): (NodeId, Epoch, u64),
    items: Vec<WorkItem>,
    timeout: Duration,
) -> std::result::Result<Vec<(OpRef, Big)>, String> {
    let (body, items) =
        async_std::task::spawn_blocking(move || (api::encode_work(from, epoch, batch, &items), items)).await;
    let id = handle.trace.sent(("work", "work"), worker, epoch);
    let headers = [(super::trace::TRACE_HEADER, id.as_str())];
    let answer = handle.client.post_bytes(addr, "/internal/work", body?, timeout, &headers).await.map_err(|e| {
        handle.heard_epoch(worker, &e);
        e.to_string()
    })?;
    let fp = handle.fingerprint;
    async_std::task::spawn_blocking(move || {
        let products = api::decode_products(&answer)?;
        fingerprint::check_answer(&fp, &items, &products)?;
        Ok(products)
    })
    .await
}
