//! The shape of one factorial: a tree of operations of at most [`MAX_OPERANDS`] values.
//!
//! Level 0 holds the leaves: leaf `i` multiplies the consecutive integers
//! `2 + 4i ..= min(5 + 4i, n)`. Node `j` of level `k + 1` multiplies the products of nodes
//! `4j ..= 4j + 3` of level `k` (fewer at the right edge). The top level has a single node, the
//! root, whose product is n!. The tree is a pure function of n, so an operation is named by
//! `(level, index)` alone and any coordinator rebuilds the same plan from n.

use serde::{Deserialize, Serialize};

/// The most values one operation multiplies.
pub const MAX_OPERANDS: u64 = 4;

/// One operation in a job's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    pub level: u32,
    pub index: u64,
}

/// What an operation multiplies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operands {
    /// Consecutive integers `first..=last` (at most [`MAX_OPERANDS`] of them).
    Integers { first: u64, last: u64 },
    /// The products of these operations of the level below.
    Products(Vec<OpId>),
}

/// The operation tree of n!.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    n: u64,
    /// How many operations each level holds, leaves first.
    level_sizes: Vec<u64>,
}

impl Plan {
    pub fn new(n: u64) -> Plan {
        let mut level_sizes = Vec::new();
        if n >= 2 {
            let mut size = (n - 1).div_ceil(MAX_OPERANDS);
            level_sizes.push(size);
            while size > 1 {
                size = size.div_ceil(MAX_OPERANDS);
                level_sizes.push(size);
            }
        }
        Plan { n, level_sizes }
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    /// How many operations the whole job takes (0 for 0! and 1!, which are the empty product).
    pub fn total_ops(&self) -> u64 {
        self.level_sizes.iter().sum()
    }

    /// The root operation, whose product is n!, or `None` when there is nothing to multiply.
    pub fn root(&self) -> Option<OpId> {
        let top = self.level_sizes.len().checked_sub(1)?;
        Some(OpId { level: top as u32, index: 0 })
    }

    /// How many operations level `level` holds.
    pub fn level_size(&self, level: u32) -> u64 {
        self.level_sizes.get(level as usize).copied().unwrap_or(0)
    }

    /// Whether `op` names an operation of this plan (peers' messages are checked with it).
    pub fn contains(&self, op: OpId) -> bool {
        op.index < self.level_size(op.level)
    }

    /// What `op` multiplies. `op` must belong to the plan.
    pub fn operands(&self, op: OpId) -> Operands {
        debug_assert!(self.contains(op), "{op:?} is not in the plan of {}!", self.n);
        if op.level == 0 {
            let first = 2 + MAX_OPERANDS * op.index;
            Operands::Integers { first, last: (first + MAX_OPERANDS - 1).min(self.n) }
        } else {
            Operands::Products(self.children(op))
        }
    }

    fn children(&self, op: OpId) -> Vec<OpId> {
        let below = self.level_size(op.level - 1);
        let first = op.index * MAX_OPERANDS;
        let last = (first + MAX_OPERANDS).min(below);
        (first..last).map(|index| OpId { level: op.level - 1, index }).collect()
    }

    /// The operation that consumes `op`'s product, or `None` for the root.
    pub fn parent(&self, op: OpId) -> Option<OpId> {
        if Some(op) == self.root() {
            None
        } else {
            Some(OpId { level: op.level + 1, index: op.index / MAX_OPERANDS })
        }
    }

    /// How many products the operation `op` waits for (0 for leaves).
    pub fn child_count(&self, op: OpId) -> u64 {
        match self.operands(op) {
            Operands::Integers { .. } => 0,
            Operands::Products(children) => children.len() as u64,
        }
    }

    /// Every leaf, in order.
    pub fn leaves(&self) -> impl Iterator<Item = OpId> {
        (0..self.level_size(0)).map(|index| OpId { level: 0, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_products_need_no_operation() {
        for n in [0, 1] {
            let plan = Plan::new(n);
            assert_eq!(plan.total_ops(), 0);
            assert_eq!(plan.root(), None);
        }
    }

    #[test]
    fn small_factorials_are_one_leaf() {
        let plan = Plan::new(5);
        assert_eq!(plan.total_ops(), 1);
        assert_eq!(plan.root(), Some(OpId { level: 0, index: 0 }));
        assert_eq!(plan.operands(OpId { level: 0, index: 0 }), Operands::Integers { first: 2, last: 5 });
        assert_eq!(Plan::new(2).operands(OpId { level: 0, index: 0 }), Operands::Integers { first: 2, last: 2 });
    }

    #[test]
    fn every_integer_is_in_exactly_one_leaf_and_every_op_has_at_most_four_operands() {
        for n in [2, 3, 6, 20, 21, 100, 1000, 4097] {
            let plan = Plan::new(n);
            let mut next = 2;
            for leaf in plan.leaves() {
                match plan.operands(leaf) {
                    Operands::Integers { first, last } => {
                        assert_eq!(first, next);
                        assert!(last - first < MAX_OPERANDS);
                        next = last + 1;
                    }
                    other => panic!("leaf with {other:?}"),
                }
            }
            assert_eq!(next, n + 1, "n = {n}");
            // Every non-root op has exactly one parent, which lists it among its children.
            for level in 0..plan.level_sizes.len() as u32 {
                for index in 0..plan.level_size(level) {
                    let op = OpId { level, index };
                    assert!(plan.child_count(op) <= MAX_OPERANDS);
                    if let Some(parent) = plan.parent(op) {
                        assert_eq!(plan.operands(parent), Operands::Products(plan.children(parent)));
                        assert!(plan.children(parent).contains(&op));
                    }
                }
            }
        }
    }

    #[test]
    fn twenty_has_five_leaves_under_two_inner_nodes_and_a_root() {
        let plan = Plan::new(20);
        assert_eq!(plan.level_sizes, vec![5, 2, 1]);
        assert_eq!(plan.total_ops(), 8);
        assert!(!plan.contains(OpId { level: 1, index: 2 }));
    }
}
