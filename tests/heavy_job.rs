//! A heavy job must not depose a healthy coordinator: heartbeats and votes never wait behind
//! multiplications, megabyte products, disk writes or the decimal conversion (spread over
//! the workers). In a test binary
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

/// `jobs` 1,000,000! jobs at once (`facto submit` submits them all, then waits).
fn a_heavy_job_keeps_its_coordinator(extra_args: &[&str], jobs: usize, expected: &str) {
    let cluster = Cluster::start(6, "raft", extra_args);
    cluster.wait_for_agreement(Duration::from_secs(30));
    let before = epochs_and_leaders(&cluster);
    let mut args = vec!["submit", "--json"];
    args.extend(std::iter::repeat_n("1000000", jobs));
    let out = cluster.facto(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let job: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(job["result"].as_str() == Some(expected), "1000000! came back wrong");
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), jobs);
    let after = epochs_and_leaders(&cluster);
    assert_eq!(before, after, "the coordinator changed during the job:\n{}", cluster.logs());
    // The digits above were converted by the workers (a split and its pieces), not by the
    // coordinator.
    let leader = after[0].2;
    let tasks = |id: u64| cluster.status(id as u32).and_then(|s| s["conversion_tasks_done"].as_u64()).unwrap_or(0);
    let by_workers: u64 = cluster.ids().into_iter().map(u64::from).filter(|&id| id != leader).map(tasks).sum();
    assert_eq!(tasks(leader), 0, "the coordinator converted");
    assert!(by_workers >= 3 * jobs as u64, "{by_workers} conversion tasks for {jobs} jobs:\n{}", cluster.logs());
    // Answered batches are made durable in rounds, not one by one (docs/DESIGN.md, "When:
    // in rounds"): one checkpoint write to a peer per batch sent cost half the checkpoints.
    // (A 1,000,000! job, a prime swing of 9 leaf tasks and a chain of 8, makes about 13 batches
    // and 4 rounds here: the chain's small links are answered while a round is on its way.)
    let (writes, batches) = (sent(&cluster, leader, "checkpoint_write"), sent(&cluster, leader, "work"));
    assert!(
        batches >= 10 * jobs as u64 && writes * 2 <= batches,
        "{writes} checkpoint writes to peers for {batches} batches"
    );
}

/// How many messages of `kind` member `id` sent to its peers (its `/metrics`).
fn sent(cluster: &Cluster, id: u64, kind: &str) -> u64 {
    let (_, body) = common::http(&cluster.addr(id as u32), "GET", "/metrics", None).expect("metrics answer");
    let line = format!("facto_messages_sent_total{{kind=\"{kind}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {kind} messages in the metrics of member {id}"))
}

/// One test, so the clusters run one after the other and never share the cores. The last
/// case submits two jobs at once: twice the work must not starve the coordinator's heartbeats
/// into a leadership change either.
#[test]
fn a_million_factorial_does_not_depose_the_coordinator() {
    // The big-integer crate's own algorithm: nothing of facto's plan or transport.
    let expected = facto::bignum::Big::factorial(1_000_000).to_decimal();
    a_heavy_job_keeps_its_coordinator(&[], 1, &expected);
    a_heavy_job_keeps_its_coordinator(&["--delay", "0.01"], 1, &expected);
    a_heavy_job_keeps_its_coordinator(&[], 2, &expected);
}
