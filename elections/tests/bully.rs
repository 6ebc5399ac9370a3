//! The bully algorithm, scenario by scenario as the textbook tells it.

mod harness;

use facto_elections::bully::{Bully, Msg};
use facto_elections::{Config, Election, HardState, Input, Leadership};
use harness::Net;

/// Default timing (see `Config::new`): heartbeat every 3 ticks, election timeout 10 ticks.
const ELECTION_TICKS: u32 = 10;

fn cluster(n: u32) -> Net<Bully> {
    Net::new(n, Bully::new)
}

/// Every live node follows `leader` at `epoch` (and the leader leads at it).
fn assert_all_follow(net: &Net<Bully>, live: &[u32], leader: u32, epoch: u64) {
    for &id in live {
        let expected =
            if id == leader { Leadership::Leading { epoch } } else { Leadership::Following { leader, epoch } };
        assert_eq!(net.leadership(id), expected, "node {id}");
    }
}

#[test]
fn the_highest_id_wins_a_cold_start() {
    let mut net = cluster(6);
    net.run_until_agreed(3 * ELECTION_TICKS).expect("agreement");
    let (leader, epoch) = net.agreed().unwrap();
    assert_eq!(leader, 6);
    // Node 6 is fifth of six in id order: it owns the epochs 5, 11, 17, ...
    assert_eq!(epoch, 5);
    assert_all_follow(&net, &[1, 2, 3, 4, 5, 6], 6, 5);
    assert_eq!(net.leaderships(), vec![(6, 5)], "nobody else ever led");
    // Everyone made the epoch durable.
    assert!((1..=6).all(|id| net.hard_state(id).epoch == 5));
}

#[test]
fn a_single_node_leads_by_itself() {
    let mut net = cluster(1);
    net.tick();
    assert_eq!(net.leadership(1), Leadership::Leading { epoch: 1 });
}

#[test]
fn the_leaders_crash_is_noticed_through_missing_heartbeats() {
    let mut net = cluster(6);
    net.run_until_agreed(3 * ELECTION_TICKS).unwrap();
    net.crash(6);
    // Silence shorter than the election timeout is tolerated.
    net.run(ELECTION_TICKS - 1);
    assert_eq!(net.leadership(1), Leadership::Following { leader: 6, epoch: 5 });
    // Then 1..=4 ask the higher ids, 5 answers them and, asking only the dead 6, wins.
    let ticks = net.run_until_agreed(4 * ELECTION_TICKS).expect("agreement");
    assert!(ticks <= 2 * ELECTION_TICKS + 1, "took {ticks} ticks");
    // Node 5 owns epochs 4, 10, 16, ...: the smallest above 5 is 10.
    assert_all_follow(&net, &[1, 2, 3, 4, 5], 5, 10);
    assert!(net.count(|m| matches!(m, Msg::Answer { .. })) > 0);
}

#[test]
fn a_recovered_higher_id_takes_over_at_a_higher_epoch() {
    let mut net = cluster(6);
    net.run_until_agreed(3 * ELECTION_TICKS).unwrap();
    net.crash(6);
    net.run_until_agreed(4 * ELECTION_TICKS).unwrap();
    assert_eq!(net.agreed(), Some((5, 10)));

    net.restart(6);
    // It remembers epoch 5 only; it hears 5's heartbeat at epoch 10, bullies 5 out and leads
    // at its first epoch above 10.
    assert_eq!(net.hard_state(6).epoch, 5);
    net.run_until_agreed(4 * ELECTION_TICKS).expect("agreement");
    assert_all_follow(&net, &[1, 2, 3, 4, 5, 6], 6, 11);
}

#[test]
fn a_leader_at_a_stale_epoch_is_refused() {
    let config = Config::new(1, vec![1, 2, 3]);
    let mut node = Bully::new(config, HardState { epoch: 10, voted_for: None });
    let claim = |from, msg| Input::Message { from, msg };

    // Node 3 announces itself at epoch 4, below the 10 node 1 has already seen: refused.
    let actions = node.step(claim(3, Msg::Coordinator { epoch: 4 }));
    assert_eq!(actions.leadership, None);
    assert_eq!(node.leadership(), Leadership::Unknown);

    // At epoch 12 it is accepted, and the epoch is made durable before anything else.
    let actions = node.step(claim(3, Msg::Coordinator { epoch: 12 }));
    assert_eq!(actions.leadership, Some(Leadership::Following { leader: 3, epoch: 12 }));
    assert_eq!(actions.persist, Some(HardState { epoch: 12, voted_for: None }));

    // A late heartbeat of an older leadership does not move it back.
    let actions = node.step(claim(2, Msg::Heartbeat { epoch: 8 }));
    assert_eq!(actions.leadership, None);
    assert_eq!(node.leadership(), Leadership::Following { leader: 3, epoch: 12 });
}

#[test]
fn a_malformed_message_is_ignored() {
    let mut node = Bully::new(Config::new(1, vec![1, 2, 3]), HardState::default());
    // From a stranger, from itself, and an ANSWER from a lower id: none is part of the protocol.
    for (from, msg) in [(9, Msg::Coordinator { epoch: 7 }), (1, Msg::Coordinator { epoch: 7 })] {
        assert_eq!(node.step(Input::Message { from, msg }).leadership, None);
    }
    let mut node3 = Bully::new(Config::new(3, vec![1, 2, 3]), HardState::default());
    let actions = node3.step(Input::Message { from: 1, msg: Msg::Answer { epoch: 0 } });
    assert!(actions.messages.is_empty());
    assert_eq!(node.leadership(), Leadership::Unknown);
}

#[test]
fn two_leaders_after_a_partition_heals_converge_on_the_highest_id() {
    let mut net = cluster(6);
    net.partition(&[&[1, 2, 3], &[4, 5, 6]]);
    net.run(3 * ELECTION_TICKS);
    // Each side elected its highest id: 3 (owning epochs 2, 8, ...) and 6 (5, 11, ...).
    assert_eq!(net.leadership(3), Leadership::Leading { epoch: 2 });
    assert_eq!(net.leadership(6), Leadership::Leading { epoch: 5 });
    // Churn on the small side pushes its epoch past the big side's: 3 crashes, 2 takes over
    // at 7, 3 comes back and bullies its way in at 8.
    net.crash(3);
    net.run(4 * ELECTION_TICKS);
    net.restart(3);
    net.run(4 * ELECTION_TICKS);
    assert_eq!(net.leadership(3), Leadership::Leading { epoch: 8 });
    assert_eq!(net.leadership(6), Leadership::Leading { epoch: 5 });

    net.heal();
    net.run_until_agreed(6 * ELECTION_TICKS).expect("agreement");
    // Node 6 wins, but only at an epoch above every epoch in the cluster.
    assert_all_follow(&net, &[1, 2, 3, 4, 5, 6], 6, 11);
}

/// Ticks until `node` sends an ELECTION (at most `max`).
fn ticks_until_election(node: &mut Bully, max: u32) -> Option<u32> {
    (1..=max).find(|_| node.step(Input::Tick).messages.iter().any(|(_, m)| matches!(m, Msg::Election { .. })))
}

#[test]
fn failure_reports_from_before_an_election_do_not_crown_the_candidate() {
    let mut node = Bully::new(Config::new(1, vec![1, 2, 3]), HardState::default());
    // Old reports: sends to both higher peers timed out (overloaded, not dead).
    node.step(Input::PeerDown(2));
    node.step(Input::PeerDown(3));
    ticks_until_election(&mut node, ELECTION_TICKS).expect("the listening node elects");
    // One fresh report is not all of them: the candidate waits for node 2's ANSWER.
    node.step(Input::PeerDown(3));
    assert_eq!(node.leadership(), Leadership::Unknown);
    // Both higher peers fail this election's messages: it leads at once.
    node.step(Input::PeerDown(2));
    assert!(matches!(node.leadership(), Leadership::Leading { .. }));
}

#[test]
fn a_leader_that_was_only_late_stretches_the_timeout() {
    let mut node = Bully::new(Config::new(1, vec![1, 2]), HardState::default());
    let from_2 = |msg| Input::Message { from: 2, msg };
    node.step(from_2(Msg::Coordinator { epoch: 1 }));
    let mut gaps = Vec::new();
    for _ in 0..4 {
        // The leader falls silent: how long until this node asks?
        gaps.push(ticks_until_election(&mut node, 100).expect("an election"));
        // Then its late heartbeat arrives, at the epoch it was suspected at.
        node.step(from_2(Msg::Heartbeat { epoch: 1 }));
    }
    let e = ELECTION_TICKS;
    assert_eq!(gaps, vec![e, 2 * e, 4 * e, 4 * e]);
}

#[test]
fn back_to_back_crashes_of_the_leader_keep_the_base_timeout() {
    let mut node = Bully::new(Config::new(1, vec![1, 2]), HardState::default());
    let from_2 = |msg| Input::Message { from: 2, msg };
    let mut gaps = Vec::new();
    for epoch in [1, 3, 5, 7] {
        // Node 2 comes back from each crash at a new epoch, leads, and dies again.
        node.step(from_2(Msg::Coordinator { epoch }));
        gaps.push(ticks_until_election(&mut node, 100).expect("an election"));
        // Restarted, it first answers the election at the epoch it remembers: no proof that
        // it had been alive all along.
        node.step(from_2(Msg::Answer { epoch }));
    }
    assert_eq!(gaps, vec![ELECTION_TICKS; 4]);
}
