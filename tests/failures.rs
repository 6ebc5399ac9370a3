//! Crashes, stalls and restarts of real processes: the cluster keeps its promises.

mod common;

use common::{factorial_decimal, http, wait_until, Cluster};
use facto::api::CheckpointWrite;
use facto::checkpoint::{encode_facts, Fact};
use facto::coordinator::{OpId, OpRef, WorkItem};
use serde_json::Value;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
const FINISH: Duration = Duration::from_secs(120);

fn assert_exact(job: &Value, n: u64) {
    assert_eq!(job["result"].as_str(), Some(factorial_decimal(n).as_str()), "{n}!");
}

/// Waits until the job has operations assigned to workers; returns the coordinator's view.
fn wait_in_flight(cluster: &Cluster, leader: u32, id: &str) -> Value {
    wait_until(FINISH, || {
        let j = common::http_get(&cluster.addr(leader), &format!("/jobs/{id}"))?;
        (j["operations_in_flight"].as_u64()? > 0).then_some(j)
    })
    .expect("the job gets under way")
}

fn coordinator_crash_resumes_the_job(election: &str) {
    let mut cluster = Cluster::start(6, election, &["--delay", "1"]);
    let old = cluster.wait_for_agreement(AGREE);
    let n = 100_000; // 25 leaf tasks, then 7, 2 and the root: four stages
    let id = cluster.submit_no_wait(n);
    // Let the first wave finish, so some products are checkpointed, then crash mid-wave.
    wait_until(FINISH, || {
        let j = common::http_get(&cluster.addr(old), &format!("/jobs/{id}"))?;
        (j["operations_done"].as_u64()? > 0 && j["operations_in_flight"].as_u64()? > 0).then_some(())
    })
    .expect("the job makes progress");
    let before = common::http_get(&cluster.addr(old), &format!("/jobs/{id}")).unwrap();
    cluster.signal(old, libc::SIGKILL);
    let in_flight = before["operations_in_flight"].as_u64().unwrap();
    let new = cluster.wait_for_agreement(AGREE);
    assert_ne!(new, old);
    let job = cluster.wait_for_job(&id, FINISH);
    assert_exact(&job, n);
    let reexecuted = job["operations_reexecuted"].as_u64().unwrap();
    assert!(
        reexecuted <= in_flight,
        "{election}: {reexecuted} operations redone, but only {in_flight} were in flight at the crash ({before})"
    );
    assert_eq!(job["operations_done"], job["operations_total"]);
}

#[test]
fn raft_coordinator_crash_mid_job_resumes_from_the_checkpoint() {
    coordinator_crash_resumes_the_job("raft");
}

#[test]
fn bully_coordinator_crash_mid_job_resumes_from_the_checkpoint() {
    coordinator_crash_resumes_the_job("bully");
}

#[test]
fn ring_coordinator_crash_mid_job_resumes_from_the_checkpoint() {
    coordinator_crash_resumes_the_job("ring");
}

/// Picks a worker that is not the coordinator.
fn some_worker(cluster: &Cluster, leader: u32) -> u32 {
    cluster.ids().into_iter().find(|&id| id != leader).unwrap()
}

fn a_killed_worker_has_its_operations_reassigned(election: &str) {
    let mut cluster = Cluster::start(6, election, &["--delay", "1"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let id = cluster.submit_no_wait(100_000); // 25 leaf tasks: every worker gets a batch at once
    wait_in_flight(&cluster, leader, &id);
    let victim = some_worker(&cluster, leader);
    cluster.signal(victim, libc::SIGKILL);
    let job = cluster.wait_for_job(&id, FINISH);
    assert_exact(&job, 100_000);
    assert!(job["operations_reexecuted"].as_u64().unwrap() > 0, "the victim's batch was redone: {job}");
}

fn a_stalled_worker_is_replaced_and_its_late_answer_does_no_harm(election: &str) {
    let mut cluster = Cluster::start(6, election, &["--delay", "1"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let id = cluster.submit_no_wait(100_000);
    wait_in_flight(&cluster, leader, &id);
    let victim = some_worker(&cluster, leader);
    cluster.signal(victim, libc::SIGSTOP);
    let job = cluster.wait_for_job(&id, FINISH);
    assert_exact(&job, 100_000);
    assert!(job["operations_reexecuted"].as_u64().unwrap() > 0);
    // Wake it: its stale answer arrives, the job stays exact, and it rejoins as a worker.
    cluster.signal(victim, libc::SIGCONT);
    cluster.wait_for_agreement(AGREE);
    let again = cluster.wait_for_job(&id, FINISH);
    assert_exact(&again, 100_000);
    let second = cluster.submit_no_wait(300);
    assert_exact(&cluster.wait_for_job(&second, FINISH), 300);
}

fn a_deposed_coordinator_is_fenced(election: &str) {
    let mut cluster = Cluster::start(6, election, &[]);
    let old = cluster.wait_for_agreement(AGREE);
    let old_epoch = cluster.status(old).unwrap()["epoch"].as_u64().unwrap();
    cluster.signal(old, libc::SIGSTOP);
    let new = cluster.wait_for_agreement(AGREE);
    assert_ne!(new, old);
    let worker = cluster.ids().into_iter().find(|&id| id != old && id != new).unwrap();
    // What the deposed coordinator would send on waking: refused by workers and replicas.
    let task = WorkItem { op: OpRef { job: "x-1".into(), op: OpId { level: 0, index: 0 } }, n: 5, operands: vec![] };
    let work = facto::api::encode_work(old, old_epoch, 1, &[task]).unwrap();
    let (status, body) = cluster.post_as_member(worker, old, "/internal/work", &work).unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    // The refusal names the epoch the worker fences with, for the deposed one to move past.
    let refusal: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(refusal["error"].as_str().unwrap().contains("stale epoch"), "{refusal}");
    assert!(refusal["known_epoch"].as_u64().unwrap() > old_epoch, "{refusal}");
    let write = CheckpointWrite { from: old, epoch: old_epoch };
    let checkpoint = encode_facts(write, &[Fact::Job { id: "x-1".into(), n: 5, request: None }]).unwrap();
    let (status, _) = cluster.post_as_member(worker, old, "/internal/checkpoint", &checkpoint).unwrap();
    assert_eq!(status, 409);
    assert!(!common::http_get(&cluster.addr(worker), "/status").unwrap().to_string().contains("x-1"));
    // It wakes and learns the higher epoch: it follows (raft, ring), or, in bully, where the
    // highest id always takes over, wins a new election at a still higher epoch; it never
    // goes on with its stale one.
    cluster.signal(old, libc::SIGCONT);
    let leader = cluster.wait_for_agreement(AGREE);
    let s = cluster.status(old).unwrap();
    assert!(s["epoch"].as_u64().unwrap() > old_epoch, "{s}");
    assert_eq!(s["leader"].as_u64(), Some(leader as u64));
    if election != "bully" {
        assert_ne!(s["role"], "coordinator", "{s}");
    }
    let id = cluster.submit_no_wait(100);
    assert_exact(&cluster.wait_for_job(&id, FINISH), 100);
}

fn after_every_node_is_killed_unfinished_jobs_resume_from_disk(election: &str) {
    let mut cluster = Cluster::start(6, election, &["--delay", "0.5"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let id = cluster.submit_no_wait(100_000);
    wait_until(FINISH, || {
        let j = common::http_get(&cluster.addr(leader), &format!("/jobs/{id}"))?;
        (j["operations_done"].as_u64()? > 0).then_some(())
    })
    .expect("progress");
    for node in cluster.ids() {
        cluster.signal(node, libc::SIGKILL);
    }
    for node in cluster.ids() {
        cluster.start_node(node);
    }
    cluster.wait_for_agreement(AGREE);
    let job = cluster.wait_for_job(&id, FINISH);
    assert_exact(&job, 100_000);
}

/// A finished job's result lies on the disks of its coordinator and one replica, not in any
/// member's memory: after the coordinator's crash its successor fetches it from the replica
/// (the member after the coordinator in id order) and converts it again.
#[test]
fn finished_results_are_served_by_the_next_coordinator() {
    let mut cluster = Cluster::start(6, "raft", &[]);
    let old = cluster.wait_for_agreement(AGREE);
    let ns = [20_000, 30_000, 40_000, 50_000];
    let ids: Vec<String> = ns.iter().map(|&n| cluster.submit_no_wait(n)).collect();
    for (id, &n) in ids.iter().zip(&ns) {
        assert_exact(&cluster.wait_for_job(id, FINISH), n);
    }
    // The replica is stopped while the others elect, so the successor is not the replica.
    let replica = old % 6 + 1;
    cluster.signal(replica, libc::SIGSTOP);
    cluster.signal(old, libc::SIGKILL);
    let new = wait_until(AGREE, || Some(cluster.wait_for_agreement(AGREE)).filter(|&l| l != old)).unwrap();
    assert_ne!(new, replica);
    cluster.signal(replica, libc::SIGCONT);
    for (id, &n) in ids.iter().zip(&ns) {
        let job = cluster.wait_for_job(id, FINISH);
        assert_exact(&job, n);
        assert_eq!(job["state"], "done", "{job}");
    }
}

/// A member that says it is coordinator accepts jobs while it takes over: the submission is
/// held until the takeover ends, not refused with a 503 that claims no coordinator is known.
/// A stopped follower makes the takeover's gathering wait for its full 2 s.
#[test]
fn a_new_coordinator_holds_submissions_while_it_takes_over() {
    let mut cluster = Cluster::start(6, "raft", &[]);
    let old = cluster.wait_for_agreement(AGREE);
    let stopped = cluster.ids().into_iter().find(|&id| id != old).unwrap();
    cluster.signal(stopped, libc::SIGSTOP);
    cluster.signal(old, libc::SIGKILL);
    let (new, status) = wait_until(AGREE, || {
        cluster.ids().into_iter().filter(|&id| cluster.answering(id)).find_map(|id| {
            let s = cluster.status(id)?;
            (s["role"] == "coordinator").then_some((id, s))
        })
    })
    .expect("a new coordinator");
    assert_eq!(status["taking_over"], true, "the gathering waits for the stopped member: {status}");
    let started = std::time::Instant::now();
    let (code, body) = http(&cluster.addr(new), "POST", "/jobs", Some(br#"{"n": 300}"#)).unwrap();
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(4), "held at most as long as the takeover");
    cluster.signal(stopped, libc::SIGCONT);
    let job: Value = serde_json::from_slice(&body).unwrap();
    assert_exact(&cluster.wait_for_job(job["id"].as_str().unwrap(), FINISH), 300);
}

/// One test per scenario and algorithm.
macro_rules! per_algorithm {
    ($($scenario:ident),*) => {
        $(mod $scenario {
            #[test]
            fn raft() {
                super::$scenario("raft");
            }
            #[test]
            fn bully() {
                super::$scenario("bully");
            }
            #[test]
            fn ring() {
                super::$scenario("ring");
            }
        })*
    };
}

per_algorithm!(
    a_killed_worker_has_its_operations_reassigned,
    a_stalled_worker_is_replaced_and_its_late_answer_does_no_harm,
    a_deposed_coordinator_is_fenced,
    after_every_node_is_killed_unfinished_jobs_resume_from_disk
);

/// `facto cluster` with `--fail-prob 0.05` on every node: nodes crash for real and are
/// restarted by the supervisor, and a stream of jobs still finishes with exact results.
#[test]
fn a_cluster_whose_nodes_keep_crashing_still_computes_every_job_exactly() {
    let base = common::free_port_block(6);
    let dir = std::env::temp_dir().join(format!("facto-failprob-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut supervisor = std::process::Command::new(common::BIN)
        .args(["cluster", "--nodes", "6", "--base-port", &base.to_string(), "--fail-prob", "0.05"])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cluster: String = (0..6).map(|i| format!("127.0.0.1:{},", base + i)).collect();
    // About 150 tasks and 50 batch answers, each a chance to crash.
    let ns = [20u64, 1000, 20_000, 100_000, 100_000, 200_000];
    let mut args = vec!["submit".to_string(), "--json".into(), "--timeout".into(), "300".into()];
    args.extend(ns.iter().map(|n| n.to_string()));
    let out = std::process::Command::new(common::BIN).args(&args).env("FACTO_CLUSTER", &cluster).output().unwrap();
    let statuses: Vec<Value> =
        (0..6).filter_map(|i| common::http_get(&format!("127.0.0.1:{}", base + i), "/status")).collect();
    unsafe { libc::kill(supervisor.id() as i32, libc::SIGTERM) };
    let _ = supervisor.wait();
    let logs: String = (1..=6)
        .map(|i| std::fs::read_to_string(dir.join(format!("node-{i}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), ns.len());
    for (n, r) in ns.iter().zip(&results) {
        assert_eq!(r["result"].as_str(), Some(factorial_decimal(*n).as_str()), "{n}!");
    }
    // The faults were real: nodes crashed and the supervisor brought them back.
    let crashes = logs.matches("injected crash").count();
    let restarts: u64 = statuses.iter().map(|s| s["restarts"].as_u64().unwrap_or(0)).sum();
    assert!(crashes > 0 && restarts > 0, "no crash happened ({crashes} crashes, {restarts} restarts)");
    let _ = std::fs::remove_dir_all(&dir);
}
