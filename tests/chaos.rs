//! `facto chaos` and the admin endpoints it drives, against real processes.

mod common;

use common::{http_with, wait_until, Cluster};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
const KEY: &str = "test-cluster-key";

const GUARDED: [&str; 10] = [
    "/admin/crash",
    "/admin/stall",
    "/admin/partition",
    "/admin/heal",
    "/internal/election",
    "/internal/work",
    "/internal/decimal",
    "/internal/checkpoint",
    "/internal/checkpoint/query",
    "/internal/jobs/wait",
];

fn post(addr: &str, path: &str, body: &str, key: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = key.map(|k| ("x-facto-key", k)).into_iter().collect();
    http_with(addr, "POST", path, Some(body.as_bytes()), &headers).map_or(0, |(status, _)| status)
}

#[test]
fn admin_endpoints_are_disabled_without_a_cluster_key() {
    let cluster = Cluster::start(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    for path in ["/admin/crash", "/admin/stall", "/admin/partition", "/admin/heal"] {
        assert_eq!(post(&cluster.addr(leader), path, r#"{"duration_ms": 60000}"#, Some("anything")), 403, "{path}");
    }
    assert_eq!(cluster.wait_for_agreement(AGREE_TIMEOUT), leader);
    assert_eq!(cluster.status(leader).unwrap()["partitioned"], false);
}

#[test]
fn without_the_right_key_admin_and_internal_requests_get_401_and_change_nothing() {
    let cluster = Cluster::start(3, "raft", &["--cluster-key", KEY]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    let before = cluster.status(leader).unwrap();
    for path in GUARDED {
        for key in [None, Some("wrong-key"), Some("")] {
            assert_eq!(post(&cluster.addr(leader), path, r#"{"duration_ms": 60000}"#, key), 401, "{path} {key:?}");
        }
    }
    // Still up, still the coordinator at the same epoch, not partitioned; clients are open.
    let after = cluster.status(leader).unwrap();
    assert_eq!(after["role"], "coordinator");
    assert_eq!(after["epoch"], before["epoch"]);
    assert_eq!(after["partitioned"], false);
    assert_eq!(cluster.wait_for_agreement(AGREE_TIMEOUT), leader);
    let out = cluster.facto(&["submit", "--json", "12"]);
    assert!(out.status.success());
    // The key never reaches a log.
    assert!(!cluster.logs().contains(KEY));
}

#[test]
fn with_the_right_key_partition_stall_heal_and_crash_happen() {
    let mut cluster = Cluster::start(3, "raft", &["--cluster-key", KEY]);
    let leader = cluster.wait_for_agreement(AGREE_TIMEOUT);
    let others: Vec<u32> = cluster.ids().into_iter().filter(|&id| id != leader).collect();

    // A partitioned coordinator is cut off: the others elect a new one without it.
    assert_eq!(post(&cluster.addr(leader), "/admin/partition", r#"{"duration_ms": 600000}"#, Some(KEY)), 200);
    assert_eq!(cluster.status(leader).unwrap()["partitioned"], true);
    let new_leader = wait_until(AGREE_TIMEOUT, || {
        let a = cluster.status(others[0])?;
        let b = cluster.status(others[1])?;
        let l = a["leader"].as_u64()?;
        (l != u64::from(leader) && b["leader"].as_u64() == Some(l) && a["epoch"] == b["epoch"]).then_some(l)
    });
    assert!(new_leader.is_some(), "no new coordinator while {leader} was partitioned\n{}", cluster.logs());
    // Healed, it rejoins: all three agree again.
    assert_eq!(post(&cluster.addr(leader), "/admin/heal", "{}", Some(KEY)), 200);
    cluster.wait_for_agreement(AGREE_TIMEOUT);

    // A stalled node holds its replies.
    let worker = others[0];
    assert_eq!(post(&cluster.addr(worker), "/admin/stall", r#"{"duration_ms": 1500}"#, Some(KEY)), 200);
    let asked = Instant::now();
    assert!(cluster.status(worker).is_some());
    assert!(asked.elapsed() >= Duration::from_millis(1_000), "answered after {:?}", asked.elapsed());

    // Bad bodies are refused.
    assert_eq!(post(&cluster.addr(worker), "/admin/stall", r#"{"duration_ms": -1}"#, Some(KEY)), 400);
    assert_eq!(post(&cluster.addr(worker), "/admin/partition", r#"{"duration_ms": 999999999}"#, Some(KEY)), 400);

    // A crash is an abrupt exit with the crash status.
    assert_eq!(post(&cluster.addr(worker), "/admin/crash", "{}", Some(KEY)), 202);
    assert_eq!(cluster.wait_for_exit(worker, Duration::from_secs(10)), Some(86));
}

#[test]
fn chaos_refuses_bad_arguments_with_one_line() {
    for args in [&["--kill-prob", "1.5"][..], &["--duration", "soon"], &["--interval", "0s"], &["--jobs", "20,x"]] {
        let out = Command::new(common::BIN).arg("chaos").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// A campaign that cannot inject its faults (wrong key) fails instead of reporting a pass.
#[test]
fn a_campaign_whose_faults_are_refused_fails() {
    let cluster = Cluster::start(3, "raft", &["--cluster-key", KEY]);
    cluster.wait_for_agreement(AGREE_TIMEOUT);
    let out = Command::new(common::BIN)
        .args(["chaos", "--cluster-key", "wrong-key", "--kill-prob", "1", "--duration", "3s", "--json"])
        .args(["--jobs", "20", "--settle-timeout", "20s"])
        .env("FACTO_CLUSTER", cluster.addrs())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert!(report["aborted"].as_str().unwrap().contains("401"), "{report}");
    // Nothing was crashed.
    assert_eq!(cluster.statuses().iter().filter(|(_, s)| s.is_some()).count(), 3);
}

/// The full chaos campaign: a supervised 6-node cluster, 30 s of crashes, stalls and
/// partitions from seed 1, every job checked.
fn campaign(election: &str) {
    let _alone = common::one_cluster_at_a_time();
    let base = common::free_port_block(6);
    let dir = std::env::temp_dir().join(format!("facto-chaos-{}-{election}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut supervisor = Command::new(common::BIN)
        .args(["cluster", "--nodes", "6", "--base-port", &base.to_string(), "--election", election])
        .args(["--cluster-key", KEY])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cluster: String = (0..6).map(|i| format!("127.0.0.1:{},", base + i)).collect();
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/artifacts/chaos-{election}.html"));
    std::fs::create_dir_all(page.parent().unwrap()).unwrap();
    let out = Command::new(common::BIN)
        .args(["chaos", "--kill-prob", "0.1", "--slow-prob", "0.05", "--partition-prob", "0.05"])
        .args(["--duration", "30s", "--seed", "1", "--json", "--report"])
        .arg(&page)
        .env("FACTO_CLUSTER", &cluster)
        .env("FACTO_CLUSTER_KEY", KEY)
        .output()
        .unwrap();
    unsafe { libc::kill(supervisor.id() as i32, libc::SIGTERM) };
    let _ = supervisor.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["passed"], true, "{report}");
    let faults: u64 = report["faults"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert!(faults > 0, "no fault injected: {report}");
    let jobs = &report["jobs"];
    assert!(jobs["submitted"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(jobs["correct"], jobs["submitted"], "{report}");
    assert_eq!(jobs["wrong"], 0, "{report}");
    assert_eq!(jobs["lost"], 0, "{report}");
    assert!(report["settled"]["leader"].is_u64(), "{report}");
    report_matches(&page, &report);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The HTML report parses, and shows each fault, change of coordinator and job of the JSON
/// report once.
fn report_matches(page: &std::path::Path, report: &Value) {
    let text = std::fs::read_to_string(page).expect("the HTML report was written");
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc =
        roxmltree::Document::parse_with_options(&text, options).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let count = |class: &str| {
        doc.descendants().filter(|n| n.attribute("class").is_some_and(|c| c.split(' ').any(|c| c == class))).count()
    };
    let len = |key: &str| report[key].as_array().map_or(0, Vec::len);
    assert!(len("fault_log") > 0, "{report}");
    assert_eq!(count("fault"), len("fault_log"), "one mark per fault");
    assert_eq!(count("change"), len("leadership_changes"), "one dot per change of coordinator");
    assert_eq!(count("job"), len("job_log"), "one bar per job");
    assert_eq!(len("job_log") as u64, report["jobs"]["submitted"].as_u64().unwrap(), "every acknowledged job");
    assert!(text.contains("PASS"), "the verdict");
}

#[test]
fn a_report_that_cannot_be_written_is_refused_before_any_fault() {
    let out = Command::new(common::BIN)
        .args(["chaos", "--cluster", "127.0.0.1:9", "--report", "/nonexistent/dir/report.html"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot write /nonexistent/dir/report.html"), "{err}");
}

#[test]
fn bully_survives_a_chaos_campaign() {
    campaign("bully");
}

#[test]
fn ring_survives_a_chaos_campaign() {
    campaign("ring");
}

#[test]
fn raft_survives_a_chaos_campaign() {
    campaign("raft");
}
