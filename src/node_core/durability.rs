//! What the coordinator waits for before it counts anything done: facts on this node's disk
//! and on a peer's. Writes and replications are effects; their completions come back as
//! inputs and release what waited on them.

use super::{Answer, Effect, NodeCore, ReplyId, Routed, WriteId};
use crate::api::JobInfo;
use crate::bignum::Big;
use crate::checkpoint::Fact;
use crate::coordinator::{JobId, OpRef, Plan};
use facto_elections::{Election, Epoch};
use std::collections::BTreeSet;

/// What waits for a write to be durable.
pub(super) enum AfterWrite {
    /// An answer to send.
    Reply(ReplyId, Answer),
    /// A submission, acknowledged once its `facts` are on a peer too.
    Acknowledge { job: JobInfo, facts: Vec<Fact>, reply: ReplyId, epoch: Epoch },
    /// A batch's products.
    Batch { epoch: Epoch, batch: u64 },
}

/// What waits for facts to be on a peer.
pub(super) enum AfterReplicate {
    Acknowledge { job: JobInfo, reply: ReplyId },
    Batch { epoch: Epoch, batch: u64 },
}

/// An answered batch's way to durability: on this node's disk and on a peer's.
pub(super) struct BatchJoin {
    on_disk: bool,
    on_peer: bool,
    /// Jobs whose root product this batch brought.
    roots: Vec<JobId>,
    /// The facts a peer must hold (kept to send again should no peer take them).
    facts: Vec<Fact>,
    /// No peer took them last time: sent again with the next tick.
    retry: bool,
}

impl NodeCore {
    /// Applies facts to this node's checkpoint and asks for the new ones to be written
    /// (`write`: report when durable). Returns the facts that were new.
    pub(super) fn record(&mut self, facts: Vec<Fact>, write: Option<WriteId>) -> Vec<Fact> {
        let mut new = Vec::new();
        let mut finished = Vec::new();
        for fact in facts {
            let root = match &fact {
                Fact::Product { job, op, .. } => self
                    .checkpoint
                    .jobs
                    .get(job)
                    .and_then(|j| Plan::new(j.n).root())
                    .filter(|root| root == op)
                    .map(|_| job.clone()),
                Fact::Finished { job } if self.checkpoint.jobs.contains_key(job) => Some(job.clone()),
                _ => None,
            };
            if self.checkpoint.apply(fact.clone()) {
                match root {
                    Some(job) => finished.push((job, fact)),
                    None => new.push(fact),
                }
            }
        }
        self.checkpoint_version += (new.len() + finished.len()) as u64;
        self.election.set_checkpoint_version(self.checkpoint_version);
        let mut written = new.clone();
        written.extend(finished.iter().map(|(_, f)| f.clone()));
        if write.is_some() || !written.is_empty() {
            let checkpoint_version = self.checkpoint_version;
            self.emit(Effect::Write { write, facts: new, finished, checkpoint_version });
        }
        written
    }

    /// Puts the `Job` fact of every job the facts touch in front of them, so a replica that
    /// has not seen the job yet (replicas change with the coordinator) can place them.
    pub(super) fn with_jobs(&self, facts: Vec<Fact>) -> Vec<Fact> {
        let jobs: BTreeSet<&str> = facts
            .iter()
            .filter_map(|f| match f {
                Fact::Dispatched { job, .. } | Fact::Product { job, .. } | Fact::Finished { job } => Some(job.as_str()),
                Fact::Job { .. } => None,
            })
            .collect();
        let mut out: Vec<Fact> =
            jobs.into_iter().filter_map(|id| self.checkpoint.jobs.get(id).map(|j| j.job_fact(id))).collect();
        out.extend(facts);
        out
    }

    /// A worker's answer (already checked), or why there is none.
    pub(super) fn on_batch_answered(
        &mut self,
        epoch: Epoch,
        batch: u64,
        outcome: std::result::Result<Vec<(OpRef, Big)>, String>,
    ) {
        if self.coordinating() != Some(epoch) {
            return;
        }
        let now_ms = self.now_ms;
        log::debug!("batch {batch}: answered");
        match outcome {
            Ok(products) if self.settings.checkpoint => {
                self.make_durable(epoch, batch, &products);
                let Some(c) = self.role.coordinator_mut() else { return };
                let actions = c.scheduler.batch_answered(batch, products, now_ms);
                self.carry_out(actions);
            }
            Ok(products) => self.batch_durable(batch, products),
            Err(why) => {
                log::warn!("batch {batch} failed: {why}");
                let Some(c) = self.role.coordinator_mut() else { return };
                let actions = c.scheduler.batch_failed(batch, now_ms);
                self.carry_out(actions);
            }
        }
    }

    /// Records a batch's products on this node's disk and on a peer's, in parallel: only
    /// once both hold them do they count as done, so what the coordinator treats as finished
    /// survives its crash.
    fn make_durable(&mut self, epoch: Epoch, batch: u64, products: &[(OpRef, Big)]) {
        let facts: Vec<Fact> = products
            .iter()
            .map(|(op, p)| Fact::Product { job: op.job.clone(), op: op.op, product: p.clone() })
            .collect();
        let (roots, facts): (Vec<Fact>, Vec<Fact>) = facts.into_iter().partition(|f| self.is_new_root(f));
        let roots = self.write_roots(roots);
        let write = self.token();
        self.after_write.insert(write, AfterWrite::Batch { epoch, batch });
        let mut new = self.record(facts, Some(write));
        new.extend(roots.iter().filter_map(|job| self.unreplicated_roots.get(job).cloned()));
        let new = if new.is_empty() { new } else { self.with_jobs(new) };
        let on_peer = new.is_empty();
        if !on_peer {
            self.replicate_batch(epoch, batch, new.clone());
        }
        if let Some(c) = self.role.coordinator_mut() {
            c.durable.insert(batch, BatchJoin { on_disk: false, on_peer, roots, facts: new, retry: false });
        }
    }

    /// A product that finishes a job this node has not finished.
    fn is_new_root(&self, fact: &Fact) -> bool {
        let Fact::Product { job, op, .. } = fact else { return false };
        self.checkpoint.jobs.get(job).is_some_and(|j| !j.finished && Plan::new(j.n).root() == Some(*op))
    }

    /// Writes root products to this node's disk, but keeps them out of its checkpoint (as
    /// [`NodeCore::unreplicated_roots`]) until a peer holds them too. Returns their jobs.
    fn write_roots(&mut self, roots: Vec<Fact>) -> Vec<JobId> {
        let mut jobs = Vec::new();
        let mut finished = Vec::new();
        for root in roots {
            let Fact::Product { job, .. } = &root else { continue };
            if !self.unreplicated_roots.contains_key(job) {
                jobs.push(job.clone());
                finished.push((job.clone(), root.clone()));
                self.unreplicated_roots.insert(job.clone(), root);
            }
        }
        if !finished.is_empty() {
            self.checkpoint_version += finished.len() as u64;
            let checkpoint_version = self.checkpoint_version;
            self.emit(Effect::Write { write: None, facts: Vec::new(), finished, checkpoint_version });
        }
        jobs
    }

    fn replicate_batch(&mut self, epoch: Epoch, batch: u64, facts: Vec<Fact>) {
        let token = self.token();
        self.after_replicate.insert(token, AfterReplicate::Batch { epoch, batch });
        self.emit(Effect::Replicate { token: Some(token), epoch, facts });
    }

    /// Batches whose facts no peer took are sent again (never counted done on one disk).
    pub(super) fn replicate_again(&mut self) {
        let Some(c) = self.role.coordinator_mut() else { return };
        let epoch = c.epoch;
        let again: Vec<(u64, Vec<Fact>)> = c
            .durable
            .iter_mut()
            .filter(|(_, j)| j.retry)
            .map(|(&batch, j)| {
                j.retry = false;
                (batch, j.facts.clone())
            })
            .collect();
        for (batch, facts) in again {
            self.replicate_batch(epoch, batch, facts);
        }
    }

    pub(super) fn on_written(&mut self, write: WriteId, ok: bool) {
        let Some(after) = self.after_write.remove(&write) else { return };
        if !ok {
            // The driver stops a node whose disk fails; nothing is answered.
            return;
        }
        match after {
            AfterWrite::Reply(to, answer) => self.reply(to, answer),
            AfterWrite::Acknowledge { job, facts, reply, epoch } => {
                let token = self.token();
                self.after_replicate.insert(token, AfterReplicate::Acknowledge { job, reply });
                self.emit(Effect::Replicate { token: Some(token), epoch, facts });
            }
            AfterWrite::Batch { epoch, batch } => self.batch_part_durable(epoch, batch, true),
        }
    }

    pub(super) fn on_replicated(&mut self, token: u64, ok: bool) {
        match self.after_replicate.remove(&token) {
            Some(AfterReplicate::Acknowledge { job, reply }) => {
                let routed = if ok {
                    Routed::Here(job)
                } else {
                    Routed::Failed(format!("job {} could not be replicated to any peer; not acknowledged", job.id))
                };
                self.reply(reply, Answer::Job(routed));
            }
            Some(AfterReplicate::Batch { epoch, batch }) if ok => self.batch_part_durable(epoch, batch, false),
            Some(AfterReplicate::Batch { epoch, batch }) => {
                log::warn!("batch {batch}: no peer took its products; sending them again");
                if let Some(join) =
                    self.role.coordinator_mut().filter(|c| c.epoch == epoch).and_then(|c| c.durable.get_mut(&batch))
                {
                    join.retry = true;
                }
            }
            None => {}
        }
    }

    /// One half of a batch's durability arrived (`on_disk`: this node's; else a peer's);
    /// with both, its products count as done.
    fn batch_part_durable(&mut self, epoch: Epoch, batch: u64, on_disk: bool) {
        let bug = self.settings.bugs.done_before_replicated;
        let Some(c) = self.role.coordinator_mut().filter(|c| c.epoch == epoch) else { return };
        let Some(join) = c.durable.get_mut(&batch) else { return };
        if on_disk {
            join.on_disk = true;
        } else {
            join.on_peer = true;
        }
        if join.on_disk && (join.on_peer || bug) {
            let roots = std::mem::take(&mut join.roots);
            c.durable.remove(&batch);
            for job in roots {
                // Now on two disks: the checkpoint may hold it as a mark.
                if let Some(root) = self.unreplicated_roots.remove(&job) {
                    self.checkpoint.apply(root);
                }
            }
            log::debug!("batch {batch}: products durable");
            self.batch_durable(batch, Vec::new());
        }
    }

    fn batch_durable(&mut self, batch: u64, products: Vec<(OpRef, Big)>) {
        let now_ms = self.now_ms;
        if let Some(c) = self.role.coordinator_mut() {
            let actions = c.scheduler.batch_done(batch, products, now_ms);
            self.carry_out(actions);
        }
    }
}
