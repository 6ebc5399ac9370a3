//! The product tree: level 0 holds the leaves, leaf `i` multiplies the consecutive integers
//! `2 + 4i ..= min(5 + 4i, n)`; node `j` of level `k + 1` multiplies the products of nodes
//! `4j ..= 4j + 3` of level `k` (fewer at the right edge). The top level has a single node, the
//! root, whose product is n!. An operation is named by `(level, index)` alone.
//!
//! **Tasks.** A task is named by its root operation, which must sit on a *stage* level, and
//! covers every operation below it down to (not including) the stage level beneath. The lowest
//! stage's tasks reach the leaves and need no operands at all (the worker derives the integers
//! from n); a higher stage's task takes the products of the tasks below it. The stages are a
//! pure function of n too ([`Tree::new`] explains the choice).

use super::{OpId, TaskInputs, MAX_OPERANDS};

/// The lowest stage is at least this level: a leaf task covers at least `4^(level+1)` integers
/// (4,096 at level 5), so a small job is one task and one round trip.
const LEAF_STAGE_LEVEL_MIN: u32 = 5;
/// ... and at most this many tasks share the lowest stage (enough to spread over the workers
/// and keep re-execution after a crash small, few enough that per-task overhead stays small).
const LEAF_STAGE_TASKS_MAX: u64 = 256;

/// The product tree of n!, cut into tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    n: u64,
    /// How many operations each level holds, leaves first.
    level_sizes: Vec<u64>,
    /// The levels whose operations are task roots, lowest first; the last is the root's.
    stages: Vec<u32>,
}

impl Tree {
    /// The plan of n!. The lowest stage is the lowest level with at most
    /// [`LEAF_STAGE_TASKS_MAX`] operations, but not below [`LEAF_STAGE_LEVEL_MIN`] (nor above
    /// the root); every level above it is a stage of its own, so the products near the top,
    /// where multiplications are largest, are computed by several workers in parallel.
    pub fn new(n: u64) -> Tree {
        let mut level_sizes = Vec::new();
        if n >= 2 {
            let mut size = (n - 1).div_ceil(MAX_OPERANDS);
            level_sizes.push(size);
            while size > 1 {
                size = size.div_ceil(MAX_OPERANDS);
                level_sizes.push(size);
            }
        }
        let top = level_sizes.len() as u32;
        let few_enough = level_sizes.iter().position(|&s| s <= LEAF_STAGE_TASKS_MAX).unwrap_or(0) as u32;
        let lowest = few_enough.max(LEAF_STAGE_LEVEL_MIN).min(top.saturating_sub(1));
        let stages = if top == 0 { Vec::new() } else { (lowest..top).collect() };
        Tree { n, level_sizes, stages }
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

    /// Whether `op` names an operation of this plan.
    pub fn contains(&self, op: OpId) -> bool {
        op.index < self.level_size(op.level)
    }

    /// Whether `op` names a task of this plan (peers' messages are checked with it).
    pub fn is_task(&self, op: OpId) -> bool {
        self.contains(op) && self.stages.contains(&op.level)
    }

    /// The stage levels, lowest first.
    pub fn stages(&self) -> &[u32] {
        &self.stages
    }

    /// How many tasks stage level `level` holds.
    pub fn task_count(&self, level: u32) -> u64 {
        if self.stages.contains(&level) {
            self.level_size(level)
        } else {
            0
        }
    }

    /// The stage level below `level`, or `None` for the lowest stage.
    fn stage_below(&self, level: u32) -> Option<u32> {
        self.stages.iter().copied().filter(|&s| s < level).max()
    }

    /// How many levels of operations the task `op` performs.
    pub fn task_depth(&self, op: OpId) -> u32 {
        match self.stage_below(op.level) {
            Some(below) => op.level - below,
            None => op.level + 1,
        }
    }

    /// What the task `op` starts from. `op` must be a task of the plan.
    pub fn task_inputs(&self, op: OpId) -> TaskInputs {
        debug_assert!(self.is_task(op), "{op:?} is not a task of {}!", self.n);
        match self.stage_below(op.level) {
            Some(below) => {
                let (first, end) = self.range_at(op, below);
                TaskInputs::Products((first..end).map(|index| OpId { level: below, index }).collect())
            }
            None => {
                let (first, last) = self.integers(op);
                TaskInputs::Integers { first, last }
            }
        }
    }

    /// The integers `first..=last` whose product is `op`'s (for any operation of the tree).
    pub fn integers(&self, op: OpId) -> (u64, u64) {
        let (first_leaf, end_leaf) = self.range_at(op, 0);
        (2 + MAX_OPERANDS * first_leaf, (1 + MAX_OPERANDS * end_leaf).min(self.n))
    }

    /// The task that consumes the product of task `op`, or `None` for the root.
    pub fn task_parent(&self, op: OpId) -> Option<OpId> {
        let above = self.stages.iter().copied().find(|&s| s > op.level)?;
        Some(OpId { level: above, index: op.index / fan_out(above - op.level) })
    }

    /// How many operations of the plan the task `op` performs.
    pub fn task_ops(&self, op: OpId) -> u64 {
        let lowest = self.stage_below(op.level).map_or(0, |below| below + 1);
        self.ops_between(op, lowest)
    }

    /// How many operations of the plan lie in `op`'s whole subtree (`op` included): what a
    /// known product of `op` makes unnecessary.
    pub fn subtree_ops(&self, op: OpId) -> u64 {
        self.ops_between(op, 0)
    }

    fn ops_between(&self, op: OpId, lowest: u32) -> u64 {
        (lowest..=op.level)
            .map(|level| {
                let (first, end) = self.range_at(op, level);
                end - first
            })
            .sum()
    }

    /// The indices `first..end` of the operations of `level` under `op` (`level <= op.level`).
    fn range_at(&self, op: OpId, level: u32) -> (u64, u64) {
        let factor = fan_out(op.level - level);
        let end = op.index.saturating_add(1).saturating_mul(factor).min(self.level_size(level));
        (op.index.saturating_mul(factor).min(end), end)
    }
}

/// How many operations lie `levels` levels below one operation in a full tree: `4^levels`.
fn fan_out(levels: u32) -> u64 {
    MAX_OPERANDS.checked_pow(levels).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Tree {
        fn tasks_at(&self, level: u32) -> impl Iterator<Item = OpId> {
            (0..self.task_count(level)).map(move |index| OpId { level, index })
        }
    }

    #[test]
    fn empty_products_need_no_operation() {
        for n in [0, 1] {
            let plan = Tree::new(n);
            assert_eq!(plan.total_ops(), 0);
            assert_eq!(plan.root(), None);
            assert!(plan.stages().is_empty());
        }
    }

    #[test]
    fn a_small_factorial_is_one_task_over_its_whole_tree() {
        let plan = Tree::new(20);
        assert_eq!(plan.level_sizes, vec![5, 2, 1]);
        let root = plan.root().unwrap();
        assert_eq!(plan.stages(), &[2]);
        assert_eq!(plan.task_inputs(root), TaskInputs::Integers { first: 2, last: 20 });
        assert_eq!((plan.task_ops(root), plan.task_depth(root), plan.total_ops()), (8, 3, 8));
        assert_eq!(plan.task_parent(root), None);
        assert!(!plan.is_task(OpId { level: 1, index: 0 }), "inner operations are not tasks");
        assert_eq!(Tree::new(2).task_inputs(OpId { level: 0, index: 0 }), TaskInputs::Integers { first: 2, last: 2 });
    }

    #[test]
    fn a_million_is_cut_into_245_leaf_tasks_and_one_stage_per_level_above() {
        let plan = Tree::new(1_000_000);
        assert_eq!(plan.stages(), &[5, 6, 7, 8, 9]);
        assert_eq!(plan.tasks_at(5).count(), 245);
        assert_eq!(plan.tasks_at(4).count(), 0, "level 4 is inside the leaf tasks");
        let first = OpId { level: 5, index: 0 };
        assert_eq!(plan.task_inputs(first), TaskInputs::Integers { first: 2, last: 4097 });
        assert_eq!(plan.task_ops(first), 1024 + 256 + 64 + 16 + 4 + 1);
        let top = plan.root().unwrap();
        assert_eq!(plan.task_depth(top), 1);
        assert_eq!(plan.task_inputs(top), TaskInputs::Products((0..4).map(|index| OpId { level: 8, index }).collect()));
        assert_eq!(plan.subtree_ops(top), plan.total_ops());
    }

    /// Every integer is in exactly one leaf task, every operation in exactly one task, and a
    /// task's inputs are exactly the tasks of the stage below that name it as their parent.
    #[test]
    fn tasks_partition_the_tree() {
        for n in [2, 3, 6, 20, 21, 100, 1000, 4097, 16_390, 100_000, 1_000_000, 3_000_001] {
            let plan = Tree::new(n);
            let stages = plan.stages().to_vec();
            assert_eq!(stages.last().copied(), plan.root().map(|r| r.level), "n = {n}");
            let mut next = 2;
            let mut ops = 0;
            for &level in &stages {
                for task in plan.tasks_at(level) {
                    assert!(plan.is_task(task));
                    ops += plan.task_ops(task);
                    match plan.task_inputs(task) {
                        TaskInputs::Integers { first, last } => {
                            assert_eq!((level, first), (stages[0], next), "n = {n}");
                            next = last + 1;
                        }
                        TaskInputs::Products(children) => {
                            assert!(!children.is_empty());
                            for child in children {
                                assert!(plan.is_task(child));
                                assert_eq!(plan.task_parent(child), Some(task));
                            }
                        }
                        TaskInputs::Swing { .. } => panic!("a tree has no swing"),
                    }
                }
            }
            assert_eq!(next, n + 1, "n = {n}");
            assert_eq!(ops, plan.total_ops(), "n = {n}");
        }
    }
}
