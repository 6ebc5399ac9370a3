//! `facto bench --elections`: bully, ring and Raft-lite under one seeded schedule of
//! coordinator crashes, on real local clusters; its JSON and its HTML page agree.

mod common;

use serde_json::Value;
use std::process::Command;

#[test]
fn the_three_algorithms_meet_the_same_crashes_and_the_page_shows_each_one() {
    let _alone = common::one_cluster_at_a_time();
    let page = std::env::temp_dir().join(format!("facto-elections-{}.html", std::process::id()));
    let out = Command::new(common::BIN)
        .args(["bench", "--elections", "--nodes", "4", "--kills", "2", "--idle", "1s", "--seed", "3", "--json"])
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let runs = report["algorithms"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|a| a["algorithm"].as_str().unwrap()).collect();
    assert_eq!(names, ["bully", "ring", "raft"]);
    let pauses = |run: &Value| -> Vec<u64> {
        run["kills"].as_array().unwrap().iter().map(|k| k["pause_ms"].as_u64().unwrap()).collect()
    };
    for run in runs {
        assert_eq!(pauses(run), pauses(&runs[0]), "one schedule for every algorithm");
        for kill in run["kills"].as_array().unwrap() {
            assert_ne!(kill["victim"], kill["successor"], "{kill}");
            let (agreed, progressed) = (kill["agreement_ms"].as_f64().unwrap(), kill["progress_ms"].as_f64().unwrap());
            assert!(agreed > 0.0 && progressed >= agreed, "{kill}");
            assert!(kill["election_messages"].as_u64().unwrap() > 0, "an election takes messages: {kill}");
        }
        assert!(run["messages_per_election"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["spurious_elections"].is_u64(), "{run}");
    }
    let text = std::fs::read_to_string(&page).expect("the page was written");
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&text, options).expect("the page parses");
    let count = |class: &str| doc.descendants().filter(|n| n.attribute("class") == Some(class)).count();
    assert_eq!(count("kill"), 6, "a dot per kill and algorithm");
    assert_eq!(count("progress"), 6);
    assert_eq!(count("bar"), 3, "a bar per algorithm");
    let _ = std::fs::remove_file(&page);
}

#[test]
fn too_few_members_or_an_unwritable_page_is_one_line_before_any_cluster() {
    for args in [&["--nodes", "2"][..], &["--kills", "0"], &["--idle", "soon"], &["--html", "/nonexistent/dir/e.html"]]
    {
        let out = Command::new(common::BIN).args(["bench", "--elections"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}
