//! The JSON shapes nodes and clients exchange. Client-facing shapes (`/jobs`, `/status`) are
//! a contract for scripts: fields may be added, never renamed or dropped.

use crate::bignum::Big;
use crate::coordinator::conversion::{Conversion, Layout};
use crate::coordinator::{JobProgress, OpId, OpRef, Task, WorkItem};
use crate::frame;
use facto_elections::{AnyMsg, Epoch, NodeId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `POST /admin/stall` and `POST /admin/partition` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisruptRequest {
    pub duration_ms: u64,
}

/// What an admin request did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminResponse {
    pub node: u32,
    /// `crash`, `stall`, `partition` or `heal`.
    pub fault: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `POST /jobs` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub n: u64,
    /// The client's idempotency key: resubmitting with the same key (after a timeout or a
    /// coordinator crash) returns the job the first attempt created instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// `POST /internal/jobs/wait` body: a follower's clients' long-polls, forwarded together.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    pub ids: Vec<String>,
    /// How long the coordinator may hold the answer while none of the jobs is done.
    pub wait_ms: u64,
}

/// Its answer: the jobs done by then, results inline; and the jobs the follower must ask
/// about one by one (unknown, past retention, or with results too large to travel here).
/// Jobs still running are in neither.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchAnswer {
    pub done: Vec<JobInfo>,
    pub ask: Vec<String>,
}

/// A job as clients see it (`POST /jobs`, `GET /jobs/<id>`, `GET /jobs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: String,
    pub n: u64,
    /// "queued", "running" or "done".
    pub state: String,
    /// Fraction of operations done, 0.0 to 1.0.
    pub progress: f64,
    pub operations_total: u64,
    pub operations_done: u64,
    /// Operations dispatched again because a worker failed or was too slow, or because a
    /// coordinator crashed while they were in flight.
    pub operations_reexecuted: u64,
    /// Operations assigned to a worker right now.
    #[serde(default)]
    pub operations_in_flight: u64,
    /// Milliseconds the job has taken so far (to its product, once it has one), by the
    /// coordinator that accepted it; `/status` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// The coordinator that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<NodeId>,
    /// The workers holding tasks of this job right now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<NodeId>,
    /// Decimal digits of n!, once done (shared: 10,000,000! has 65 million digits, which are
    /// never copied on a node's event loop). Left out of the JSON above
    /// [`RESULT_INLINE_DIGITS_MAX`] digits: fetch them from `digits_url`.
    #[serde(skip_serializing_if = "not_inline", default)]
    pub result: Option<Arc<str>>,
    /// How many decimal digits the result has, once done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub digits: Option<u64>,
    /// Where the digits stream from once done (`GET /jobs/<id>/digits`, with `?offset=` or
    /// a `Range` header to resume).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub digits_url: Option<String>,
    /// Milliseconds from the coordinator receiving the submission to the root product, by
    /// its clock; only from the coordinator that accepted the job.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub product_ms: Option<u64>,
}

/// Above this many digits a job's JSON leaves `result` out and names `digits_url` only: JSON
/// is read whole, and 10,000,000! has 65 million digits.
pub const RESULT_INLINE_DIGITS_MAX: usize = 1 << 20;

fn not_inline(result: &Option<Arc<str>>) -> bool {
    result.as_ref().is_none_or(|digits| digits.len() > RESULT_INLINE_DIGITS_MAX)
}

impl JobInfo {
    /// Whether the job has its result (in `result`, or at `digits_url` when it is large).
    pub fn is_done(&self) -> bool {
        self.result.is_some() || self.digits_url.is_some()
    }

    /// Describes a job from the scheduler's progress and, once known, its decimal result.
    pub fn new(p: &JobProgress, result: Option<Arc<str>>) -> JobInfo {
        let state = if p.ops_done == 0 && !p.finished { "queued" } else { "running" };
        let mut job = JobInfo {
            id: p.id.clone(),
            n: p.n,
            state: state.into(),
            progress: if p.ops_total == 0 { 1.0 } else { p.ops_done as f64 / p.ops_total as f64 },
            operations_total: p.ops_total,
            operations_done: p.ops_done,
            operations_reexecuted: p.ops_reexecuted,
            operations_in_flight: p.ops_in_flight,
            workers: p.workers.clone(),
            elapsed_ms: None,
            coordinator: None,
            result: None,
            digits: None,
            digits_url: None,
            product_ms: None,
        };
        if let Some(digits) = &result {
            job.mark_done(digits.len());
        }
        JobInfo { result, ..job }
    }

    /// Marks the job done with a result of `digits` digits (whether or not this answer
    /// carries them), and names where they stream from.
    pub fn mark_done(&mut self, digits: usize) {
        self.state = "done".into();
        self.digits = Some(digits as u64);
        self.digits_url = Some(format!("/jobs/{}/digits", self.id));
    }
}

/// `GET /status`: one node's view of itself and the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub address: String,
    /// "coordinator", "worker" or "candidate".
    pub role: String,
    pub leader: Option<NodeId>,
    /// The epoch this node fences with: it refuses work and checkpoint writes from any
    /// lower one (its election's epoch, which every higher epoch it sees moves up).
    pub epoch: Epoch,
    pub election: String,
    /// Operations this node multiplied as a worker.
    pub operations_computed: u64,
    /// The most values any single operation on this node multiplied (never above 4).
    pub max_operands: u64,
    /// Milliseconds since this node last heard from the coordinator (0 on the coordinator).
    pub last_leader_contact_ms: Option<u64>,
    pub uptime_ms: u64,
    /// Wall-clock time this process started (ms since the Unix epoch): a new value means the
    /// node restarted, whatever restarted it.
    #[serde(default)]
    pub started_unix_ms: u64,
    /// How often the supervisor (`facto cluster`) restarted this node.
    #[serde(default)]
    pub restarts: u64,
    /// How many checkpoint facts this node has applied (Raft-lite voters compare it).
    #[serde(default)]
    pub checkpoint_version: u64,
    /// Cut off from its peers by an admin request (`facto chaos`).
    #[serde(default)]
    pub partitioned: bool,
    /// The coordinator is taking over: it gathers its peers' checkpoints before it resumes
    /// the jobs (`role` already says "coordinator").
    #[serde(default)]
    pub taking_over: bool,
    /// Body bytes of this node's calls to its peers, sent and received, since it started.
    #[serde(default)]
    pub peer_bytes: u64,
    /// Conversion tasks (a split of a result into pieces, or a piece's digits) this node is
    /// carrying out as a worker.
    #[serde(default)]
    pub conversion_tasks_running: u64,
    /// Conversion tasks this node carried out as a worker since it started.
    #[serde(default)]
    pub conversion_tasks_done: u64,
    /// Conversion tasks this node, as coordinator, gave to another worker after a worker
    /// failed or answered wrong, since it started.
    #[serde(default)]
    pub conversion_tasks_redone: u64,
    /// Peak resident set size of the child process of this node's latest decimal conversion
    /// (0: none yet); the node's own figure leaves it out.
    #[serde(default)]
    pub converter_peak_rss_bytes: u64,
    /// Peer messages this node refused (a stale or absurd epoch, a sender that is not the
    /// leader, facts that do not fit their job's plan) since it started.
    #[serde(default)]
    pub refused_messages: u64,
    /// The coordinator lists its newest jobs here (results left out; `/status?jobs=N` says
    /// how many, 20 unless asked); other nodes list none.
    #[serde(default)]
    pub jobs: Vec<JobInfo>,
    /// The coordinator's count of the jobs it holds, by state (finished jobs past retention
    /// are not held); other nodes show none.
    #[serde(default)]
    pub job_counts: Option<crate::coordinator::JobCounts>,
    /// This node's member list as [`crate::config::Members::fingerprint`] (hex): members
    /// whose lists differ refuse each other.
    #[serde(default)]
    pub member_list: String,
    /// The settings every member must share, as [`crate::config::SharedSettings::text`]:
    /// members whose settings differ refuse each other.
    #[serde(default)]
    pub settings: String,
    /// The last changes of coordinator this node saw, oldest first.
    #[serde(default)]
    pub leadership_log: Vec<LeadershipChange>,
}

/// One change of coordinator as a node saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipChange {
    /// When, by the node's clock (compare with its `uptime_ms`).
    pub at_ms: u64,
    /// The coordinator from then on (`None`: none known, an election under way).
    pub leader: Option<NodeId>,
    pub epoch: Epoch,
    /// Why, as far as the node knows: "timeout", "peer down", "higher epoch seen",
    /// "new coordinator heard", "elected", "takeover finished".
    pub reason: String,
    /// Since the node lost its last coordinator (for a new one).
    pub took_ms: Option<u64>,
}

/// Any error answer: `{"error": "..."}`; a member refusing a peer's request from a lower
/// epoch than its own adds `"known_epoch"`, which the requester's election moves past.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_epoch: Option<Epoch>,
}

/// `POST /internal/election`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ElectionEnvelope {
    pub from: NodeId,
    pub msg: AnyMsg,
}

/// `POST /internal/checkpoint`: facts from the coordinator at `epoch`, to make durable. The
/// body is a facts frame ([`crate::checkpoint::encode_facts`]) with this as its head.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointWrite {
    pub from: NodeId,
    pub epoch: Epoch,
}

/// `POST /internal/checkpoint/query`: a new coordinator asks for a peer's facts, except those
/// of the jobs it has finished already (their results can be large). The answer is a facts
/// frame with an empty head.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckpointQuery {
    pub finished: std::collections::BTreeSet<String>,
    /// The coordinator asking, and its epoch: the answering node refuses checkpoint writes
    /// and work from lower epochs from then on (what it answered is all a deposed
    /// coordinator can have had acknowledged through it).
    pub from: NodeId,
    pub epoch: Epoch,
}

/// `POST /internal/checkpoint/root`: a finished job whose root product the coordinator
/// needs (to convert its result to decimal again); answered with a facts frame holding
/// the root's `product` fact, or 404 when this node does not hold it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootQuery {
    pub job: String,
}

/// One operation on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireOp {
    pub job: String,
    pub level: u32,
    pub index: u64,
}

impl From<&OpRef> for WireOp {
    fn from(op: &OpRef) -> WireOp {
        WireOp { job: op.job.clone(), level: op.op.level, index: op.op.index }
    }
}

impl From<WireOp> for OpRef {
    fn from(w: WireOp) -> OpRef {
        OpRef { job: w.job, op: OpId { level: w.level, index: w.index } }
    }
}

/// `POST /internal/work` is a frame ([`crate::frame`]): this header, then the operands of
/// every task, task after task.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkRequest {
    pub from: NodeId,
    pub epoch: Epoch,
    pub batch: u64,
    pub tasks: Vec<WireTask>,
}

/// One task in a [`WorkRequest`]: its root operation, its job's n, and how many of the frame's
/// numbers are its operands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTask {
    pub op: WireOp,
    pub n: u64,
    pub operands: u32,
}

/// The answer to a [`WorkRequest`], also a frame: this header, then one product per entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkResponse {
    pub results: Vec<WireOp>,
}

/// The frame of a batch of tasks.
pub fn encode_work(from: NodeId, epoch: Epoch, batch: u64, items: &[WorkItem]) -> Result<Vec<u8>, String> {
    let tasks =
        items.iter().map(|i| WireTask { op: WireOp::from(&i.op), n: i.n, operands: i.operands.len() as u32 }).collect();
    let numbers: Vec<&Big> = items.iter().flat_map(|i| &i.operands).collect();
    frame::encode(&WorkRequest { from, epoch, batch, tasks }, &numbers)
}

/// A work frame's sender, epoch and tasks.
pub type DecodedWork = (NodeId, Epoch, Vec<(OpRef, Task)>);

/// A batch of tasks from its frame: the header's routing fields and every task with its
/// operands. The operand counts must add up to the numbers the frame holds.
pub fn decode_work(bytes: &[u8]) -> Result<DecodedWork, String> {
    let (header, numbers): (WorkRequest, Vec<Big>) = frame::decode(bytes)?;
    let wanted: u64 = header.tasks.iter().map(|t| u64::from(t.operands)).sum();
    if wanted != numbers.len() as u64 {
        return Err(format!("the tasks name {wanted} operands; the frame holds {}", numbers.len()));
    }
    let mut numbers = numbers.into_iter();
    let tasks = header
        .tasks
        .into_iter()
        .map(|t| {
            let op = OpRef::from(t.op);
            let operands = numbers.by_ref().take(t.operands as usize).collect();
            (op.clone(), Task { n: t.n, op: op.op, operands })
        })
        .collect();
    Ok((header.from, header.epoch, tasks))
}

/// The frame of a batch's products.
pub fn encode_products(products: &[(OpRef, Big)]) -> Result<Vec<u8>, String> {
    let results = products.iter().map(|(op, _)| WireOp::from(op)).collect();
    frame::encode(&WorkResponse { results }, &products.iter().map(|(_, p)| p).collect::<Vec<_>>())
}

/// A batch's products from their frame.
pub fn decode_products(bytes: &[u8]) -> Result<Vec<(OpRef, Big)>, String> {
    let (header, numbers): (WorkResponse, Vec<Big>) = frame::decode(bytes)?;
    if header.results.len() != numbers.len() {
        return Err(format!("{} results but {} products", header.results.len(), numbers.len()));
    }
    Ok(header.results.into_iter().map(OpRef::from).zip(numbers).collect())
}

/// The header of a conversion task's frame (its one number follows).
#[derive(Debug, Serialize, Deserialize)]
pub struct ConversionRequest {
    pub from: NodeId,
    pub epoch: Epoch,
    /// Split into pieces of this layout, or (`None`) convert to digits padded to `width`.
    pub split: Option<Layout>,
    #[serde(default)]
    pub width: u64,
}

/// A conversion task as a frame.
pub fn encode_conversion(from: NodeId, epoch: Epoch, task: &Conversion) -> Result<Vec<u8>, String> {
    let (split, width) = match task {
        Conversion::Split { layout, .. } => (Some(*layout), 0),
        Conversion::Digits { width, .. } => (None, *width),
    };
    frame::encode(&ConversionRequest { from, epoch, split, width }, &[task.number()])
}

/// A conversion task's sender, epoch and task from its frame, which holds exactly one
/// number.
pub fn decode_conversion(bytes: &[u8]) -> Result<(NodeId, Epoch, Conversion), String> {
    let (header, mut numbers): (ConversionRequest, Vec<Big>) = frame::decode(bytes)?;
    if numbers.len() != 1 {
        return Err(format!("a conversion task carries one number, not {}", numbers.len()));
    }
    let number = numbers.pop().ok_or("a conversion task carries one number")?;
    let task = match header.split {
        Some(layout) => Conversion::Split { number, layout },
        None => Conversion::Digits { number, width: header.width },
    };
    Ok((header.from, header.epoch, task))
}

/// A split's answer: the pieces, lowest first.
pub fn encode_pieces(pieces: &[Big]) -> Result<Vec<u8>, String> {
    frame::encode(&(), &pieces.iter().collect::<Vec<_>>())
}

/// The pieces of a split's answer.
pub fn decode_pieces(bytes: &[u8]) -> Result<Vec<Big>, String> {
    frame::decode::<()>(bytes).map(|(_, pieces)| pieces)
}

/// Big numbers travel as base64 of their little-endian bytes: binary-safe inside JSON and a
/// third of the size of decimal digits.
pub(crate) mod b64 {
    use crate::bignum::Big;
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &Big, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(n.to_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Big, D::Error> {
        let text = <&str>::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        Ok(Big::from_bytes(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_numbers_round_trip_through_json() {
        let fact = crate::checkpoint::Fact::Product {
            job: "3-1".into(),
            op: OpId { level: 0, index: 2 },
            product: Big::from(1u64 << 40),
        };
        let text = serde_json::to_string(&fact).unwrap();
        assert!(text.contains(r#""product":"AAAAAAAB""#), "{text}");
        assert_eq!(serde_json::from_str::<crate::checkpoint::Fact>(&text).unwrap(), fact);
    }

    #[test]
    fn a_batch_and_its_products_round_trip_through_frames() {
        let op = |index| OpRef { job: "2-1".into(), op: OpId { level: 6, index } };
        let items = vec![
            WorkItem { op: op(0), n: 1_000_000, operands: vec![Big::from(3), Big::from(5)] },
            WorkItem { op: op(1), n: 1_000_000, operands: vec![] },
        ];
        let (from, epoch, tasks) = decode_work(&encode_work(4, 9, 77, &items).unwrap()).unwrap();
        assert_eq!((from, epoch, tasks.len()), (4, 9, 2));
        assert_eq!(tasks[0].1.operands, items[0].operands);
        assert_eq!((tasks[1].0.clone(), tasks[1].1.operands.len()), (op(1), 0));
        let products = vec![(op(0), Big::factorial(50)), (op(1), Big::from(1))];
        assert_eq!(decode_products(&encode_products(&products).unwrap()).unwrap(), products);
    }

    #[test]
    fn submit_requests_refuse_negative_or_fractional_n() {
        for bad in [r#"{"n": -5}"#, r#"{"n": 2.5}"#, r#"{"n": "7"}"#, r#"{}"#, r#"{"n": 1, "x": 2}"#, "nonsense"] {
            assert!(serde_json::from_str::<SubmitRequest>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::from_str::<SubmitRequest>(r#"{"n": 20}"#).unwrap().n, 20);
    }
}
