//! A running member: the runtime task that owns the node's state, the clock, the links to
//! peers, and the [`Handle`] through which the HTTP edge talks to the runtime.

pub mod compute;
pub mod faults;
mod links;
mod replication;
mod runtime;
pub mod validate;
pub mod worker;

use crate::api::{JobInfo, NodeStatus};
use crate::bignum::Big;
use crate::checkpoint::Fact;
use crate::config::NodeConfig;
use crate::coordinator::{Fingerprint, JobId, OpRef};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::transport::{self, Client};
use async_std::channel::{self, Receiver, Sender};
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
    /// A coordinator at `epoch` wants this node to compute; may it?
    AdmitWork {
        from: NodeId,
        epoch: Epoch,
        reply: Sender<Result<(), String>>,
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
            Event::AdmitWork { .. } => "work admission",
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
}

impl Handle {
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

    pub async fn admit_work(&self, from: NodeId, epoch: Epoch) -> std::result::Result<(), String> {
        self.ask(|reply| Event::AdmitWork { from, epoch, reply })
            .await
            .unwrap_or_else(|| Err("node is shutting down".into()))
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

/// A seed no peer can predict: the operating system's randomness (the clock and process id
/// should it be unreadable).
fn random_seed() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// `--reset-data`: moves the data directory aside, loudly. Returns whether there was one.
fn reset_data_dir(dir: &std::path::Path) -> Result<bool> {
    let aside = Store::reset(dir)?;
    match &aside {
        Some(aside) => log::warn!(
            "--reset-data: {} moved to {}; this node starts EMPTY and takes its epoch from its peers",
            dir.display(),
            aside.display()
        ),
        None => log::warn!("--reset-data: {} did not exist; starting empty", dir.display()),
    }
    Ok(aside.is_some())
}

/// How long a node started empty on purpose asks its peers for the current epoch.
const RESET_EPOCH_WAIT_MS: u64 = 5_000;

/// The election state of a node that lost its own: the highest epoch its peers report, with
/// its vote at that epoch spent on itself. A Raft voter that forgot its vote could otherwise
/// vote twice in one term; it may still have voted in a later term that no answering peer
/// knows of (its candidate down too): a second fault, outside the failure model.
async fn hard_state_from_peers(handle: &Handle) -> facto_elections::HardState {
    let me = handle.config.id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(RESET_EPOCH_WAIT_MS);
    let mut epoch = 0;
    while std::time::Instant::now() < deadline {
        let mut answers = 0;
        for (&id, addr) in handle.config.members.0.iter().filter(|(&id, _)| id != me) {
            let timeout = std::time::Duration::from_millis(500);
            if let Ok(status) = handle.client.get::<NodeStatus>(addr, "/status", timeout).await {
                answers += 1;
                epoch = epoch.max(status.epoch);
                log::debug!("node {id} is at epoch {}", status.epoch);
            }
        }
        // A majority of the others answering is as much as the cluster can know.
        if answers * 2 >= handle.config.members.0.len() - 1 {
            break;
        }
        async_std::task::sleep(std::time::Duration::from_millis(200)).await;
    }
    log::warn!("node {me} starts empty at epoch {epoch}, its vote there spent");
    facto_elections::HardState { epoch, voted_for: Some(me) }
}

/// Runs a node until the process ends or a fatal error (its database fails).
pub async fn run(config: NodeConfig, cluster_key: Option<String>, faults: faults::Faults) -> Result<()> {
    config.validate()?;
    // An empty key (FACTO_CLUSTER_KEY= in a compose file) means no key, not a key anyone
    // can present.
    let cluster_key = cluster_key.filter(|k| !k.is_empty());
    let listener = async_std::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen.clone(), source })?;
    let reset = config.reset_data && reset_data_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir)?;
    let (hard_state, checkpoint, checkpoint_version) = store.load(&config.data_dir)?;
    let (tx, rx): (Sender<Event>, Receiver<Event>) = channel::unbounded();
    let gate = Arc::new(transport::Gate::default());
    let client = Client::behind(cluster_key.clone(), gate.clone());
    let handle = Handle {
        gate,
        inbox: tx,
        stats: Arc::new(WorkerStats::default()),
        faults: Arc::new(faults),
        config: Arc::new(config),
        client,
        store: store.clone(),
        fingerprint: Fingerprint::new(random_seed()),
        refusals: Arc::default(),
        known_epoch: Arc::default(),
    };
    let hard_state = if reset {
        let taken = hard_state_from_peers(&handle).await;
        store.save_hard_state_now(&taken)?;
        taken
    } else {
        hard_state
    };
    let runtime = runtime::Runtime::new(handle.clone(), store, hard_state, (checkpoint, checkpoint_version))?;
    if handle.config.members.0.len() < 2 {
        log::warn!(
            "this cluster has one member: it will coordinate and refuse every job (a coordinator never multiplies)"
        );
    }
    log::info!(
        "node {} listening on {} ({} members, election {})",
        handle.config.id,
        handle.config.listen,
        handle.config.members.0.len(),
        handle.config.algorithm
    );
    let app = transport::server::app(handle.clone(), cluster_key);
    async_std::task::spawn(transport::server::serve(listener, app));
    runtime.run(rx).await
}
