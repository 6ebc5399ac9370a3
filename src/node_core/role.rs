//! What a node is doing, as one value: following, taking over, or coordinating (with the
//! coordinator's state, which exists only then).

use super::{
    durability::{Round, RoundJoin},
    JobsQuery, ReplyId,
};
use crate::api::JobInfo;
use crate::coordinator::{JobId, Scheduler};
use facto_elections::{Epoch, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub(super) enum Role {
    /// Following a coordinator, or waiting for an election to name one; `last_contact_ms` is
    /// when the coordinator was last heard from.
    Following { last_contact_ms: Option<u64> },
    /// Leading at `epoch`, gathering the peers' checkpoints before resuming the jobs. Client
    /// requests that arrive meanwhile wait (see `waiting_room`).
    TakingOver { epoch: Epoch },
    /// Leading, with the coordinator's state.
    Coordinating(Box<Coordinator>),
}

impl Role {
    pub(super) fn coordinator(&self) -> Option<&Coordinator> {
        match self {
            Role::Coordinating(c) => Some(c),
            _ => None,
        }
    }

    pub(super) fn coordinator_mut(&mut self) -> Option<&mut Coordinator> {
        match self {
            Role::Coordinating(c) => Some(c),
            _ => None,
        }
    }

    /// The coordinator's state, for a step only a coordinator takes (reached through
    /// `step_coordinating` or a coordinator's tick). `None` only when the same step left the
    /// role, and then logged like a stale completion, never in silence.
    pub(super) fn coordinator_in(&mut self, step: &str) -> Option<&mut Coordinator> {
        if self.coordinator().is_none() {
            log::debug!("{step} for a coordinator role left: dropped");
        }
        self.coordinator_mut()
    }

    /// The coordinator's state for the completion of work started at `epoch`; `None`
    /// (logged) once this node no longer coordinates at that epoch.
    pub(super) fn coordinator_at(&mut self, epoch: Epoch, step: &str) -> Option<&mut Coordinator> {
        match self {
            Role::Coordinating(c) if c.epoch == epoch => Some(c),
            _ => {
                log::debug!("{step} for a coordinator role at epoch {epoch}, left: dropped");
                None
            }
        }
    }

    pub(super) fn taking_over(&self) -> Option<Epoch> {
        match self {
            Role::TakingOver { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

/// Decimal digits of finished jobs kept in memory (10,000,000! has 65 million): beyond this
/// the oldest are dropped, and converted again from the root product if a client asks.
pub(super) const RESULT_BYTES_MAX: usize = 128 << 20;

/// A finished result that could not be read: how many reads failed, and when it is read
/// again (`None`: being read now).
pub(super) struct Reread {
    pub failures: u32,
    pub at_ms: Option<u64>,
}

/// The coordinator's state; exists only while this node leads.
pub(super) struct Coordinator {
    pub epoch: Epoch,
    pub scheduler: Scheduler,
    /// Decimal results of finished jobs, the oldest dropped beyond [`RESULT_BYTES_MAX`].
    pub results: BTreeMap<JobId, Arc<str>>,
    results_oldest_first: VecDeque<JobId>,
    results_bytes: usize,
    /// Jobs whose decimal conversion is under way (or waits to read the result again).
    pub converting: BTreeSet<JobId>,
    /// Finished results no reachable member held when read, to be read again before they
    /// are computed again (see `coordinating::on_no_decimal`).
    pub rereads: BTreeMap<JobId, Reread>,
    /// When this coordinator received each job it accepted (the driver's clock), and how
    /// long the job took to its root product from there (`facto bench` reports it).
    pub accepted_ms: BTreeMap<JobId, u64>,
    pub product_ms: BTreeMap<JobId, u64>,
    /// Clients waiting for a job's result.
    pub waiters: BTreeMap<JobId, Vec<ReplyId>>,
    /// Batches answered and dispatched since the last round, waiting for the next.
    pub round: Round,
    /// Rounds on their way to being durable here and on a peer.
    pub durable: BTreeMap<u64, RoundJoin>,
    /// Peers whose checkpoint this coordinator has not had yet (they did not answer the
    /// gathering, or came back since), those asked right now, and when it last asked.
    pub unpulled: BTreeSet<NodeId>,
    pub pulling: BTreeSet<NodeId>,
    pub last_pull_ms: u64,
    /// When each finished job was first seen finished here (for `--retain-for`), and when
    /// retention is next looked at.
    pub finished_ms: BTreeMap<JobId, u64>,
    pub next_retention_check_ms: u64,
    /// Finished jobs whose roots wait to be brought up to two disks, and how many are being
    /// read (see `root_copies`).
    pub roots_to_copy: VecDeque<JobId>,
    pub roots_copying: usize,
}

impl Coordinator {
    pub(super) fn new(epoch: Epoch, scheduler: Scheduler) -> Coordinator {
        Coordinator {
            epoch,
            scheduler,
            results: BTreeMap::new(),
            results_oldest_first: VecDeque::new(),
            results_bytes: 0,
            converting: BTreeSet::new(),
            rereads: BTreeMap::new(),
            accepted_ms: BTreeMap::new(),
            product_ms: BTreeMap::new(),
            waiters: BTreeMap::new(),
            round: Round::default(),
            durable: BTreeMap::new(),
            unpulled: BTreeSet::new(),
            pulling: BTreeSet::new(),
            last_pull_ms: 0,
            finished_ms: BTreeMap::new(),
            next_retention_check_ms: 0,
            roots_to_copy: VecDeque::new(),
            roots_copying: 0,
        }
    }

    /// Forgets jobs past retention: their progress, digits and times.
    pub(super) fn forget(&mut self, retired: &[JobId]) {
        for id in retired {
            self.scheduler.retire(id);
            if let Some(digits) = self.results.remove(id) {
                self.results_bytes -= digits.len();
            }
            self.accepted_ms.remove(id);
            self.product_ms.remove(id);
            self.finished_ms.remove(id);
            self.converting.remove(id);
            self.rereads.remove(id);
        }
        if !retired.is_empty() {
            let gone: BTreeSet<&JobId> = retired.iter().collect();
            self.results_oldest_first.retain(|id| !gone.contains(id));
        }
    }

    /// Keeps a job's digits, dropping the oldest others' beyond `max_bytes`.
    pub(super) fn keep_result(&mut self, job: JobId, decimal: Arc<str>, max_bytes: usize) {
        self.converting.remove(&job);
        self.results_bytes += decimal.len();
        if let Some(old) = self.results.insert(job.clone(), decimal) {
            self.results_bytes -= old.len();
        } else {
            self.results_oldest_first.push_back(job);
        }
        while self.results_bytes > max_bytes && self.results_oldest_first.len() > 1 {
            let Some(oldest) = self.results_oldest_first.pop_front() else { break };
            if let Some(dropped) = self.results.remove(&oldest) {
                self.results_bytes -= dropped.len();
            }
        }
    }

    /// Jobs as clients see them: the one asked for, with its digits, or a page of the
    /// newest without them (a page of big results would be gigabytes).
    pub(super) fn jobs(&self, query: &JobsQuery) -> Vec<JobInfo> {
        let (progress, with_digits) = match query {
            JobsQuery::One { id, .. } => (self.scheduler.job_progress(id).into_iter().collect(), true),
            JobsQuery::Latest { limit, before } => (self.scheduler.latest(*limit, before.as_deref()), false),
            JobsQuery::Each { ids } => (ids.iter().filter_map(|id| self.scheduler.job_progress(id)).collect(), true),
        };
        progress
            .iter()
            .map(|p| {
                let digits = self.results.get(&p.id);
                let mut job = JobInfo::new(p, digits.filter(|_| with_digits).cloned());
                if let Some(digits) = digits {
                    job.mark_done(digits.len());
                }
                JobInfo { product_ms: self.product_ms.get(&p.id).copied(), ..job }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::Timing;

    #[test]
    fn the_oldest_digits_are_dropped_beyond_the_limit_but_never_the_last() {
        let timing = Timing { worker_delay_ms: 0, batch_timeout_ms: 1 };
        let mut c = Coordinator::new(1, Scheduler::new("1".into(), timing));
        for (job, digits) in [("1-1", "1111"), ("1-2", "22"), ("1-3", "333")] {
            c.keep_result(job.into(), Arc::from(digits), 6);
        }
        assert_eq!(c.results.keys().collect::<Vec<_>>(), ["1-2", "1-3"]);
        assert_eq!(c.results_bytes, 5);
        c.keep_result("1-4".into(), Arc::from("4444444444"), 6);
        assert_eq!(c.results.keys().collect::<Vec<_>>(), ["1-4"], "the newest stays, whatever its size");
    }
}
