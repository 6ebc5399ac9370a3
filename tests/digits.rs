//! Large results as streams and files: `GET /jobs/<id>/digits` (whole, from an offset, or a
//! `Range`), `facto submit --output FILE`, and a job's JSON that names the stream instead of
//! carrying megabytes of digits.

mod common;

use common::{http, http_with, Cluster};
use facto::bignum::Big;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
/// 300,000! has 1,512,852 digits: above the 1 MiB a job's JSON carries.
const N: u64 = 300_000;

#[test]
fn a_large_result_streams_to_a_file_exactly_and_by_range_from_any_member() {
    let _alone = common::one_cluster_at_a_time();
    let cluster = Cluster::start(4, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let expected = Big::factorial(N).to_decimal();

    let file = cluster.dir.join("digits.txt");
    let out = cluster.facto(&["submit", "--json", "--output", file.to_str().unwrap(), &N.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["digits"].as_u64(), Some(expected.len() as u64));
    assert!(std::fs::read_to_string(&file).unwrap() == expected, "the file holds {N}! exactly");

    let id = line["id"].as_str().unwrap();
    let follower = cluster.ids().into_iter().find(|&i| i != leader).unwrap();
    for member in [leader, follower] {
        let addr = cluster.addr(member);
        let job = common::http_get(&addr, &format!("/jobs/{id}")).expect("the job");
        assert!(job.get("result").is_none(), "a result this large is left out of the JSON");
        assert_eq!(job["digits"].as_u64(), Some(expected.len() as u64));
        let url = job["digits_url"].as_str().expect("where the digits are").to_string();
        assert_eq!(url, format!("/jobs/{id}/digits"));

        let (status, body) = http_with(&addr, "GET", &url, None, &[("Range", "bytes=1000-1999")]).unwrap();
        assert_eq!((status, body.as_slice()), (206, &expected.as_bytes()[1000..2000]), "member {member}");
        let from = expected.len() - 10;
        let (status, body) = http(&addr, "GET", &format!("{url}?offset={from}"), None).unwrap();
        assert_eq!((status, body.as_slice()), (200, &expected.as_bytes()[from..]), "member {member}");
        let (status, _) = http(&addr, "GET", &format!("{url}?offset={}", expected.len() + 1), None).unwrap();
        assert_eq!(status, 416, "an offset past the end");
        let (status, _) = http(&addr, "GET", "/jobs/9-9/digits", None).unwrap();
        assert_eq!(status, 404);
    }
}

/// A path that cannot be written is refused in one line before anything is submitted.
#[test]
fn an_output_that_cannot_be_written_computes_nothing() {
    let cluster = Cluster::start(3, "bully", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let out = cluster.facto(&["submit", "--output", "/nonexistent-dir/out.txt", "1000"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write /nonexistent-dir/out.txt") && stderr.trim().lines().count() == 1, "{stderr}");
    let jobs = common::http_get(&cluster.addr(leader), "/jobs").expect("the job list");
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "nothing was submitted: {jobs}");
}

/// Clients that stop reading mid-stream hold nothing: more of them than a member sends
/// large answers at once, and a full read still comes after them.
#[test]
fn clients_that_leave_mid_stream_cost_the_member_nothing_lasting() {
    let _alone = common::one_cluster_at_a_time();
    let cluster = Cluster::start(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let out = cluster.facto(&["submit", "--json", &N.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_string();
    let addr = cluster.addr(leader);
    for _ in 0..48 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        // A member that kept a turn for each client gone would stop answering here.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /jobs/{id}/digits HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut start = [0u8; 4096];
        s.read_exact(&mut start).unwrap();
    }
    let (status, body) = http(&addr, "GET", &format!("/jobs/{id}/digits"), None).expect("a full read after them");
    assert_eq!(status, 200);
    assert!(body == Big::factorial(N).to_decimal().as_bytes(), "the digits are exact");
    assert_eq!(cluster.wait_for_agreement(AGREE), leader, "no election");
}
