//! Peer messages refused by [`crate::node_core::validate`]: counted (`/status`
//! `refused_messages`) and logged, at most once per peer per [`LOG_EVERY`].

use facto_elections::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A refused message is logged once per peer per this long (the count goes on).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts refused messages and logs them, once per peer per [`LOG_EVERY`].
#[derive(Default)]
pub struct Refusals {
    count: AtomicU64,
    logged: Mutex<HashMap<NodeId, Instant>>,
}

impl Refusals {
    pub fn note(&self, from: NodeId, what: &str, why: &str) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut logged) = self.logged.lock() else { return };
        let now = Instant::now();
        if logged.get(&from).is_none_or(|&at| now.duration_since(at) >= LOG_EVERY) {
            logged.insert(from, now);
            log::warn!("refused {what} from node {from}: {why} ({count} refused so far; more from it within a minute are not logged)");
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
