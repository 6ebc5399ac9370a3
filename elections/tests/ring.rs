//! The ring algorithm (Chang–Roberts with LeLann's skipping), scenario by scenario.

mod harness;

use facto_elections::ring::{Msg, Ring};
use facto_elections::{Input, Leadership};
use harness::Net;

/// Default timing (see `Config::new`): heartbeat every 3 ticks, election timeout 10 ticks.
const ELECTION_TICKS: u32 = 10;

fn cluster(n: u32) -> Net<Ring> {
    Net::new(n, Ring::new)
}

fn is_election(m: &Msg) -> bool {
    matches!(m, Msg::Election { .. })
}

fn is_coordinator(m: &Msg) -> bool {
    matches!(m, Msg::Coordinator { .. })
}

#[test]
fn the_ring_elects_the_highest_live_id() {
    let mut net = cluster(6);
    net.run_until_agreed(5 * ELECTION_TICKS).expect("agreement");
    // Node 6 is fifth of six in id order: it owns the epochs 5, 11, 17, ...
    assert_eq!(net.agreed(), Some((6, 5)));
    assert_eq!(net.leaderships(), vec![(6, 5)], "nobody else ever led");

    let mut net = cluster(6);
    net.crash(6);
    net.run_until_agreed(10 * ELECTION_TICKS).expect("agreement");
    // Node 5 owns the epochs 4, 10, ...
    assert_eq!(net.agreed(), Some((5, 4)));
    assert_eq!(net.leaderships(), vec![(5, 4)]);
}

#[test]
fn a_single_node_leads_by_itself() {
    let mut net = cluster(1);
    net.tick();
    assert_eq!(net.leadership(1), Leadership::Leading { epoch: 1 });
}

#[test]
fn the_ring_skips_a_dead_successor() {
    let mut net = cluster(6);
    net.crash(4);
    net.run_until_agreed(10 * ELECTION_TICKS).expect("agreement");
    assert_eq!(net.agreed(), Some((6, 5)));
    // Node 3 handed its tokens (its own, then 6's) to its successor 4, sent each once more
    // when no acknowledgement came, then passed both on to 5 instead; the announcement then
    // went round 4 at once.
    let from_3 =
        |to, pick: fn(&Msg) -> bool| net.sent.iter().filter(|(f, t, m)| *f == 3 && *t == to && pick(m)).count();
    assert_eq!(from_3(4, is_election), 4);
    assert_eq!(from_3(5, is_election), 2);
    assert_eq!(from_3(4, is_coordinator), 0);
    assert_eq!(from_3(5, is_coordinator), 1);
}

#[test]
fn two_concurrent_elections_yield_one_winner() {
    let mut net = cluster(6);
    net.run_until_agreed(5 * ELECTION_TICKS).unwrap();
    let before = net.leaderships().len();

    // The leader dies; 2 and 5 learn it at the same instant and both start an election.
    net.crash(6);
    net.step(2, Input::PeerDown(6));
    net.step(5, Input::PeerDown(6));
    net.deliver_all();
    net.run_until_agreed(10 * ELECTION_TICKS).expect("agreement");

    // Node 5's token swallowed 2's; 5 is the one new leader (at its first epoch above 5).
    assert_eq!(net.agreed(), Some((5, 10)));
    assert_eq!(net.leaderships()[before..], [(5, 10)]);
}

#[test]
fn a_lost_token_is_recovered_by_timeout() {
    let mut net = cluster(6);
    net.run(ELECTION_TICKS - 1);
    // Everyone times out together and sends its token; the one naming 6 is lost on its way
    // from 3 to 4, and 3 crashes before it can notice the missing acknowledgement.
    net.tick_nodes();
    let lost = net.deliver_until(|from, to, m| from == 3 && to == 4 && matches!(m, Msg::Election { candidate: 6, .. }));
    assert!(lost.is_some());
    net.crash(3);
    net.deliver_all();

    // Every live node took part and swallowed the lower tokens: nothing moves until a
    // participant gives up waiting for the COORDINATOR and starts again.
    net.run(5 * ELECTION_TICKS);
    assert!(net.leaderships().is_empty());
    net.run_until_agreed(15 * ELECTION_TICKS).expect("agreement");
    assert_eq!(net.agreed(), Some((6, 5)));
}

#[test]
fn cold_start_message_counts_lie_within_the_chang_roberts_bounds() {
    for n in [2, 3, 6, 10, 25] {
        let mut net = cluster(n);
        net.run_until_agreed(10 * ELECTION_TICKS).expect("agreement");
        let n = n as usize;
        let elections = net.count(is_election);
        // With every node initiating, Chang–Roberts needs between 2n - 1 ELECTION messages
        // (each token is swallowed by its successor, but the highest goes round) and
        // n(n + 1) / 2 (ids decreasing along the ring). The ring runs in ascending id order,
        // which is the best case: exactly 2n - 1.
        assert!((2 * n - 1..=n * (n + 1) / 2).contains(&elections), "n={n}: {elections}");
        assert_eq!(elections, 2 * n - 1, "n={n}");
        // The announcement goes once around the ring, back to the winner.
        assert_eq!(net.count(is_coordinator), n, "n={n}");
        // Every hop is acknowledged once.
        let acks = net.count(|m| matches!(m, Msg::Ack { .. }));
        assert_eq!(acks, elections + n, "n={n}");
    }
}

#[test]
fn a_leader_at_a_stale_epoch_is_refused() {
    let mut net = cluster(3);
    net.run_until_agreed(5 * ELECTION_TICKS).unwrap();
    assert_eq!(net.agreed(), Some((3, 2)));
    // An old announcement of node 2 at epoch 1 turns up: node 1 does not follow it.
    let msg = Msg::Coordinator { leader: 2, epoch: 1, seq: 99 };
    net.step(1, Input::Message { from: 2, msg });
    net.step(1, Input::Message { from: 2, msg: Msg::Heartbeat { epoch: 1 } });
    assert_eq!(net.leadership(1), Leadership::Following { leader: 3, epoch: 2 });
}
