//! Client requests: submissions (acknowledged once durable on two nodes), job queries
//! (answered now or once the result is known), and the node's status.

use super::role::Role;
use super::{Answer, Client, CoreStatus, Effect, JobsQuery, NodeCore, ReplyId, Routed};
use crate::api::JobInfo;
use crate::checkpoint::Fact;
use crate::coordinator::Plan;
use facto_elections::{Election, Leadership, NodeId};

/// Where a client request is served: here (this node coordinates), by the coordinator this
/// node follows, or nowhere yet.
pub(super) enum Route {
    Here,
    Leader(NodeId, String),
    Nowhere,
}

impl NodeCore {
    /// Where a client request is served.
    pub(super) fn route(&self) -> Route {
        match self.election.leadership() {
            Leadership::Leading { .. } if self.role.coordinator().is_some() => Route::Here,
            Leadership::Following { leader, .. } => match self.settings.members.addr(leader) {
                Some(addr) => Route::Leader(leader, addr.to_string()),
                None => Route::Nowhere,
            },
            _ => Route::Nowhere,
        }
    }

    /// A client request this node cannot serve goes to the coordinator it knows, once: a
    /// request already forwarded is turned away (two members that each think the other
    /// leads must not bounce it). Returns whether it went.
    fn forwarded_elsewhere<T>(&mut self, client: Client, wrap: fn(Routed<T>) -> Answer) -> bool {
        match self.route() {
            Route::Here => return false,
            Route::Leader(leader, addr) if !client.forwarded => {
                self.emit(Effect::Forward { to: client.reply, leader, addr });
            }
            _ => self.reply(client.reply, wrap(Routed::NoLeader)),
        }
        true
    }

    /// Accepts a job; the client hears 202 only once the job is on this node's disk and on
    /// at least one peer's, so it survives the crash of any single node.
    pub(super) fn submit(&mut self, n: u64, request: Option<String>, client: Client) {
        if self.forwarded_elsewhere(client, Answer::Job) {
            return;
        }
        let reply = client.reply;
        if let Some(job) = self.resubmitted(request.as_deref()) {
            return self.submitted_again(n, job, reply);
        }
        if let Some(refusal) = self.admission(n) {
            return self.reply(reply, Answer::Job(refusal));
        }
        let now_ms = self.now_ms;
        let Some(c) = self.role.coordinator_in("submit") else { return };
        let epoch = c.epoch;
        let (id, mut actions) = c.scheduler.submit(n);
        c.accepted_ms.insert(id.clone(), now_ms);
        let progress = c.scheduler.job_progress(&id).expect("just submitted");
        log::debug!("job {id}: {n}! accepted");
        let job = JobInfo::new(&progress, None);
        if self.settings.checkpoint && !self.settings.bugs.ack_before_durable() {
            let write = self.token();
            let facts = self.record(vec![Fact::Job { id, n, request }], Some(write));
            self.acknowledge_when_durable(job, facts, reply, epoch, write);
        } else {
            if self.settings.checkpoint {
                self.record(vec![Fact::Job { id, n, request }], None);
            }
            self.reply(reply, Answer::Job(Routed::Here(job)));
        }
        if let Some(c) = self.role.coordinator_mut() {
            actions.extend(c.scheduler.tick(now_ms));
        }
        self.carry_out(actions);
    }

    /// A retry of a submission this cluster already took (its answer was lost, or it was
    /// not acknowledged): the same job, acknowledged once it is durable.
    fn submitted_again(&mut self, n: u64, job: JobInfo, reply: ReplyId) {
        if job.n != n {
            let why = format!("request key already names job {} ({}!), not {n}!", job.id, job.n);
            return self.reply(reply, Answer::Job(Routed::Refused(why)));
        }
        log::debug!("job {}: {n}! submitted again by its client", job.id);
        let Some(epoch) = self.role.coordinator_in("submitted_again").map(|c| c.epoch) else { return };
        let facts = vec![self.checkpoint.jobs[&job.id].job_fact(&job.id)];
        // An empty write is durable once every earlier one is, the job's among them.
        let write = self.token();
        self.record(Vec::new(), Some(write));
        self.acknowledge_when_durable(job, facts, reply, epoch, write);
    }

    /// Whether a new job for n! may be taken: a coordinator never multiplies, so a cluster of
    /// one cannot compute; and the queue of open work is bounded (`--queue-jobs-max`,
    /// `--queue-ops-max`), beyond which clients are told to come back (429) rather than the
    /// cluster taking work it would finish only after their patience, or its memory, ran out.
    fn admission(&self, n: u64) -> Option<Routed<JobInfo>> {
        let s = &self.settings;
        let ops = Plan::new(n).total_ops();
        if s.members.0.len() < 2 && ops > 0 {
            return Some(Routed::Refused(
                "this cluster has one member, its coordinator, and a coordinator never multiplies: add members".into(),
            ));
        }
        let (jobs_open, ops_open) = self.role.coordinator()?.scheduler.open_work();
        if jobs_open >= s.queue_jobs_max || (jobs_open > 0 && ops_open.saturating_add(ops) > s.queue_ops_max) {
            return Some(Routed::Busy(format!(
                "the coordinator's queue is full ({jobs_open} jobs, {ops_open} operations open); retry in 1 s"
            )));
        }
        None
    }

    /// The job an earlier submission with the client's idempotency key `request` created.
    fn resubmitted(&self, request: Option<&str>) -> Option<JobInfo> {
        let c = self.role.coordinator()?;
        let id = self.checkpoint.job_for_request(request?)?;
        let progress = c.scheduler.job_progress(id)?;
        Some(JobInfo::new(&progress, c.results.get(id).cloned()))
    }

    /// `GET /jobs[/<id>]`; with `wait`, held until the job's result is known (the driver
    /// bounds the wait). A job past retention is gone, with the reason.
    pub(super) fn on_jobs_query(&mut self, query: JobsQuery, client: Client) {
        if self.forwarded_elsewhere(client, Answer::Jobs) {
            return;
        }
        let reply = client.reply;
        if let JobsQuery::One { id, .. } = &query {
            self.convert_again_if_dropped(id);
        }
        let mut jobs = self.role.coordinator().map_or_else(Vec::new, |c| c.jobs(&query));
        jobs.iter_mut().for_each(|j| j.coordinator = Some(self.settings.id));
        let routed = match (self.role.coordinator_mut(), query) {
            (Some(c), JobsQuery::One { id, wait: true }) if jobs.len() == 1 && jobs[0].result.is_none() => {
                c.waiters.entry(id).or_default().push(reply);
                return;
            }
            (_, JobsQuery::One { id, .. }) if jobs.is_empty() && self.checkpoint.is_retired(&id) => {
                Routed::Gone(self.past_retention(&id))
            }
            _ => Routed::Here(jobs),
        };
        self.reply(reply, Answer::Jobs(routed));
    }

    /// A client stopped waiting: its parked submission is dropped (it will retry, and must
    /// not get a job it never heard of), and it waits for no result.
    pub(super) fn on_client_gone(&mut self, reply: ReplyId) {
        self.waiting_room.leave(reply);
        if let Role::Coordinating(c) = &mut self.role {
            c.waiters.values_mut().for_each(|w| w.retain(|&r| r != reply));
        }
    }

    /// What this node shows of itself in `/status`, with its `jobs_limit` newest jobs.
    pub fn status(&self, now_ms: u64, jobs_limit: usize) -> CoreStatus {
        let leadership = self.election.leadership();
        let role = match leadership {
            Leadership::Leading { .. } => "coordinator",
            Leadership::Following { .. } => "worker",
            Leadership::Unknown => "candidate",
        };
        let jobs = self.role.coordinator().map_or_else(Vec::new, |c| {
            let mut jobs: Vec<JobInfo> =
                c.scheduler.latest(jobs_limit, None).iter().map(|p| JobInfo::new(p, None)).collect();
            for j in jobs.iter_mut() {
                if c.results.contains_key(&j.id) {
                    j.state = "done".into();
                }
                let so_far = c.accepted_ms.get(&j.id).map(|&at| now_ms.saturating_sub(at));
                j.elapsed_ms = c.product_ms.get(&j.id).copied().or(so_far);
            }
            jobs
        });
        let last_leader_contact_ms = match (leadership, &self.role) {
            (Leadership::Leading { .. }, _) => Some(0),
            (_, Role::Following { last_contact_ms }) => last_contact_ms.map(|t| now_ms.saturating_sub(t)),
            _ => None,
        };
        CoreStatus {
            role,
            leader: leadership.leader(self.me()),
            // The epoch it fences with: at least its leader's, higher once it has seen one.
            epoch: self.known_epoch(),
            last_leader_contact_ms,
            checkpoint_version: self.checkpoint_version,
            taking_over: self.taking_over(),
            jobs,
            job_counts: self.role.coordinator().map(|c| c.scheduler.counts()),
            leadership_log: self.leadership_log.iter().cloned().collect(),
        }
    }
}
