//! The node's driver: the runtime task that owns the node core ([`crate::node_core`]), the
//! clock, the disk writer, the links to peers and the compute threads, and the [`Handle`]
//! through which the HTTP edge hands it inputs.

pub mod compute;
mod conversion;
pub mod converter;
pub mod faults;
mod links;
pub mod refusals;
pub mod replication;
pub(crate) mod runtime;
mod status;
pub mod trace;

use crate::api::{JobInfo, NodeStatus};
use crate::checkpoint::Fact;
use crate::config::{NodeConfig, SharedSettings};
use crate::coordinator::conversion::Conversion;
use crate::coordinator::{Fingerprint, OpRef, Task};
use crate::error::Result;
use crate::node_core::worker;
pub use crate::node_core::{Input, JobsQuery, Refusal, Routed};
use crate::store::Store;
use crate::transport::{self, Client};
use async_std::channel::{self, Sender};
use facto_elections::{Epoch, NodeId};
use std::sync::Arc;
use worker::WorkerStats;

/// What reaches the runtime task: an input for the node core, or a request that waits for
/// an answer on its channel (the runtime keeps the channel and names it to the core).
pub(crate) enum Event {
    /// An input with nothing to answer: a tick, a peer's election message or reachability, a
    /// completion of an effect.
    Input(Input),
    /// A coordinator at `epoch` sends tasks; the answer is the products' frame, or why the
    /// work was refused.
    Work { from: NodeId, epoch: Epoch, tasks: Vec<(OpRef, Task)>, reply: Sender<Result<Vec<u8>, WorkRefused>> },
    /// A coordinator at `epoch` sends a conversion task; the answer is its bytes, or why
    /// the task was refused.
    Convert { from: NodeId, epoch: Epoch, task: Conversion, reply: Sender<Result<Vec<u8>, WorkRefused>> },
    /// A client submits n!; `forwarded` when another member passed it on (it is not passed
    /// on again).
    Submit { n: u64, request: Option<String>, forwarded: bool, reply: Sender<Routed<JobInfo>> },
    /// A client asks for a job (`None`: every job); with `wait`, the answer waits for the
    /// job's result.
    Jobs { query: JobsQuery, forwarded: bool, reply: Sender<Routed<Vec<JobInfo>>> },
    Status {
        /// How many of the newest jobs to list.
        jobs_limit: usize,
        reply: Sender<NodeStatus>,
    },
    /// The coordinator at `epoch` sends checkpoint facts to keep.
    ApplyFacts { from: NodeId, epoch: Epoch, facts: Vec<Fact>, reply: Sender<Result<(), Refusal>> },
    /// A new coordinator at `epoch` asks for this node's checkpoint.
    CheckpointQuery {
        from: NodeId,
        epoch: Epoch,
        skip: std::collections::BTreeSet<String>,
        reply: Sender<Result<Vec<Fact>, Refusal>>,
    },
    /// The hard state saved last is on disk: the effects held behind it may go.
    HardStateDurable,
}

impl Event {
    /// The event's name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::Input(input) => input.kind(),
            Event::Work { .. } => "work",
            Event::Convert { .. } => "conversion",
            Event::Submit { .. } => "submit",
            Event::Jobs { .. } => "job query",
            Event::Status { .. } => "status",
            Event::ApplyFacts { .. } => "checkpoint write",
            Event::CheckpointQuery { .. } => "checkpoint read",
            Event::HardStateDurable => "hard state durable",
        }
    }
}

/// Why work was not done.
#[derive(Debug)]
pub enum WorkRefused {
    /// From a deposed or implausible coordinator (409).
    Fenced(Refusal),
    /// The computation failed (500).
    Failed(String),
}

impl Event {
    /// Control traffic: ticks, election messages, peers' reachability and epochs, the hard
    /// state reaching the disk. It has a queue of its own that the runtime empties first, so
    /// a heartbeat never waits behind client requests, work or checkpoint traffic.
    fn is_control(&self) -> bool {
        matches!(
            self,
            Event::Input(Input::Tick | Input::Election { .. } | Input::PeerReachable { .. } | Input::PeerEpoch { .. })
                | Event::HardStateDurable
        )
    }
}

/// The runtime's two queues: control traffic, and everything else.
#[derive(Clone)]
pub(crate) struct Inbox {
    control: Sender<Event>,
    other: Sender<Event>,
}

/// The receiving ends of an [`Inbox`], for the runtime.
pub(crate) struct Inboxes {
    pub control: channel::Receiver<Event>,
    pub other: channel::Receiver<Event>,
}

impl Inbox {
    pub(crate) fn new() -> (Inbox, Inboxes) {
        let (control, control_rx) = channel::unbounded();
        let (other, other_rx) = channel::unbounded();
        (Inbox { control, other }, Inboxes { control: control_rx, other: other_rx })
    }

    fn queue_of(&self, event: &Event) -> &Sender<Event> {
        if event.is_control() {
            &self.control
        } else {
            &self.other
        }
    }
}

/// The HTTP edge's way into the runtime. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    inbox: Inbox,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) faults: Arc<faults::Faults>,
    pub(crate) config: Arc<NodeConfig>,
    /// The settings every member must share, derived from `config`.
    pub(crate) settings: Arc<SharedSettings>,
    pub(crate) client: Client,
    /// Partitions and stalls ordered through the admin API.
    pub(crate) gate: Arc<transport::Gate>,
    /// The node's database, for reads of large records off the runtime (finished jobs'
    /// results); the runtime's writer owns the writes.
    pub(crate) store: Store,
    /// Checks products against their operands, modulo a prime this process drew at random.
    pub(crate) fingerprint: Fingerprint,
    /// Peer messages refused by [`crate::node_core::validate`], counted and logged.
    pub(crate) refusals: Arc<refusals::Refusals>,
    /// The highest epoch this node knows (kept by the runtime), which bounds the epochs the
    /// HTTP edge lets in.
    pub(crate) known_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// What `GET /metrics` shows.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Conversion tasks this coordinator gave to another worker after a failure or a wrong
    /// answer.
    pub(crate) conversion_tasks_redone: Arc<std::sync::atomic::AtomicU64>,
    /// The peak resident set size of the latest decimal conversion's child process.
    pub(crate) converter_peak_rss_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The protocol messages this node sent and received lately (`GET /trace`).
    pub(crate) trace: Arc<trace::Trace>,
}

impl Handle {
    pub(crate) fn new(
        inbox: Inbox,
        config: NodeConfig,
        faults: faults::Faults,
        (client, gate): (Client, Arc<transport::Gate>),
        store: Store,
        fingerprint: Fingerprint,
    ) -> Handle {
        let id = config.id;
        Handle {
            inbox,
            stats: Arc::new(WorkerStats::default()),
            faults: Arc::new(faults),
            settings: Arc::new(SharedSettings::of(&config)),
            config: Arc::new(config),
            client,
            gate,
            store,
            fingerprint,
            refusals: Arc::default(),
            known_epoch: Arc::default(),
            metrics: Arc::default(),
            conversion_tasks_redone: Arc::default(),
            converter_peak_rss_bytes: Arc::default(),
            trace: Arc::new(trace::Trace::new(id)),
        }
    }

    pub(crate) fn send(&self, event: Event) {
        // The runtime only stops when the process does; a closed inbox loses nothing.
        let _ = self.inbox.queue_of(&event).try_send(event);
    }

    /// A peer that refused a call of this node's named the epoch it knows: the core hears it.
    pub(crate) fn heard_epoch(&self, peer: NodeId, failed: &transport::client::CallError) {
        if let Some(epoch) = failed.known_epoch() {
            self.send(Event::Input(Input::PeerEpoch { from: peer, epoch }));
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Event) -> Option<T> {
        let (tx, rx) = channel::bounded(1);
        let event = make(tx);
        self.inbox.queue_of(&event).send(event).await.ok()?;
        rx.recv().await.ok()
    }

    /// This node's status with its `jobs_limit` newest jobs.
    pub async fn status(&self, jobs_limit: usize) -> Option<NodeStatus> {
        self.ask(|reply| Event::Status { jobs_limit, reply }).await
    }

    /// Submits n!; `forwarded` when another member passed the request on.
    pub async fn submit(&self, n: u64, request: Option<String>, forwarded: bool) -> Option<Routed<JobInfo>> {
        self.ask(|reply| Event::Submit { n, request, forwarded, reply }).await
    }

    pub async fn jobs(&self, query: JobsQuery, forwarded: bool) -> Option<Routed<Vec<JobInfo>>> {
        self.ask(|reply| Event::Jobs { query, forwarded, reply }).await
    }

    /// Hands tasks to the node; resolves with the products' frame once they are computed
    /// (and `--delay` has passed).
    pub async fn work(
        &self,
        from: NodeId,
        epoch: Epoch,
        tasks: Vec<(OpRef, Task)>,
    ) -> std::result::Result<Vec<u8>, WorkRefused> {
        self.ask(|reply| Event::Work { from, epoch, tasks, reply })
            .await
            .unwrap_or_else(|| Err(WorkRefused::Failed("node is shutting down".into())))
    }

    /// A conversion task from a coordinator: its answer's bytes, or why not.
    pub async fn convert(
        &self,
        from: NodeId,
        epoch: Epoch,
        task: Conversion,
    ) -> std::result::Result<Vec<u8>, WorkRefused> {
        self.ask(|reply| Event::Convert { from, epoch, task, reply })
            .await
            .unwrap_or_else(|| Err(WorkRefused::Failed("node is shutting down".into())))
    }

    pub async fn apply_facts(&self, from: NodeId, epoch: Epoch, facts: Vec<Fact>) -> std::result::Result<(), Refusal> {
        self.ask(|reply| Event::ApplyFacts { from, epoch, facts, reply })
            .await
            .unwrap_or_else(|| Err(Refusal { why: "node is shutting down".into(), known_epoch: 0 }))
    }

    pub async fn checkpoint(
        &self,
        from: NodeId,
        epoch: Epoch,
        skip: std::collections::BTreeSet<String>,
    ) -> Option<Result<Vec<Fact>, Refusal>> {
        self.ask(|reply| Event::CheckpointQuery { from, epoch, skip, reply }).await
    }
}
