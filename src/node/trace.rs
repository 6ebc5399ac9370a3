//! What this member sent to its peers and received from them: the last [`TRACE_LEN`]
//! protocol messages (election messages and heartbeats, work, checkpoint writes and queries),
//! for `GET /trace` and a message diagram. A sent message's id (`<sender>.<seq>`) travels in
//! the [`TRACE_HEADER`] of its request, so the receiver's entry names the same id and an
//! arrow can join the two without comparing the hosts' clocks.

use facto_elections::{Epoch, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// Entries kept: at a raft leader's heartbeats to five peers and their answers (about 200
/// messages a second) the last 50 s; about 1.5 MB.
pub const TRACE_LEN: usize = 10_000;
/// The request header that carries a message's id.
pub const TRACE_HEADER: &str = "x-facto-trace";
/// A received id longer than this is not one of ours: it is kept as "?".
const MSG_ID_BYTES_MAX: usize = 32;

/// One message, as this member saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// This member's number for the entry; `GET /trace?since=` pages by it.
    pub seq: u64,
    /// Milliseconds since this member started, by its own clock (never compared across
    /// members).
    pub at_ms: u64,
    /// "sent" or "received".
    pub dir: String,
    /// "election", "heartbeat", "work", "replication" or "gather".
    pub class: String,
    /// The message within its class: the algorithm's kind for election messages and
    /// heartbeats (`vote_request`, `answer`, `coordinator`, ...), else the class.
    pub kind: String,
    pub from: NodeId,
    pub to: NodeId,
    /// The epoch (term) the message speaks for.
    pub epoch: Epoch,
    /// The same in the sender's and the receiver's trace ("?": the sender did not say).
    pub msg: String,
}

/// `GET /trace`: entries after `since`, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TracePage {
    pub node: NodeId,
    /// The oldest entry still kept: asking for older ones finds them gone.
    pub oldest: u64,
    /// The number the next entry will have: ask `since=next - 1` to read on.
    pub next: u64,
    pub entries: Vec<TraceEntry>,
}

/// A message's class and kind: an election message's from its algorithm, heartbeats apart.
pub fn election_kind(msg: &facto_elections::AnyMsg) -> (&'static str, &'static str) {
    let kind = msg.kind();
    (if kind.starts_with("heartbeat") { "heartbeat" } else { "election" }, kind)
}

pub struct Trace {
    me: NodeId,
    started: Instant,
    ring: Mutex<Ring>,
}

/// An entry before it has its number and time.
struct Seen<'a> {
    dir: &'static str,
    class: &'a str,
    kind: &'a str,
    from: NodeId,
    to: NodeId,
    epoch: Epoch,
}

struct Ring {
    entries: VecDeque<TraceEntry>,
    next_seq: u64,
}

impl Trace {
    pub fn new(me: NodeId) -> Trace {
        Trace { me, started: Instant::now(), ring: Mutex::new(Ring { entries: VecDeque::new(), next_seq: 1 }) }
    }

    /// Notes a message this member sends; returns its id, for the [`TRACE_HEADER`].
    pub fn sent(&self, (class, kind): (&str, &str), to: NodeId, epoch: Epoch) -> String {
        self.push(Seen { dir: "sent", class, kind, from: self.me, to, epoch }, None)
    }

    /// Notes a message from `from`, with the id its sender gave it (if any).
    pub fn received(&self, (class, kind): (&str, &str), from: NodeId, epoch: Epoch, id: Option<&str>) {
        let id = id.filter(|id| id.len() <= MSG_ID_BYTES_MAX).unwrap_or("?").to_string();
        self.push(Seen { dir: "received", class, kind, from, to: self.me, epoch }, Some(id));
    }

    /// Keeps the entry (dropping the oldest when full); `msg: None` names it by this member
    /// and its number. Returns its message id.
    fn push(&self, seen: Seen, msg: Option<String>) -> String {
        let at_ms = self.started.elapsed().as_millis() as u64;
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let msg = msg.unwrap_or_else(|| format!("{}.{seq}", self.me));
        if ring.entries.len() == TRACE_LEN {
            ring.entries.pop_front();
        }
        let Seen { dir, class, kind, from, to, epoch } = seen;
        let (dir, class, kind) = (dir.to_string(), class.to_string(), kind.to_string());
        ring.entries.push_back(TraceEntry { seq, at_ms, dir, class, kind, from, to, epoch, msg: msg.clone() });
        msg
    }

    /// At most `limit` entries after `since`, oldest first.
    pub fn since(&self, since: u64, limit: usize) -> TracePage {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = ring.entries.front().map_or(ring.next_seq, |e| e.seq);
        let skip = since.saturating_add(1).saturating_sub(oldest).min(ring.entries.len() as u64) as usize;
        let entries = ring.entries.iter().skip(skip).take(limit).cloned().collect();
        TracePage { node: self.me, oldest, next: ring.next_seq, entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_keeps_the_newest_entries_and_pages_by_number() {
        let trace = Trace::new(1);
        let id = trace.sent(("election", "vote_request"), 2, 3);
        assert_eq!(id, "1.1");
        trace.received(("election", "vote"), 2, 3, Some("2.7"));
        trace.received(("work", "work"), 2, 3, Some(&"x".repeat(100)));
        let page = trace.since(0, 10);
        assert_eq!((page.oldest, page.next, page.entries.len()), (1, 4, 3));
        assert_eq!((page.entries[1].msg.as_str(), page.entries[1].dir.as_str()), ("2.7", "received"));
        assert_eq!(page.entries[2].msg, "?", "an id that is not one of ours");
        assert_eq!(trace.since(2, 10).entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        for _ in 0..TRACE_LEN + 5 {
            trace.sent(("heartbeat", "heartbeat"), 2, 3);
        }
        let page = trace.since(0, usize::MAX);
        assert_eq!(page.entries.len(), TRACE_LEN, "bounded");
        assert_eq!(page.oldest, page.next - TRACE_LEN as u64);
        assert_eq!(trace.since(0, 5).entries.len(), 5, "paged");
        assert!(trace.since(page.next, 5).entries.is_empty(), "nothing after the newest");
    }
}
