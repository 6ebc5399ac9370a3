//! A decimal conversion spread over the workers: the coordinator neither splits nor converts,
//! and a worker killed in the middle of its piece costs that piece alone.

mod common;

use common::{http, wait_until, Cluster};
use facto::bignum::Big;
use serde_json::Value;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
/// 1,000,000! (18.5 million bits) is split in pieces over 5 workers.
const N: u64 = 1_000_000;

fn counter(status: &Value, name: &str) -> u64 {
    status[name].as_u64().unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn a_worker_killed_mid_piece_costs_only_its_piece_and_the_result_is_exact() {
    let _alone = common::one_cluster_at_a_time();
    // Every answer waits a second (--delay): a piece is in flight long enough to be caught.
    let mut cluster = Cluster::start(6, "raft", &["--delay", "1"]);
    let leader = cluster.wait_for_agreement(AGREE);
    let expected = Big::factorial(N).to_decimal();
    let id = cluster.submit_no_wait(N);

    // The split is one task on one worker; once it is done, a worker still busy with a
    // conversion task is converting a piece.
    let workers: Vec<u32> = cluster.ids().into_iter().filter(|&i| i != leader).collect();
    let (victim, victim_done) = wait_until(Duration::from_secs(120), || {
        let statuses: Vec<(u32, Value)> = workers.iter().filter_map(|&w| cluster.status(w).map(|s| (w, s))).collect();
        let done: u64 = statuses.iter().map(|(_, s)| counter(s, "conversion_tasks_done")).sum();
        let busy = statuses.iter().find(|(_, s)| counter(s, "conversion_tasks_running") > 0);
        busy.filter(|_| done >= 1).map(|(w, s)| (*w, counter(s, "conversion_tasks_done")))
    })
    .unwrap_or_else(|| panic!("no worker was seen converting a piece:\n{}", cluster.logs()));
    cluster.signal(victim, libc::SIGKILL);

    let job = cluster.wait_for_job(&id, Duration::from_secs(120));
    let url = job["digits_url"].as_str().expect("where the digits are").to_string();
    let (status, body) = http(&cluster.addr(leader), "GET", &url, None).expect("the digits");
    assert_eq!(status, 200);
    assert!(body == expected.as_bytes(), "{N}! came back wrong after a converting worker was killed");

    let coordinator = cluster.status(leader).expect("the coordinator answers");
    let living: Vec<Value> = workers.iter().filter(|&&w| w != victim).map(|&w| cluster.status(w).unwrap()).collect();
    assert_eq!(counter(&coordinator, "epoch"), counter(&living[0], "epoch"), "the coordinator changed");
    assert_eq!(counter(&coordinator, "conversion_tasks_done"), 0, "the coordinator converted");
    assert_eq!(counter(&coordinator, "converter_peak_rss_bytes"), 0, "the coordinator converted in a child");
    assert_eq!(
        counter(&coordinator, "conversion_tasks_redone"),
        1,
        "only the killed worker's piece is done again:\n{}",
        cluster.logs()
    );
    // One split and its two pieces carried out: the killed worker's piece was done
    // elsewhere, and no other task twice.
    let done: u64 = living.iter().map(|s| counter(s, "conversion_tasks_done")).sum::<u64>() + victim_done;
    let counts: Vec<(u64, u64)> =
        living.iter().map(|s| (counter(s, "id"), counter(s, "conversion_tasks_done"))).collect();
    assert_eq!(
        done,
        3,
        "conversion tasks carried out: victim {victim} {victim_done}, living {counts:?}:\n{}",
        cluster.logs()
    );
}
