//! Bad input gets a clear one-line error and a non-zero exit; over HTTP a 400 with a JSON
//! error, and the node keeps serving.

mod common;

use common::{http, Cluster, BIN};
use std::process::Command;
use std::time::Duration;

fn facto(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).env_remove("FACTO_CLUSTER").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

fn assert_one_line_error(args: &[&str], expected: &str) {
    let (code, stderr) = facto(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?} printed more than one line: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in {stderr:?}");
}

#[test]
fn cli_mistakes_exit_non_zero_with_one_line() {
    let peers = "1=127.0.0.1:1,2=127.0.0.1:2";
    for (args, expected) in [
        (vec!["submit", "-5"], "'-5' is not a non-negative integer"),
        (vec!["submit", "abc"], "'abc' is not a non-negative integer"),
        (vec!["submit", "+5"], "'+5' is not a non-negative integer"),
        (vec!["submit", "05"], "'05' is not a non-negative integer"),
        (vec!["node", "--id", "1", "--peers", "1=127.0.0.1:0"], "port 0"),
        (vec!["node", "--id", "1", "--peers", "1=127.0.0.1:5,2=127.0.0.1:5"], "both id 1 and id 2"),
        (vec!["status", "--cluster", "127.0.0.1:1"], "no member of 127.0.0.1:1 answers"),
        (vec!["submit", "99999999999999"], "above --max-n"),
        (vec!["submit", "20", "abc"], "'abc'"),
        (vec!["node", "--id", "1", "--peers", peers, "--election", "paxos"], "choose one of: bully, ring, raft"),
        (vec!["node", "--id", "3", "--peers", peers], "--id 3 is not in --peers"),
        (vec!["node", "--id", "1", "--peers", "1=127.0.0.1"], "malformed peer"),
        (vec!["node", "--id", "1", "--peers", "1=127.0.0.1:1,1=127.0.0.1:2"], "appears twice"),
        (vec!["node", "--id", "1", "--peers", peers, "--delay", "-1"], "--delay"),
        (vec!["node", "--peers", peers], "--id"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["cluster", "--election", "paxos"], "choose one of"),
        (vec!["status", "--cluster", "nonsense"], "bad --cluster address"),
    ] {
        assert_one_line_error(&args, expected);
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("facto-port-test-{}", std::process::id()));
    let (code, stderr) =
        facto(&["node", "--id", "1", "--peers", &format!("1=127.0.0.1:{port}"), "--data-dir", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_http_requests_get_400_json_and_the_node_keeps_serving() {
    let cluster = Cluster::start(2, "raft", &["--max-n", "5000"]);
    cluster.wait_for_agreement(Duration::from_secs(20));
    let addr = cluster.addr(1);
    let huge = vec![b' '; 200 * 1024];
    let internal_garbage: &[u8] = br#"{"from": 1, "epoch": "x"}"#;
    let too_many_jobs = format!(r#"{{"ids":[{}],"wait_ms":10}}"#, vec![r#""1-1""#; 2_000].join(","));
    let long_id = format!(r#"{{"ids":["{}"],"wait_ms":10}}"#, "9".repeat(100));
    for (path, body) in [
        ("/jobs", b"{not json".as_slice()),
        ("/jobs", br#"{"n": -5}"#.as_slice()),
        ("/jobs", br#"{"n": 2.5}"#.as_slice()),
        ("/jobs", br#"{"n": "twenty"}"#.as_slice()),
        ("/jobs", br#"{"n": 5001}"#.as_slice()),
        ("/jobs", huge.as_slice()),
        ("/internal/election", b"[1,2,3]".as_slice()),
        ("/internal/work", internal_garbage),
        ("/internal/decimal", internal_garbage),
        ("/internal/jobs/wait", internal_garbage),
        ("/internal/jobs/wait", too_many_jobs.as_bytes()),
        ("/internal/jobs/wait", long_id.as_bytes()),
    ] {
        // A body over the limit is too large (413), the rest malformed (400).
        let expected = if body.len() > 64 * 1024 { 413 } else { 400 };
        let (status, body) = if path.starts_with("/internal/") {
            cluster.post_as_member(1, 2, path, body).expect("node answers")
        } else {
            http(&addr, "POST", path, Some(body)).expect("node answers")
        };
        assert_eq!(status, expected, "{path}: {}", String::from_utf8_lossy(&body));
        let err: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()), "{err}");
    }
    // A peer sending more than 4 operands is refused, not obeyed.
    let five = r#"{"from":1,"epoch":99,"batch":1,"items":[{"op":{"job":"1-1","level":0,"index":0},"operands":["Ag==","Aw==","BA==","BQ==","Bg=="]}]}"#;
    let (status, _) = cluster.post_as_member(1, 2, "/internal/work", five.as_bytes()).unwrap();
    assert_eq!(status, 400);
    assert_eq!(cluster.status(1).unwrap()["max_operands"].as_u64(), Some(0));
    // Conversion tasks no coordinator of this cluster could send: a padding of any size, a
    // power of ten far beyond the number, a number beyond --max-n's factorial.
    use facto::coordinator::conversion::{Conversion, Layout};
    let big = facto::bignum::Big::factorial(6_000);
    for task in [
        Conversion::Digits { number: 7.into(), width: u64::MAX },
        Conversion::Split { number: 7.into(), layout: Layout { pieces: 2, width: 1 << 40 } },
        Conversion::Split { number: big, layout: Layout { pieces: 2, width: 10 } },
    ] {
        let frame = facto::api::encode_conversion(1, 99, &task).unwrap();
        let (status, body) = cluster.post_as_member(1, 2, "/internal/decimal", &frame).unwrap();
        assert_eq!(status, 400, "{task:?}: {}", String::from_utf8_lossy(&body));
    }
    // Unknown job: 404 JSON.
    let (status, _) = http(&addr, "GET", "/jobs/nope", None).unwrap();
    assert_eq!(status, 404);
    // Still serving, still computing.
    let (status, body) = http(&addr, "POST", "/jobs", Some(br#"{"n": 10}"#)).unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    assert!(cluster.status(1).is_some());
}

/// With no member answering, `facto submit` says so within 2 s and gives up after
/// `--connect-timeout` with the last error, in two lines at most.
#[test]
fn submit_says_when_no_member_answers() {
    let dead = format!("127.0.0.1:{}", common::free_ports(1)[0]);
    let started = std::time::Instant::now();
    let (code, stderr) = facto(&["submit", "--cluster", &dead, "--connect-timeout", "3", "10"]);
    assert_ne!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after --connect-timeout");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains(&format!("no member of {dead} answers; retrying")), "{stderr}");
    assert!(lines[1].contains("no member of") && lines[1].contains("unreachable"), "{stderr}");
}

/// A one-member cluster cannot compute (its coordinator never multiplies): it says so.
#[test]
fn a_one_member_cluster_refuses_jobs_with_the_reason() {
    let cluster = Cluster::start(1, "raft", &[]);
    cluster.wait_for_agreement(Duration::from_secs(20));
    let (status, body) = http(&cluster.addr(1), "POST", "/jobs", Some(br#"{"n": 10}"#)).unwrap();
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&body).contains("one member"), "{}", String::from_utf8_lossy(&body));
}

/// HTTP/1.0, a request without Host, and a body shorter than its Content-Length each get an
/// answer instead of a silent close or a request held forever.
#[test]
fn old_hostless_and_short_requests_are_answered() {
    use std::io::{Read, Write};
    let cluster = Cluster::start(2, "raft", &[]);
    cluster.wait_for_agreement(Duration::from_secs(20));
    let raw = |request: &[u8]| {
        let mut s = std::net::TcpStream::connect(cluster.addr(1)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut answer = vec![0u8; 256];
        let n = s.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    assert!(raw(b"GET /status HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
    assert!(raw(b"GET /status HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    let short = raw(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"n\":");
    assert!(short.starts_with("HTTP/1.1 408"), "{short}");
}

/// A client of another protocol version gets a 400 that names both; one that says none (curl,
/// a browser) and one of this version are served.
#[test]
fn a_client_of_another_protocol_version_gets_400_naming_both() {
    let cluster = Cluster::start(2, "raft", &[]);
    cluster.wait_for_agreement(Duration::from_secs(30));
    let ask = |version: Option<&str>| {
        let headers: Vec<(&str, &str)> = version.map(|v| ("x-facto-protocol", v)).into_iter().collect();
        common::http_with(&cluster.addr(1), "GET", "/status", None, &headers).expect("an answer")
    };
    let (status, body) = ask(Some("999"));
    let said = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{said}");
    let ours = facto::config::PROTOCOL_VERSION.to_string();
    assert!(said.contains(&format!("speaks {ours}, the caller 999")), "{said}");
    assert_eq!(ask(None).0, 200);
    assert_eq!(ask(Some(&ours)).0, 200);
}
