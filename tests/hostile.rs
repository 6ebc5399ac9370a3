//! Messages a compromised or buggy member could send with the right cluster key, and wrong
//! products from a worker: refused before they touch any state, or caught before a client
//! sees them.

mod common;

use common::{http, wait_until, Cluster};
use facto::api::{CheckpointWrite, ElectionEnvelope};
use facto::bignum::Big;
use facto::checkpoint::{encode_facts, Fact};
use facto::coordinator::Plan;
use facto_elections::{raft, AnyMsg};
use serde_json::Value;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
const FINISH: Duration = Duration::from_secs(120);

fn exact(job: &Value, n: u64) -> bool {
    job["result"].as_str() == Some(Big::factorial(n).to_decimal().as_str())
}

fn write(cluster: &Cluster, to: u32, from: u32, epoch: u64, facts: &[Fact]) -> (u16, String) {
    let frame = encode_facts(CheckpointWrite { from, epoch }, facts).unwrap();
    let (status, body) = cluster.post_as_member(to, from, "/internal/checkpoint", &frame).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Workers answer a wrong product for one task in five: every one is caught by its residue
/// and computed again, and every result is exact.
#[test]
fn wrong_products_from_workers_never_reach_a_client() {
    let _alone = common::one_cluster_at_a_time();
    let cluster = Cluster::start(6, "raft", &["--corrupt-prob", "0.2"]);
    cluster.wait_for_agreement(AGREE);
    let id = cluster.submit_no_wait(100_000);
    let job = cluster.wait_for_job(&id, FINISH);
    assert!(exact(&job, 100_000), "100000! came back wrong");
    assert!(job["operations_reexecuted"].as_u64().unwrap() > 0, "no wrong product was caught: {job}");
    assert!(cluster.logs().contains("residue does not match"), "the coordinator says why it refused");
}

/// Attacks by a member that holds the cluster key: an absurd term, a write from a member that
/// does not lead, a forged result, a job beyond --max-n; and a forged result of the right size
/// planted on every replica, which lies dormant until a failover makes a replica the
/// coordinator.
#[test]
fn forged_messages_are_refused_and_a_planted_result_is_never_answered() {
    let _alone = common::one_cluster_at_a_time();
    let mut cluster = Cluster::start(6, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let epoch = cluster.status(leader).unwrap()["epoch"].as_u64().unwrap();
    let others: Vec<u32> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    let outsider = others[0];

    // A heartbeat at term u64::MAX to everyone: refused, nobody moves.
    let envelope = ElectionEnvelope { from: outsider, msg: AnyMsg::Raft(raft::Msg::Heartbeat { term: u64::MAX }) };
    let body = serde_json::to_vec(&envelope).unwrap();
    for id in cluster.ids().into_iter().filter(|&id| id != outsider) {
        let (status, _) = cluster.post_as_member(id, outsider, "/internal/election", &body).unwrap();
        assert_eq!(status, 409, "node {id} took an absurd term");
    }

    // The next job's id is predictable: plant its forged result before it exists.
    let next = format!("{epoch}-{}", cluster.status(leader).unwrap()["jobs"].as_array().unwrap().len() + 1);
    let n = 20_000;
    let root = Plan::new(n).root().unwrap();
    let job = Fact::Job { id: next.clone(), n, request: None };
    let seven = Fact::Product { job: next.clone(), op: root, product: Big::from(7) };
    let (status, why) = write(&cluster, others[1], outsider, epoch, &[job.clone(), seven.clone()]);
    assert_eq!(status, 409, "a member that does not lead may not write: {why}");
    let (status, why) = write(&cluster, others[1], leader, epoch, &[job.clone(), seven]);
    assert_eq!((status, why.contains("bits")), (409, true), "7 is not 20000!: {why}");
    let huge = Fact::Job { id: format!("{epoch}-999"), n: u64::MAX, request: None };
    let (status, why) = write(&cluster, others[1], leader, epoch, &[huge]);
    assert_eq!((status, why.contains("--max-n")), (409, true), "{why}");
    let plausible = Fact::Product { job: next.clone(), op: root, product: Big::factorial(n).plus_one() };
    for &id in &others {
        let (status, why) = write(&cluster, id, leader, epoch, &[job.clone(), plausible.clone()]);
        assert_eq!(status, 204, "a forgery of the right size is only caught where it is used: {why}");
    }
    let refused: u64 = cluster.ids().iter().filter_map(|&id| cluster.status(id)?["refused_messages"].as_u64()).sum();
    assert!(refused >= 8, "refusals are counted: {refused}");

    let id = cluster.submit_no_wait(n);
    assert_eq!(id, next);
    assert!(exact(&cluster.wait_for_job(&id, FINISH), n));
    // The coordinator that holds the true result crashes. The next one refuses any planted
    // copy it meets (its check fails), and answers the true result: copied from the replica
    // that holds it (which keeps a root it is sent over the planted one), or computed again.
    cluster.signal(leader, libc::SIGKILL);
    let new = wait_until(AGREE, || Some(cluster.wait_for_agreement(AGREE)).filter(|&l| l != leader)).unwrap();
    assert!(cluster.status(new).unwrap()["epoch"].as_u64().unwrap() < epoch + 10, "no term was inflated");
    let job = cluster.wait_for_job(&id, FINISH);
    assert!(exact(&job, n), "the planted result was answered: {job}");
}

/// 500 clients submit 1000! at once, spread over every member: each gets its job (and an
/// exact result) or 429 with Retry-After; none gets 503, and the coordinator keeps its epoch.
#[test]
fn a_burst_of_clients_is_admitted_or_told_to_retry_never_refused_blindly() {
    let _alone = common::one_cluster_at_a_time();
    let cluster = Cluster::start(6, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let epoch = cluster.status(leader).unwrap()["epoch"].as_u64().unwrap();
    let addrs: Vec<String> = cluster.ids().into_iter().map(|id| cluster.addr(id)).collect();
    let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..500)
            .map(|i| {
                let addr = addrs[i % addrs.len()].clone();
                s.spawn(move || http(&addr, "POST", "/jobs", Some(br#"{"n": 1000}"#)).expect("an answer"))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut accepted = Vec::new();
    for (status, body) in &answers {
        match status {
            202 => accepted.push(serde_json::from_slice::<Value>(body).unwrap()["id"].as_str().unwrap().to_string()),
            429 => {}
            other => panic!("{other}: {}", String::from_utf8_lossy(body)),
        }
    }
    assert!(!accepted.is_empty() && accepted.len() < 500, "{} accepted", accepted.len());
    for id in &accepted {
        assert!(exact(&cluster.wait_for_job(id, FINISH), 1000), "job {id}");
    }
    let after = cluster.status(leader).unwrap();
    assert_eq!((after["epoch"].as_u64(), after["role"].as_str()), (Some(epoch), Some("coordinator")), "{after}");
}
