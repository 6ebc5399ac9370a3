//! Retention: finished jobs leave the coordinator's memory, every node's checkpoint and
//! disk, and status answers once they are past `--retain-jobs` (the newest N finished jobs
//! stay) or `--retain-for` (finished longer ago than that). A month of small jobs then costs
//! what its last N jobs cost, and a takeover loads only those.
//!
//! The coordinator records a horizon ([`Fact::Retired`]): every job up to it in submission
//! order is forgotten, and a later copy of one ignored. It replicates it like any fact; a
//! replica that misses it is covered by the next, since horizons only move forward. The
//! horizon never passes an unfinished job (one long job holds back the retirement of those
//! after it), and moves only while this coordinator holds every peer's checkpoint. A client
//! asking for a forgotten job hears 410 with the reason, not a 404 that would say it never
//! existed.

use super::NodeCore;
use crate::checkpoint::{job_order, Fact};
use crate::coordinator::JobId;

/// How often a coordinator looks for jobs past retention (the driver's clock).
const RETENTION_CHECK_MS: u64 = 1_000;

impl NodeCore {
    /// Retires the finished jobs past retention, if any, at most once per
    /// [`RETENTION_CHECK_MS`].
    pub(super) fn retire_past_retention(&mut self) {
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("retire_past_retention") else { return };
        if now_ms < c.next_retention_check_ms {
            return;
        }
        c.next_retention_check_ms = now_ms + RETENTION_CHECK_MS;
        let epoch = c.epoch;
        let Some(up_to) = self.retirement_horizon(now_ms) else { return };
        log::debug!("jobs up to {up_to} are past retention");
        let facts = self.record(vec![Fact::Retired { up_to }], None);
        if !facts.is_empty() {
            self.replicate(None, epoch, facts);
        }
    }

    /// The newest job past retention: beyond the newest `retain_jobs` finished ones, or
    /// finished `retain_for_ms` ago or longer (a job finished under an earlier coordinator
    /// counts from when this one first saw it finished), and never past an unfinished job.
    /// Only once this coordinator has every peer's checkpoint: it then knows every job any
    /// member holds, so everything below the horizon finished.
    fn retirement_horizon(&mut self, now_ms: u64) -> Option<JobId> {
        let (retain_jobs, retain_for_ms) = (self.settings.retain_jobs, self.settings.retain_for_ms);
        let c = self.role.coordinator_mut().filter(|c| c.unpulled.is_empty() && c.pulling.is_empty())?;
        let mut jobs: Vec<((u64, u64, String), &JobId, bool)> =
            self.checkpoint.jobs.iter().map(|(id, j)| (job_order(id), id, j.finished)).collect();
        jobs.sort_unstable();
        let finished = jobs.iter().filter(|(.., done)| *done).count();
        // Jobs before the oldest unfinished one: all finished.
        let done_prefix = jobs.iter().position(|(.., done)| !done).unwrap_or(jobs.len());
        let by_count = (finished.saturating_sub(retain_jobs)).min(done_prefix).checked_sub(1);
        let by_age = retain_for_ms.and_then(|keep_ms| {
            jobs[..done_prefix].iter().rposition(|(_, id, _)| {
                let at = *c.finished_ms.entry((*id).clone()).or_insert(now_ms);
                now_ms.saturating_sub(at) >= keep_ms
            })
        });
        let newest = by_count.max(by_age)?;
        Some(jobs[newest].1.clone())
    }

    /// Drops retired jobs from the coordinator's state (the checkpoint dropped them already).
    pub(super) fn forget_retired(&mut self, retired: &[JobId]) {
        if let Some(c) = self.role.coordinator_mut() {
            c.forget(retired);
        }
    }

    /// Why a job is gone: a client's 410.
    pub(super) fn past_retention(&self, id: &str) -> String {
        let mut why = format!(
            "job {id} is past retention: it finished and was forgotten (this cluster keeps the newest {} finished jobs",
            self.settings.retain_jobs
        );
        if let Some(ms) = self.settings.retain_for_ms {
            why.push_str(&format!(", for at most {} s", ms / 1000));
        }
        why.push(')');
        why
    }
}
