//! Sending checkpoint facts to the peers, and gathering theirs when this node takes over.

use super::Handle;
use crate::api::{CheckpointQuery, CheckpointWrite};
use crate::checkpoint::{decode_facts, encode_facts, Fact};
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

/// How many peers receive each checkpoint write (the coordinator keeps its own copy too).
/// Two copies elsewhere survive any single crash with margin; writing to every peer of a
/// 25-node cluster would cost 24 fsyncs per batch and starve the heartbeats.
pub const REPLICAS: usize = 2;

/// Sends `facts` to the [`REPLICAS`] peers that follow this node in id order; if none of them
/// makes them durable, to every other peer. Returns true as soon as one peer has them on
/// disk (the others still receive them), false when none does. With no peers there is
/// nobody to ask and the local copy is all there is: true.
pub async fn replicate(handle: &Handle, epoch: Epoch, facts: Vec<Fact>) -> bool {
    let mut peers = peers(handle);
    if peers.is_empty() {
        return true;
    }
    // Successors first: (id - me) mod n order spreads replicas when coordinators change.
    let me = handle.config.id;
    peers.sort_by_key(|&(id, _)| (id < me, id));
    let rest = peers.split_off(REPLICAS.min(peers.len()));
    // Built once, off the runtime's threads: with large products the frame is megabytes.
    let frame = async_std::task::spawn_blocking(move || encode_facts(CheckpointWrite { from: me, epoch }, &facts));
    let frame = match frame.await {
        Ok(f) => Arc::new(f),
        Err(why) => {
            log::error!("cannot encode a checkpoint write: {why}");
            return false;
        }
    };
    send_until_one_succeeds(handle, &frame, &peers).await || send_until_one_succeeds(handle, &frame, &rest).await
}

async fn send_until_one_succeeds(handle: &Handle, frame: &Arc<Vec<u8>>, peers: &[(NodeId, String)]) -> bool {
    let (tx, rx) = channel::unbounded();
    for (_, addr) in peers.iter().cloned() {
        let (handle, frame, tx) = (handle.clone(), frame.clone(), tx.clone());
        async_std::task::spawn(async move {
            let timeout = Duration::from_millis(REPLICATE_TIMEOUT_MS);
            let body = frame.as_ref().clone();
            let r = handle.client.post_bytes(&addr, "/internal/checkpoint", body, timeout).await;
            if let Err(e) = &r {
                log::debug!("checkpoint to {addr} failed: {e}");
            }
            let _ = tx.send(r.is_ok()).await;
        });
    }
    drop(tx);
    while let Ok(ok) = rx.recv().await {
        if ok {
            return true;
        }
    }
    false
}

/// The facts of `peers` (all of them when `None`) that arrive within [`GATHER_TIMEOUT_MS`],
/// leaving out the jobs in `finished`.
pub async fn gather(handle: &Handle, only: Option<NodeId>, finished: BTreeSet<String>) -> Vec<Fact> {
    let peers: Vec<(NodeId, String)> =
        peers(handle).into_iter().filter(|(id, _)| only.is_none_or(|o| o == *id)).collect();
    let query = match serde_json::to_vec(&CheckpointQuery { finished }) {
        Ok(q) => q,
        Err(_) => return Vec::new(),
    };
    let (tx, rx) = channel::unbounded();
    for (_, addr) in peers {
        let (handle, tx, query) = (handle.clone(), tx.clone(), query.clone());
        async_std::task::spawn(async move {
            let timeout = Duration::from_millis(GATHER_TIMEOUT_MS);
            let facts = match handle.client.post_bytes(&addr, "/internal/checkpoint/query", query, timeout).await {
                Ok(frame) => async_std::task::spawn_blocking(move || decode_facts::<()>(&frame)).await,
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = &facts {
                log::debug!("no checkpoint from {addr}: {why}");
            }
            let _ = tx.send(facts.map(|(_, f)| f).unwrap_or_default()).await;
        });
    }
    drop(tx);
    let mut all = Vec::new();
    let collect = async {
        while let Ok(facts) = rx.recv().await {
            all.extend(facts);
        }
    };
    let _ = async_std::future::timeout(Duration::from_millis(GATHER_TIMEOUT_MS + 100), collect).await;
    all
}
