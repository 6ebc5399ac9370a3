//! Sending checkpoint facts to the peers, and gathering theirs when this node takes over.

use super::Handle;
use crate::api::{CheckpointQuery, CheckpointWrite, RootQuery};
use crate::bignum::Big;
use crate::checkpoint::{decode_facts, encode_facts, Fact};
use crate::coordinator::{fingerprint, OpId, Plan};
use crate::node_core::validate;
use async_std::channel;
use facto_elections::{Epoch, NodeId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long one replication request may take (facts of a large factorial are megabytes).
const REPLICATE_TIMEOUT_MS: u64 = 10_000;
/// How long a new coordinator waits for its peers' checkpoints before it resumes with what it
/// has. It goes on as soon as every peer answered or failed: a peer that is down refuses at
/// once; only a stalled one makes it wait this long.
pub const GATHER_TIMEOUT_MS: u64 = 2_000;

fn peers(handle: &Handle) -> Vec<(NodeId, String)> {
    let me = handle.config.id;
    handle.config.members.0.iter().filter(|(&id, _)| id != me).map(|(&id, a)| (id, a.clone())).collect()
}

/// How long a peer may take to make a checkpoint write durable before the write also goes
/// to the next peer (a hedged request: a stalled peer costs this long, not a timeout)...
pub const HEDGE_MS: u64 = 100;
/// ... plus this long per MiB the write carries (moving and syncing tens of megabytes takes
/// longer than 100 ms on a healthy peer, and a hedge then only doubles the work).
const HEDGE_MS_PER_MIB: u64 = 25;

/// Makes `facts` durable on one peer besides this node: sent to the peer that follows this
/// node in id order, and to the next one too whenever the last one sent to fails or has not
/// answered within [`HEDGE_MS`] (more for large writes). Returns true once one peer has them on disk, false when none
/// does. With no peers there is nobody to ask and the local copy is all there is: true.
///
/// One copy elsewhere and this node's own survive the crash of any single node. (Writing to
/// two peers every time, as facto did before, cost a third more checkpoint work on a 2-core
/// machine for a margin beyond the failure model.)
pub async fn replicate(handle: &Handle, epoch: Epoch, facts: Vec<Fact>) -> bool {
    let mut peers = peers(handle);
    if peers.is_empty() {
        return true;
    }
    // Successors first: (id - me) mod n order spreads replicas when coordinators change.
    let me = handle.config.id;
    peers.sort_by_key(|&(id, _)| (id < me, id));
    // Built once, off the runtime's threads: with large products the frame is megabytes.
    let frame = async_std::task::spawn_blocking(move || encode_facts(CheckpointWrite { from: me, epoch }, &facts));
    let frame = match frame.await {
        Ok(f) => Arc::new(f),
        Err(why) => {
            log::error!("cannot encode a checkpoint write: {why}");
            return false;
        }
    };
    let hedge_ms = HEDGE_MS + (frame.len() as u64 >> 20) * HEDGE_MS_PER_MIB;
    let (tx, rx) = channel::unbounded();
    let mut waiting_for = 0;
    let mut next_peers = peers.into_iter();
    let mut send_to_next = |waiting_for: &mut usize| {
        if let Some(peer) = next_peers.next() {
            send_write(handle, &frame, peer, tx.clone());
            *waiting_for += 1;
        }
    };
    send_to_next(&mut waiting_for);
    while waiting_for > 0 {
        match async_std::future::timeout(Duration::from_millis(hedge_ms), rx.recv()).await {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {
                waiting_for -= 1;
                send_to_next(&mut waiting_for);
            }
            Ok(Err(_)) => break,
            Err(_slow) => send_to_next(&mut waiting_for),
        }
    }
    false
}

/// Sends one checkpoint write; reports whether the peer made it durable.
fn send_write(handle: &Handle, frame: &Arc<Vec<u8>>, (peer, addr): (NodeId, String), done: channel::Sender<bool>) {
    let (handle, frame) = (handle.clone(), frame.clone());
    async_std::task::spawn(async move {
        let timeout = Duration::from_millis(REPLICATE_TIMEOUT_MS);
        let started = std::time::Instant::now();
        let r = handle.client.post_bytes(&addr, "/internal/checkpoint", frame.as_ref().clone(), timeout).await;
        if r.is_ok() {
            handle.metrics.replicated(peer, started.elapsed().as_secs_f64());
        }
        if let Err(e) = &r {
            log::debug!("checkpoint to {addr} failed: {e}");
            handle.heard_epoch(peer, e);
        }
        let _ = done.send(r.is_ok()).await;
    });
}

/// The facts of `peers` (all of them when `None`) that arrive within [`GATHER_TIMEOUT_MS`],
/// leaving out the jobs in `finished`, and the peers that did not answer.
pub async fn gather(
    handle: &Handle,
    (epoch, only): (Epoch, Option<NodeId>),
    finished: BTreeSet<String>,
) -> (Vec<Fact>, Vec<NodeId>) {
    let peers: Vec<(NodeId, String)> =
        peers(handle).into_iter().filter(|(id, _)| only.is_none_or(|o| o == *id)).collect();
    let mut unanswered: BTreeSet<NodeId> = peers.iter().map(|(id, _)| *id).collect();
    let query = match serde_json::to_vec(&CheckpointQuery { finished, from: handle.config.id, epoch }) {
        Ok(q) => q,
        Err(_) => return (Vec::new(), unanswered.into_iter().collect()),
    };
    let (tx, rx) = channel::unbounded();
    for (id, addr) in peers {
        let (handle, tx, query) = (handle.clone(), tx.clone(), query.clone());
        async_std::task::spawn(async move {
            let timeout = Duration::from_millis(GATHER_TIMEOUT_MS);
            let facts = match handle.client.post_bytes(&addr, "/internal/checkpoint/query", query, timeout).await {
                Ok(frame) => async_std::task::spawn_blocking(move || decode_facts::<()>(&frame)).await,
                Err(e) => {
                    handle.heard_epoch(id, &e);
                    Err(e.to_string())
                }
            };
            if let Err(why) = &facts {
                log::debug!("no checkpoint from {addr}: {why}");
            }
            let _ = tx.send((id, facts.map(|(_, f)| f).ok())).await;
        });
    }
    drop(tx);
    let mut all = Vec::new();
    let collect = async {
        while let Ok((id, facts)) = rx.recv().await {
            if let Some(facts) = facts {
                unanswered.remove(&id);
                all.extend(facts);
            }
        }
    };
    let _ = async_std::future::timeout(Duration::from_millis(GATHER_TIMEOUT_MS + 100), collect).await;
    (all, unanswered.into_iter().collect())
}

/// How long a peer may take to send a finished job's root product (tens of megabytes for
/// 10,000,000!).
const ROOT_TIMEOUT_MS: u64 = 10_000;

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

/// A finished job's root product from the first peer that sends one.
async fn peer_root(handle: &Handle, job: &str) -> Option<Big> {
    let query = serde_json::to_vec(&RootQuery { job: job.to_string() }).ok()?;
    let (tx, rx) = channel::unbounded();
    for (_, addr) in peers(handle) {
        let (handle, tx, query) = (handle.clone(), tx.clone(), query.clone());
        async_std::task::spawn(async move {
            let timeout = Duration::from_millis(ROOT_TIMEOUT_MS);
            let root = match handle.client.post_bytes(&addr, "/internal/checkpoint/root", query, timeout).await {
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

/// Checks the products a new coordinator is about to use, off the runtime: the peers' facts
/// come back without the wrong ones, and its own wrong products are named so it forgets them.
/// A wrong product is never used; its task is computed again.
pub async fn verify(handle: &Handle, peers: Vec<Fact>, own: Vec<Fact>) -> (Vec<Fact>, Vec<(String, OpId)>) {
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
        let mut forget = Vec::new();
        for (fact, whose) in
            wrong_peers.iter().map(|f| (f, "a peer's")).chain(wrong_own.iter().map(|f| (f, "this node's")))
        {
            if let Fact::Product { job, op, .. } = fact {
                log::error!("{whose} product for task {op:?} of job {job} is wrong: dropped, to be computed again");
                if whose == "this node's" {
                    forget.push((job.clone(), *op));
                }
            }
        }
        (peers, forget)
    })
    .await
}
