//! The peer routes under `/internal/`, for members only: election messages, work (tasks and
//! conversion tasks), and checkpoint writes and reads.

use super::client_api::unavailable;
use super::guards::check_sender;
use super::respond::{
    error, frame_response, read_body, read_json, refused, CLIENT_BODY_BYTES_MAX, INTERNAL_BODY_BYTES_MAX,
};
use crate::api::{self, CheckpointQuery, CheckpointWrite, ElectionEnvelope, RootQuery};
use crate::checkpoint::{decode_facts, encode_facts};
use crate::coordinator::conversion::Conversion;
use crate::coordinator::{OpRef, Task};
use crate::node::trace::{election_kind, TRACE_HEADER};
use crate::node::{Event, Handle, Input, WorkRefused};
use crate::node_core::{validate, worker};
use facto_elections::{Epoch, NodeId};
use tide::{Request, Response, StatusCode};

pub(super) async fn election(mut req: Request<Handle>) -> tide::Result {
    let envelope: ElectionEnvelope = match read_json(&mut req, CLIENT_BODY_BYTES_MAX).await {
        Ok(e) => e,
        Err(res) => return Ok(res),
    };
    let handle = req.state();
    if let Err(res) = check_sender(&req, envelope.from) {
        return Ok(res);
    }
    traced(&req, election_kind(&envelope.msg), envelope.from, envelope.msg.epoch());
    let known = handle.known_epoch.load(std::sync::atomic::Ordering::Relaxed);
    if let Err(why) = validate::epoch_ahead(known, envelope.msg.epoch()) {
        handle.refusals.note(envelope.from, "an election message", &why);
        return Ok(error(StatusCode::Conflict, &why));
    }
    handle.send(Event::Input(Input::Election { from: envelope.from, msg: envelope.msg }));
    Ok(Response::new(StatusCode::NoContent))
}

/// `POST /internal/work`: a frame of tasks; answers a frame of their products.
pub(super) async fn work(req: Request<Handle>) -> tide::Result {
    assigned(req, "work", |bytes, max_n| {
        let (from, epoch, tasks) = api::decode_work(bytes)?;
        tasks.iter().try_for_each(|(_, task)| worker::check(task, max_n))?;
        Ok((from, epoch, Assignment::Tasks(tasks)))
    })
    .await
}

/// `POST /internal/decimal`: a conversion task's frame (see
/// [`crate::coordinator::conversion`]); answers the pieces' frame, or the digits.
pub(super) async fn decimal(req: Request<Handle>) -> tide::Result {
    assigned(req, "decimal", |bytes, max_n| {
        let (from, epoch, task) = api::decode_conversion(bytes)?;
        task.check(max_n)?;
        Ok((from, epoch, Assignment::Conversion(task)))
    })
    .await
}

/// Work a coordinator assigns, decoded and checked against `--max-n`.
enum Assignment {
    Tasks(Vec<(OpRef, Task)>),
    Conversion(Conversion),
}

/// Reads an assignment's frame, decodes and checks it off the runtime (`decode` is given the
/// bytes and this node's `--max-n`), and has the core admit it (fencing) before the work.
async fn assigned(
    mut req: Request<Handle>,
    kind: &'static str,
    decode: impl FnOnce(&[u8], u64) -> Result<(NodeId, Epoch, Assignment), String> + Send + 'static,
) -> tide::Result {
    let bytes = match read_body(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    let handle = req.state().clone();
    let max_n = handle.config.max_n;
    let (from, epoch, assignment) = match async_std::task::spawn_blocking(move || decode(&bytes, max_n)).await {
        Ok(d) => d,
        Err(why) => return Ok(error(StatusCode::BadRequest, &why)),
    };
    if let Err(res) = check_sender(&req, from) {
        return Ok(res);
    }
    traced(&req, ("work", kind), from, epoch);
    let answer = match assignment {
        Assignment::Tasks(tasks) => handle.work(from, epoch, tasks).await,
        Assignment::Conversion(task) => handle.convert(from, epoch, task).await,
    };
    Ok(match answer {
        Ok(answer) => frame_response(answer),
        Err(WorkRefused::Fenced(refusal)) => {
            handle.refusals.note(from, kind, &refusal.why);
            refused(&refusal)
        }
        Err(WorkRefused::Failed(why)) => error(StatusCode::InternalServerError, &why),
    })
}

/// `POST /internal/checkpoint`: a facts frame from the coordinator, acknowledged once the
/// facts are on this node's disk.
pub(super) async fn write_checkpoint(mut req: Request<Handle>) -> tide::Result {
    let bytes = match read_body(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    let decoded = async_std::task::spawn_blocking(move || decode_facts::<CheckpointWrite>(&bytes)).await;
    let (write, facts) = match decoded {
        Ok(d) => d,
        Err(why) => return Ok(error(StatusCode::BadRequest, &why)),
    };
    let handle = req.state();
    if let Err(res) = check_sender(&req, write.from) {
        return Ok(res);
    }
    traced(&req, ("replication", "checkpoint_write"), write.from, write.epoch);
    Ok(match handle.apply_facts(write.from, write.epoch, facts).await {
        Ok(()) => Response::new(StatusCode::NoContent),
        Err(refusal) => {
            handle.refusals.note(write.from, "a checkpoint write", &refusal.why);
            refused(&refusal)
        }
    })
}

/// `POST /internal/checkpoint/query`: this node's facts, as a facts frame.
pub(super) async fn read_checkpoint(mut req: Request<Handle>) -> tide::Result {
    let query: CheckpointQuery = match read_json(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(q) => q,
        Err(res) => return Ok(res),
    };
    let handle = req.state();
    if let Err(res) = check_sender(&req, query.from) {
        return Ok(res);
    }
    traced(&req, ("gather", "checkpoint_query"), query.from, query.epoch);
    let facts = match handle.checkpoint(query.from, query.epoch, query.finished).await {
        Some(Ok(facts)) => facts,
        Some(Err(refusal)) => {
            handle.refusals.note(query.from, "a checkpoint query", &refusal.why);
            return Ok(refused(&refusal));
        }
        None => return Ok(unavailable()),
    };
    Ok(match async_std::task::spawn_blocking(move || encode_facts((), &facts)).await {
        Ok(frame) => frame_response(frame),
        Err(why) => error(StatusCode::InternalServerError, &why),
    })
}

/// `POST /internal/checkpoint/root`: a finished job's root product from this node's disk.
pub(super) async fn read_root(mut req: Request<Handle>) -> tide::Result {
    let query: RootQuery = match read_json(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(q) => q,
        Err(res) => return Ok(res),
    };
    let store = req.state().store.clone();
    let read = async_std::task::spawn_blocking(move || match store.root_fact(&query.job) {
        Ok(Some(root)) => encode_facts((), [&root]).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    })
    .await;
    Ok(match read {
        Ok(Some(frame)) => frame_response(frame),
        Ok(None) => error(StatusCode::NotFound, "this node does not hold that job's result"),
        Err(why) => error(StatusCode::InternalServerError, &why),
    })
}

/// Notes a peer's message in this node's trace, with the id its sender gave it.
fn traced(req: &Request<Handle>, kind: (&str, &str), from: NodeId, epoch: Epoch) {
    let id = req.header(TRACE_HEADER).map(|v| v.as_str());
    req.state().trace.received(kind, from, epoch, id);
}
