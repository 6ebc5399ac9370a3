//! One outgoing queue per peer for election traffic. Messages to a peer go out in order, one
//! request at a time; a peer that does not answer does not slow the others. Election messages
//! may be lost (the algorithms expect it), so a full queue drops and a failed send discards the
//! backlog, which is stale by the time the peer answers again.

use super::trace::{election_kind, TRACE_HEADER};
use super::{Event, Handle, Input};
use crate::api::ElectionEnvelope;
use async_std::channel::{self, Sender};
use facto_elections::{AnyMsg, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one election message may take before the peer counts as unreachable.
const SEND_TIMEOUT_MS: u64 = 500;
/// Messages queued for one peer before new ones are dropped.
const QUEUE_LEN_MAX: usize = 256;

#[derive(Clone)]
pub(crate) struct Links {
    queues: BTreeMap<NodeId, Sender<AnyMsg>>,
}

impl Links {
    /// Starts one sender task per peer (every member but this node).
    pub fn start(handle: &Handle) -> Links {
        let me = handle.config.id;
        let mut queues = BTreeMap::new();
        let refusing = Arc::new(Refusing::default());
        for (&peer, addr) in handle.config.members.0.iter().filter(|(&id, _)| id != me) {
            let (tx, rx) = channel::bounded::<AnyMsg>(QUEUE_LEN_MAX);
            let (handle, refusing) = (handle.clone(), refusing.clone());
            let addr = addr.clone();
            // Heartbeats and votes have their own connections: never behind a big product.
            let client = handle.client.control();
            async_std::task::spawn(async move {
                let mut reachable = true;
                while let Ok(msg) = rx.recv().await {
                    let id = handle.trace.sent(election_kind(&msg), peer, msg.epoch());
                    let envelope = ElectionEnvelope { from: me, msg };
                    let timeout = Duration::from_millis(SEND_TIMEOUT_MS);
                    let sent: Result<serde_json::Value, _> =
                        client.post(&addr, "/internal/election", &envelope, timeout, &[(TRACE_HEADER, &id)]).await;
                    refusing.heard(&handle, peer, sent.as_ref().err().map(ToString::to_string));
                    let ok = sent.is_ok();
                    if !ok {
                        while rx.try_recv().is_ok() {}
                    }
                    // Every failure is news (the election may be waiting on this peer); a
                    // success only when it ends a run of failures.
                    if !ok || !reachable {
                        reachable = ok;
                        handle.send(Event::Input(Input::PeerReachable { peer, reachable }));
                    }
                }
            });
            queues.insert(peer, tx);
        }
        Links { queues }
    }

    /// Queues `msg` for `peer`; drops it when the queue is full.
    pub fn send(&self, peer: NodeId, msg: AnyMsg) {
        if let Some(q) = self.queues.get(&peer) {
            let _ = q.try_send(msg);
        }
    }
}

/// The peers that refuse this node's cluster settings. Each says so once in the log; when
/// most of the other members do, this node stops as it would have at start
/// ([`crate::member`]): it was started apart from its cluster (while most peers were down)
/// and could only take jobs that nobody computes.
#[derive(Default)]
struct Refusing(Mutex<BTreeSet<NodeId>>);

impl Refusing {
    /// `failed`: why a message to `peer` failed, if it did.
    fn heard(&self, handle: &Handle, peer: NodeId, failed: Option<String>) {
        let Ok(mut refusing) = self.0.lock() else { return };
        let why = match failed.filter(|why| why.contains("cluster settings")) {
            Some(why) => why,
            None => {
                refusing.remove(&peer);
                return;
            }
        };
        if refusing.insert(peer) {
            log::error!("node {peer} refuses this node: {why}");
        }
        let others = handle.config.members.0.len() - 1;
        if refusing.len() * 2 > others {
            eprintln!(
                "error: {} of the {others} other members refuse this node's settings ({why}): refusing to go on; \
                 give every member the same settings (see README, \"One configuration\")",
                refusing.len()
            );
            std::process::exit(1);
        }
    }
}
