//! The worker's side: compute the tasks of a batch. Pure apart from counters.
//!
//! A task is a subtree of a job's plan (see [`crate::coordinator::plan`]): the worker performs
//! its operations bottom-up, each on at most [`MAX_OPERANDS`] values, and returns only the
//! task's root product.

use crate::bignum::Big;
use crate::coordinator::{primes, Plan, Task, TaskInputs, MAX_OPERANDS};
use std::sync::atomic::{AtomicU64, Ordering};

/// What this node computed as a worker (shown in `/status`).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub operations_computed: AtomicU64,
    pub max_operands: AtomicU64,
    /// Conversion tasks being carried out (a split, or a piece's digits).
    pub conversion_tasks_running: AtomicU64,
    /// Conversion tasks carried out.
    pub conversion_tasks_done: AtomicU64,
}

/// Checks a task before any work: n is within this cluster's limit, the task belongs to n!'s
/// plan, and it carries exactly the operands its plan calls for. A batch with a task that
/// breaks this is refused whole (a peer's bug or a hostile message, never a panic).
pub fn check(task: &Task, max_n: u64) -> Result<(), String> {
    let name = format!("task {}:{} of {}!", task.op.level, task.op.index, task.n);
    if task.n > max_n {
        return Err(format!("{name}: n is above this node's --max-n {max_n}"));
    }
    let plan = Plan::new(task.n);
    if !plan.is_task(task.op) {
        return Err(format!("{name} is not a task of its plan"));
    }
    let expected = plan.task_inputs(task.op).children().len();
    if task.operands.len() != expected {
        return Err(format!("{name} carries {} operands; its plan calls for {expected}", task.operands.len()));
    }
    Ok(())
}

/// Products up to this many bits take microseconds: computing one (or converting it to
/// decimal) costs less than handing it to a thread of its own.
pub const LIGHT_BITS_MAX: u64 = 1 << 16;

/// Whether the task's product is small enough ([`LIGHT_BITS_MAX`]) to compute where it is.
pub fn is_light(task: &Task) -> bool {
    let bits = match Plan::new(task.n).task_inputs(task.op) {
        TaskInputs::Integers { first, last } => {
            last.saturating_sub(first).saturating_add(1).saturating_mul(u64::from(64 - last.leading_zeros()))
        }
        // swing(m) has about m bits.
        TaskInputs::Swing { m } => m,
        TaskInputs::Products(_) => task.operands.iter().map(Big::significant_bits).sum(),
    };
    bits <= LIGHT_BITS_MAX
}

/// Computes a checked task: every operation of its subtree, bottom-up, at most
/// [`MAX_OPERANDS`] values each; returns the root's product.
pub fn compute(task: Task, stats: &WorkerStats) -> Big {
    let plan = Plan::new(task.n);
    let (rounds, fan_in) = (plan.task_depth(task.op), MAX_OPERANDS as usize);
    // Each input range starts on a multiple of 4^k at level k, so runs of four are exactly
    // the plan's operations, level after level.
    let count = |operands: usize| {
        stats.operations_computed.fetch_add(1, Ordering::Relaxed);
        stats.max_operands.fetch_max(operands as u64, Ordering::Relaxed);
    };
    if plan.squares_first(task.op) {
        let mut operands = task.operands.into_iter();
        let (Some(half), Some(swing)) = (operands.next(), operands.next()) else { return Big::one() };
        count(1);
        count(2);
        return Big::square_times(half, &swing);
    }
    let mut values = match plan.task_inputs(task.op) {
        TaskInputs::Integers { first, last } => Big::multiply_words_in_rounds(first..=last, rounds, fan_in, count),
        TaskInputs::Swing { m } => Big::multiply_words_in_rounds(swing_factors(m), rounds, fan_in, count),
        TaskInputs::Products(_) => Big::multiply_in_rounds(task.operands, rounds, fan_in, count),
    };
    debug_assert_eq!(values.len(), 1, "a checked task reduces to one product");
    values.pop().unwrap_or_else(Big::one)
}

/// The prime powers of swing(m), in order of their primes: each at most m, one word.
fn swing_factors(m: u64) -> Vec<u64> {
    let mut factors = Vec::new();
    primes::for_each_prime(m, |p| match primes::swing_exponent(m, p) {
        0 => {}
        e => factors.push(p.pow(e)),
    });
    factors
}

/// n! by the cluster's own plan and task code, every task in turn in this thread: the
/// in-process baseline `facto bench` compares the cluster with.
pub fn compute_in_one_thread(n: u64, stats: &WorkerStats) -> Big {
    let plan = Plan::new(n);
    let mut products = std::collections::BTreeMap::new();
    for level in plan.stages() {
        for op in plan.tasks_at(level) {
            let operands = plan.task_inputs(op).children().iter().filter_map(|c| products.remove(c)).collect();
            products.insert(op, compute(Task { n, op, operands }, stats));
        }
    }
    plan.root().and_then(|root| products.remove(&root)).unwrap_or_else(Big::one)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::OpId;

    #[test]
    fn tasks_compute_every_operation_of_the_plan_with_at_most_four_values() {
        for n in [2, 5, 20, 100, 5_000, 70_000, 100_001, 262_145] {
            let stats = WorkerStats::default();
            assert_eq!(compute_in_one_thread(n, &stats), Big::factorial(n), "{n}!");
            assert_eq!(stats.operations_computed.load(Ordering::Relaxed), Plan::new(n).total_ops(), "{n}!");
            assert!(stats.max_operands.load(Ordering::Relaxed) <= MAX_OPERANDS);
        }
    }

    /// Each task of a swing plan, computed alone, passes the coordinator's check, and its
    /// product is the value the plan says; a product off by one does not pass.
    #[test]
    fn swing_tasks_pass_the_coordinators_check() {
        use crate::coordinator::fingerprint::{check_answer, check_subtree};
        use crate::coordinator::{Fingerprint, OpRef, WorkItem};
        let (n, fp, stats) = (150_001, Fingerprint::new(3), WorkerStats::default());
        let plan = Plan::new(n);
        let mut products = std::collections::BTreeMap::new();
        for level in plan.stages() {
            for op in plan.tasks_at(level) {
                let operands: Vec<Big> =
                    plan.task_inputs(op).children().iter().map(|c| products.get(c).cloned().unwrap()).collect();
                let item = WorkItem { op: OpRef { job: "1-1".into(), op }, n, operands: operands.clone() };
                let product = compute(Task { n, op, operands }, &stats);
                assert!(
                    check_answer(&fp, std::slice::from_ref(&item), &[(item.op.clone(), product.clone())]).is_ok(),
                    "{op:?}"
                );
                assert!(check_subtree(&fp, &plan, op, &product), "{op:?}");
                let forged = Big::product(&[product.clone(), Big::from(3)]);
                assert!(
                    check_answer(&fp, std::slice::from_ref(&item), &[(item.op.clone(), forged)]).is_err(),
                    "{op:?}"
                );
                products.insert(op, product);
            }
        }
        assert_eq!(products[&plan.root().unwrap()], Big::factorial(n));
    }

    #[test]
    fn refuses_tasks_outside_the_plan_or_with_the_wrong_operands() {
        let root = |n| Plan::new(n).root().unwrap();
        let task = |n, op, operands: &[u64]| Task { n, op, operands: operands.iter().map(|&v| Big::from(v)).collect() };
        assert!(check(&task(20, root(20), &[]), 1_000).is_ok());
        assert!(check(&task(20, root(20), &[7]), 1_000).unwrap_err().contains("1 operands"));
        assert!(check(&task(20, OpId { level: 0, index: 0 }, &[]), 1_000).unwrap_err().contains("not a task"));
        assert!(check(&task(20, OpId { level: 2, index: 1 }, &[]), 1_000).is_err());
        assert!(check(&task(u64::MAX, OpId { level: 0, index: 0 }, &[]), 1_000).unwrap_err().contains("--max-n"));
        let top = root(1_000_000);
        assert!(check(&task(1_000_000, top, &[1, 2]), 1_000_000).is_ok(), "(500,000!)² · swing(1,000,000)");
        assert!(check(&task(1_000_000, top, &[1, 2, 3, 4]), 1_000_000).is_err());
    }
}
