//! Mutual TLS between members, against real processes: every caller without the right
//! certificate is refused, and the cluster's results stay exact meanwhile.

mod common;

use common::{certs, client_files, factorial_decimal, https, wait_until, Cluster, TEST_ADMIN};
use facto::api::ElectionEnvelope;
use facto_elections::{raft, AnyMsg};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const AGREE_TIMEOUT: Duration = Duration::from_secs(30);

fn member_files(dir: &Path, id: u32) -> (PathBuf, PathBuf) {
    (dir.join(format!("node-{id}.pem")), dir.join(format!("node-{id}.key")))
}

/// Submits n! with `facto submit` (over TLS, as the harness does) and checks the digits.
fn submit_exactly(cluster: &Cluster, n: u64) {
    let out = cluster.facto(&["submit", "--json", &n.to_string()]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["result"].as_str(), Some(factorial_decimal(n).as_str()));
}

/// A peer message to member `to`'s `/internal/election`, as member `said` would send it,
/// presenting `identity`.
fn election_as(
    cluster: &Cluster,
    to: u32,
    said: u32,
    from_in_body: u32,
    ca_dir: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<u16, String> {
    let settings = cluster.status(to).unwrap()["settings"].as_str().unwrap().to_string();
    let header = format!("{settings};node={said}");
    // An old term: a member takes it as stale, and nothing changes.
    let envelope = ElectionEnvelope { from: from_in_body, msg: AnyMsg::Raft(raft::Msg::Heartbeat { term: 0 }) };
    let body = serde_json::to_vec(&envelope).unwrap();
    https(
        &cluster.addr(to),
        "POST",
        "/internal/election",
        Some(&body),
        &[("x-facto-settings", &header)],
        ca_dir,
        identity,
    )
    .map(|(status, _)| status)
}

fn counted(cluster: &Cluster, id: u32, reason: &str) -> u64 {
    let identity = Some(client_files(cluster.tls.as_ref().unwrap(), TEST_ADMIN));
    let (_, body) = https(&cluster.addr(id), "GET", "/metrics", None, &[], cluster.tls.as_ref().unwrap(), identity)
        .expect("metrics over TLS");
    let text = String::from_utf8(body).unwrap();
    let line = format!("facto_identity_refusals_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn certs_writes_the_named_files_and_never_replaces_a_ca() {
    let dir = std::env::temp_dir().join(format!("facto-certs-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    certs(&["init", "--dir", d]);
    certs(&["member", "--id", "7", "--host", "facto-7", "--host", "10.0.0.7", "--dir", d]);
    certs(&["client", "--name", "ops", "--admin", "--dir", d]);
    for file in ["ca.pem", "ca.key", "node-7.pem", "node-7.key", "client-ops.pem", "client-ops.key"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.starts_with("-----BEGIN "), "{file} is PEM");
    }
    let again = std::process::Command::new(common::BIN).args(["certs", "init", "--dir", d]).output().unwrap();
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(said.contains("already exists"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn callers_without_the_right_certificate_are_refused_and_results_stay_exact() {
    let _alone = common::one_cluster_at_a_time();
    let cluster = Cluster::start_tls(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    submit_exactly(&cluster, 100);
    let tls = cluster.tls.clone().unwrap();
    let to = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let other = cluster.ids().into_iter().find(|&id| id != leader && id != to).unwrap();

    // A member's own certificate is accepted: the probe itself is sound.
    assert_eq!(election_as(&cluster, to, other, other, &tls, Some(member_files(&tls, other))), Ok(204));

    // No certificate: refused.
    assert_eq!(election_as(&cluster, to, other, other, &tls, None), Ok(403));

    // A client certificate (even an admin's) on an internal route: refused.
    certs(&["client", "--name", "app", "--dir", tls.to_str().unwrap()]);
    assert_eq!(election_as(&cluster, to, other, other, &tls, Some(client_files(&tls, "app"))), Ok(403));
    assert_eq!(election_as(&cluster, to, other, other, &tls, Some(client_files(&tls, TEST_ADMIN))), Ok(403));

    // A member's certificate sending as another member, in the header or in the body.
    let as_leader = Some(member_files(&tls, other));
    assert_eq!(election_as(&cluster, to, leader, leader, &tls, as_leader.clone()), Ok(403));
    assert_eq!(election_as(&cluster, to, other, leader, &tls, as_leader), Ok(403));
    // A request that does not say who sends it.
    let settings = cluster.status(to).unwrap()["settings"].as_str().unwrap().to_string();
    let envelope = ElectionEnvelope { from: other, msg: AnyMsg::Raft(raft::Msg::Heartbeat { term: 0 }) };
    let body = serde_json::to_vec(&envelope).unwrap();
    let unnamed = https(
        &cluster.addr(to),
        "POST",
        "/internal/election",
        Some(&body),
        &[("x-facto-settings", &settings)],
        &tls,
        Some(member_files(&tls, other)),
    );
    assert_eq!(unnamed.map(|(status, _)| status), Ok(403));
    assert!(counted(&cluster, to, "impersonation") >= 3);
    // A member certificate of the CA for an id that is not in this cluster.
    certs(&["member", "--id", "9", "--host", "127.0.0.1", "--dir", tls.to_str().unwrap()]);
    assert_eq!(election_as(&cluster, to, 9, 9, &tls, Some(member_files(&tls, 9))), Ok(403));
    assert!(counted(&cluster, to, "not_a_peer") >= 1);
    assert!(counted(&cluster, to, "no_member_certificate") >= 3);

    // A certificate from another CA, and an expired one from this CA: no handshake.
    let foreign = cluster.dir.join("foreign");
    let f = foreign.to_str().unwrap();
    certs(&["init", "--dir", f]);
    certs(&["member", "--id", &other.to_string(), "--host", "127.0.0.1", "--dir", f]);
    let refused = election_as(&cluster, to, other, other, &tls, Some(member_files(&foreign, other)));
    assert!(refused.is_err(), "another CA's certificate: {refused:?}");
    let expired = cluster.dir.join("expired");
    std::fs::create_dir_all(&expired).unwrap();
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(tls.join(file), expired.join(file)).unwrap();
    }
    let hosts = ["127.0.0.1".to_string()];
    facto::transport::certs::member(&expired, other, &hosts, facto::transport::certs::Validity { days: -1 }).unwrap();
    let refused = election_as(&cluster, to, other, other, &tls, Some(member_files(&expired, other)));
    assert!(refused.is_err(), "an expired certificate: {refused:?}");
    // A client that does not trust the cluster's CA does not reach it either.
    let wrong_ca = https(&cluster.addr(to), "GET", "/status", None, &[], &foreign, None);
    assert!(wrong_ca.is_err(), "a server not signed by the trusted CA: {wrong_ca:?}");

    // The admin API needs an admin client certificate.
    let admin = |identity| {
        https(&cluster.addr(to), "POST", "/admin/heal", Some(b"{}"), &[], &tls, identity).map(|(status, _)| status)
    };
    assert_eq!(admin(None), Ok(403));
    assert_eq!(admin(Some(client_files(&tls, "app"))), Ok(403));
    assert_eq!(admin(Some(member_files(&tls, other))), Ok(403));
    assert_eq!(admin(Some(client_files(&tls, TEST_ADMIN))), Ok(200));

    // Plain HTTP on a TLS member: a 400 in words.
    let (status, body) = common::http(&cluster.addr(to), "GET", "/status", None).expect("a plain answer");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("HTTPS"));

    // Nothing of this moved the cluster: same coordinator, and results stay exact.
    assert_eq!(cluster.wait_for_agreement(AGREE_TIMEOUT), leader);
    submit_exactly(&cluster, 300);
}

/// Sends `GET path` over TLS and hangs up without reading the answer.
fn ask_and_hang_up(addr: &str, path: &str, dir: &Path) {
    use std::io::Write;
    let config = facto::transport::tls::client(&dir.join("ca.pem"), None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let _ = stream.flush();
}

/// Found by the failover benchmark over TLS: rustls writes with `writev`, which (unlike the
/// standard library's `send`) raises SIGPIPE on a socket the peer closed, and members died
/// of it whenever a peer or client hung up during an answer.
#[test]
fn members_survive_clients_that_hang_up_during_an_answer() {
    let _alone = common::one_cluster_at_a_time();
    let mut cluster = Cluster::start_tls(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    let id = cluster.submit_no_wait(20_000);
    cluster.wait_for_job(&id, AGREE_TIMEOUT);
    let tls = cluster.tls.clone().unwrap();
    for _ in 0..40 {
        for member in cluster.ids() {
            ask_and_hang_up(&cluster.addr(member), &format!("/jobs/{id}"), &tls);
        }
    }
    for member in cluster.ids() {
        assert_eq!(cluster.wait_for_exit(member, Duration::from_millis(500)), None, "member {member} died");
    }
    assert_eq!(cluster.wait_for_agreement(AGREE_TIMEOUT), leader);
    submit_exactly(&cluster, 150);
}

/// A member that serves with another member's certificate is not taken for the member at
/// its address: its peers refuse its answers (and it, calling as the other, is refused).
#[test]
fn a_member_with_another_members_certificate_is_shut_out() {
    let _alone = common::one_cluster_at_a_time();
    let mut cluster = Cluster::start_tls(3, "raft", &[]);
    cluster.wait_for_agreement(AGREE_TIMEOUT);
    let tls = cluster.tls.clone().unwrap();
    cluster.signal(3, libc::SIGKILL);
    for (from, to) in
        [(member_files(&tls, 2).0, member_files(&tls, 3).0), (member_files(&tls, 2).1, member_files(&tls, 3).1)]
    {
        std::fs::copy(from, to).unwrap();
    }
    cluster.start_node(3);
    let shut_out = wait_until(AGREE_TIMEOUT, || {
        let refused: u64 = [1, 2].iter().map(|&id| counted(&cluster, id, "impersonation")).sum();
        (refused > 0).then_some(refused)
    });
    assert!(shut_out.is_some(), "member 3 with member 2's certificate was not refused\n{}", cluster.logs());
    // Members 1 and 2 keep a coordinator between them, and results stay exact.
    let agreed = wait_until(AGREE_TIMEOUT, || {
        let (a, b) = (cluster.status(1)?, cluster.status(2)?);
        (a["leader"].as_u64().is_some_and(|l| l != 3) && a["leader"] == b["leader"]).then_some(())
    });
    assert!(agreed.is_some(), "{}", cluster.logs());
    // And its answers are not taken for member 3's: the callers say why.
    let told = wait_until(AGREE_TIMEOUT, || {
        let callers = ["node-1.log", "node-2.log"].map(|f| std::fs::read_to_string(cluster.dir.join(f)).unwrap());
        callers.concat().contains("its certificate names member 2").then_some(())
    });
    assert!(told.is_some(), "{}", cluster.logs());
    let logs = std::fs::read_to_string(cluster.dir.join("node-3.log")).unwrap();
    let out =
        cluster.facto(&["submit", "--json", "--cluster", &format!("{},{}", cluster.addr(1), cluster.addr(2)), "120"]);
    assert!(out.status.success(), "{}\n{logs}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["result"].as_str(), Some(factorial_decimal(120).as_str()));
}

#[test]
fn a_tls_cluster_fails_over_after_sigkill_and_a_restarted_member_rejoins() {
    let _alone = common::one_cluster_at_a_time();
    let mut cluster = Cluster::start_tls(3, "bully", &[]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    cluster.signal(leader, libc::SIGKILL);
    let next = cluster.wait_for_agreement(AGREE_TIMEOUT);
    assert_ne!(next, leader);
    submit_exactly(&cluster, 200);
    cluster.start_node(leader);
    cluster.wait_for_agreement(AGREE_TIMEOUT);
    let rejoined = wait_until(AGREE_TIMEOUT, || cluster.status(leader).filter(|s| s["leader"].as_u64().is_some()));
    assert!(rejoined.is_some(), "{}", cluster.logs());
    submit_exactly(&cluster, 250);
}

#[test]
fn chaos_against_a_tls_cluster_passes() {
    let _alone = common::one_cluster_at_a_time();
    let base = common::free_port_block(3);
    let dir = std::env::temp_dir().join(format!("facto-tls-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut local = std::process::Command::new(common::BIN)
        .args(["cluster", "--tls", "--nodes", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let tls = dir.join("tls");
    let (cert, key) = client_files(&tls, "admin");
    let ready = wait_until(AGREE_TIMEOUT, || {
        https(&addrs[0], "GET", "/status", None, &[], &tls, None).ok().filter(|(s, _)| *s == 200)
    });
    assert!(ready.is_some(), "the TLS cluster did not answer");
    let out = std::process::Command::new(common::BIN)
        .args(["chaos", "--duration", "8s", "--seed", "3", "--cluster", &addrs.join(",")])
        .arg("--ca")
        .arg(tls.join("ca.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    // SIGTERM: `facto cluster` stops its members before it exits.
    unsafe { libc::kill(local.id() as i32, libc::SIGTERM) };
    let _ = local.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("result: PASS"), "{said}");
    let injected: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("faults injected: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(injected > 0, "the campaign injected faults over TLS: {said}");
    let _ = std::fs::remove_dir_all(&dir);
}
