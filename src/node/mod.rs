//! A running member: the runtime task that owns the node's state, the clock, the links to
//! peers, and the [`Handle`] through which the HTTP edge talks to the runtime.

pub mod compute;
pub mod faults;
mod links;
mod replication;
pub(crate) mod runtime;
pub mod validate;
pub mod worker;

use crate::api::{JobInfo, NodeStatus};
use crate::bignum::Big;
use crate::checkpoint::Fact;
use crate::config::NodeConfig;
use crate::coordinator::{Fingerprint, JobId, OpRef};
use crate::error::Result;
use crate::store::Store;
use crate::transport::{self, Client};
use async_std::channel::{self, Sender};
use facto_elections::{AnyMsg, Epoch, NodeId};
use std::sync::Arc;
use worker::WorkerStats;

/// Everything that can happen to a node, in the order the runtime sees it.
pub(crate) enum Event {
    /// One election tick passed.
    Tick,
    /// An election message from a peer.
    Election {
        from: NodeId,
        msg: AnyMsg,
    },
    /// A peer stopped or started answering.
    PeerReachable {
        peer: NodeId,
        reachable: bool,
    },
    /// A coordinator at `epoch` sends tasks; the answer is the products' frame, or why the
    /// work was refused.
    Work {
        from: NodeId,
        epoch: Epoch,
        tasks: Vec<(OpRef, worker::Task)>,
        reply: Sender<Result<Vec<u8>, WorkRefused>>,
    },
    /// A client submits n!.
    Submit {
        n: u64,
        request: Option<String>,
        reply: Sender<Routed<JobInfo>>,
    },
    /// A client asks for a job (`None`: every job); with `wait`, the answer waits for the
    /// job's result.
    Jobs {
        id: Option<String>,
        wait: bool,
        reply: Sender<Routed<Vec<JobInfo>>>,
    },
    Status {
        reply: Sender<NodeStatus>,
    },
    /// A worker answered a batch (or the call failed).
    BatchAnswered {
        batch: u64,
        outcome: std::result::Result<Vec<(OpRef, Big)>, String>,
    },
    /// The coordinator at `epoch` sends checkpoint facts to keep.
    ApplyFacts {
        from: NodeId,
        epoch: Epoch,
        facts: Vec<Fact>,
        reply: Sender<Result<(), String>>,
    },
    /// A new coordinator asks for this node's checkpoint.
    CheckpointQuery {
        skip: std::collections::BTreeSet<String>,
        reply: Sender<Vec<Fact>>,
    },
    /// The peers' checkpoints gathered by this node on becoming coordinator at `epoch`.
    Gathered {
        epoch: Epoch,
        facts: Vec<Fact>,
        /// This node's own products that failed their check.
        wrong: Vec<(JobId, crate::coordinator::OpId)>,
    },
    /// A peer's checkpoint pulled by the coordinator at `epoch` when the peer came back.
    Pulled {
        epoch: Epoch,
        facts: Vec<Fact>,
    },
    /// A batch's products are on this node's disk and on a peer's (or no peer answered).
    BatchDurable {
        batch: u64,
    },
    /// A finished job's decimal digits are ready.
    Decimal {
        job: JobId,
        n: u64,
        decimal: std::sync::Arc<str>,
    },
    /// A finished job's result could not be found (no node that answered holds its root).
    NoDecimal {
        job: JobId,
    },
}

impl Event {
    /// The event's name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::Tick => "tick",
            Event::Election { .. } => "election message",
            Event::PeerReachable { .. } => "peer reachability",
            Event::Work { .. } => "work",
            Event::Submit { .. } => "submit",
            Event::Jobs { .. } => "job query",
            Event::Status { .. } => "status",
            Event::BatchAnswered { .. } => "batch answer",
            Event::ApplyFacts { .. } => "checkpoint write",
            Event::CheckpointQuery { .. } => "checkpoint read",
            Event::Gathered { .. } => "gathered checkpoints",
            Event::Pulled { .. } => "pulled checkpoint",
            Event::BatchDurable { .. } => "durable batch",
            Event::Decimal { .. } => "decimal result",
            Event::NoDecimal { .. } => "result not found",
        }
    }
}

/// Why work was not done.
#[derive(Debug)]
pub enum WorkRefused {
    /// From a deposed or implausible coordinator (409).
    Fenced(String),
    /// The computation failed (500).
    Failed(String),
}

/// Where a client request is served.
pub enum Routed<T> {
    /// By this node, the coordinator.
    Here(T),
    /// By the coordinator at this address.
    Leader(String),
    /// No coordinator is known right now; try again shortly.
    NoLeader,
    /// The coordinator could not do it (e.g. could not make a job durable); try again.
    Failed(String),
    /// The request contradicts what the cluster holds; trying again will not help.
    Refused(String),
    /// The coordinator's queue is full; try again later.
    Busy(String),
}

/// The HTTP edge's way into the runtime. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    inbox: Sender<Event>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) faults: Arc<faults::Faults>,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) client: Client,
    /// Partitions and stalls ordered through the admin API.
    pub(crate) gate: Arc<transport::Gate>,
    /// The node's database, for reads of large records off the runtime (finished jobs'
    /// results); the runtime's writer owns the writes.
    pub(crate) store: Store,
    /// Checks products against their operands, modulo a prime this process drew at random.
    pub(crate) fingerprint: Fingerprint,
    /// Peer messages refused by [`validate`], counted and logged.
    pub(crate) refusals: Arc<validate::Refusals>,
    /// The highest epoch this node knows (kept by the runtime), which bounds the epochs the
    /// HTTP edge lets in.
    pub(crate) known_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Whether this node is taking over (kept by the runtime): only then does the HTTP edge
    /// cut a client's wait short.
    pub(crate) taking_over: Arc<std::sync::atomic::AtomicBool>,
}

impl Handle {
    pub(crate) fn new(
        inbox: Sender<Event>,
        config: NodeConfig,
        faults: faults::Faults,
        (client, gate): (Client, Arc<transport::Gate>),
        store: Store,
        fingerprint: Fingerprint,
    ) -> Handle {
        Handle {
            inbox,
            stats: Arc::new(WorkerStats::default()),
            faults: Arc::new(faults),
            config: Arc::new(config),
            client,
            gate,
            store,
            fingerprint,
            refusals: Arc::default(),
            known_epoch: Arc::default(),
            taking_over: Arc::default(),
        }
    }

    pub(crate) fn send(&self, event: Event) {
        // The runtime only stops when the process does; a closed inbox loses nothing.
        let _ = self.inbox.try_send(event);
    }

    async fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Event) -> Option<T> {
        let (tx, rx) = channel::bounded(1);
        self.inbox.send(make(tx)).await.ok()?;
        rx.recv().await.ok()
    }

    pub async fn status(&self) -> Option<NodeStatus> {
        self.ask(|reply| Event::Status { reply }).await
    }

    pub async fn submit(&self, n: u64, request: Option<String>) -> Option<Routed<JobInfo>> {
        self.ask(|reply| Event::Submit { n, request, reply }).await
    }

    pub async fn jobs(&self, id: Option<String>) -> Option<Routed<Vec<JobInfo>>> {
        self.ask(|reply| Event::Jobs { id, wait: false, reply }).await
    }

    /// The job `id` once it has a result, or `None` when the node could not wait (it
    /// stopped coordinating); the caller bounds the wait.
    pub async fn job_result(&self, id: String) -> Option<Routed<Vec<JobInfo>>> {
        self.ask(|reply| Event::Jobs { id: Some(id), wait: true, reply }).await
    }

    /// Hands tasks to the node; resolves with the products' frame once they are computed
    /// (and `--delay` has passed).
    pub async fn work(
        &self,
        from: NodeId,
        epoch: Epoch,
        tasks: Vec<(OpRef, worker::Task)>,
    ) -> std::result::Result<Vec<u8>, WorkRefused> {
        self.ask(|reply| Event::Work { from, epoch, tasks, reply })
            .await
            .unwrap_or_else(|| Err(WorkRefused::Failed("node is shutting down".into())))
    }

    pub async fn apply_facts(&self, from: NodeId, epoch: Epoch, facts: Vec<Fact>) -> std::result::Result<(), String> {
        self.ask(|reply| Event::ApplyFacts { from, epoch, facts, reply })
            .await
            .unwrap_or_else(|| Err("node is shutting down".into()))
    }

    pub async fn checkpoint(&self, skip: std::collections::BTreeSet<String>) -> Option<Vec<Fact>> {
        self.ask(|reply| Event::CheckpointQuery { skip, reply }).await
    }
}
