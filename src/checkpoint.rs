//! The coordinator's checkpoint as a set of facts that only grows.
//!
//! A job was submitted; an operation was dispatched; an operation's product is known. Products
//! are deterministic, so two replicas never disagree on a fact: checkpoints from several nodes
//! merge by union, in any order, any number of times, and nothing is ever rewritten whole.
//! Once a job's root product is known, the products below it are no longer needed and a
//! replica may drop them ([`Checkpoint::apply`] does). The root itself stays on disk only
//! (see [`crate::store`]): memory holds that the job finished, so neither a node's memory nor
//! a new coordinator's gathering grows with the history of results.

use crate::bignum::Big;
use crate::coordinator::{OpId, Plan, TaskInputs};
use crate::frame;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Facts held for jobs not known yet, at most: a peer cannot fill memory with them.
const ORPHANS_MAX: usize = 100_000;

/// One grow-only fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    /// A client's job was accepted. `request` is the client's idempotency key: a retried
    /// submission with the same key gets this job instead of a second one.
    Job {
        id: String,
        n: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// An operation was handed to a worker (so a later dispatch counts as a re-execution).
    Dispatched { job: String, op: OpId },
    /// An operation's product.
    Product {
        job: String,
        op: OpId,
        #[serde(with = "crate::api::b64")]
        product: Big,
    },
    /// The job's root product is known and durable (on the nodes that wrote it); what a
    /// replica tells a new coordinator instead of sending megabytes of finished results.
    Finished { job: String },
    /// Every job up to `up_to` in submission order finished and is past retention: forgotten,
    /// result and all, and a later copy of one is ignored. Horizons only move forward (the
    /// newest wins), so this fact stays grow-only: a replica that missed one is covered by
    /// the next.
    Retired { up_to: String },
}

impl Fact {
    /// The id of the job the fact is about.
    pub fn job(&self) -> &str {
        match self {
            Fact::Job { id, .. } => id,
            Fact::Dispatched { job, .. } | Fact::Product { job, .. } | Fact::Finished { job } => job,
            Fact::Retired { up_to } => up_to,
        }
    }
}

/// A [`Fact`] without its product: what a frame's header says of it (the product follows as
/// one of the frame's numbers; see [`encode_facts`]).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FactHead {
    Job {
        id: String,
        n: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    Dispatched {
        job: String,
        op: OpId,
    },
    Product {
        job: String,
        op: OpId,
    },
    Finished {
        job: String,
    },
    Retired {
        up_to: String,
    },
}

/// A frame header: `head` (the message's own fields) and the facts.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactsFrame<H> {
    head: H,
    facts: Vec<FactHead>,
}

/// Facts as a [`crate::frame`]: products travel and rest as raw bytes, not base64 in JSON
/// (near the top of 1,000,000! they are megabytes). `head` carries the message's own fields.
pub fn encode_facts<'a, H: Serialize>(head: H, facts: impl IntoIterator<Item = &'a Fact>) -> Result<Vec<u8>, String> {
    let mut numbers = Vec::new();
    let facts = facts
        .into_iter()
        .map(|fact| match fact {
            Fact::Job { id, n, request } => FactHead::Job { id: id.clone(), n: *n, request: request.clone() },
            Fact::Dispatched { job, op } => FactHead::Dispatched { job: job.clone(), op: *op },
            Fact::Product { job, op, product } => {
                numbers.push(product);
                FactHead::Product { job: job.clone(), op: *op }
            }
            Fact::Finished { job } => FactHead::Finished { job: job.clone() },
            Fact::Retired { up_to } => FactHead::Retired { up_to: up_to.clone() },
        })
        .collect();
    frame::encode(&FactsFrame { head, facts }, &numbers)
}

/// The inverse of [`encode_facts`]; every product must have its number and no number may be
/// left over.
pub fn decode_facts<H: DeserializeOwned>(bytes: &[u8]) -> Result<(H, Vec<Fact>), String> {
    let (frame, numbers): (FactsFrame<H>, Vec<Big>) = frame::decode(bytes)?;
    let mut numbers = numbers.into_iter();
    let facts = frame
        .facts
        .into_iter()
        .map(|head| match head {
            FactHead::Job { id, n, request } => Ok(Fact::Job { id, n, request }),
            FactHead::Dispatched { job, op } => Ok(Fact::Dispatched { job, op }),
            FactHead::Product { job, op } => {
                let product = numbers.next().ok_or("a product fact without its number")?;
                Ok(Fact::Product { job, op, product })
            }
            FactHead::Finished { job } => Ok(Fact::Finished { job }),
            FactHead::Retired { up_to } => Ok(Fact::Retired { up_to }),
        })
        .collect::<Result<Vec<Fact>, String>>()?;
    if numbers.next().is_some() {
        return Err("more numbers than product facts".into());
    }
    Ok((frame.head, facts))
}

/// What is known of one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFacts {
    pub n: u64,
    pub request: Option<String>,
    pub products: BTreeMap<OpId, Big>,
    pub dispatched: BTreeSet<OpId>,
    /// The root product is known (and lies on the disk of the nodes that hold it).
    pub finished: bool,
}

/// Everything a node knows, in memory; the store keeps the same facts on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub jobs: BTreeMap<String, JobFacts>,
    /// Facts about jobs whose `Job` fact has not arrived yet (replication does not promise
    /// order across requests). Merged in when it does.
    orphans: BTreeMap<(String, u8, OpId), Fact>,
    /// The newest job retired so far (see [`Fact::Retired`]).
    pub retired_up_to: Option<String>,
    /// Jobs retired by facts applied since [`Checkpoint::take_retired`] was last called: their
    /// records are to be deleted from disk.
    retired_now: Vec<String>,
}

impl JobFacts {
    /// The `Job` fact that introduces this job (id `id`) to a replica.
    pub fn job_fact(&self, id: &str) -> Fact {
        Fact::Job { id: id.to_string(), n: self.n, request: self.request.clone() }
    }
}

impl Checkpoint {
    /// The job a client's submission with idempotency key `request` created, if any.
    /// The earliest, should an old coordinator's copy of the job have come back after a
    /// retry made a second one. Both are computed: which of them its client was acknowledged
    /// cannot be known (under a partition two coordinators may each have answered), and
    /// dropping the wrong one would lose an acknowledged job; the duplicate costs work only.
    pub fn job_for_request(&self, request: &str) -> Option<&String> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.request.as_deref() == Some(request))
            .min_by_key(|(id, _)| job_order(id))
            .map(|(id, _)| id)
    }

    /// Adds a fact; returns whether it was new. Facts for a finished job are dropped, and so
    /// is everything below a root when it arrives; the root's own number is not kept in
    /// memory (the caller has it written to disk).
    pub fn apply(&mut self, fact: Fact) -> bool {
        match fact {
            Fact::Retired { up_to } => self.retire_up_to(up_to),
            // A job at or below the horizon finished and was forgotten: a stale copy.
            ref stale if self.is_retired(stale.job()) => false,
            Fact::Job { id, n, request } => {
                if self.jobs.contains_key(&id) {
                    return false;
                }
                self.jobs.insert(id.clone(), JobFacts { n, request, ..JobFacts::default() });
                let (mine, others): (BTreeMap<_, _>, BTreeMap<_, _>) =
                    std::mem::take(&mut self.orphans).into_iter().partition(|((job, ..), _)| *job == id);
                self.orphans = others;
                for f in mine.into_values() {
                    self.apply(f);
                }
                true
            }
            Fact::Dispatched { ref job, op } => match self.jobs.get_mut(job) {
                None => self.keep_orphan(fact),
                Some(j) => !j.finished && j.dispatched.insert(op),
            },
            Fact::Finished { ref job } => match self.jobs.get_mut(job) {
                None => self.keep_orphan(fact),
                Some(j) => !j.finished && Self::finish(j),
            },
            Fact::Product { ref job, op, ref product } => match self.jobs.get_mut(job) {
                None => self.keep_orphan(fact),
                Some(j) => {
                    let plan = Plan::new(j.n);
                    // Only task roots' products travel and count (see `coordinator::plan`).
                    if !plan.is_task(op) || j.finished || j.products.contains_key(&op) || covered(j, &plan, op) {
                        return false;
                    }
                    if plan.root() == Some(op) {
                        return Self::finish(j);
                    } else if let TaskInputs::Products(inputs) = plan.task_inputs(op) {
                        // The inputs' products are covered now: keep only the frontier.
                        for input in inputs {
                            j.products.remove(&input);
                        }
                    }
                    j.products.insert(op, product.clone());
                    true
                }
            },
        }
    }

    /// Marks a job finished: nothing below its root is needed any more.
    fn finish(job: &mut JobFacts) -> bool {
        job.products.clear();
        job.dispatched.clear();
        job.finished = true;
        true
    }

    /// Moves the retirement horizon to `up_to` if that is newer, forgetting every job at or
    /// below it: the coordinator that set it had seen every one of them finished (a copy here
    /// that looks unfinished missed its `Finished`).
    fn retire_up_to(&mut self, up_to: String) -> bool {
        if self.retired_up_to.as_deref().is_some_and(|h| job_order(h) >= job_order(&up_to)) {
            return false;
        }
        let horizon = job_order(&up_to);
        let retired: Vec<String> = self.jobs.keys().filter(|id| job_order(id) <= horizon).cloned().collect();
        for id in &retired {
            self.jobs.remove(id);
        }
        self.orphans.retain(|(job, ..), _| job_order(job) > horizon);
        self.retired_now.extend(retired);
        self.retired_up_to = Some(up_to);
        true
    }

    /// Whether a job is at or below the retirement horizon.
    pub fn is_retired(&self, job: &str) -> bool {
        self.retired_up_to.as_deref().is_some_and(|h| job_order(job) <= job_order(h))
    }

    /// Jobs retired since the last call (their records go from disk).
    pub fn take_retired(&mut self) -> Vec<String> {
        std::mem::take(&mut self.retired_now)
    }

    /// Forgets a product found wrong (its task will be computed again). The only removal
    /// besides a root's covering: a wrong fact must not outlive the check that caught it.
    pub fn forget(&mut self, job: &str, op: OpId) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.products.remove(&op);
        }
    }

    /// Marks a finished job unfinished, with nothing known: its result is to be computed again
    /// (it was found wrong, or lost, everywhere).
    pub fn restart(&mut self, job: &str) {
        if let Some(j) = self.jobs.get_mut(job) {
            *j = JobFacts { n: j.n, request: j.request.take(), ..JobFacts::default() };
        }
    }

    fn keep_orphan(&mut self, fact: Fact) -> bool {
        let key = match &fact {
            Fact::Dispatched { job, op } => (job.clone(), 0, *op),
            Fact::Product { job, op, .. } => (job.clone(), 1, *op),
            Fact::Finished { job } => (job.clone(), 2, OpId { level: 0, index: 0 }),
            Fact::Job { .. } | Fact::Retired { .. } => return false,
        };
        if self.orphans.len() >= ORPHANS_MAX || self.orphans.contains_key(&key) {
            return false;
        }
        self.orphans.insert(key, fact);
        true
    }

    /// Ids of the jobs whose result is known.
    pub fn finished_jobs(&self) -> BTreeSet<String> {
        self.jobs.iter().filter(|(_, j)| j.finished).map(|(id, _)| id.clone()).collect()
    }

    /// Every fact, jobs first (so a receiver can apply them in order).
    pub fn facts(&self) -> Vec<Fact> {
        self.facts_except(&BTreeSet::new())
    }

    /// Every fact but those of the jobs in `skip` (jobs the asker has finished already); the
    /// horizon first, so a receiver ignores stale jobs below it.
    pub fn facts_except(&self, skip: &BTreeSet<String>) -> Vec<Fact> {
        let jobs = || self.jobs.iter().filter(|(id, _)| !skip.contains(*id));
        let mut out: Vec<Fact> =
            self.retired_up_to.iter().map(|up_to| Fact::Retired { up_to: up_to.clone() }).collect();
        out.extend(jobs().map(|(id, j)| j.job_fact(id)));
        for (id, j) in jobs() {
            out.extend(j.dispatched.iter().map(|&op| Fact::Dispatched { job: id.clone(), op }));
            out.extend(j.products.iter().map(|(&op, p)| Fact::Product { job: id.clone(), op, product: p.clone() }));
            if j.finished {
                out.push(Fact::Finished { job: id.clone() });
            }
        }
        out.extend(self.orphans.values().cloned());
        out
    }

    /// Job ids in submission order: by the epoch of the coordinator that accepted them, then
    /// by their number within that epoch.
    pub fn jobs_in_order(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.jobs.keys().cloned().collect();
        ids.sort_by_key(|id| job_order(id));
        ids
    }
}

/// Whether a product above `op` is known (so `op`'s own is not needed).
fn covered(job: &JobFacts, plan: &Plan, op: OpId) -> bool {
    std::iter::successors(plan.task_parent(op), |&p| plan.task_parent(p)).any(|p| job.products.contains_key(&p))
}

/// `"<epoch>-<number>"` → (epoch, number); anything else sorts last, by text.
pub fn job_order(id: &str) -> (u64, u64, String) {
    let parsed = id.split_once('-').and_then(|(e, n)| Some((e.parse().ok()?, n.parse().ok()?)));
    match parsed {
        Some((e, n)) => (e, n, String::new()),
        None => (u64::MAX, u64::MAX, id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(job: &str, level: u32, index: u64, v: u64) -> Fact {
        Fact::Product { job: job.into(), op: OpId { level, index }, product: Big::from(v) }
    }

    #[test]
    fn merging_is_a_union_in_any_order() {
        let facts = vec![
            Fact::Job { id: "2-1".into(), n: 20_000, request: None },
            product("2-1", 5, 0, 120),
            Fact::Dispatched { job: "2-1".into(), op: OpId { level: 5, index: 1 } },
            product("2-1", 5, 1, 1680),
        ];
        let mut forward = Checkpoint::default();
        let mut backward = Checkpoint::default();
        for f in &facts {
            forward.apply(f.clone());
        }
        for f in facts.iter().rev() {
            backward.apply(f.clone());
        }
        assert_eq!(forward, backward, "facts arriving before their job are kept and merged");
        assert!(!forward.apply(facts[1].clone()), "a repeated fact is not new");
        let mut copy = Checkpoint::default();
        for f in forward.facts() {
            copy.apply(f);
        }
        assert_eq!(copy, forward);
        let skip = BTreeSet::from(["2-1".to_string()]);
        assert!(forward.facts_except(&skip).is_empty());
    }

    #[test]
    fn a_root_product_drops_what_is_below_it() {
        let mut c = Checkpoint::default();
        c.apply(Fact::Job { id: "1-1".into(), n: 5, request: None });
        c.apply(Fact::Job { id: "1-2".into(), n: 20_000, request: None });
        assert!(c.apply(product("1-2", 5, 0, 120)));
        assert!(!c.apply(product("1-2", 0, 0, 120)), "an operation inside a task is refused");
        let root = Plan::new(20_000).root().unwrap();
        assert!(c.apply(product("1-2", root.level, root.index, 7)));
        assert!(c.jobs["1-2"].finished);
        assert!(c.jobs["1-2"].products.is_empty(), "the root lies on disk, not in memory");
        assert!(!c.apply(product("1-2", 5, 1, 1680)), "a finished job takes no more facts");
        assert!(!c.apply(product("1-2", 9, 0, 1)), "an operation outside the plan is refused");
    }

    /// A new coordinator learns that a job finished without receiving its result.
    #[test]
    fn a_finished_job_travels_as_a_marker_without_its_product() {
        let mut c = Checkpoint::default();
        c.apply(Fact::Job { id: "1-1".into(), n: 300_000, request: None });
        let root = Plan::new(300_000).root().unwrap();
        c.apply(Fact::Product { job: "1-1".into(), op: root, product: Big::factorial(3_000) });
        let facts = c.facts();
        assert_eq!(facts, vec![c.jobs["1-1"].job_fact("1-1"), Fact::Finished { job: "1-1".into() }]);
        let mut other = Checkpoint::default();
        assert!(other.apply(facts[1].clone()), "a marker before its job is kept");
        assert!(other.apply(facts[0].clone()));
        assert_eq!(other, c);
        assert!(!other.apply(product("1-1", 5, 0, 1)), "a finished job takes no more products");
        let bytes = encode_facts((), &facts).unwrap();
        assert_eq!(decode_facts::<()>(&bytes).unwrap().1, facts);
    }

    /// A product replaces its inputs', whichever arrives first.
    #[test]
    fn a_product_covers_its_inputs_in_any_order() {
        let job = Fact::Job { id: "2-1".into(), n: 20_000, request: None };
        let (child, parent) = (product("2-1", 5, 0, 120), product("2-1", 6, 0, 7));
        let mut forward = Checkpoint::default();
        let mut backward = Checkpoint::default();
        for f in [&job, &child, &parent] {
            forward.apply(f.clone());
        }
        for f in [&job, &parent, &child] {
            backward.apply(f.clone());
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.jobs["2-1"].products.keys().copied().collect::<Vec<_>>(), vec![OpId { level: 6, index: 0 }]);
        assert!(!backward.apply(product("2-1", 5, 3, 1)), "covered by its parent");
        assert!(backward.apply(product("2-1", 5, 4, 1)), "another parent's input");
    }

    #[test]
    fn facts_round_trip_through_frames() {
        let facts = vec![
            Fact::Job { id: "2-1".into(), n: 20_000, request: Some("k".into()) },
            product("2-1", 5, 0, 120),
            Fact::Dispatched { job: "2-1".into(), op: OpId { level: 5, index: 1 } },
            Fact::Product { job: "2-1".into(), op: OpId { level: 6, index: 0 }, product: Big::factorial(500) },
        ];
        let bytes = encode_facts((3u32, 9u64), &facts).unwrap();
        assert_eq!(decode_facts::<(u32, u64)>(&bytes).unwrap(), ((3, 9), facts));
        assert!(decode_facts::<(u32, u64)>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn jobs_come_back_in_submission_order() {
        let mut c = Checkpoint::default();
        for id in ["10-1", "2-10", "2-9", "3-1"] {
            c.apply(Fact::Job { id: id.into(), n: 1, request: None });
        }
        assert_eq!(c.jobs_in_order(), vec!["2-9", "2-10", "3-1", "10-1"]);
    }
}
