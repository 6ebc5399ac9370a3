//! A hundred members on one machine: with each algorithm they elect one coordinator that all
//! of them follow and compute 100,000! exactly. Not a timing test: the figures (time to
//! agree, messages, CPU, memory) are in docs/BENCHMARKS.md.

mod common;

use common::Cluster;
use std::time::Duration;

const MEMBERS: usize = 100;

fn elects_and_computes(election: &str) {
    let cluster = Cluster::start(MEMBERS, election, &[]);
    let leader = cluster.wait_for_agreement(Duration::from_secs(120));
    let status = cluster.status(leader).expect("the coordinator answers");
    assert_eq!(status["role"], "coordinator", "{status}");
    let id = cluster.submit_no_wait(100_000);
    let job = cluster.wait_for_job(&id, Duration::from_secs(180));
    let exact = facto::bignum::Big::factorial(100_000).to_decimal();
    assert!(job["result"].as_str() == Some(exact.as_str()), "{election}: 100,000! is exact");
    assert_eq!(cluster.wait_for_agreement(Duration::from_secs(60)), leader, "{election}: no election meanwhile");
}

#[test]
fn a_hundred_members_elect_and_compute() {
    for election in ["raft", "bully", "ring"] {
        elects_and_computes(election);
    }
}
