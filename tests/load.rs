//! Many clients at once, and state that stays bounded: real `facto node` processes on
//! loopback. Every assertion counts (epochs, statuses, exact results), none times anything.

mod common;

use common::{http, http_get, wait_until, Cluster, BIN};
use facto::bignum::Big;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
const FINISH: Duration = Duration::from_secs(60);

/// 64 closed-loop clients of 20! over all six members for a few seconds (`facto bench
/// --load`, which starts its own cluster): no epoch changes, no 503, every result exact.
#[test]
fn sixty_four_clients_depose_no_coordinator_and_get_exact_results() {
    let _alone = common::one_cluster_at_a_time();
    let out = Command::new(BIN)
        .args(["bench", "--load", "--clients", "64", "--duration", "4s", "--n", "20,30", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "facto bench --load failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let statuses = &report["http_statuses"];
    assert_eq!(report["leadership_changes"], 0, "a coordinator was deposed under load: {report}");
    assert!(statuses.get("503").is_none(), "answers of 503 under load: {report}");
    assert!(statuses.get("error").is_none(), "connections failed under load: {report}");
    assert_eq!(report["wrong_results"], 0, "{report}");
    let jobs = report["jobs"].as_u64().unwrap();
    assert!(jobs >= 64, "fewer jobs than clients finished: {report}");
    // Every finished job was acknowledged (202) and read back (200), its digits checked.
    assert!(statuses["202"].as_u64().unwrap() >= jobs && statuses["200"].as_u64().unwrap() >= jobs, "{report}");
}

/// A follower's clients long-polling their jobs share watches to the coordinator (`POST
/// /internal/jobs/wait`, at most two on their way, each naming every job waited for that
/// the other does not) instead of one forwarded request each, and each still gets its own
/// exact result. (How many jobs a watch names is the unit tests' matter: here the count of
/// watches follows the time the jobs take, not the clients.)
#[test]
fn a_followers_long_polls_travel_to_the_coordinator_together() {
    let _alone = common::one_cluster_at_a_time();
    // Jobs that take half a second, so that all sixteen clients wait at once, well within
    // each long-poll's two seconds.
    let cluster = Cluster::start(3, "raft", &["--delay", "0.5"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let follower = cluster.addr(if leader == 1 { 2 } else { 1 });
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            let follower = follower.clone();
            std::thread::spawn(move || {
                let (status, body) =
                    http(&follower, "POST", "/jobs", Some(format!(r#"{{"n":{}}}"#, 20 + i).as_bytes()))?;
                assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
                let id = serde_json::from_slice::<Value>(&body).ok()?["id"].as_str()?.to_string();
                for _ in 0..30 {
                    let (status, body) = http(&follower, "GET", &format!("/jobs/{id}?wait_ms=2000"), None)?;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    let job: Value = serde_json::from_slice(&body).ok()?;
                    if job["state"] == "done" {
                        return Some((20 + i, job["result"].as_str()?.to_string()));
                    }
                }
                None
            })
        })
        .collect();
    for client in clients {
        let (n, result) = client.join().unwrap().expect("a client got its result");
        assert_eq!(result, Big::factorial(n).to_decimal(), "{n}!");
    }
    let count = |addr: &str, route: &str| -> u64 {
        let metrics = String::from_utf8_lossy(&http(addr, "GET", "/metrics", None).unwrap().1).into_owned();
        let series = format!("facto_http_requests_total{{route=\"{route}\",status=\"200\"}} ");
        let line = metrics.lines().find_map(|l| l.strip_prefix(series.as_str()));
        line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let watches = count(&cluster.addr(leader), "/internal/jobs/wait");
    let long_polls = count(&follower, "/jobs/:id");
    assert!(watches >= 1, "no watch reached the coordinator");
    assert!(long_polls >= 16, "{long_polls} long-polls at the follower");
    assert_eq!(count(&cluster.addr(leader), "/jobs/:id"), 0, "a long-poll was forwarded alone");
}

/// Finished jobs past `--retain-jobs` leave the coordinator, its successor's takeover and
/// status answers; asking for one gets 410 with the reason, the retained ones stay exact.
#[test]
fn finished_jobs_past_retention_are_gone_everywhere() {
    let _alone = common::one_cluster_at_a_time();
    let mut cluster = Cluster::start(3, "raft", &["--retain-jobs", "3"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let ids: Vec<String> = (0..8).map(|i| cluster.submit_no_wait(20 + i)).collect();
    for id in &ids {
        cluster.wait_for_job(id, FINISH);
    }
    let counts = |cluster: &Cluster, id: u32| http_get(&cluster.addr(id), "/status").map(|s| s["job_counts"].clone());
    let retained = wait_until(FINISH, || counts(&cluster, leader).filter(|c| c["total"] == 3));
    assert!(retained.is_some(), "still more than 3 jobs: {:?}", counts(&cluster, leader));
    let (status, body) = http(&cluster.addr(leader), "GET", &format!("/jobs/{}", ids[0]), None).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("past retention"), "{body}");
    let listed = http_get(&cluster.addr(leader), "/jobs").unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let page = http_get(&cluster.addr(leader), "/status?jobs=2").unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2, "{page}");

    // The successor loads only what is retained, and still serves it exactly.
    cluster.signal(leader, libc::SIGKILL);
    let successor = cluster.wait_for_agreement(AGREE);
    assert_ne!(successor, leader);
    // Counts appear once its takeover ends.
    let total = wait_until(AGREE, || counts(&cluster, successor).and_then(|c| c["total"].as_u64()));
    assert!(total.is_some_and(|t| t <= 3), "the successor holds {total:?} jobs");
    let newest = cluster.wait_for_job(ids.last().unwrap(), FINISH);
    assert_eq!(newest["result"].as_str(), Some(Big::factorial(27).to_decimal().as_str()));
    let (status, _) = http(&cluster.addr(successor), "GET", &format!("/jobs/{}", ids[1]), None).unwrap();
    assert_eq!(status, 410);
}

/// Sends `request` on a fresh connection and reads the answer until the node closes it.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request line or head over the limit gets 414 or 431, an oversized body 413, and the
/// node closes the connection instead of reading on.
#[test]
fn oversized_requests_are_answered_and_closed() {
    let cluster = Cluster::start(2, "raft", &[]);
    cluster.wait_for_agreement(AGREE);
    let addr = cluster.addr(1);
    let long_url = format!("GET /jobs/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9_000));
    assert!(exchange(&addr, long_url.as_bytes()).starts_with("HTTP/1.1 414"));
    let long_header = format!("GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9_000));
    assert!(exchange(&addr, long_header.as_bytes()).starts_with("HTTP/1.1 431"));
    let many = format!("GET /status HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: 1\r\n".repeat(200));
    assert!(exchange(&addr, many.as_bytes()).starts_with("HTTP/1.1 431"));

    // A body announced at 10 GB: answered at once, and the connection closes although the
    // client keeps sending (a node that read on would take the whole body first).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .unwrap();
    let chunk = vec![b'0'; 64 * 1024];
    let sent = (0..16_384).take_while(|_| s.write_all(&chunk).is_ok()).count();
    assert!(sent < 16_384, "the node read a whole gigabyte of a body it refused");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(http_get(&addr, "/status").is_some(), "the node still answers");
}
