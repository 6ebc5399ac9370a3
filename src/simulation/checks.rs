//! Bookkeeping for the invariants checked across a whole run.

use crate::coordinator::OpRef;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct Checks {
    pub violations: Vec<String>,
    /// How often workers computed each task.
    computed: HashMap<OpRef, u32>,
    /// How often each task was in flight when something failed (a coordinator crashed or
    /// stepped down, its batch failed, the network duplicated its request): the times it
    /// may be computed again.
    allowance: HashMap<OpRef, u32>,
    /// Finished jobs whose result no reachable member held when asked (computed again).
    pub results_lost: u64,
}

impl Checks {
    pub fn computed(&mut self, task: OpRef) {
        *self.computed.entry(task).or_default() += 1;
    }

    pub fn allow_again(&mut self, tasks: Vec<OpRef>) {
        for task in tasks {
            *self.allowance.entry(task).or_default() += 1;
        }
    }

    /// Every task of `job` computed so far may be computed once more (the job restarts).
    pub fn allow_job_again(&mut self, job: &str) {
        let tasks: Vec<OpRef> = self.computed.keys().filter(|t| t.job == job).cloned().collect();
        self.allow_again(tasks);
    }

    pub fn tasks_computed(&self) -> u64 {
        self.computed.values().map(|&c| u64::from(c)).sum()
    }

    pub fn tasks_recomputed(&self) -> u64 {
        self.computed.values().map(|&c| u64::from(c.saturating_sub(1))).sum()
    }

    /// The first task computed more often than once plus its allowance.
    pub fn recomputed_beyond_allowance(&self) -> Option<String> {
        let mut over: Vec<(&OpRef, u32, u32)> = self
            .computed
            .iter()
            .map(|(task, &count)| (task, count, self.allowance.get(task).copied().unwrap_or(0)))
            .filter(|&(_, count, allowed)| count > 1 + allowed)
            .collect();
        over.sort();
        over.first().map(|(task, count, allowed)| {
            format!(
                "task {}:{} of job {} computed {count} times, but in flight at only {allowed} failures",
                task.op.level, task.op.index, task.job
            )
        })
    }
}
