//! A real cluster on loopback: election, agreement and exact factorials, per algorithm.

mod common;

use common::{factorial_decimal, Cluster};
use serde_json::Value;
use std::time::Duration;

const AGREE_TIMEOUT: Duration = Duration::from_secs(20);

fn submit_json(cluster: &Cluster, ns: &[u64]) -> Vec<Value> {
    let mut args = vec!["submit".to_string(), "--json".to_string()];
    args.extend(ns.iter().map(|n| n.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cluster.facto(&args);
    assert!(out.status.success(), "submit failed: {}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn elects_and_computes(election: &str, nodes: usize, ns: &[u64]) {
    let cluster = Cluster::start(nodes, election, &[]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    let results = submit_json(&cluster, ns);
    assert_eq!(results.len(), ns.len());
    for (n, r) in ns.iter().zip(&results) {
        assert_eq!(r["n"].as_u64(), Some(*n));
        assert_eq!(r["result"].as_str(), Some(factorial_decimal(*n).as_str()), "{n}! with {election}");
    }
    // The coordinator never multiplies; nobody multiplies more than 4 values at once; and the
    // workers did the work.
    let statuses: Vec<Value> = cluster.statuses().into_iter().filter_map(|(_, s)| s).collect();
    let mut computed = 0;
    for s in &statuses {
        assert!(s["max_operands"].as_u64().unwrap() <= 4, "{s}");
        assert_eq!(s["election"], election);
        if s["role"] == "coordinator" {
            assert_eq!(s["id"].as_u64(), Some(leader as u64));
            assert_eq!(s["operations_computed"].as_u64(), Some(0), "the coordinator multiplied: {s}");
        }
        computed += s["operations_computed"].as_u64().unwrap();
    }
    assert!(computed > 0);
    assert!(statuses.iter().any(|s| s["max_operands"].as_u64() == Some(4)));
}

#[test]
fn raft_six_nodes_elect_one_coordinator_and_compute_exact_factorials() {
    elects_and_computes("raft", 6, &[0, 1, 20, 100, 1000]);
}

#[test]
fn bully_six_nodes_elect_one_coordinator_and_compute_exact_factorials() {
    elects_and_computes("bully", 6, &[0, 1, 20, 100, 1000]);
}

#[test]
fn ring_six_nodes_elect_one_coordinator_and_compute_exact_factorials() {
    elects_and_computes("ring", 6, &[0, 1, 20, 100, 1000]);
}

#[test]
fn twenty_five_nodes_elect_and_compute() {
    elects_and_computes("raft", 25, &[20, 1000]);
}

#[test]
fn bully_elects_the_highest_id() {
    let cluster = Cluster::start(6, "bully", &[]);
    assert_eq!(cluster.wait_for_agreement(AGREE_TIMEOUT), 6);
}

#[test]
fn the_same_n_twice_is_two_jobs_and_no_wait_returns_ids() {
    let cluster = Cluster::start(3, "raft", &[]);
    cluster.wait_for_agreement(AGREE_TIMEOUT);
    let out = cluster.facto(&["submit", "--json", "--no-wait", "25", "25"]);
    assert!(out.status.success());
    let jobs: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(jobs.len(), 2);
    assert_ne!(jobs[0]["id"], jobs[1]["id"]);
    // Each job can be read from any member (followers forward to the coordinator).
    for job in &jobs {
        let id = job["id"].as_str().unwrap();
        let done = common::wait_until(Duration::from_secs(20), || {
            let j = common::http_get(&cluster.addr(1), &format!("/jobs/{id}"))?;
            (j["state"] == "done").then_some(j)
        })
        .expect("job finishes");
        assert_eq!(done["result"].as_str(), Some(factorial_decimal(25).as_str()));
        assert_eq!(done["n"].as_u64(), Some(25));
        assert_eq!(done["progress"].as_f64(), Some(1.0));
    }
    let out = cluster.facto(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(status["jobs"].as_array().unwrap().len(), 2);
    let out = cluster.facto(&["status"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("coordinator") && table.contains("done"), "{table}");
}

/// A client that retries after losing the answer sends the same idempotency key: the
/// cluster returns the first job instead of starting a second one, through any member.
#[test]
fn a_retried_submission_with_the_same_key_is_one_job() {
    let cluster = Cluster::start(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let post = |id: u32, body: &str| {
        let (status, body) = common::http(&cluster.addr(id), "POST", "/jobs", Some(body.as_bytes())).unwrap();
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()["id"].as_str().unwrap().to_string()
    };
    let first = post(leader, r#"{"n": 30, "request": "client-a-1"}"#);
    assert_eq!(post(leader, r#"{"n": 30, "request": "client-a-1"}"#), first);
    assert_eq!(post(follower, r#"{"n": 30, "request": "client-a-1"}"#), first);
    let other = post(follower, r#"{"n": 30, "request": "client-a-2"}"#);
    assert_ne!(other, first);
    let jobs = common::http_get(&cluster.addr(leader), "/jobs").unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs}");
    let long = format!(r#"{{"n": 3, "request": "{}"}}"#, "k".repeat(129));
    let (status, _) = common::http(&cluster.addr(leader), "POST", "/jobs", Some(long.as_bytes())).unwrap();
    assert_eq!(status, 400);
}

#[test]
fn workers_wait_the_configured_delay() {
    let cluster = Cluster::start(3, "raft", &["--delay", "0.3"]);
    cluster.wait_for_agreement(AGREE_TIMEOUT);
    let start = std::time::Instant::now();
    // 20000! is three stages of tasks (5 subtrees over the leaves, 2 above them, the root):
    // three rounds of work, each answer delayed.
    let r = submit_json(&cluster, &[20_000]);
    assert_eq!(r[0]["result"].as_str(), Some(factorial_decimal(20_000).as_str()));
    assert!(start.elapsed() >= Duration::from_millis(900), "took only {:?}", start.elapsed());
}

/// `GET /jobs/<id>?wait_ms=N` on a job that does not finish within N ms answers with the job
/// as it stands, on the coordinator and through a follower alike, not when the result comes.
#[test]
fn a_long_poll_ends_at_its_wait_not_at_the_result() {
    let cluster = Cluster::start(3, "raft", &["--delay", "8"]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    let id = cluster.submit_no_wait(20);
    let follower = cluster.ids().into_iter().find(|&i| i != leader).unwrap();
    for member in [leader, follower] {
        let started = std::time::Instant::now();
        let (status, body) =
            common::http(&cluster.addr(member), "GET", &format!("/jobs/{id}?wait_ms=200"), None).unwrap();
        let job: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "member {member}: {job}");
        assert!(job["state"] != "done", "member {member}: {job}");
        // The job's one batch waits 8 s at its worker: an answer before then did not wait
        // for the result.
        assert!(started.elapsed() < Duration::from_secs(6), "member {member} answered after {:?}", started.elapsed());
    }
}
