//! Finished results on two disks.
//!
//! A finished job's result is its root product, kept on disk only: on the disk of the
//! coordinator that finished it and on one peer's. A takeover can find one of the two gone
//! for good (the old coordinator crashed and has not restarted, or never will), leaving the
//! result on a single disk, and a second failure would then cost the whole job again. So a
//! new coordinator brings every finished root it can reach up to two disks: one read from
//! its own disk goes to a peer; one read from a peer's is written to its own. A few at a
//! time and in the background, since a coordinator that took over from a long-lived one may
//! retain up to `--retain-jobs` results.
//!
//! A replica keeps a root it is sent even for a job it already counts finished (its
//! checkpoint has nothing to learn from it, but its disk may lack the product).

use super::{Effect, NodeCore};
use crate::bignum::Big;
use crate::checkpoint::Fact;
use crate::coordinator::{JobId, Plan};

/// Roots being read at once while bringing results up to two disks.
const ROOT_COPIES_IN_FLIGHT: usize = 4;

impl NodeCore {
    /// Queues finished jobs whose roots this coordinator brings up to two disks.
    pub(super) fn copy_roots(&mut self, jobs: impl IntoIterator<Item = JobId>) {
        if !self.settings.checkpoint {
            return;
        }
        let Some(c) = self.role.coordinator_in("copy_roots") else { return };
        c.roots_to_copy.extend(jobs);
        self.fetch_next_roots();
    }

    fn fetch_next_roots(&mut self) {
        loop {
            let Some(c) = self.role.coordinator_in("fetch_next_roots") else { return };
            if c.roots_copying >= ROOT_COPIES_IN_FLIGHT {
                return;
            }
            let Some(job) = c.roots_to_copy.pop_front() else { return };
            // Retired meanwhile, or 0! and 1!, which have no product to keep.
            let Some(n) = self.checkpoint.jobs.get(&job).filter(|j| j.finished).map(|j| j.n) else { continue };
            if Plan::new(n).root().is_none() {
                continue;
            }
            c.roots_copying += 1;
            self.emit(Effect::FetchRoot { job, n });
        }
    }

    /// A root read for copying (`None`: no reachable member holds a right copy; the job is
    /// computed again if a client asks for it).
    pub(super) fn on_root_fetched(&mut self, job: JobId, root: Option<Big>, on_this_disk: bool) {
        let Some(c) = self.role.coordinator_in("on_root_fetched") else { return };
        c.roots_copying = c.roots_copying.saturating_sub(1);
        let epoch = c.epoch;
        let op = self.checkpoint.jobs.get(&job).filter(|j| j.finished).and_then(|j| Plan::new(j.n).root());
        match (root, op) {
            (Some(product), Some(op)) => {
                let root = Fact::Product { job: job.clone(), op, product };
                if on_this_disk {
                    let facts = self.with_jobs(vec![root]);
                    self.replicate(None, epoch, facts);
                } else {
                    self.write_root_copies(vec![(job, root)]);
                }
            }
            (None, Some(_)) => log::warn!("job {job}: no reachable member holds its result"),
            (_, None) => {}
        }
        self.fetch_next_roots();
    }

    /// Root products among replicated `facts` of jobs this node already counts finished.
    pub(super) fn root_copies(&self, facts: &[Fact]) -> Vec<(JobId, Fact)> {
        facts
            .iter()
            .filter(|f| match f {
                Fact::Product { job, op, .. } => {
                    self.checkpoint.jobs.get(job).is_some_and(|j| j.finished && Plan::new(j.n).root() == Some(*op))
                }
                _ => false,
            })
            .map(|f| (f.job().to_string(), f.clone()))
            .collect()
    }

    /// Writes roots to this node's disk without changing its checkpoint.
    pub(super) fn write_root_copies(&mut self, roots: Vec<(JobId, Fact)>) {
        if roots.is_empty() {
            return;
        }
        let checkpoint_version = self.checkpoint_version;
        self.emit(Effect::Write {
            write: None,
            facts: Vec::new(),
            finished: roots,
            retired: Vec::new(),
            checkpoint_version,
        });
    }
}
