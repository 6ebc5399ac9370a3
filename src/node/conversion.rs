//! A decimal conversion spread over the workers: the coordinator's side hands out the tasks
//! and checks every answer; the worker's side carries a task out. The layout and the checks
//! are [`crate::coordinator::conversion`]'s.

use super::{converter, Handle};
use crate::api;
use crate::bignum::Big;
use crate::coordinator::conversion::{check_piece, Conversion, Layout, PieceFault};
use facto_elections::{Epoch, NodeId};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A conversion task's deadline: this much, plus [`TASK_MS_PER_MIB`] per MiB of its number,
/// doubled for every time the task was already given up on (a slow machine still ends).
const TASK_MS_MIN: u64 = 10_000;
/// Pieces are converted all at once, on workers that may share the cores: a 37 MiB piece of
/// 100,000,000! took 47 s and more with five on two cores.
const TASK_MS_PER_MIB: u64 = 3_000;
/// Tasks given up on before the deadline stops doubling.
const DOUBLINGS_MAX: u32 = 6;

/// Why the pieces' digits could not be had.
enum DigitsFailed {
    /// A piece's digits showed the split wrong: split again.
    Split(String),
    /// No worker is left to ask.
    NoWorker,
}

/// `product`'s decimal digits, converted by `workers` as the coordinator at `epoch`: one
/// splits, all convert pieces. A task whose worker fails or answers wrong goes to another
/// worker; `Err` when none is left (the caller converts here instead).
pub(super) async fn spread(
    handle: &Handle,
    epoch: Epoch,
    product: Big,
    layout: Layout,
    workers: &[NodeId],
) -> Result<Arc<str>, String> {
    let fp = handle.fingerprint;
    let for_residue = product.clone();
    let whole = async_std::task::spawn_blocking(move || fp.of(&for_residue)).await;
    // A splitter that failed or split wrong is asked nothing more in this conversion.
    let mut candidates: VecDeque<NodeId> = workers.iter().copied().collect();
    let mut tries = 0;
    while let Some(splitter) = candidates.pop_front() {
        let started = std::time::Instant::now();
        let task = Conversion::Split { number: product.clone(), layout };
        tries += 1;
        let answer = match call(handle, epoch, splitter, &task, tries - 1).await {
            Ok(answer) => answer,
            Err(why) => {
                redone(handle, &format!("the split on node {splitter} failed: {why}"));
                continue;
            }
        };
        let checked = async_std::task::spawn_blocking(move || {
            let pieces = api::decode_pieces(&answer)?;
            if pieces.len() != layout.pieces {
                return Err(format!("{} pieces, not {}", pieces.len(), layout.pieces));
            }
            let residues: Vec<u64> = pieces.iter().map(|p| fp.of(p)).collect();
            match fp.of_decimal_pieces(&residues, layout.width) == whole {
                true => Ok((pieces, residues)),
                false => Err("its pieces do not make up the number".to_string()),
            }
        })
        .await;
        let (pieces, residues) = match checked {
            Ok(checked) => checked,
            Err(why) => {
                redone(handle, &format!("the split on node {splitter} is refused: {why}"));
                continue;
            }
        };
        let split_ms = started.elapsed().as_millis();
        let mut converters: Vec<NodeId> = std::iter::once(splitter).chain(candidates.iter().copied()).collect();
        let outcome = digits_of_pieces(handle, epoch, (pieces, residues), layout, &mut converters).await;
        // Workers that failed a piece are not asked again after a new split either.
        candidates.retain(|w| converters.contains(w));
        match outcome {
            Ok(digits) => {
                let (pieces, all_ms) = (layout.pieces, started.elapsed().as_millis());
                log::info!(
                    "decimal conversion: split on node {splitter} in {split_ms} ms, {pieces} pieces' digits in {} ms",
                    all_ms - split_ms
                );
                // Joined off the runtime: hundreds of megabytes of digits at 100,000,000!.
                return async_std::task::spawn_blocking(move || join(digits)).await;
            }
            Err(DigitsFailed::Split(why)) => redone(handle, &format!("the split on node {splitter} is refused: {why}")),
            Err(DigitsFailed::NoWorker) => return Err("no worker is left to convert a piece".into()),
        }
    }
    Err("no worker split the number".into())
}

/// Every piece's checked digits, lowest piece first. Each worker converts one piece at a
/// time; a worker that fails is removed from `workers`, and its piece goes to another. The
/// pieces are dropped on return, before the digits are joined.
async fn digits_of_pieces(
    handle: &Handle,
    epoch: Epoch,
    (pieces, residues): (Vec<Big>, Vec<u64>),
    layout: Layout,
    workers: &mut Vec<NodeId>,
) -> Result<Vec<Vec<u8>>, DigitsFailed> {
    let fp = handle.fingerprint;
    let mut pending: VecDeque<usize> = (0..pieces.len()).collect();
    let mut idle: VecDeque<NodeId> = workers.iter().copied().collect();
    let mut failures = vec![0u32; pieces.len()];
    let mut digits: Vec<Option<Vec<u8>>> = vec![None; pieces.len()];
    let mut running = FuturesUnordered::new();
    loop {
        while !pending.is_empty() && !idle.is_empty() {
            let (Some(i), Some(worker)) = (pending.pop_front(), idle.pop_front()) else { break };
            let top = i + 1 == pieces.len();
            let task = Conversion::Digits { number: pieces[i].clone(), width: if top { 0 } else { layout.width } };
            let (residue, tries) = (residues[i], failures[i]);
            running.push(async move {
                let answer = call(handle, epoch, worker, &task, tries).await.map_err(PieceFault::Converter);
                let checked = match answer {
                    Ok(d) => {
                        async_std::task::spawn_blocking(move || check_piece(&fp, residue, &d, layout, i).map(|()| d))
                            .await
                    }
                    Err(fault) => Err(fault),
                };
                (i, worker, checked)
            });
        }
        let Some((i, worker, outcome)) = running.next().await else {
            return match pending.is_empty() {
                true => Ok(digits.into_iter().flatten().collect()),
                false => Err(DigitsFailed::NoWorker),
            };
        };
        match outcome {
            Ok(d) => {
                digits[i] = Some(d);
                idle.push_back(worker);
            }
            Err(PieceFault::Converter(why)) => {
                workers.retain(|&w| w != worker);
                redone(handle, &format!("piece {i} on node {worker}: {why}"));
                failures[i] += 1;
                pending.push_back(i);
            }
            Err(PieceFault::Splitter(why)) => return Err(DigitsFailed::Split(why)),
        }
    }
}

/// The digits of the pieces (lowest first) joined, highest piece first, as the shared text the
/// core keeps.
fn join(pieces: Vec<Vec<u8>>) -> Result<Arc<str>, String> {
    let len = pieces.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(len);
    for piece in pieces.into_iter().rev() {
        out.extend_from_slice(&piece);
    }
    let text = String::from_utf8(out).map_err(|_| "the pieces' digits are not text".to_string())?;
    Ok(Arc::from(text))
}

/// Sends one conversion task to `worker` and returns its answer's bytes.
async fn call(handle: &Handle, epoch: Epoch, worker: NodeId, task: &Conversion, tries: u32) -> Result<Vec<u8>, String> {
    let addr = handle.config.members.addr(worker).ok_or(format!("node {worker} is not a member"))?.to_string();
    let mib = task.number().byte_len() as u64 >> 20;
    let timeout_ms = (TASK_MS_MIN + TASK_MS_PER_MIB * mib) << tries.min(DOUBLINGS_MAX);
    let (me, task) = (handle.config.id, task.clone());
    let body = async_std::task::spawn_blocking(move || api::encode_conversion(me, epoch, &task)).await?;
    let id = handle.trace.sent(("work", "decimal"), worker, epoch);
    let headers = [(super::trace::TRACE_HEADER, id.as_str())];
    let timeout = Duration::from_millis(timeout_ms);
    handle.client.post_bytes(&addr, "/internal/decimal", body, timeout, &headers).await.map_err(|e| {
        handle.heard_epoch(worker, &e);
        e.to_string()
    })
}

/// Counts a conversion task given up on, to be done again by another worker if one is left,
/// and says why.
fn redone(handle: &Handle, why: &str) {
    log::warn!("decimal conversion: {why}; another worker does it again if one is left");
    handle.conversion_tasks_redone.fetch_add(1, Ordering::Relaxed);
}

/// The worker's side: carries out a checked task; the answer is the pieces' frame, or the
/// digits as ASCII, with the peak resident set size of the child process that did it (see
/// [`converter`]; `None`: done here). Blocks: call it from a compute thread.
pub fn carry_out(task: Conversion, program: Option<&Path>) -> Result<(Vec<u8>, Option<u64>), String> {
    match task {
        Conversion::Split { number, layout } => converter::split(number, layout.pieces, layout.width, program),
        Conversion::Digits { number, width } => {
            let converted = converter::to_decimal(&number, program);
            let padding = (width as usize).saturating_sub(converted.decimal.len());
            if padding == 0 {
                return Ok((converted.decimal.into_bytes(), converted.child_peak_rss_bytes));
            }
            let mut out = Vec::with_capacity(padding + converted.decimal.len());
            out.resize(padding, b'0');
            out.extend_from_slice(converted.decimal.as_bytes());
            Ok((out, converted.child_peak_rss_bytes))
        }
    }
}
