//! `GET /metrics`: a Prometheus exposition whose figures move with what the cluster does.

mod common;

use common::{http, wait_until, Cluster};
use std::collections::BTreeMap;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);

/// Every sample of an exposition: `name{labels}` → value. Checks the lines parse.
fn scrape(addr: &str) -> Option<BTreeMap<String, f64>> {
    let (status, body) = http(addr, "GET", "/metrics", None)?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("malformed value: {line}"));
        // The process collector's standard names (CPU, memory) are the one exception.
        assert!(name.starts_with("facto_") || name.starts_with("process_"), "{name} lacks the facto_ prefix");
        samples.insert(name.to_string(), value);
    }
    Some(samples)
}

fn sum(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

#[test]
fn metrics_follow_leadership_and_work() {
    let mut cluster = Cluster::start(4, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let before: BTreeMap<u32, BTreeMap<String, f64>> =
        cluster.ids().into_iter().map(|id| (id, scrape(&cluster.addr(id)).expect("scraped"))).collect();
    for (id, s) in &before {
        assert_eq!(s["facto_has_coordinator"], 1.0, "node {id}");
        assert_eq!(s["facto_is_coordinator"], f64::from(*id == leader), "node {id}");
        assert!(s.keys().any(|k| k.starts_with("facto_build_info{version=")), "node {id}");
        assert!(sum(s, "facto_messages_sent_total{kind=\"election\"}") > 0.0, "node {id} sent heartbeats or votes");
        assert!(s.contains_key("facto_checkpoint_fsync_duration_seconds_count"), "node {id}");
    }
    let id = cluster.submit_no_wait(100_000);
    cluster.wait_for_job(&id, Duration::from_secs(120));
    let after_job = |id: u32| scrape(&cluster.addr(id)).expect("scraped");
    let computed: f64 = cluster.ids().into_iter().map(|i| after_job(i)["facto_operations_computed_total"]).sum();
    assert!(computed >= 33_000.0, "workers computed 100,000!'s operations: {computed}");
    let coordinator = after_job(leader);
    assert_eq!(coordinator["facto_operations_computed_total"], 0.0, "the coordinator never multiplies");
    assert!(coordinator["facto_checkpoint_write_duration_seconds_count"] > 0.0);
    assert!(sum(&coordinator, "facto_replication_round_trip_seconds_count{peer=") > 0.0);
    assert!(sum(&coordinator, "facto_http_requests_total{route=\"/jobs\"") >= 1.0);
    assert!(!coordinator.keys().any(|k| k.contains(&id)), "no job id in any label");

    cluster.signal(leader, libc::SIGKILL);
    let survivor = cluster.ids().into_iter().find(|&i| i != leader).unwrap();
    let changes_before = before[&survivor]["facto_leadership_changes_seen_total"];
    let moved = wait_until(AGREE, || {
        let s = scrape(&cluster.addr(survivor))?;
        (s["facto_leadership_changes_seen_total"] > changes_before && s["facto_has_coordinator"] == 1.0).then_some(s)
    });
    assert!(moved.is_some(), "the survivor counted the change of coordinator");
}
