//! What bully and ring share: the sorted member list, epochs each member owns, and turning a
//! step's before/after state into [`Actions`].
//!
//! Bully and ring have no quorum, so two sides of a partition may both elect a leader. To keep
//! epochs usable as fencing tokens anyway, the epochs are partitioned among the members: member
//! number `i` of the sorted list only ever leads at epochs `e` with `e % n == i`. Two leaders can
//! then never share an epoch, whatever the network does.

use crate::{Actions, Epoch, HardState, Leadership, NodeId};

/// The cluster as one member sees it: every id in ring order (ascending) and where it stands.
#[derive(Clone, Debug)]
pub(crate) struct Roster {
    /// Every member, ascending and unique.
    sorted: Vec<NodeId>,
    /// This node's id.
    me: NodeId,
}

impl Roster {
    /// Sorts and deduplicates `members`; adds `me` if the list forgot it (the runtime validates
    /// configurations, but a state machine must not panic on a bad one).
    pub(crate) fn new(me: NodeId, members: &[NodeId]) -> Roster {
        let mut sorted = members.to_vec();
        sorted.push(me);
        sorted.sort_unstable();
        sorted.dedup();
        Roster { sorted, me }
    }

    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.sorted.binary_search(&id).is_ok()
    }

    /// Every member but this node, ascending.
    pub(crate) fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sorted.iter().copied().filter(move |&id| id != self.me)
    }

    /// The members after this node in ring order (ascending, wrapping), this node excluded.
    pub(crate) fn after_me(&self) -> impl Iterator<Item = NodeId> + '_ {
        let at = self.position(self.me);
        self.sorted[at + 1..].iter().chain(&self.sorted[..at]).copied()
    }

    /// The smallest epoch above `seen` that this node owns.
    pub(crate) fn next_owned_epoch(&self, seen: Epoch) -> Epoch {
        let n = self.sorted.len() as u64;
        let mine = self.position(self.me) as u64;
        let first = seen.saturating_add(1);
        first.saturating_add((mine + n - first % n) % n)
    }

    fn position(&self, id: NodeId) -> usize {
        self.sorted.binary_search(&id).unwrap_or_else(|at| at)
    }
}

/// Builds the actions of a step from the state before and after it: the hard state is reported
/// only when it grew, the leadership only when it changed.
pub(crate) fn actions<M>(
    messages: Vec<(NodeId, M)>,
    before: (HardState, Leadership),
    after: (HardState, Leadership),
) -> Actions<M> {
    Actions {
        messages,
        persist: (after.0 != before.0).then_some(after.0),
        leadership: (after.1 != before.1).then_some(after.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_epochs_are_above_the_seen_one_and_disjoint() {
        let members: Vec<Roster> = [3, 7, 9].iter().map(|&id| Roster::new(id, &[9, 3, 7])).collect();
        for seen in 0..20 {
            let picked: Vec<Epoch> = members.iter().map(|m| m.next_owned_epoch(seen)).collect();
            for (i, &e) in picked.iter().enumerate() {
                assert!(e > seen && e <= seen + 3);
                assert_eq!(e % 3, i as u64);
            }
        }
    }

    #[test]
    fn ring_order_wraps_around() {
        let m = Roster::new(7, &[9, 3, 7, 1]);
        assert_eq!(m.after_me().collect::<Vec<_>>(), vec![9, 1, 3]);
        assert_eq!(m.others().collect::<Vec<_>>(), vec![1, 3, 9]);
    }
}
