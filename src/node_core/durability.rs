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
    Reply(ReplyId, Box<Answer>),
    /// This node's half of a submission's acknowledgement.
    Acknowledge(u64),
    /// This node's half of a round's durability.
    Round { epoch: Epoch, round: u64 },
}

/// What waits for facts to be on a peer.
pub(super) enum AfterReplicate {
    /// The peer's half of these submissions' acknowledgements (their tokens).
    Acknowledge(Vec<u64>),
    /// The peer's half of a round's durability.
    Round { epoch: Epoch, round: u64 },
}

/// Submissions waiting for their replication: group commit, as etcd batches its WAL. One
/// replication is in flight at a time, and it carries every submission that came while the
/// one before was on its way; a burst of clients costs one round trip to a peer, not one each.
#[derive(Default)]
pub(super) struct AckReplication {
    /// Tokens of submissions not yet sent to a peer, their epoch and facts, oldest first.
    waiting: Vec<(u64, Epoch, Vec<Fact>)>,
    /// The replication on its way, if any (its token).
    in_flight: Option<u64>,
}

/// A submission on its way to its acknowledgement: written here and on a peer, in parallel.
pub(super) struct AckJoin {
    job: JobInfo,
    reply: ReplyId,
    on_disk: bool,
    on_peer: bool,
}

/// How long a coordinator collects answered batches and dispatches before it makes them
/// durable in one round (see [`NodeCore::flush_round`]).
pub(super) const ROUND_MS: u64 = 40;

/// What a coordinator has learned since its last round: answered batches and dispatches.
#[derive(Default)]
pub(super) struct Round {
    batches: Vec<u64>,
    facts: Vec<Fact>,
    /// Root products: they finish jobs, so the round goes as soon as no other round with
    /// roots is on its way (one in flight, as submissions' replication).
    roots: Vec<Fact>,
    /// When the first of them came (the driver's clock).
    since_ms: Option<u64>,
}

impl Round {
    fn add(&mut self, batch: Option<u64>, facts: impl IntoIterator<Item = Fact>, now_ms: u64) {
        self.batches.extend(batch);
        self.facts.extend(facts);
        self.since_ms.get_or_insert(now_ms);
    }

    pub(super) fn add_dispatched(&mut self, facts: impl IntoIterator<Item = Fact>, now_ms: u64) {
        self.add(None, facts, now_ms);
    }

    /// Whether the round has collected for [`ROUND_MS`].
    pub(super) fn due(&self, now_ms: u64) -> bool {
        self.since_ms.is_some_and(|since| now_ms >= since + ROUND_MS)
    }
}

/// A round's way to durability: on this node's disk and on a peer's.
pub(super) struct RoundJoin {
    on_disk: bool,
    on_peer: bool,
    /// The answered batches whose products the round holds.
    batches: Vec<u64>,
    /// Jobs whose root product the round holds.
    roots: BTreeSet<JobId>,
    /// The facts a peer must hold (kept to send again should no peer take them).
    facts: Vec<Fact>,
    /// No peer took them last time: sent again with the next tick.
    retry: bool,
    /// Whether the round carries root products that arrived with it.
    with_roots: bool,
}

impl NodeCore {
    /// Applies facts to this node's checkpoint and asks for the new ones to be written
    /// (`write`: report when durable). Returns the facts that were new.
    pub(super) fn record(&mut self, facts: Vec<Fact>, write: Option<WriteId>) -> Vec<Fact> {
        let mut new = Vec::new();
        let mut finished = Vec::new();
        // Horizons first (facts gathered from several peers come in any order): a stale copy
        // of a job below one is then ignored rather than taken up again.
        let (horizons, others): (Vec<Fact>, Vec<Fact>) =
            facts.into_iter().partition(|f| matches!(f, Fact::Retired { .. }));
        for fact in horizons.into_iter().chain(others) {
            if matches!(fact, Fact::Dispatched { .. } | Fact::Product { .. })
                && self.unreplicated_roots.contains_key(fact.job())
            {
                // Covered by the root written here, which waits for a peer; and a root's
                // write drops its job's records, so a later record of the job would linger.
                continue;
            }
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
        let retired = self.checkpoint.take_retired();
        self.forget_retired(&retired);
        if write.is_some() || !written.is_empty() || !retired.is_empty() {
            let checkpoint_version = self.checkpoint_version;
            self.emit(Effect::Write { write, facts: new, finished, retired, checkpoint_version });
        }
        written
    }

    /// Puts the `Job` fact of every job the facts touch in front of them, so a replica that
    /// has not seen the job yet (replicas change with the coordinator) can place them.
    pub(super) fn with_jobs(&self, facts: Vec<Fact>) -> Vec<Fact> {
        let jobs: BTreeSet<&str> = facts.iter().filter(|f| !matches!(f, Fact::Job { .. })).map(Fact::job).collect();
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
        if self.role.coordinator_at(epoch, "on_batch_answered").is_none() {
            return;
        }
        let now_ms = self.now_ms;
        log::debug!("batch {batch}: answered");
        match outcome {
            Ok(products) if self.settings.checkpoint => {
                self.make_durable(epoch, batch, &products);
                let Some(c) = self.role.coordinator_in("on_batch_answered") else { return };
                let actions = c.scheduler.batch_answered(batch, products, now_ms);
                self.carry_out(actions);
            }
            Ok(products) => self.batch_durable(batch, products),
            Err(why) => {
                log::warn!("batch {batch} failed: {why}");
                let Some(c) = self.role.coordinator_in("on_batch_answered") else { return };
                let actions = c.scheduler.batch_failed(batch, now_ms);
                self.carry_out(actions);
            }
        }
    }

    /// Acknowledges a submission once its `facts` are on this node's disk (write `write`,
    /// already asked for) and on a peer's: both are asked for at once.
    pub(super) fn acknowledge_when_durable(
        &mut self,
        job: JobInfo,
        facts: Vec<Fact>,
        reply: ReplyId,
        epoch: Epoch,
        write: WriteId,
    ) {
        let token = self.token();
        self.acks.insert(token, AckJoin { job, reply, on_disk: false, on_peer: false });
        self.after_write.insert(write, AfterWrite::Acknowledge(token));
        self.ack_replication.waiting.push((token, epoch, facts));
        self.replicate_acks();
    }

    /// Sends the submissions waiting for a peer, those of the oldest one's epoch, in one
    /// replication, unless one is on its way already.
    pub(super) fn replicate_acks(&mut self) {
        let group = &mut self.ack_replication;
        let Some(&(_, epoch, _)) = group.waiting.first() else { return };
        if group.in_flight.is_some() {
            return;
        }
        let (same, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut group.waiting).into_iter().partition(|w| w.1 == epoch);
        group.waiting = later;
        let mut tokens = Vec::with_capacity(same.len());
        let mut facts = Vec::new();
        for (token, _, f) in same {
            tokens.push(token);
            facts.extend(f);
        }
        let replication = self.token();
        self.ack_replication.in_flight = Some(replication);
        self.after_replicate.insert(replication, AfterReplicate::Acknowledge(tokens));
        self.replicate(Some(replication), epoch, facts);
    }

    fn ack_replicated(&mut self, token: u64, ok: bool) {
        if ok {
            return self.ack_part_durable(token, false);
        }
        if let Some(join) = self.acks.remove(&token) {
            let why = format!("job {} could not be replicated to any peer; not acknowledged", join.job.id);
            self.reply(join.reply, Answer::Job(Routed::Failed(why)));
        }
    }

    fn ack_part_durable(&mut self, token: u64, on_disk: bool) {
        let Some(join) = self.acks.get_mut(&token) else { return };
        if on_disk {
            join.on_disk = true;
        } else {
            join.on_peer = true;
        }
        if join.on_disk && join.on_peer {
            let join = self.acks.remove(&token).expect("just found");
            self.reply(join.reply, Answer::Job(Routed::Here(join.job)));
        }
    }

    /// Puts a batch's products in the coordinator's next round; a batch that brings a job's
    /// root product flushes the round at once (the job finishes only once its root is on
    /// two disks, so that round is on the client's critical path; the others are not).
    fn make_durable(&mut self, epoch: Epoch, batch: u64, products: &[(OpRef, Big)]) {
        let facts: Vec<Fact> = products
            .iter()
            .map(|(op, p)| Fact::Product { job: op.job.clone(), op: op.op, product: p.clone() })
            .collect();
        let (roots, facts): (Vec<Fact>, Vec<Fact>) = facts.into_iter().partition(|f| self.is_new_root(f));
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("make_durable") else { return };
        c.round.add(Some(batch), facts, now_ms);
        c.round.roots.extend(roots);
        self.flush_roots_unless_in_flight(epoch);
    }

    /// Flushes the round now if it holds roots and no round with roots is on its way: jobs
    /// that finish while one is share the next.
    fn flush_roots_unless_in_flight(&mut self, epoch: Epoch) {
        let Some(c) = self.role.coordinator_at(epoch, "flush_roots_unless_in_flight") else { return };
        if !c.round.roots.is_empty() && !c.durable.values().any(|j| j.with_roots) {
            self.flush_round(epoch);
        }
    }

    /// Makes the round durable: one write to this node's disk and one replication to a peer
    /// for every batch answered and dispatched since the last round (once it is
    /// [`ROUND_MS`] old, or now for a root), instead of a write and a replication per batch.
    pub(super) fn flush_round(&mut self, epoch: Epoch) {
        let Some(c) = self.role.coordinator_at(epoch, "flush_round") else { return };
        let Round { batches, facts, roots, .. } = std::mem::take(&mut c.round);
        let with_roots = !roots.is_empty();
        debug_assert!(roots.is_empty() || !batches.is_empty(), "a root comes with its batch");
        // Jobs whose root waits for a peer: `record` leaves their facts out, so the round's
        // batches count done only once that root is on a peer too (it goes with the round).
        let mut roots: BTreeSet<JobId> = self.write_roots(roots).into_iter().collect();
        roots.extend(
            facts.iter().map(Fact::job).filter(|job| self.unreplicated_roots.contains_key(*job)).map(String::from),
        );
        // A round of dispatch records only: nothing waits for it.
        let round = (!batches.is_empty()).then(|| self.token());
        if let Some(round) = round {
            self.after_write.insert(round, AfterWrite::Round { epoch, round });
        }
        let mut new = self.record(facts, round);
        new.extend(roots.iter().filter_map(|job| self.unreplicated_roots.get(job).cloned()));
        let new = if new.is_empty() { new } else { self.with_jobs(new) };
        let Some(round) = round else {
            if !new.is_empty() {
                self.replicate(None, epoch, new);
            }
            return;
        };
        let on_peer = new.is_empty();
        if !on_peer {
            self.replicate_round(epoch, round, new.clone());
        }
        if let Some(c) = self.role.coordinator_mut() {
            let join = RoundJoin { on_disk: false, on_peer, batches, roots, facts: new, retry: false, with_roots };
            c.durable.insert(round, join);
        }
    }

    /// A product that finishes a job this node has not finished.
    fn is_new_root(&self, fact: &Fact) -> bool {
        let Fact::Product { job, op, .. } = fact else { return false };
        self.checkpoint.jobs.get(job).is_some_and(|j| !j.finished && Plan::new(j.n).root() == Some(*op))
    }

    /// Writes root products to this node's disk, but keeps them out of its checkpoint (as
    /// [`NodeCore::unreplicated_roots`]) until a peer holds them too. Returns their jobs
    /// (also those of roots written before and still waiting: a late duplicate answer).
    fn write_roots(&mut self, roots: Vec<Fact>) -> Vec<JobId> {
        let mut jobs = Vec::new();
        let mut finished = Vec::new();
        for root in roots {
            let Fact::Product { job, .. } = &root else { continue };
            jobs.push(job.clone());
            if !self.unreplicated_roots.contains_key(job) {
                finished.push((job.clone(), root.clone()));
                self.unreplicated_roots.insert(job.clone(), root);
            }
        }
        if !finished.is_empty() {
            self.checkpoint_version += finished.len() as u64;
            let checkpoint_version = self.checkpoint_version;
            let retired = Vec::new();
            self.emit(Effect::Write { write: None, facts: Vec::new(), finished, retired, checkpoint_version });
        }
        jobs
    }

    fn replicate_round(&mut self, epoch: Epoch, round: u64, facts: Vec<Fact>) {
        let token = self.token();
        self.after_replicate.insert(token, AfterReplicate::Round { epoch, round });
        self.replicate(Some(token), epoch, facts);
    }

    /// Rounds whose facts no peer took are sent again (never counted done on one disk).
    pub(super) fn replicate_again(&mut self) {
        let Some(c) = self.role.coordinator_in("replicate_again") else { return };
        let epoch = c.epoch;
        let again: Vec<(u64, Vec<Fact>)> = c
            .durable
            .iter_mut()
            .filter(|(_, j)| j.retry)
            .map(|(&round, j)| {
                j.retry = false;
                (round, j.facts.clone())
            })
            .collect();
        for (round, facts) in again {
            self.replicate_round(epoch, round, facts);
        }
    }

    pub(super) fn on_written(&mut self, write: WriteId, ok: bool) {
        let Some(after) = self.after_write.remove(&write) else { return };
        if !ok {
            // The driver stops a node whose disk fails; nothing is answered.
            return;
        }
        match after {
            AfterWrite::Reply(to, answer) => self.reply(to, *answer),
            AfterWrite::Acknowledge(token) => self.ack_part_durable(token, true),
            AfterWrite::Round { epoch, round } => self.round_part_durable(epoch, round, true),
        }
    }

    pub(super) fn on_replicated(&mut self, token: u64, ok: bool) {
        match self.after_replicate.remove(&token) {
            Some(AfterReplicate::Acknowledge(tokens)) => {
                self.ack_replication.in_flight = None;
                for ack in tokens {
                    self.ack_replicated(ack, ok);
                }
                self.replicate_acks();
            }
            Some(AfterReplicate::Round { epoch, round }) if ok => self.round_part_durable(epoch, round, false),
            Some(AfterReplicate::Round { epoch, round }) => {
                log::warn!("round {round}: no peer took its products; sending them again");
                if let Some(join) =
                    self.role.coordinator_mut().filter(|c| c.epoch == epoch).and_then(|c| c.durable.get_mut(&round))
                {
                    join.retry = true;
                }
            }
            None => {}
        }
    }

    /// One half of a round's durability arrived (`on_disk`: this node's; else a peer's);
    /// with both, its batches' products count as done.
    fn round_part_durable(&mut self, epoch: Epoch, round: u64, on_disk: bool) {
        let bug = self.settings.bugs.done_before_replicated();
        let Some(c) = self.role.coordinator_at(epoch, "round_part_durable") else { return };
        let Some(join) = c.durable.get_mut(&round) else { return };
        if on_disk {
            join.on_disk = true;
        } else {
            join.on_peer = true;
        }
        if join.on_disk && (join.on_peer || bug) {
            let join = c.durable.remove(&round).expect("just found");
            for job in join.roots {
                // Now on two disks: the checkpoint may hold it as a mark.
                if let Some(root) = self.unreplicated_roots.remove(&job) {
                    self.checkpoint.apply(root);
                }
            }
            for batch in join.batches {
                log::debug!("batch {batch}: products durable");
                self.batch_durable(batch, Vec::new());
            }
            self.flush_roots_unless_in_flight(epoch);
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
