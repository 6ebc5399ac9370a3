//! `GET /trace`: every member's recent protocol messages, each named by an id that the
//! sender's and the receiver's entries share, so a diagram can join them without clocks.

mod common;

use common::{http_get, Cluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);

fn trace(cluster: &Cluster, id: u32) -> Vec<Value> {
    let page = http_get(&cluster.addr(id), "/trace?since=0&limit=100000").expect("a trace");
    assert_eq!(page["node"].as_u64(), Some(u64::from(id)));
    page["entries"].as_array().cloned().unwrap_or_default()
}

#[test]
fn senders_and_receivers_name_each_message_alike_and_an_election_shows() {
    let mut cluster = Cluster::start(3, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let out = cluster.facto(&["submit", "--json", "3000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let traces: BTreeMap<u32, Vec<Value>> = cluster.ids().into_iter().map(|id| (id, trace(&cluster, id))).collect();
    let sent: BTreeMap<String, &Value> = traces
        .values()
        .flatten()
        .filter(|e| e["dir"] == "sent")
        .map(|e| (e["msg"].as_str().unwrap().to_string(), e))
        .collect();
    let mut joined = 0;
    for (&id, entries) in &traces {
        for received in entries.iter().filter(|e| e["dir"] == "received") {
            assert_eq!(received["to"].as_u64(), Some(u64::from(id)));
            let Some(send) = sent.get(received["msg"].as_str().unwrap()) else { continue };
            for field in ["kind", "class", "from", "to", "epoch"] {
                assert_eq!(send[field], received[field], "{field} of {received}");
            }
            joined += 1;
        }
    }
    assert!(joined > 0, "received messages match their sends");
    let classes: Vec<&str> = traces[&leader].iter().filter_map(|e| e["class"].as_str()).collect();
    for class in ["election", "heartbeat", "work", "replication", "gather"] {
        assert!(classes.contains(&class), "the coordinator's trace has {class} messages: {classes:?}");
    }

    // A crash of the coordinator: the election that follows is in the survivors' traces.
    let epoch = traces[&leader].iter().filter_map(|e| e["epoch"].as_u64()).max().unwrap();
    cluster.signal(leader, libc::SIGKILL);
    let new = cluster.wait_for_agreement(AGREE);
    assert_ne!(new, leader, "a new coordinator");
    let votes = trace(&cluster, new)
        .into_iter()
        .filter(|e| e["dir"] == "sent" && e["kind"] == "vote_request" && e["epoch"].as_u64() > Some(epoch))
        .count();
    assert!(votes > 0, "the new coordinator's vote requests at an epoch above {epoch}");
}

/// A burst of readers gets pages no longer than the trace, and the cluster keeps its
/// coordinator.
#[test]
fn the_trace_is_bounded_under_a_burst_of_readers() {
    let cluster = Cluster::start(3, "bully", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let addr = cluster.addr(leader);
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/trace?since=0&limit=999999999"))
        })
        .collect();
    for reader in readers {
        let page = reader.join().unwrap().expect("every reader gets a page");
        assert!(page["entries"].as_array().unwrap().len() <= facto::node::trace::TRACE_LEN);
    }
    let (status, _) = common::http(&addr, "GET", "/trace?since=x", None).unwrap();
    assert_eq!(status, 400, "a bad since is refused");
    assert_eq!(cluster.wait_for_agreement(AGREE), leader, "no election");
}
