//! Sending checkpoint facts to the peers, and gathering theirs when this node takes over.

use super::trace::TRACE_HEADER;
use super::Handle;
use crate::api::{CheckpointQuery, CheckpointWrite, RootQuery};
use crate::bignum::Big;
use crate::checkpoint::{decode_facts, encode_facts, Fact};
use crate::coordinator::{fingerprint, OpId, Plan};
use crate::node_core::{validate, Input, Sent};
use async_std::channel;
use facto_elections::{Epoch, NodeId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Sends a checkpoint write to `peer`; reports how it came out.
pub async fn send_facts(
    handle: Handle,
    replication: u64,
    (peer, epoch): (NodeId, Epoch),
    facts: Arc<Vec<Fact>>,
    timeout_ms: u64,
) -> Input {
    let sent = send_write(&handle, (peer, epoch), facts, Duration::from_millis(timeout_ms)).await;
    Input::FactsSent { replication, peer, sent }
}

/// The frame is built off the runtime's threads: with large products it is megabytes.
async fn send_write(handle: &Handle, (peer, epoch): (NodeId, Epoch), facts: Arc<Vec<Fact>>, timeout: Duration) -> Sent {
    let Some(addr) = handle.config.members.addr(peer).map(str::to_string) else { return Sent::Failed };
    let me = handle.config.id;
    let frame =
        async_std::task::spawn_blocking(move || encode_facts(CheckpointWrite { from: me, epoch }, facts.iter()));
    let frame = match frame.await {
        Ok(f) => f,
        Err(why) => {
            log::error!("cannot encode a checkpoint write: {why}");
            return Sent::Failed;
        }
    };
    let started = std::time::Instant::now();
    let id = handle.trace.sent(("replication", "checkpoint_write"), peer, epoch);
    match handle.client.post_bytes(&addr, "/internal/checkpoint", frame, timeout, &[(TRACE_HEADER, &id)]).await {
        Ok(_) => {
            handle.metrics.replicated(peer, started.elapsed().as_secs_f64());
            Sent::Durable
        }
        Err(e) => {
            log::debug!("checkpoint to {addr} failed: {e}");
            handle.heard_epoch(peer, &e);
            Sent::Failed
        }
    }
}

/// Asks `peer` for its checkpoint, leaving out the jobs in `finished`.
pub async fn ask_checkpoint(
    handle: Handle,
    gathering: u64,
    (peer, epoch): (NodeId, Epoch),
    finished: Arc<BTreeSet<String>>,
    timeout_ms: u64,
) -> Input {
    let facts = query_checkpoint(&handle, (peer, epoch), &finished, Duration::from_millis(timeout_ms)).await;
    Input::CheckpointAnswered { gathering, peer, facts }
}

/// A peer's checkpoint (`None`: it refused, failed or did not answer within `timeout`).
async fn query_checkpoint(
    handle: &Handle,
    (peer, epoch): (NodeId, Epoch),
    finished: &BTreeSet<String>,
    timeout: Duration,
) -> Option<Vec<Fact>> {
    let addr = handle.config.members.addr(peer)?.to_string();
    let query =
        serde_json::to_vec(&CheckpointQuery { finished: finished.clone(), from: handle.config.id, epoch }).ok()?;
    let id = handle.trace.sent(("gather", "checkpoint_query"), peer, epoch);
    let headers = [(TRACE_HEADER, id.as_str())];
    let facts = match handle.client.post_bytes(&addr, "/internal/checkpoint/query", query, timeout, &headers).await {
        Ok(frame) => async_std::task::spawn_blocking(move || decode_facts::<()>(&frame)).await,
        Err(e) => {
            handle.heard_epoch(peer, &e);
            Err(e.to_string())
        }
    };
    match facts {
        Ok(((), facts)) => Some(facts),
        Err(why) => {
            log::debug!("no checkpoint from {addr}: {why}");
            None
        }
    }
}

/// How long a peer may take to send a finished job's root product (tens of megabytes for
/// 10,000,000!).
const ROOT_TIMEOUT_MS: u64 = 10_000;

/// A finished job's root read for copying it to a second disk.
pub async fn fetch_root(handle: Handle, job: String, n: u64) -> Input {
    let (root, on_this_disk) =
        find_root(&handle, &job, n).await.map_or((None, false), |(root, here)| (Some(root), here));
    Input::RootFetched { job, root, on_this_disk }
}

/// The root product of finished job `job` (n!), and whether it came from this node's disk:
/// from this node's disk, or else from the first peer that has it (a job's root lies on the
/// coordinator that finished it and on one replica; memory keeps neither). Whichever copy is
/// found must pass its check.
pub async fn find_root(handle: &Handle, job: &str, n: u64) -> Option<(Big, bool)> {
    let store = handle.store.clone();
    let id = job.to_string();
    match async_std::task::spawn_blocking(move || store.root_fact(&id)).await {
        Ok(Some(Fact::Product { product, .. })) => match is_root(handle, n, product).await {
            Some(root) => return Some((root, true)),
            None => log::error!("job {job}: the result on this node's disk is not {n}!"),
        },
        Ok(_) => {}
        Err(e) => log::error!("job {job}: cannot read its result from disk: {e}"),
    }
    let root = is_root(handle, n, peer_root(handle, job).await?).await;
    if root.is_none() {
        log::error!("job {job}: the result a peer sent is not {n}!");
    }
    root.map(|root| (root, false))
}

/// `product` if it is n! (checked off the runtime).
async fn is_root(handle: &Handle, n: u64, product: Big) -> Option<Big> {
    let fp = handle.fingerprint;
    async_std::task::spawn_blocking(move || {
        let plan = Plan::new(n);
        fingerprint::check_subtree(&fp, &plan, plan.root()?, &product).then_some(product)
    })
    .await
}

fn peers(handle: &Handle) -> Vec<(NodeId, String)> {
    let me = handle.config.id;
    handle.config.members.0.iter().filter(|(&id, _)| id != me).map(|(&id, a)| (id, a.clone())).collect()
}

/// A finished job's root product from the first peer that sends one.
async fn peer_root(handle: &Handle, job: &str) -> Option<Big> {
    let query = serde_json::to_vec(&RootQuery { job: job.to_string() }).ok()?;
    let (tx, rx) = channel::unbounded();
    for (_, addr) in peers(handle) {
        let (handle, tx, query) = (handle.clone(), tx.clone(), query.clone());
        async_std::task::spawn(async move {
            let timeout = Duration::from_millis(ROOT_TIMEOUT_MS);
            let root = match handle.client.post_bytes(&addr, "/internal/checkpoint/root", query, timeout, &[]).await {
                Ok(frame) => async_std::task::spawn_blocking(move || decode_facts::<()>(&frame)).await.ok(),
                Err(_) => None,
            };
            let root = root.and_then(|((), facts)| {
                facts.into_iter().find_map(|f| match f {
                    Fact::Product { product, .. } => Some(product),
                    _ => None,
                })
            });
            let _ = tx.send(root).await;
        });
    }
    drop(tx);
    while let Ok(answer) = rx.recv().await {
        if answer.is_some() {
            return answer;
        }
    }
    None
}

/// Gathered checkpoints (one peer's with `only`) and this node's own facts, checked.
pub async fn check_gathered(
    handle: Handle,
    (epoch, only): (Epoch, Option<NodeId>),
    (facts, own): (Vec<Fact>, Vec<Fact>),
    unanswered: Vec<NodeId>,
) -> Input {
    let (facts, wrong) = verify(&handle, facts, own).await;
    match only {
        None => Input::Gathered { epoch, facts, wrong, unanswered },
        Some(peer) => Input::Pulled { epoch, peer, facts: Some(facts) },
    }
}

/// Checks the products a new coordinator is about to use, off the runtime: the peers' facts
/// come back without the wrong ones, and its own wrong products are named so it forgets them.
/// A wrong product is never used; its task is computed again.
async fn verify(handle: &Handle, peers: Vec<Fact>, own: Vec<Fact>) -> (Vec<Fact>, Vec<(String, OpId)>) {
    let fp = handle.fingerprint;
    async_std::task::spawn_blocking(move || {
        let mut ns = std::collections::HashMap::new();
        for fact in own.iter().chain(&peers) {
            if let Fact::Job { id, n, .. } = fact {
                ns.entry(id.clone()).or_insert(*n);
            }
        }
        let n_of = |job: &str| ns.get(job).copied();
        let (peers, wrong_peers) = validate::check_facts(&fp, peers, n_of);
        let (_, wrong_own) = validate::check_facts(&fp, own, n_of);
        for (job, op) in wrong_peers.iter().filter_map(product_of) {
            log::error!("a peer's product for task {op:?} of job {job} is wrong: dropped, to be computed again");
        }
        let forget: Vec<(String, OpId)> = wrong_own.iter().filter_map(product_of).collect();
        for (job, op) in &forget {
            log::error!("this node's product for task {op:?} of job {job} is wrong: dropped, to be computed again");
        }
        (peers, forget)
    })
    .await
}

/// The job and task a product fact is for.
fn product_of(fact: &Fact) -> Option<(String, OpId)> {
    match fact {
        Fact::Product { job, op, .. } => Some((job.clone(), *op)),
        _ => None,
    }
}
