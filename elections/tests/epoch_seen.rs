//! A higher epoch seen outside the election (a coordinator's request, a peer's refusal) moves
//! every algorithm past it: the epoch that fences work and the election's epoch are one, so a
//! cluster whose members learned of a higher epoch elects a leader above it.

mod harness;

use facto_elections::bully::Bully;
use facto_elections::raft::Raft;
use facto_elections::ring::Ring;
use facto_elections::{Election, Epoch, Input};
use harness::Net;

/// How far above the agreed epoch the injected one lies (a hostile or misconfigured member's).
const AHEAD: Epoch = 50;
const MAX_TICKS: u32 = 400;

/// Agrees, injects a higher epoch at `victim` (the leader when `None`), and checks that the
/// cluster agrees again above it, with the injected epoch durable at the victim.
fn moves_past<E: Election>(mut net: Net<E>, victim: Option<u32>) {
    net.run_until_agreed(MAX_TICKS).expect("a first leader");
    let (leader, epoch) = net.agreed().expect("agreed");
    let victim = victim.unwrap_or(leader);
    let seen = epoch + AHEAD;
    net.step(victim, Input::EpochSeen(seen));
    assert!(net.hard_state(victim).epoch >= seen, "the victim's durable epoch moved to {seen}");
    let now = net.leadership(victim);
    assert!(now.epoch().is_none_or(|e| e > seen), "a leadership below the seen epoch is dropped: {now:?}");
    net.deliver_all();
    let above = (1..=MAX_TICKS).find(|_| {
        net.tick();
        net.agreed().is_some_and(|(_, e)| e > seen)
    });
    assert!(above.is_some(), "no agreement above the seen epoch {seen} within {MAX_TICKS} ticks: {:?}", net.agreed());
}

/// Seeing an epoch no higher than the one known changes nothing.
fn ignores_lower<E: Election>(mut net: Net<E>) {
    net.run_until_agreed(MAX_TICKS).expect("a first leader");
    let (leader, epoch) = net.agreed().expect("agreed");
    for id in 1..=5 {
        net.step(id, Input::EpochSeen(epoch));
        net.step(id, Input::EpochSeen(epoch.saturating_sub(1)));
    }
    assert_eq!(net.agreed(), Some((leader, epoch)));
}

#[test]
fn raft_moves_past_an_epoch_seen_by_a_follower_or_the_leader() {
    moves_past(Net::new(5, Raft::new), Some(1));
    moves_past(Net::new(5, Raft::new), None);
    ignores_lower(Net::new(5, Raft::new));
}

#[test]
fn bully_moves_past_an_epoch_seen_by_a_follower_or_the_leader() {
    moves_past(Net::new(5, Bully::new), Some(1));
    moves_past(Net::new(5, Bully::new), None);
    ignores_lower(Net::new(5, Bully::new));
}

#[test]
fn ring_moves_past_an_epoch_seen_by_a_follower_or_the_leader() {
    moves_past(Net::new(5, Ring::new), Some(1));
    moves_past(Net::new(5, Ring::new), None);
    ignores_lower(Net::new(5, Ring::new));
}
