//! Luschny's prime swing as tasks: n! = (⌊n/2⌋!)² · swing(n), applied down to a small base.
//!
//! With mₖ = ⌊n/2ᵏ⌋ for k < `steps` and the base b = m_steps (at most [`BASE_MAX`]):
//! - level 0, index k < steps: swing(mₖ), the product of its prime powers (each one machine
//!   word, see [`crate::coordinator::primes`]) in rounds of four;
//! - level 0, index steps: b!, the integers 2..=b in rounds of four;
//! - level j ≥ 1, index 0: m_{steps-j}! = (the product of level j-1)² · swing(m_{steps-j}):
//!   one squaring and one multiplication of two values. Level `steps` holds the root, n!.
//!
//! Every task has one consumer, so the plan is a tree like the product tree, with far
//! less work: the swings together have about 2n bits where n! has n·log₂n, and the rest is
//! squarings, cheaper than products of distinct numbers (measured in docs/DESIGN.md).

use super::{OpId, Product, TaskInputs, MAX_OPERANDS};
use crate::coordinator::primes::PrimeCounts;

/// The chain stops at the first mₖ at most this: b! is one small task.
pub const BASE_MAX: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swing {
    n: u64,
    /// How many halvings separate n from the base.
    steps: u32,
    /// How many prime powers swing(mₖ) multiplies, for each k < steps.
    factors: Vec<u64>,
}

impl Swing {
    pub fn new(n: u64) -> Swing {
        let steps = (0..64).find(|&k| n >> k <= BASE_MAX).unwrap_or(64);
        let counts = PrimeCounts::new(n);
        let factors = (0..steps).map(|k| counts.swing_factors(n >> k)).collect();
        Swing { n, steps, factors }
    }

    fn base(&self) -> u64 {
        self.n >> self.steps
    }

    pub fn root(&self) -> OpId {
        OpId { level: self.steps, index: 0 }
    }

    pub fn is_task(&self, op: OpId) -> bool {
        match op.level {
            0 => op.index <= u64::from(self.steps),
            level => level <= self.steps && op.index == 0,
        }
    }

    pub fn tasks_at(&self, level: u32) -> u64 {
        match level {
            0 => u64::from(self.steps) + 1,
            level if level <= self.steps => 1,
            _ => 0,
        }
    }

    pub fn task_inputs(&self, op: OpId) -> TaskInputs {
        match op.level {
            0 if op.index < u64::from(self.steps) => TaskInputs::Swing { m: self.n >> op.index },
            0 => TaskInputs::Integers { first: 2, last: self.base() },
            1 => TaskInputs::Products(vec![OpId { level: 0, index: self.steps.into() }, self.swing_of(1)]),
            level => TaskInputs::Products(vec![OpId { level: level - 1, index: 0 }, self.swing_of(level)]),
        }
    }

    /// The swing that chain level `level` multiplies by.
    fn swing_of(&self, level: u32) -> OpId {
        OpId { level: 0, index: u64::from(self.steps.saturating_sub(level)) }
    }

    /// The value a task's product must be.
    pub fn product_of(&self, op: OpId) -> Product {
        match op.level {
            0 if op.index < u64::from(self.steps) => Product::Swing { m: self.n >> op.index },
            0 => Product::Range { first: 2, last: self.base() },
            level => Product::Range { first: 2, last: self.n >> self.steps.saturating_sub(level) },
        }
    }

    pub fn task_parent(&self, op: OpId) -> Option<OpId> {
        match op.level {
            0 if op.index < u64::from(self.steps) => Some(OpId { level: self.steps - op.index as u32, index: 0 }),
            level if level < self.steps => Some(OpId { level: level + 1, index: 0 }),
            _ => None,
        }
    }

    /// Rounds of four a leaf task takes to reach one product (0 for a chain task).
    pub fn task_depth(&self, op: OpId) -> u32 {
        match op.level {
            0 => rounds_to_one(self.leaf_values(op.index)).0,
            _ => 0,
        }
    }

    fn leaf_values(&self, index: u64) -> u64 {
        self.factors.get(index as usize).copied().unwrap_or_else(|| self.base().saturating_sub(1))
    }

    pub fn task_ops(&self, op: OpId) -> u64 {
        match op.level {
            0 => rounds_to_one(self.leaf_values(op.index)).1,
            _ => 2,
        }
    }

    /// A chain task's subtree holds the chain below it, the base and the swings it used.
    pub fn subtree_ops(&self, op: OpId) -> u64 {
        if op.level == 0 {
            return self.task_ops(op);
        }
        let swings: u64 =
            (self.steps - op.level..self.steps).map(|k| self.task_ops(OpId { level: 0, index: k.into() })).sum();
        2 * u64::from(op.level) + swings + self.task_ops(OpId { level: 0, index: self.steps.into() })
    }
}

/// Rounds of [`MAX_OPERANDS`]-value operations, and operations, that reduce `values` values
/// to one.
pub fn rounds_to_one(mut values: u64) -> (u32, u64) {
    let (mut rounds, mut ops) = (0, 0);
    while values > 1 {
        values = values.div_ceil(MAX_OPERANDS);
        ops += values;
        rounds += 1;
    }
    (rounds, ops)
}
