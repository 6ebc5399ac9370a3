//! The JSON shapes nodes and clients exchange. Client-facing shapes (`/jobs`, `/status`) are
//! a contract for scripts: fields may be added, never renamed or dropped.

use crate::bignum::Big;
use crate::coordinator::{JobProgress, OpId, OpRef};
use facto_elections::{AnyMsg, Epoch, NodeId};
use serde::{Deserialize, Serialize};

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
    /// Decimal digits of n!, once done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<String>,
}

impl JobInfo {
    /// Describes a job from the scheduler's progress and, once known, its decimal result.
    pub fn new(p: &JobProgress, result: Option<String>) -> JobInfo {
        let state = if result.is_some() {
            "done"
        } else if p.ops_done == 0 && !p.finished {
            "queued"
        } else {
            "running"
        };
        JobInfo {
            id: p.id.clone(),
            n: p.n,
            state: state.into(),
            progress: if p.ops_total == 0 { 1.0 } else { p.ops_done as f64 / p.ops_total as f64 },
            operations_total: p.ops_total,
            operations_done: p.ops_done,
            operations_reexecuted: p.ops_reexecuted,
            operations_in_flight: p.ops_in_flight,
            result,
        }
    }
}

/// `GET /status`: one node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub address: String,
    /// "coordinator", "worker" or "candidate".
    pub role: String,
    pub leader: Option<NodeId>,
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
    /// How many checkpoint facts this node has applied (its freshness in elections).
    #[serde(default)]
    pub checkpoint_version: u64,
    /// Cut off from its peers by an admin request (`facto chaos`).
    #[serde(default)]
    pub partitioned: bool,
    /// The coordinator lists its jobs here (results left out); other nodes list none.
    #[serde(default)]
    pub jobs: Vec<JobInfo>,
}

/// Any error answer: `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /internal/election`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ElectionEnvelope {
    pub from: NodeId,
    pub msg: AnyMsg,
}

/// `POST /internal/checkpoint`: facts from the coordinator at `epoch`, to make durable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointWrite {
    pub from: NodeId,
    pub epoch: Epoch,
    pub facts: Vec<crate::checkpoint::Fact>,
}

/// `POST /internal/checkpoint/query`: a new coordinator asks for a peer's facts, except those
/// of the jobs it has finished already (their results can be large).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckpointQuery {
    pub finished: std::collections::BTreeSet<String>,
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

/// `POST /internal/work`: a batch of operations from the coordinator at `epoch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkRequest {
    pub from: NodeId,
    pub epoch: Epoch,
    pub batch: u64,
    pub items: Vec<WorkRequestItem>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkRequestItem {
    pub op: WireOp,
    #[serde(with = "b64_vec")]
    pub operands: Vec<Big>,
}

/// The answer to a [`WorkRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkResponse {
    pub results: Vec<WorkResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkResult {
    pub op: WireOp,
    #[serde(with = "b64")]
    pub product: Big,
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

mod b64_vec {
    use crate::bignum::Big;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "super::b64")] Big);

    pub fn serialize<S: Serializer>(v: &[Big], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<Wrapped> = v.iter().cloned().map(Wrapped).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Big>, D::Error> {
        Ok(Vec::<Wrapped>::deserialize(d)?.into_iter().map(|w| w.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_numbers_round_trip_through_json() {
        let item = WorkResult { op: WireOp { job: "3-1".into(), level: 0, index: 2 }, product: Big::from(1u64 << 40) };
        let text = serde_json::to_string(&item).unwrap();
        assert!(text.contains(r#""product":"AAAAAAAB""#), "{text}");
        let back: WorkResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back.product, Big::from(1u64 << 40));
    }

    #[test]
    fn submit_requests_refuse_negative_or_fractional_n() {
        for bad in [r#"{"n": -5}"#, r#"{"n": 2.5}"#, r#"{"n": "7"}"#, r#"{}"#, r#"{"n": 1, "x": 2}"#, "nonsense"] {
            assert!(serde_json::from_str::<SubmitRequest>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::from_str::<SubmitRequest>(r#"{"n": 20}"#).unwrap().n, 20);
    }
}
