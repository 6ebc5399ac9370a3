//! Membership: a node given another member list than the running cluster's refuses to join,
//! with one clear line, and the cluster goes on; the members refuse election messages from a
//! node whose list differs.

mod common;

use common::{free_ports, http_with, wait_until, Cluster, BIN};
use facto::api::ElectionEnvelope;
use facto_elections::{raft, AnyMsg};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);

/// `facto node --id ID --peers PEERS --data-dir DIR`, its stderr kept.
fn node(id: u32, peers: &str, dir: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["node", "--id", &id.to_string(), "--peers", peers, "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("facto node starts")
}

#[test]
fn a_node_with_another_member_list_refuses_to_join_and_the_cluster_goes_on() {
    let mut cluster = Cluster::start(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let victim = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    cluster.signal(victim, libc::SIGKILL);

    // It comes back with a fourth member added to its list only.
    let peers = format!("{},4=127.0.0.1:{}", cluster.peers(), free_ports(1)[0]);
    let dir = std::env::temp_dir().join(format!("facto-membership-{}", std::process::id()));
    let mut child = node(victim, &peers, &dir);
    let status = wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the node with another member list kept running");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "it exits non-zero");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("refusing to join") && last.contains("members:"), "one clear line: {stderr}");

    // The others still agree on their coordinator and compute.
    assert_eq!(cluster.wait_for_agreement(AGREE), leader);
    let id = cluster.submit_no_wait(1000);
    assert_eq!(cluster.wait_for_job(&id, Duration::from_secs(60))["state"], "done");

    // An election message from a node with another list is refused at the door, naming the
    // setting and both values.
    let other = facto::config::Members::parse(&peers).unwrap().fingerprint();
    let msg = AnyMsg::Raft(raft::Msg::Heartbeat { term: 1 });
    let body = serde_json::to_vec(&ElectionEnvelope { from: victim, msg }).unwrap();
    let settings = cluster.status(leader).unwrap()["settings"].as_str().unwrap().to_string();
    let mine = settings.split(';').find_map(|p| p.strip_prefix("members=")).unwrap().to_string();
    let forged = settings.replace(&mine, &format!("{other:016x}")) + &format!(";node={victim}");
    let headers = [("x-facto-settings", forged.as_str())];
    let (code, answer) = http_with(&cluster.addr(leader), "POST", "/internal/election", Some(&body), &headers).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(code, 409, "{answer}");
    assert!(answer.contains(&format!("members: node {leader} has {mine}, node {victim} has {other:016x}")), "{answer}");
}

#[test]
fn a_member_starts_before_its_peers_names_resolve_and_keeps_trying() {
    // Kubernetes publishes a pod's name only once the pod exists: members start first.
    let port = free_ports(1)[0];
    let peers = format!("1=127.0.0.1:{port},2=facto-1.not-yet.invalid:7000");
    let dir = std::env::temp_dir().join(format!("facto-unresolved-{}", std::process::id()));
    let mut child = node(1, &peers, &dir);
    let addr = format!("127.0.0.1:{port}");
    let answered = wait_until(Duration::from_secs(10), || common::http_get(&addr, "/status"));
    std::thread::sleep(Duration::from_secs(2));
    let still = child.try_wait().unwrap().is_none() && common::http_get(&addr, "/status").is_some();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(answered.is_some(), "it serves while its peer's name does not resolve");
    assert!(still, "and keeps running, retrying its peer");
}
