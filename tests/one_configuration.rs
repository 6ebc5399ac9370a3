//! No single member may wedge the cluster: a member started with other shared settings (the
//! election algorithm, `--max-n`) exits at start with one line naming the setting and both
//! values, or, started apart, is refused by every peer and stops; a member that shows a higher
//! epoch and falls silent (a key holder) leaves a cluster that elects above it and finishes
//! every acknowledged job. Real processes, for every algorithm.

mod common;

use common::{factorial_decimal, http_get, wait_until, Cluster, BIN};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
const FINISH: Duration = Duration::from_secs(120);
const EXIT: Duration = Duration::from_secs(20);

/// `facto node` as member `id` of `cluster`, with its own `--election` and extra flags,
/// stderr kept.
fn odd_member(cluster: &Cluster, id: u32, election: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["node", "--id", &id.to_string(), "--peers", &cluster.peers(), "--election", election])
        .arg("--data-dir")
        .arg(cluster.dir.join(format!("odd-{id}")))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("facto node starts")
}

/// Waits for `child` to exit by itself; its stderr, or a panic when it kept running.
fn exits_with_stderr(mut child: Child) -> String {
    let status = wait_until(EXIT, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the misconfigured member kept running");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "it exits non-zero: {stderr}");
    stderr
}

/// Submits n! and checks the digits.
fn computes(cluster: &Cluster, n: u64) {
    let id = cluster.submit_no_wait(n);
    let job = cluster.wait_for_job(&id, FINISH);
    assert_eq!(job["result"].as_str(), Some(factorial_decimal(n).as_str()), "{n}! is exact");
}

/// The reproduction: five members of one algorithm run; the sixth comes with another. It
/// exits at start naming the setting and both values; the five compute 500! and 600!.
fn odd_one_out_exits_at_start(algorithm: &str, odd: &str, extra: &[&str], expected: &str) {
    let mut cluster = Cluster::start(6, algorithm, &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let victim = if leader == 6 { 5 } else { 6 };
    cluster.signal(victim, libc::SIGKILL);
    let stderr = exits_with_stderr(odd_member(&cluster, victim, odd, extra));
    let last = stderr.lines().last().unwrap_or_default();
    let expected = expected.replace("{victim}", &victim.to_string());
    assert!(
        last.contains("refusing to join") && last.contains(&expected),
        "one clear line naming {expected}: {stderr}"
    );
    cluster.wait_for_agreement(AGREE);
    computes(&cluster, 500);
    computes(&cluster, 600);
}

#[test]
fn a_member_with_another_algorithm_exits_at_start_and_the_cluster_computes() {
    let _alone = common::one_cluster_at_a_time();
    for (algorithm, odd) in [("raft", "bully"), ("bully", "ring"), ("ring", "raft")] {
        let expected = format!("election: this node ({{victim}}) has {odd}, node 1 has {algorithm}");
        odd_one_out_exits_at_start(algorithm, odd, &[], &expected);
    }
}

#[test]
fn a_member_with_another_max_n_exits_at_start() {
    let _alone = common::one_cluster_at_a_time();
    odd_one_out_exits_at_start("raft", "raft", &["--max-n", "2000000"], "max_n: this node (");
}

/// The odd member starts while the others are stopped, so nobody answers its start-up
/// check: it runs, the others refuse every request of its (and say why), it stops once most
/// of them refused it, and the others compute meanwhile.
#[test]
fn a_member_with_another_algorithm_started_apart_is_refused_and_stops() {
    let _alone = common::one_cluster_at_a_time();
    let mut cluster = Cluster::start(6, "raft", &[]);
    cluster.wait_for_agreement(AGREE);
    cluster.signal(6, libc::SIGKILL);
    for id in 1..=5 {
        cluster.signal(id, libc::SIGSTOP);
    }
    let odd = odd_member(&cluster, 6, "bully", &[]);
    let odd_addr = cluster.addr(6);
    let running = wait_until(EXIT, || http_get(&odd_addr, "/status"));
    for id in 1..=5 {
        cluster.signal(id, libc::SIGCONT);
    }
    assert!(running.is_some(), "with no peer answering it starts");
    let stderr = exits_with_stderr(odd);
    // The fatal line; another thread may still log a line or two before the process ends.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one clear line: {stderr}");
    assert!(errors[0].contains("refuse this node's settings") && errors[0].contains("election: node"), "{stderr}");
    assert!(stderr.contains("refuses this node: ") && stderr.contains("has raft"), "{stderr}");
    cluster.wait_for_agreement(AGREE);
    assert!(cluster.logs().contains("cluster settings differ: election: node"), "the refusers say why");
    computes(&cluster, 600);
}

/// A key holder shows every member a gathering at an epoch far above the cluster's while a
/// job runs (slowed by `--delay`), then is killed. The others move their election past that epoch, agree on a
/// coordinator above it, report the epoch they fence with in `/status` and `facto_epoch`,
/// and finish the job.
fn a_higher_epoch_from_a_member_that_then_stops_is_moved_past(algorithm: &str) {
    let mut cluster = Cluster::start(5, algorithm, &["--delay", "0.2"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let epoch = cluster.status(leader).unwrap()["epoch"].as_u64().unwrap();
    let job = cluster.submit_no_wait(20_000);
    let rogue = if leader == 1 { 2 } else { 1 };
    let forged = epoch + 100;
    let query = format!(r#"{{"finished":[],"from":{rogue},"epoch":{forged}}}"#);
    for id in cluster.ids().into_iter().filter(|&id| id != rogue) {
        let (status, _) = cluster.post_as_member(id, rogue, "/internal/checkpoint/query", query.as_bytes()).unwrap();
        assert_eq!(status, 200, "node {id} answers a gathering at epoch {forged}");
    }
    cluster.signal(rogue, libc::SIGKILL);
    let new = cluster.wait_for_agreement(AGREE);
    let status = cluster.status(new).unwrap();
    let now = status["epoch"].as_u64().unwrap();
    assert!(now > forged, "{algorithm}: agreed at epoch {now}, not above the shown {forged}");
    let metrics = common::http(&cluster.addr(new), "GET", "/metrics", None).unwrap().1;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(metrics.lines().any(|l| l == format!("facto_epoch {now}")), "facto_epoch is {now}: {metrics}");
    let done = cluster.wait_for_job(&job, FINISH);
    assert_eq!(done["result"].as_str(), Some(factorial_decimal(20_000).as_str()), "20000! is exact");
    computes(&cluster, 600);
}

#[test]
fn a_higher_epoch_shown_by_a_member_that_stops_is_moved_past_raft() {
    let _alone = common::one_cluster_at_a_time();
    a_higher_epoch_from_a_member_that_then_stops_is_moved_past("raft");
}

#[test]
fn a_higher_epoch_shown_by_a_member_that_stops_is_moved_past_bully() {
    let _alone = common::one_cluster_at_a_time();
    a_higher_epoch_from_a_member_that_then_stops_is_moved_past("bully");
}

#[test]
fn a_higher_epoch_shown_by_a_member_that_stops_is_moved_past_ring() {
    let _alone = common::one_cluster_at_a_time();
    a_higher_epoch_from_a_member_that_then_stops_is_moved_past("ring");
}
