//! Checks on what peers send, made before anything touches the node's state: one function
//! per message kind, pure (the caller passes what the node knows). A refused message is
//! answered 400 or 409 with the reason, counted, and logged at most once per peer per minute
//! (by the driver's [`crate::node::refusals::Refusals`]).

use crate::checkpoint::Fact;
use crate::config::{Members, SharedSettings};
use crate::coordinator::fingerprint::{self, plausible_value_bits, Fingerprint};
use crate::coordinator::Plan;
use facto_elections::{Epoch, Leadership, NodeId};
use std::collections::HashMap;

/// How far beyond the highest epoch a node knows a peer's message may speak for. Epochs grow
/// by one per election (bully and ring skip at most a member count), so a real peer is never
/// that far ahead; a forged epoch near `u64::MAX` would leave no epoch to move on to.
pub const EPOCH_AHEAD_MAX: Epoch = 1 << 20;

/// No epoch above this is ever taken, whatever a node knows: the epochs above it are kept
/// free so that counting up never reaches `u64::MAX` (the arithmetic saturates anyway).
pub const EPOCH_MAX: Epoch = u64::MAX >> 1;

/// `from` is another member of the cluster.
pub fn sender(members: &Members, me: NodeId, from: NodeId) -> Result<(), String> {
    if from == me || members.addr(from).is_none() {
        return Err(format!("node {from} is not a peer of node {me}"));
    }
    Ok(())
}

/// `epoch` is not absurdly far ahead of `known`, the highest epoch this node knows.
pub fn epoch_ahead(known: Epoch, epoch: Epoch) -> Result<(), String> {
    if epoch > EPOCH_MAX {
        return Err(format!("epoch {epoch} is beyond the largest epoch facto uses ({EPOCH_MAX})"));
    }
    if epoch > known.saturating_add(EPOCH_AHEAD_MAX) {
        return Err(format!("epoch {epoch} is beyond any election from epoch {known}"));
    }
    Ok(())
}

/// A checkpoint write: from a peer, at an epoch no older than this node knows, and, at the
/// epoch this node knows a leader of, from that leader (a coordinator takes no writes at its
/// own epoch).
pub fn checkpoint_writer(leadership: Leadership, known: Epoch, from: NodeId, epoch: Epoch) -> Result<(), String> {
    if epoch < known {
        return Err(format!("stale epoch {epoch} from node {from}: this node knows epoch {known}"));
    }
    epoch_ahead(known, epoch)?;
    match leadership {
        Leadership::Following { leader, epoch: e } if e == epoch && leader != from => {
            Err(format!("node {from} does not lead epoch {epoch}; node {leader} does"))
        }
        Leadership::Leading { epoch: e } if e == epoch => {
            Err(format!("this node leads epoch {epoch}, not node {from}"))
        }
        _ => Ok(()),
    }
}

/// Facts a coordinator replicates: jobs within `max_n`, operations that are tasks of their
/// job's plan, products of a size their integers allow, and no `finished` marker (those only
/// come from a gathering). `n_of` gives the n of jobs this node knows; a job of the same
/// write counts too.
pub fn replicated_facts(
    epoch: Epoch,
    facts: &[Fact],
    max_n: u64,
    n_of: impl Fn(&str) -> Option<u64>,
) -> Result<(), String> {
    let mut ns: HashMap<&str, u64> = HashMap::new();
    for fact in facts {
        if let Fact::Job { id, n, .. } = fact {
            if *n > max_n {
                return Err(format!("job {id} asks for {n}!, beyond this cluster's --max-n {max_n}"));
            }
            ns.insert(id, n_of(id).unwrap_or(*n));
        }
    }
    for fact in facts {
        match fact {
            Fact::Job { .. } => {}
            Fact::Finished { job } => return Err(format!("a finished mark for job {job} in a write")),
            Fact::Retired { up_to } if horizon_beyond(up_to, epoch) => {
                return Err(format!("a retirement horizon {up_to:?} beyond the writer's epoch {epoch}"))
            }
            Fact::Retired { .. } => {}
            Fact::Dispatched { job, op } | Fact::Product { job, op, .. } => {
                let n =
                    ns.get(job.as_str()).copied().or_else(|| n_of(job)).ok_or_else(|| format!("unknown job {job}"))?;
                let plan = Plan::new(n);
                if !plan.is_task(*op) {
                    return Err(format!("{op:?} is not a task of job {job} ({n}!)"));
                }
                if let Fact::Product { product, .. } = fact {
                    if !plausible_value_bits(product.significant_bits(), plan.product_of(*op)) {
                        return Err(format!(
                            "a product of {} bits cannot be task {op:?} of {n}!",
                            product.significant_bits()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether a retirement horizon names a job of a later epoch than `epoch` (or no job). Job
/// ids begin with the epoch of the coordinator that took them: such a horizon would make a
/// node forget jobs nobody has finished.
fn horizon_beyond(up_to: &str, epoch: Epoch) -> bool {
    crate::checkpoint::job_order(up_to).0 > epoch
}

/// Gathered facts without retirement horizons beyond `epoch` (the gatherer's): no job of a
/// later epoch can exist, so such a horizon could only make it forget finished results.
pub fn without_horizons_beyond(epoch: Epoch, mut facts: Vec<Fact>) -> Vec<Fact> {
    facts.retain(|fact| match fact {
        Fact::Retired { up_to } if horizon_beyond(up_to, epoch) => {
            log::warn!("a gathered retirement horizon {up_to:?} is beyond epoch {epoch}: ignored");
            false
        }
        _ => true,
    });
    facts
}

/// The sender a peer's settings header names (its `node=ID`).
pub fn sender_in_settings(theirs: &str) -> Option<NodeId> {
    theirs.split(';').find_map(|p| p.strip_prefix("node=")?.parse().ok())
}

/// A peer's request carries its cluster settings (`theirs`, as [`SharedSettings::text`],
/// with the sender's `node=ID`): one that did not say (an older build) or whose settings
/// differ is refused, naming each setting with both values. Members that disagree on the
/// members would count majorities differently; on the algorithm, one would lead at epochs
/// the others' election never hears of.
pub fn shared_settings(me: NodeId, ours: &SharedSettings, theirs: Option<&str>) -> Result<(), String> {
    let Some(theirs) = theirs else {
        return Err("the sender did not say its cluster settings (a facto build older than this \
                    member's protocol?): every member must run the same protocol"
            .into());
    };
    let sender =
        theirs.split(';').find_map(|p| p.strip_prefix("node=")).map_or("the sender".into(), |id| format!("node {id}"));
    let without_sender = theirs.split(';').filter(|p| !p.starts_with("node=")).collect::<Vec<_>>().join(";");
    match ours.differences(&format!("node {me}"), &SharedSettings::parse(&without_sender), &sender) {
        None => Ok(()),
        Some(differences) => {
            Err(format!("cluster settings differ: {differences}; give every member the same settings"))
        }
    }
}

/// Longest idempotency key a client may send with a submission.
pub const REQUEST_KEY_BYTES_MAX: usize = 128;

/// Checks a client's submission of n! with idempotency key `request`.
pub fn submission(n: u64, request: Option<&str>, max_n: u64) -> Result<(), String> {
    if n > max_n {
        return Err(format!("n = {n} is above this cluster's --max-n {max_n}"));
    }
    if request.is_some_and(|r| r.len() > REQUEST_KEY_BYTES_MAX) {
        return Err(format!("request is longer than {REQUEST_KEY_BYTES_MAX} bytes"));
    }
    Ok(())
}

/// Splits facts into those to keep and the products that are wrong: not a task of their
/// job's plan (or of no known job, `n_of` gives each job's n), or not the product of the
/// integers below them. O(those integers): only for products a coordinator is about to use
/// (a checkpoint gathered or pulled, its own at takeover).
pub fn check_facts(fp: &Fingerprint, facts: Vec<Fact>, n_of: impl Fn(&str) -> Option<u64>) -> (Vec<Fact>, Vec<Fact>) {
    facts.into_iter().partition(|fact| match fact {
        Fact::Product { job, op, product } => n_of(job).is_some_and(|n| {
            let plan = Plan::new(n);
            plan.is_task(*op) && fingerprint::check_subtree(fp, &plan, *op, product)
        }),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bignum::Big;
    use crate::coordinator::OpId;

    #[test]
    fn epochs_far_ahead_are_refused() {
        assert!(epoch_ahead(5, 6).is_ok());
        assert!(epoch_ahead(5, u64::MAX).is_err());
        assert!(epoch_ahead(u64::MAX - 1, u64::MAX).is_err(), "near u64::MAX: refused, whatever is known");
        assert!(epoch_ahead(EPOCH_MAX - 1, EPOCH_MAX).is_ok());
    }

    #[test]
    fn only_the_leader_of_an_epoch_writes_at_it() {
        let following = Leadership::Following { leader: 4, epoch: 7 };
        assert!(checkpoint_writer(following, 7, 4, 7).is_ok());
        assert!(checkpoint_writer(following, 7, 3, 7).is_err(), "not the leader");
        assert!(checkpoint_writer(following, 7, 3, 6).is_err(), "stale");
        assert!(checkpoint_writer(following, 7, 3, 8).is_ok(), "a newer leader this node has not heard of");
        assert!(checkpoint_writer(Leadership::Leading { epoch: 7 }, 7, 3, 7).is_err());
    }

    #[test]
    fn hostile_facts_are_refused() {
        let n_of = |job: &str| (job == "1-1").then_some(300_000);
        let root = Plan::new(300_000).root().unwrap();
        let forged = Fact::Product { job: "1-1".into(), op: root, product: Big::from(7) };
        assert!(replicated_facts(5, &[forged], 1_000_000, n_of).unwrap_err().contains("bits"));
        let outside = Fact::Product { job: "1-1".into(), op: OpId { level: 9, index: 0 }, product: Big::from(7) };
        assert!(replicated_facts(5, &[outside], 1_000_000, n_of).is_err());
        let huge = Fact::Job { id: "1-2".into(), n: u64::MAX, request: None };
        assert!(replicated_facts(5, &[huge], 1_000_000, n_of).is_err());
        assert!(replicated_facts(5, &[Fact::Finished { job: "1-1".into() }], 1_000_000, n_of).is_err());
        let unknown = Fact::Dispatched { job: "9-9".into(), op: root };
        assert!(replicated_facts(5, &[unknown], 1_000_000, n_of).is_err());
        let real = Fact::Product { job: "1-1".into(), op: root, product: Big::factorial(300_000) };
        assert!(replicated_facts(5, &[real], 1_000_000, n_of).is_ok());
        let ahead = Fact::Retired { up_to: "6-1".into() };
        assert!(replicated_facts(5, &[ahead], 1_000_000, n_of).unwrap_err().contains("beyond"));
        assert!(replicated_facts(5, &[Fact::Retired { up_to: "junk".into() }], 1_000_000, n_of).is_err());
        assert!(replicated_facts(5, &[Fact::Retired { up_to: "5-9".into() }], 1_000_000, n_of).is_ok());
    }
}
