//! Leader election as deterministic state machines.
//!
//! Every algorithm in this crate is a pure state machine behind the [`Election`] trait: the
//! caller feeds it [`Input`]s (a peer's message, a logical tick, failure-detector news) and
//! carries out the [`Actions`] it returns (persist this, then send these messages; leadership
//! changed). Nothing here reads a clock, opens a socket, spawns a task or draws global
//! randomness; the per-node pseudo-random stream is seeded from [`Config::seed`]. The node
//! runtime of `facto` and the seeded simulator in [`sim`] drive the very same code.
//!
//! Epochs are fencing tokens: every leadership carries an epoch strictly greater than any epoch
//! its holder had seen, no two nodes ever lead with the same epoch, and a node never accepts a
//! leader with an epoch lower than one it already accepted.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;

pub mod any;
mod backoff;
pub mod bully;
mod fencing;
#[cfg(feature = "simulation")]
pub mod kernel;
#[cfg(feature = "simulation")]
pub mod net;
pub mod raft;
pub mod ring;
pub mod rng;
#[cfg(feature = "simulation")]
pub mod sim;

pub use any::{Algorithm, AnyElection, AnyMsg};

/// A member's identity: a small integer from the cluster configuration, never an address.
pub type NodeId = u32;

/// A leadership epoch (the Raft term for Raft-lite). Only goes up; serves as a fencing token.
pub type Epoch = u64;

/// Who leads, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Leadership {
    /// This node leads at `epoch`.
    Leading { epoch: Epoch },
    /// This node follows `leader`, which leads at `epoch`.
    Following { leader: NodeId, epoch: Epoch },
    /// No leader is known (an election may be under way).
    Unknown,
}

impl Leadership {
    /// The leader's id as seen from node `me`, if any.
    pub fn leader(&self, me: NodeId) -> Option<NodeId> {
        match *self {
            Leadership::Leading { .. } => Some(me),
            Leadership::Following { leader, .. } => Some(leader),
            Leadership::Unknown => None,
        }
    }

    /// The epoch of the known leadership, if any.
    pub fn epoch(&self) -> Option<Epoch> {
        match *self {
            Leadership::Leading { epoch } | Leadership::Following { epoch, .. } => Some(epoch),
            Leadership::Unknown => None,
        }
    }
}

/// State that must be durable before the messages produced with it are sent, and that is handed
/// back to the algorithm when a node restarts (volatile state is lost in a crash).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The highest epoch this node has seen or accepted (Raft: current term).
    pub epoch: Epoch,
    /// Raft-lite: the candidate voted for in `epoch`. Unused by bully and ring.
    pub voted_for: Option<NodeId>,
}

/// Static configuration of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every member of the cluster, this node included.
    pub members: Vec<NodeId>,
    /// How often a leader tells the others it is alive, in ticks.
    pub heartbeat_ticks: u32,
    /// Base election timeout in ticks: how long silence from the leader (or from an election
    /// under way) is tolerated. Raft-lite randomizes in `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u32,
    /// Seed of this node's private pseudo-random stream (Raft-lite's randomized timeouts).
    pub seed: u64,
}

impl Config {
    /// A configuration with the default timing: heartbeat every 3 ticks, election timeout 10
    /// ticks (with the runtime's 10 ms tick: 30 ms and 100-200 ms).
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        Config { id, members, heartbeat_ticks: 3, election_ticks: 10, seed: u64::from(id) }
    }

    /// Checks that the configuration can run: `id` is a member, members are unique, timings
    /// are positive and the heartbeat is shorter than the election timeout.
    pub fn validate(&self) -> Result<(), Error> {
        if self.members.is_empty() {
            return Err(Error::Config("the member list is empty".into()));
        }
        let mut sorted = self.members.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::Config("the member list names a node twice".into()));
        }
        if !sorted.contains(&self.id) {
            return Err(Error::Config(format!("node {} is not in the member list", self.id)));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(Error::Config("need 0 < heartbeat_ticks < election_ticks".into()));
        }
        Ok(())
    }
}

/// What happened to a node, as seen by its election state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<M> {
    /// One logical tick of time passed (the runtime maps ticks to milliseconds).
    Tick,
    /// A message from a peer arrived.
    Message { from: NodeId, msg: M },
    /// The failure detector believes `peer` is unreachable (e.g. a send to it failed).
    PeerDown(NodeId),
    /// The failure detector believes `peer` is reachable again.
    PeerUp(NodeId),
    /// A higher epoch was seen outside the election's own messages (a coordinator's request,
    /// a peer's refusal). The epoch that fences work is the election's epoch, so the election
    /// moves up to it: a leader below it steps down, and the next leadership is above it.
    EpochSeen(Epoch),
}

/// What the caller must do after a step, in this order: make `persist` durable, then send
/// `messages`, then act on `leadership`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actions<M> {
    /// Messages to send: (destination, message).
    pub messages: Vec<(NodeId, M)>,
    /// Hard state to make durable before any of `messages` is sent.
    pub persist: Option<HardState>,
    /// Set when this node's view of the leadership changed during the step.
    pub leadership: Option<Leadership>,
}

impl<M> Default for Actions<M> {
    fn default() -> Self {
        Actions { messages: Vec::new(), persist: None, leadership: None }
    }
}

impl<M> Actions<M> {
    /// Maps every message with `f` (used to wrap an algorithm's messages into [`AnyMsg`]).
    pub fn map<N>(self, f: impl Fn(M) -> N) -> Actions<N> {
        Actions {
            messages: self.messages.into_iter().map(|(to, m)| (to, f(m))).collect(),
            persist: self.persist,
            leadership: self.leadership,
        }
    }
}

/// A leader election algorithm as a deterministic state machine.
///
/// Implement it outside this crate to plug in another algorithm: the simulator in [`sim`] runs
/// any implementation (see `examples/custom_election.rs` at the workspace root).
pub trait Election {
    /// The algorithm's wire message. Serializable so a runtime can send it over any transport.
    type Msg: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;

    /// The algorithm's name, as picked on the command line.
    fn name(&self) -> &'static str;

    /// Feeds one input; returns what the caller must do.
    fn step(&mut self, input: Input<Self::Msg>) -> Actions<Self::Msg>;

    /// This node's current view of the leadership.
    fn leadership(&self) -> Leadership;

    /// The state to persist (also returned in [`Actions::persist`] whenever it changes).
    fn hard_state(&self) -> HardState;

    /// The checkpoint_version of this node's coordinator checkpoint (its version). Algorithms that can
    /// use it carry it in their election messages: a Raft-lite voter refuses a candidate less
    /// fresh than itself.
    fn set_checkpoint_version(&mut self, checkpoint_version: u64);
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No algorithm has this name.
    #[error("unknown election algorithm '{0}' (choose one of: bully, ring, raft)")]
    UnknownAlgorithm(String),
    /// The configuration cannot run.
    #[error("invalid election configuration: {0}")]
    Config(String),
}
