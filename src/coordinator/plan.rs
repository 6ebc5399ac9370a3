//! The shape of one factorial: operations of at most [`MAX_OPERANDS`] values (a squaring is
//! one), cut into tasks that form a tree: every task's product is consumed by exactly one
//! task above it, up to the root, whose product is n!.
//!
//! Two shapes, both pure functions of n, so an operation is named by `(level, index)` alone
//! and any coordinator rebuilds the same plan from n:
//! - up to [`SWING_N_MIN`], the product tree over 2..=n ([`tree`]);
//! - above it, Luschny's prime swing ([`swing`]), which does a third of the tree's work at 10⁷
//!   (docs/DESIGN.md, "Which plan").
//!
//! **Tasks.** A worker is not sent single operations but tasks: a leaf task starts from
//! integers it derives from n (a range, or the prime powers of a swing) and needs no operands;
//! a higher task takes the products of the tasks below it. Only task products ever leave a
//! worker, enter the checkpoint or count in the scheduler; the operations inside a task are
//! performed by one worker, each on at most four values.

mod swing;
mod tree;

use serde::{Deserialize, Serialize};

/// The most values one operation multiplies.
pub const MAX_OPERANDS: u64 = 4;
/// Factorials above this use the prime swing: below it the tree's few tasks are fast and
/// spread over the workers at once, while the swing's chain is a line of small tasks.
pub const SWING_N_MIN: u64 = 100_000;
/// ... and up to this: n! has 7·10¹¹ digits here, beyond any cluster, while the swing's prime
/// counts take O(√n) memory. Above it the tree, built in O(log n) for any n, so a hostile or
/// damaged n costs a node nothing.
pub const SWING_N_MAX: u64 = 1 << 36;

/// One operation in a job's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    pub level: u32,
    pub index: u64,
}

/// What a task starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskInputs {
    /// The consecutive integers `first..=last`: the task reaches the leaves.
    Integers { first: u64, last: u64 },
    /// The prime powers of swing(m), in order of their primes.
    Swing { m: u64 },
    /// The products of these tasks below it, in order (the first squared where
    /// [`Plan::squares_first`] says so).
    Products(Vec<OpId>),
}

impl TaskInputs {
    /// The tasks whose products this one takes (none for a leaf task).
    pub fn children(&self) -> &[OpId] {
        match self {
            TaskInputs::Products(children) => children,
            TaskInputs::Integers { .. } | TaskInputs::Swing { .. } => &[],
        }
    }
}

/// The value a task's product must have, whatever operations made it: what checks compare
/// a product with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// The product of the integers `first..=last`.
    Range { first: u64, last: u64 },
    /// swing(m) = m! / (⌊m/2⌋!)².
    Swing { m: u64 },
}

/// One task as a worker receives it: the wire, the coordinator and the worker share it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub n: u64,
    pub op: OpId,
    /// The products of the task's inputs (empty for a task that reaches the leaves).
    pub operands: Vec<crate::bignum::Big>,
}

/// The tasks of n!.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    n: u64,
    shape: Shape,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    Tree(tree::Tree),
    Swing(swing::Swing),
}

impl Plan {
    /// The plan of n!: the prime swing from [`SWING_N_MIN`] to [`SWING_N_MAX`], the product
    /// tree elsewhere.
    pub fn new(n: u64) -> Plan {
        let shape = if (SWING_N_MIN + 1..=SWING_N_MAX).contains(&n) {
            Shape::Swing(swing::Swing::new(n))
        } else {
            Shape::Tree(tree::Tree::new(n))
        };
        Plan { n, shape }
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    /// How many operations the whole job takes (0 for 0! and 1!, which are the empty product).
    pub fn total_ops(&self) -> u64 {
        match &self.shape {
            Shape::Tree(t) => t.total_ops(),
            Shape::Swing(s) => s.subtree_ops(s.root()),
        }
    }

    /// The root task, whose product is n!, or `None` when there is nothing to multiply.
    pub fn root(&self) -> Option<OpId> {
        match &self.shape {
            Shape::Tree(t) => t.root(),
            Shape::Swing(s) => Some(s.root()),
        }
    }

    /// Whether `op` names a task of this plan (peers' messages are checked with it).
    pub fn is_task(&self, op: OpId) -> bool {
        match &self.shape {
            Shape::Tree(t) => t.is_task(op),
            Shape::Swing(s) => s.is_task(op),
        }
    }

    /// The levels that hold tasks, lowest first: a task's inputs sit on lower levels.
    pub fn stages(&self) -> Vec<u32> {
        match &self.shape {
            Shape::Tree(t) => t.stages().to_vec(),
            Shape::Swing(s) => (0..=s.root().level).collect(),
        }
    }

    /// Every task of level `level`, in order.
    pub fn tasks_at(&self, level: u32) -> impl Iterator<Item = OpId> {
        let count = match &self.shape {
            Shape::Tree(t) => t.task_count(level),
            Shape::Swing(s) => s.tasks_at(level),
        };
        (0..count).map(move |index| OpId { level, index })
    }

    /// How many rounds of operations a leaf task (or a tree task) performs.
    pub fn task_depth(&self, op: OpId) -> u32 {
        match &self.shape {
            Shape::Tree(t) => t.task_depth(op),
            Shape::Swing(s) => s.task_depth(op),
        }
    }

    /// What the task `op` starts from. `op` must be a task of the plan.
    pub fn task_inputs(&self, op: OpId) -> TaskInputs {
        debug_assert!(self.is_task(op), "{op:?} is not a task of {}!", self.n);
        match &self.shape {
            Shape::Tree(t) => t.task_inputs(op),
            Shape::Swing(s) => s.task_inputs(op),
        }
    }

    /// Whether the task `op` squares its first input before multiplying it by the others
    /// (the swing's chain: m! = (⌊m/2⌋!)² · swing(m)).
    pub fn squares_first(&self, op: OpId) -> bool {
        matches!(self.shape, Shape::Swing(_)) && op.level > 0
    }

    /// The value the task `op`'s product must have.
    pub fn product_of(&self, op: OpId) -> Product {
        match &self.shape {
            Shape::Tree(t) => {
                let (first, last) = t.integers(op);
                Product::Range { first, last }
            }
            Shape::Swing(s) => s.product_of(op),
        }
    }

    /// The task that consumes the product of task `op`, or `None` for the root.
    pub fn task_parent(&self, op: OpId) -> Option<OpId> {
        match &self.shape {
            Shape::Tree(t) => t.task_parent(op),
            Shape::Swing(s) => s.task_parent(op),
        }
    }

    /// How many operations of the plan the task `op` performs.
    pub fn task_ops(&self, op: OpId) -> u64 {
        match &self.shape {
            Shape::Tree(t) => t.task_ops(op),
            Shape::Swing(s) => s.task_ops(op),
        }
    }

    /// How many operations of the plan lie in `op`'s whole subtree (`op` included): what a
    /// known product of `op` makes unnecessary.
    pub fn subtree_ops(&self, op: OpId) -> u64 {
        match &self.shape {
            Shape::Tree(t) => t.subtree_ops(op),
            Shape::Swing(s) => s.subtree_ops(op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task but the root feeds exactly one task, on a higher level, that lists it; the
    /// tasks' operations add up to the plan's.
    #[test]
    fn every_plan_is_a_tree_of_tasks() {
        for n in [2, 20, 4_097, SWING_N_MIN, SWING_N_MIN + 1, 1_000_000, 100_000_000, SWING_N_MAX, 1 << 40] {
            let plan = Plan::new(n);
            let (mut tasks, mut ops) = (0, 0);
            for level in plan.stages() {
                for op in plan.tasks_at(level) {
                    assert!(plan.is_task(op), "{op:?} of {n}!");
                    (tasks, ops) = (tasks + 1, ops + plan.task_ops(op));
                    for &child in plan.task_inputs(op).children() {
                        assert!(child.level < level && plan.task_parent(child) == Some(op), "{child:?} of {n}!");
                    }
                    match plan.task_parent(op) {
                        Some(parent) => assert!(plan.task_inputs(parent).children().contains(&op)),
                        None => assert_eq!(plan.root(), Some(op)),
                    }
                }
            }
            assert_eq!(ops, plan.total_ops(), "{n}!");
            assert_eq!(plan.root().map_or(0, |root| plan.subtree_ops(root)), plan.total_ops(), "{n}!");
            assert!(tasks >= 1 && !plan.is_task(OpId { level: 99, index: 0 }));
        }
    }

    #[test]
    fn a_large_factorial_is_a_chain_of_squarings_and_swings() {
        let plan = Plan::new(1_000_000);
        // 1,000,000 >> 8 = 3,906 is the first at most 4,096: eight swings and the base.
        assert_eq!(plan.stages(), (0..=8).collect::<Vec<u32>>());
        assert_eq!(plan.tasks_at(0).count(), 9);
        assert_eq!(plan.task_inputs(OpId { level: 0, index: 0 }), TaskInputs::Swing { m: 1_000_000 });
        assert_eq!(plan.task_inputs(OpId { level: 0, index: 8 }), TaskInputs::Integers { first: 2, last: 3_906 });
        let root = plan.root().unwrap();
        assert_eq!(plan.product_of(root), Product::Range { first: 2, last: 1_000_000 });
        assert_eq!(plan.product_of(OpId { level: 7, index: 0 }), Product::Range { first: 2, last: 500_000 });
        assert!(plan.squares_first(root) && !plan.squares_first(OpId { level: 0, index: 0 }));
        assert_eq!(plan.task_ops(root), 2);
        // A third of the tree's operations or fewer: the swings multiply primes only.
        let tree = tree::Tree::new(1_000_000).total_ops();
        assert!(plan.total_ops() * 3 < tree, "{} against the tree's {tree}", plan.total_ops());
        for tree in [SWING_N_MIN, SWING_N_MAX + 1] {
            assert!(!Plan::new(tree).squares_first(Plan::new(tree).root().unwrap()), "{tree}! is a tree");
        }
    }
}
