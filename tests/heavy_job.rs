//! A heavy job must not depose a healthy coordinator: heartbeats and votes never wait behind
//! multiplications, megabyte products, disk writes or the decimal conversion. In a test binary
//! of its own, so that no other test's cluster shares the two cores meanwhile.

mod common;

use common::Cluster;
use std::time::Duration;

fn epochs_and_leaders(cluster: &Cluster) -> Vec<(u32, u64, u64)> {
    cluster
        .statuses()
        .into_iter()
        .map(|(id, s)| {
            let s = s.expect("every member answers");
            (id, s["epoch"].as_u64().unwrap(), s["leader"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn a_heavy_job_keeps_its_coordinator(extra_args: &[&str], expected: &str) {
    let cluster = Cluster::start(6, "raft", extra_args);
    cluster.wait_for_agreement(Duration::from_secs(30));
    let before = epochs_and_leaders(&cluster);
    let out = cluster.facto(&["submit", "--json", "1000000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(job["result"].as_str() == Some(expected), "1000000! came back wrong");
    let after = epochs_and_leaders(&cluster);
    assert_eq!(before, after, "the coordinator changed during the job:\n{}", cluster.logs());
}

/// One test, so the two clusters run one after the other.
#[test]
fn a_million_factorial_does_not_depose_the_coordinator() {
    // The big-integer crate's own algorithm: nothing of facto's plan or transport.
    let expected = facto::bignum::Big::factorial(1_000_000).to_decimal();
    a_heavy_job_keeps_its_coordinator(&[], &expected);
    a_heavy_job_keeps_its_coordinator(&["--delay", "0.01"], &expected);
}
