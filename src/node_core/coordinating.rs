//! Taking over and coordinating: resuming jobs from the gathered checkpoints, learning what
//! peers hold, handing the scheduler's work out, and results to decimal.

use super::role::{Coordinator, Reread, Role, RESULT_BYTES_MAX};
use super::{Answer, Effect, JobsQuery, NodeCore, Routed};
use crate::bignum::{abbreviate, Big};
use crate::checkpoint::Fact;
use crate::coordinator::{Action, JobId, OpRef, Plan, Scheduler, Timing};
use facto_elections::{Election, Epoch, Leadership, NodeId};
use std::sync::Arc;

/// Beyond the workers' delay, how long a batch may take before it is reassigned.
const BATCH_TIMEOUT_MS: u64 = 5_000;
/// How often a coordinator asks again for a checkpoint a peer has not sent yet.
const PULL_AGAIN_MS: u64 = 500;
/// A result no reachable member holds is read this many times more, waiting 250 ms, 500 ms,
/// 1 s, 2 s and 2 s before each (about 6 s in all), before it is computed again.
const RESULT_REREADS: u32 = 5;
const RESULT_REREAD_FIRST_MS: u64 = 250;
const RESULT_REREAD_MAX_MS: u64 = 2_000;

impl NodeCore {
    /// Takes over at `epoch` once the peers' checkpoints are in: merges them into this
    /// node's, and resumes every job from what is known, so finished operations are not
    /// computed again.
    pub(super) fn resume(&mut self, epoch: Epoch, facts: Vec<Fact>, unanswered: Vec<NodeId>) {
        if self.role.taking_over() != Some(epoch) || self.election.leadership() != (Leadership::Leading { epoch }) {
            return;
        }
        // Roots this node wrote when it coordinated before and no peer took: finished here.
        let own_roots: Vec<Fact> = std::mem::take(&mut self.unreplicated_roots).into_values().collect();
        self.record(super::validate::without_horizons_beyond(epoch, facts), None);
        if !own_roots.is_empty() {
            let roots = self.record(own_roots, None);
            let roots = self.with_jobs(roots);
            self.replicate(None, epoch, roots);
        }
        let timing = Timing { worker_delay_ms: self.settings.delay_ms, batch_timeout_ms: BATCH_TIMEOUT_MS };
        let mut scheduler = Scheduler::new(epoch.to_string(), timing);
        let (mut actions, unfinished) = self.restore_jobs(&mut scheduler);
        let now_ms = self.now_ms;
        let me = self.me();
        for id in self.settings.members.ids().into_iter().filter(|&id| id != me) {
            scheduler.add_worker(id);
            if self.unreachable.contains(&id) {
                actions.extend(scheduler.set_reachable(id, false, now_ms));
            }
        }
        log::info!(
            "node {me} coordinates at epoch {epoch}: {} jobs in the checkpoint, {unfinished} to resume",
            self.checkpoint.jobs.len()
        );
        self.note_leadership(Some(me), epoch, "takeover finished");
        let mut coordinator = Coordinator::new(epoch, scheduler);
        // A peer that did not answer may hold the only other copy of an acknowledged job.
        coordinator.unpulled = unanswered.into_iter().collect();
        coordinator.last_pull_ms = now_ms;
        self.step_down(Role::Coordinating(Box::new(coordinator)));
        self.carry_out(actions);
        let finished = self.checkpoint.finished_jobs();
        self.copy_roots(finished);
    }

    /// Every job of the checkpoint, into a new coordinator's scheduler. Returns the first
    /// dispatches and how many jobs are unfinished.
    fn restore_jobs(&self, scheduler: &mut Scheduler) -> (Vec<Action>, usize) {
        let mut actions = Vec::new();
        let mut unfinished = 0;
        for id in self.checkpoint.jobs_in_order() {
            let job = &self.checkpoint.jobs[&id];
            if job.n > self.settings.max_n {
                // Written by a forged or buggy peer, or before --max-n was lowered: planning
                // it could take the coordinator's whole memory and time.
                log::error!("job {id} asks for {}!, beyond --max-n {}: not resumed", job.n, self.settings.max_n);
                continue;
            }
            if job.finished {
                scheduler.restore_finished_job(id, job.n);
                continue;
            }
            let restored = scheduler.restore_job(id.clone(), job.n, job.products.clone(), job.dispatched.clone());
            if restored.is_empty() {
                unfinished += 1;
            }
            // A job found finished is converted to decimal when a client asks for it, not
            // now: a coordinator that took over from a long-lived one would otherwise convert
            // every result it ever computed.
            actions.extend(restored.into_iter().filter(|a| !matches!(a, Action::JobFinished { .. })));
        }
        (actions, unfinished)
    }

    /// A peer that comes back may hold facts the coordinator missed while gathering (it
    /// was down then, and may hold the only other copy of a job): pull them, and again
    /// until it answers.
    pub(super) fn pull_checkpoint(&mut self, peer: NodeId) {
        if !self.settings.checkpoint {
            return;
        }
        let Some(c) = self.role.coordinator_in("pull_checkpoint") else { return };
        c.unpulled.insert(peer);
        self.pull(peer);
    }

    fn pull(&mut self, peer: NodeId) {
        let Some(c) = self.role.coordinator_in("pull") else { return };
        if c.pulling.insert(peer) {
            let (epoch, finished) = (c.epoch, self.checkpoint.finished_jobs());
            self.gather(epoch, Some(peer), finished, Vec::new());
        }
    }

    /// Peers whose checkpoint is still missing are asked again every [`PULL_AGAIN_MS`].
    pub(super) fn pull_again(&mut self) {
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("pull_again") else { return };
        if c.unpulled.is_empty() || now_ms < c.last_pull_ms + PULL_AGAIN_MS {
            return;
        }
        c.last_pull_ms = now_ms;
        let peers: Vec<NodeId> = c.unpulled.difference(&c.pulling).copied().collect();
        for peer in peers {
            self.pull(peer);
        }
    }

    pub(super) fn on_pulled(&mut self, epoch: Epoch, peer: NodeId, facts: Option<Vec<Fact>>) {
        let Some(c) = self.role.coordinator_at(epoch, "on_pulled") else { return };
        c.pulling.remove(&peer);
        let Some(facts) = facts else { return };
        c.unpulled.remove(&peer);
        let new = self.record(super::validate::without_horizons_beyond(epoch, facts), None);
        self.learn(new);
    }

    /// A coordinator told of facts it did not know (a peer's checkpoint or write): jobs it
    /// had not heard of are resumed, products are used like late answers.
    pub(super) fn learn(&mut self, new: Vec<Fact>) {
        let now_ms = self.now_ms;
        let max_n = self.settings.max_n;
        let Some(c) = self.role.coordinator_in("learn") else { return };
        let mut actions = Vec::new();
        let mut products = Vec::new();
        let mut finished = Vec::new();
        for fact in new {
            match fact {
                Fact::Job { id, n, .. } if n > max_n => {
                    log::error!("job {id} asks for {n}!, beyond --max-n: not resumed");
                }
                Fact::Job { id, .. } => match self.checkpoint.jobs.get(&id) {
                    Some(job) if job.finished => {
                        c.scheduler.restore_finished_job(id.clone(), job.n);
                        finished.push(id);
                    }
                    Some(job) => {
                        log::info!("job {id} learned from a peer's checkpoint; resuming it");
                        let (products, dispatched) = (job.products.clone(), job.dispatched.clone());
                        actions.extend(c.scheduler.restore_job(id, job.n, products, dispatched));
                    }
                    None => {}
                },
                Fact::Product { job, op, product } => products.push((OpRef { job, op }, product)),
                // A job under way here that a peer says finished: its root is on that peer's
                // disk, not in hand; computing it again costs work but loses nothing.
                Fact::Dispatched { .. } | Fact::Finished { .. } => {}
                // Its jobs left the checkpoint and the scheduler as it was recorded.
                Fact::Retired { .. } => {}
            }
        }
        actions.extend(c.scheduler.learn(products, now_ms));
        self.carry_out(actions);
        self.copy_roots(finished);
    }

    /// Carries out the scheduler's actions: batches go to the driver as dispatches (their
    /// dispatch recorded), finished results to decimal.
    pub(super) fn carry_out(&mut self, actions: Vec<Action>) {
        let Some(epoch) = self.role.coordinator_in("carry_out").map(|c| c.epoch) else { return };
        for action in actions {
            match action {
                Action::Dispatch { batch, worker, deadline_ms, items } => {
                    if self.settings.checkpoint {
                        let facts = items.iter().map(|i| Fact::Dispatched { job: i.op.job.clone(), op: i.op.op });
                        let now_ms = self.now_ms;
                        if let Some(c) = self.role.coordinator_mut() {
                            c.round.add_dispatched(facts, now_ms);
                        }
                    }
                    log::debug!("batch {batch}: {} tasks to node {worker}", items.len());
                    self.emit(Effect::Dispatch { epoch, batch, worker, deadline_ms, items });
                }
                Action::JobFinished { job, n, result } => {
                    let now_ms = self.now_ms;
                    if let Some(c) = self.role.coordinator_mut() {
                        if let Some(&accepted_ms) = c.accepted_ms.get(&job) {
                            c.product_ms.insert(job.clone(), now_ms.saturating_sub(accepted_ms));
                        }
                        c.finished_ms.insert(job.clone(), now_ms);
                    }
                    self.convert_to_decimal(job, n, Some(result));
                }
            }
        }
    }

    /// Asks for a finished job's product in decimal (`None`: the root product is on disk
    /// here or on a peer; the driver reads it first), once per job at a time.
    fn convert_to_decimal(&mut self, job: JobId, n: u64, product: Option<Big>) {
        let Some(c) = self.role.coordinator_in("convert_to_decimal") else { return };
        if c.converting.insert(job.clone()) {
            let (epoch, workers) = (c.epoch, c.scheduler.reachable_workers());
            self.emit(Effect::ToDecimal { epoch, job, n, product, workers });
        }
    }

    /// A finished job whose digits are not in memory (dropped, or finished under another
    /// coordinator) is converted again from its root product.
    pub(super) fn convert_again_if_dropped(&mut self, id: &str) {
        let Some(c) = self.role.coordinator_in("convert_again_if_dropped") else { return };
        if c.results.contains_key(id) || !c.scheduler.job_progress(id).is_some_and(|p| p.finished) {
            return;
        }
        let Some(job) = self.checkpoint.jobs.get(id) else { return };
        let n = job.n;
        let product = if Plan::new(n).root().is_none() { Some(Big::one()) } else { None };
        self.convert_to_decimal(id.to_string(), n, product);
    }

    /// A result's digits: kept (within the cap) and handed to the clients waiting for them.
    pub(super) fn on_decimal(&mut self, job: JobId, n: u64, decimal: Arc<str>) {
        log::debug!("{n}! = {}", abbreviate(&decimal));
        // Without checkpoints the digits are the only copy of the result: kept.
        let max_bytes = if self.settings.checkpoint { RESULT_BYTES_MAX } else { usize::MAX };
        let Some(c) = self.role.coordinator_in("on_decimal") else { return };
        if c.scheduler.job_progress(&job).is_none() {
            // Retired while it was being converted.
            c.converting.remove(&job);
            return;
        }
        c.rereads.remove(&job);
        c.keep_result(job.clone(), decimal, max_bytes);
        let answer = c.jobs(&JobsQuery::One { id: job.clone(), wait: false });
        for waiter in c.waiters.remove(&job).unwrap_or_default() {
            self.reply(waiter, Answer::Jobs(Routed::Here(answer.clone())));
        }
    }

    /// No member that answered holds a right copy of the result (a forged or damaged record,
    /// or both holders down or cut off): read again a few times, backing off, and only then
    /// computed again, never answered wrong. A storm of faults keeps a result's holders away
    /// for a while more often than it destroys them, and a big job costs far more than the
    /// few seconds its waiting clients lose.
    pub(super) fn on_no_decimal(&mut self, job: JobId) {
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("on_no_decimal") else { return };
        let failures = c.rereads.get(&job).map_or(0, |r| r.failures) + 1;
        if failures <= RESULT_REREADS {
            let wait_ms = (RESULT_REREAD_FIRST_MS << (failures - 1)).min(RESULT_REREAD_MAX_MS);
            log::warn!("job {job}: no member that answered holds its result; reading it again in {wait_ms} ms");
            c.rereads.insert(job, Reread { failures, at_ms: Some(now_ms + wait_ms) });
            return;
        }
        c.rereads.remove(&job);
        c.converting.remove(&job);
        log::warn!("job {job}: computing its result again");
        self.results_computed_again += 1;
        self.checkpoint.restart(&job);
        let actions = c.scheduler.restart_finished_job(&job);
        self.carry_out(actions);
    }

    /// Reads again the results whose wait is over (on a tick).
    pub(super) fn reread_results(&mut self) {
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("reread_results") else { return };
        let due: Vec<JobId> =
            c.rereads.iter().filter(|(_, r)| r.at_ms.is_some_and(|at| at <= now_ms)).map(|(j, _)| j.clone()).collect();
        for job in due {
            let Some(c) = self.role.coordinator_in("reread_results") else { return };
            match self.checkpoint.jobs.get(&job).filter(|j| j.finished).map(|j| j.n) {
                Some(n) => {
                    if let Some(r) = c.rereads.get_mut(&job) {
                        r.at_ms = None;
                    }
                    let (epoch, workers) = (c.epoch, c.scheduler.reachable_workers());
                    self.emit(Effect::ToDecimal { epoch, job, n, product: None, workers });
                }
                None => {
                    c.rereads.remove(&job);
                    c.converting.remove(&job);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::node_core::Input;
    use facto_elections::HardState;

    /// A coordinator at epoch 1 that counts job 1-1 (20!) finished.
    fn coordinating_with_a_finished_job() -> NodeCore {
        let settings = crate::node_core::tests::three_members();
        let mut checkpoint = Checkpoint::default();
        checkpoint.apply(Fact::Job { id: "1-1".into(), n: 20, request: None });
        checkpoint.apply(Fact::Finished { job: "1-1".into() });
        let mut core = NodeCore::new(settings, HardState::default(), checkpoint, 2).unwrap();
        let timing = Timing { worker_delay_ms: 0, batch_timeout_ms: BATCH_TIMEOUT_MS };
        let mut scheduler = Scheduler::new("1".into(), timing);
        core.restore_jobs(&mut scheduler);
        core.role = Role::Coordinating(Box::new(Coordinator::new(1, scheduler)));
        core
    }

    fn reads(effects: &[Effect]) -> usize {
        effects.iter().filter(|e| matches!(e, Effect::ToDecimal { product: None, .. })).count()
    }

    #[test]
    fn a_result_out_of_reach_is_read_again_before_it_is_computed_again() {
        let mut core = coordinating_with_a_finished_job();
        core.convert_again_if_dropped("1-1");
        assert_eq!(reads(&core.effects), 1);
        core.effects.clear();
        let mut now_ms = 0;
        for wait_ms in [250, 500, 1_000, 2_000, 2_000] {
            assert!(core.step(now_ms, Input::NoDecimal { job: "1-1".into() }).is_empty());
            assert!(core.checkpoint.jobs["1-1"].finished, "not computed again yet");
            assert_eq!(reads(&core.step(now_ms + wait_ms - 10, Input::Tick)), 0, "read again only after its wait");
            core.convert_again_if_dropped("1-1");
            assert_eq!(reads(&core.effects), 0, "a client's query does not cut the wait short");
            now_ms += wait_ms;
            assert_eq!(reads(&core.step(now_ms, Input::Tick)), 1);
        }
        core.step(now_ms, Input::NoDecimal { job: "1-1".into() });
        assert!(!core.checkpoint.jobs["1-1"].finished, "computed again after the last read failed");
        assert_eq!(core.results_computed_again(), 1);
    }

    #[test]
    fn a_result_read_again_is_answered() {
        let mut core = coordinating_with_a_finished_job();
        core.convert_again_if_dropped("1-1");
        core.step(0, Input::NoDecimal { job: "1-1".into() });
        assert_eq!(reads(&core.step(250, Input::Tick)), 1);
        core.step(260, Input::Decimal { job: "1-1".into(), n: 20, decimal: Arc::from("2432902008176640000") });
        assert_eq!(reads(&core.step(10_000, Input::Tick)), 0, "nothing left to read");
        assert_eq!(core.results_computed_again(), 0);
    }
}
