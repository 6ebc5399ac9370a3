//! How many connections a node keeps open. Clients may open as many as they like; the node
//! holds back a share of its file descriptors for what must not fail: peers' heartbeats and
//! votes, its own calls to peers, and its store. A client connection past the limit is
//! answered 429 with `Retry-After` and closed, but a peer's request (`/internal/...`) on such a
//! connection is still served: control traffic never waits for clients to leave.

use super::slots::{Slot, Slots};

/// Descriptors kept for peers, the store and outgoing calls, at least.
const RESERVED_DESCRIPTORS_MIN: usize = 256;

/// Open connections, counted against the limit.
#[derive(Clone)]
pub struct Connections(Slots);

/// One open connection; dropping it gives its place back.
pub struct Place {
    _slot: Option<Slot>,
    /// Whether the connection came past the limit (only peers are served on it; it holds no
    /// place, and is closed within a second unless a peer's request comes).
    pub over_limit: bool,
}

impl Connections {
    /// Raises the soft descriptor limit to the hard one and keeps a tenth of it (at least
    /// [`RESERVED_DESCRIPTORS_MIN`]) for control traffic.
    pub fn new() -> Connections {
        let descriptors = raise_descriptor_limit();
        let reserved = (descriptors / 10).max(RESERVED_DESCRIPTORS_MIN);
        Connections(Slots::new(descriptors.saturating_sub(reserved).max(1)))
    }

    pub fn open(&self) -> Place {
        let slot = self.0.take();
        Place { over_limit: slot.is_none(), _slot: slot }
    }
}

/// The process's descriptor limit after raising the soft limit to the hard one, as servers
/// commonly do (the soft default of 1,024 is for programs that do not expect many files).
fn raise_descriptor_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::{Connections, Slots};

    #[test]
    fn places_past_the_limit_are_marked_and_given_back() {
        let connections = Connections(Slots::new(2));
        let (a, b) = (connections.open(), connections.open());
        assert!(!a.over_limit && !b.over_limit);
        assert!(connections.open().over_limit, "the third is past the limit (and is given back)");
        drop(a);
        assert!(!connections.open().over_limit, "a closed connection frees its place");
    }
}
