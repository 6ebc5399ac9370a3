//! Raft-lite scenarios, driven by hand like the textbook figures: a small harness holds the
//! nodes and delivers their messages in order, dropping those that cross a cut.

use facto_elections::raft::{Msg, Raft};
use facto_elections::{Actions, Config, Election, Epoch, HardState, Input, Leadership, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    in_flight: VecDeque<(NodeId, NodeId, Msg)>,
    /// Nodes cut off from everyone else: their messages, in and out, are dropped.
    isolated: BTreeSet<NodeId>,
    /// Links cut in both directions.
    cut_links: BTreeSet<(NodeId, NodeId)>,
}

impl Cluster {
    fn new(n: NodeId) -> Cluster {
        let members: Vec<NodeId> = (1..=n).collect();
        let nodes =
            members.iter().map(|&id| (id, Raft::new(Config::new(id, members.clone()), HardState::default()))).collect();
        Cluster { nodes, in_flight: VecDeque::new(), isolated: BTreeSet::new(), cut_links: BTreeSet::new() }
    }

    fn node(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).expect("no such node")
    }

    fn leadership(&self, id: NodeId) -> Leadership {
        self.nodes[&id].leadership()
    }

    fn term(&self, id: NodeId) -> Epoch {
        self.nodes[&id].term()
    }

    fn step(&mut self, id: NodeId, input: Input<Msg>) -> Actions<Msg> {
        let actions = self.node(id).step(input);
        for (to, msg) in &actions.messages {
            self.in_flight.push_back((id, *to, msg.clone()));
        }
        actions
    }

    fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut_links.insert((a.min(b), a.max(b)));
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        !self.isolated.contains(&a) && !self.isolated.contains(&b) && !self.cut_links.contains(&(a.min(b), a.max(b)))
    }

    /// Delivers everything in flight, and whatever that provokes, in FIFO order.
    fn deliver_all(&mut self) {
        while let Some((from, to, msg)) = self.in_flight.pop_front() {
            if self.connected(from, to) {
                self.step(to, Input::Message { from, msg });
            }
        }
    }

    /// Ticks `id` until its election timeout fires (it asks for pre-votes).
    fn time_out(&mut self, id: NodeId) {
        for _ in 0..100 {
            let actions = self.step(id, Input::Tick);
            let asks = actions.messages.iter().any(|(_, m)| matches!(m, Msg::RequestVote { .. }));
            // A lone node has no one to ask: it simply wins.
            if asks || actions.leadership.is_some() {
                return;
            }
        }
        panic!("node {id} never timed out");
    }

    /// `rounds` rounds of: tick every node, deliver everything.
    fn run(&mut self, rounds: u32) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..rounds {
            for &id in &ids {
                self.step(id, Input::Tick);
            }
            self.deliver_all();
        }
    }

    /// The single leader all the given nodes agree on, if they do.
    fn agreed_leader(&self, ids: &[NodeId]) -> Option<(NodeId, Epoch)> {
        let views: BTreeSet<(NodeId, Epoch)> = ids
            .iter()
            .map(|&id| {
                let l = self.leadership(id);
                Some((l.leader(id)?, l.epoch()?))
            })
            .collect::<Option<_>>()?;
        let &(leader, epoch) = views.iter().next()?;
        (views.len() == 1 && self.leadership(leader) == Leadership::Leading { epoch }).then_some((leader, epoch))
    }

    /// Makes `id` leader from a quiet cluster: it times out first and everyone answers.
    fn elect(&mut self, id: NodeId) -> Epoch {
        self.time_out(id);
        self.deliver_all();
        match self.leadership(id) {
            Leadership::Leading { epoch } => epoch,
            other => panic!("node {id} did not win: {other:?}"),
        }
    }
}

fn request_vote(term: Epoch, checkpoint_version: u64) -> Msg {
    Msg::RequestVote { term, pre_vote: false, checkpoint_version }
}

#[test]
fn an_uncontested_candidate_wins_and_everyone_follows() {
    let mut c = Cluster::new(5);
    let epoch = c.elect(3);
    assert_eq!(epoch, 1);
    for id in [1, 2, 4, 5] {
        assert_eq!(c.leadership(id), Leadership::Following { leader: 3, epoch: 1 });
    }
}

#[test]
fn a_split_vote_resolves_in_a_later_term() {
    // Four nodes; 1 and 2 campaign at once, 3 hears only 1 and 4 hears only 2: two votes
    // each, no majority of three.
    let mut c = Cluster::new(4);
    c.cut(1, 4);
    c.cut(2, 3);
    c.time_out(1);
    c.time_out(2);
    c.deliver_all();
    assert_eq!((c.term(1), c.term(2)), (1, 1), "both campaigned at term 1");
    assert_eq!(c.leadership(1), Leadership::Unknown);
    assert_eq!(c.leadership(2), Leadership::Unknown);
    // The network recovers; randomized timeouts make one candidate retry first and win.
    c.cut_links.clear();
    c.run(60);
    let (leader, epoch) = c.agreed_leader(&[1, 2, 3, 4]).expect("a leader emerges");
    assert!(epoch >= 2, "the split term 1 elected nobody, got leader {leader} at {epoch}");
}

#[test]
fn stale_term_messages_are_ignored() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run(5);
    let following = Leadership::Following { leader: 1, epoch: 1 };
    assert_eq!(c.leadership(2), following);
    // Term-0 messages change nothing; the sender at most learns the current term.
    for stale in [
        Msg::Heartbeat { term: 0 },
        Msg::Vote { term: 0, pre_vote: false, granted: true },
        Msg::HeartbeatAck { term: 0 },
        request_vote(0, 0),
    ] {
        let actions = c.node(2).step(Input::Message { from: 3, msg: stale.clone() });
        assert_eq!(actions.persist, None, "{stale:?} changed the hard state");
        assert_eq!(actions.leadership, None, "{stale:?} changed the leadership");
        for (_, reply) in &actions.messages {
            assert!(
                matches!(reply, Msg::HeartbeatAck { term: 1 } | Msg::Vote { term: 1, granted: false, .. }),
                "{stale:?} got {reply:?}"
            );
        }
    }
    assert_eq!(c.leadership(2), following);
}

#[test]
fn a_partitioned_node_rejoining_does_not_depose_the_leader() {
    let mut c = Cluster::new(3);
    let epoch = c.elect(1);
    c.isolated.insert(3);
    // Node 3 times out over and over, but without pre-votes it never bumps its term.
    c.run(100);
    assert_eq!(c.term(3), epoch, "pre-vote kept the isolated node's term");
    assert_eq!(c.leadership(3), Leadership::Unknown);
    assert_eq!(c.leadership(1), Leadership::Leading { epoch });
    c.isolated.clear();
    c.run(20);
    assert_eq!(c.agreed_leader(&[1, 2, 3]), Some((1, epoch)), "the old leader kept its term");
}

#[test]
fn a_leader_that_loses_its_majority_steps_down() {
    let mut c = Cluster::new(5);
    let epoch = c.elect(1);
    c.isolated.insert(1);
    // Check-quorum runs every election timeout; the acks that came in before the cut still
    // count for the first one, so it takes at most two.
    c.run(20);
    assert_eq!(c.leadership(1), Leadership::Unknown, "an isolated leader stops leading");
    c.run(60);
    let (leader, new_epoch) = c.agreed_leader(&[2, 3, 4, 5]).expect("the majority re-elects");
    assert_ne!(leader, 1);
    assert!(new_epoch > epoch);
}

#[test]
fn a_voter_refuses_a_less_fresh_candidate() {
    let mut c = Cluster::new(3);
    c.node(1).set_checkpoint_version(1);
    c.node(2).set_checkpoint_version(5);
    c.node(3).set_checkpoint_version(5);
    c.time_out(1);
    c.deliver_all();
    assert_eq!(c.term(1), 0, "no pre-vote majority, so no real campaign");
    assert_eq!(c.leadership(1), Leadership::Unknown);
    // A real vote request is refused too, even though the voter adopts the newer term.
    let actions = c.node(2).step(Input::Message { from: 1, msg: request_vote(7, 1) });
    assert!(actions.messages.contains(&(1, Msg::Vote { term: 7, pre_vote: false, granted: false })));
    // The fresh node wins, and the stale one follows it.
    c.in_flight.clear();
    c.run(60);
    let (leader, _) = c.agreed_leader(&[1, 2, 3]).expect("a fresh node leads");
    assert_ne!(leader, 1);
}

#[test]
fn a_vote_is_persisted_with_its_reply() {
    let mut c = Cluster::new(3);
    let actions = c.node(2).step(Input::Message { from: 1, msg: request_vote(1, 0) });
    // The caller makes `persist` durable before sending `messages`: both come in one Actions.
    assert_eq!(actions.persist, Some(HardState { epoch: 1, voted_for: Some(1) }));
    assert_eq!(actions.messages, vec![(1, Msg::Vote { term: 1, pre_vote: false, granted: true })]);
}

#[test]
fn a_restarted_node_does_not_vote_twice_in_a_term() {
    let members = vec![1, 2, 3];
    let mut voter = Raft::new(Config::new(2, members.clone()), HardState::default());
    let persisted =
        voter.step(Input::Message { from: 1, msg: request_vote(1, 0) }).persist.expect("the vote is persisted");
    // Crash: volatile state is gone, the node comes back from what it persisted.
    let mut voter = Raft::new(Config::new(2, members), persisted);
    let to_3 = voter.step(Input::Message { from: 3, msg: request_vote(1, 0) });
    assert_eq!(to_3.messages, vec![(3, Msg::Vote { term: 1, pre_vote: false, granted: false })]);
    assert_eq!(to_3.persist, None);
    // Its own earlier vote is simply repeated (the reply may have been lost).
    let to_1 = voter.step(Input::Message { from: 1, msg: request_vote(1, 0) });
    assert_eq!(to_1.messages, vec![(1, Msg::Vote { term: 1, pre_vote: false, granted: true })]);
}

#[test]
fn a_lone_node_leads_by_itself() {
    let mut c = Cluster::new(1);
    assert_eq!(c.elect(1), 1);
}

#[test]
fn malformed_traffic_is_ignored() {
    let mut c = Cluster::new(3);
    // From a non-member, and from ourselves: no reply, no state change.
    for from in [9, 2] {
        let actions = c.node(2).step(Input::Message { from, msg: request_vote(5, 0) });
        assert_eq!(actions, Actions::default());
    }
    assert_eq!(c.node(2).step(Input::PeerDown(1)), Actions::default());
}
