//! Client requests that this node cannot route yet wait here: while it takes over as
//! coordinator (gathering takes at most 2 s), and while no coordinator is known (an election
//! takes 0.1-0.3 s, and a follower that merely missed a few heartbeats knows its coordinator
//! again sooner). They are handled as soon as the node can route them, in the order they
//! came, and turned away with a reason once they waited too long, so the client retries
//! rather than hanging. The HTTP edge only waits for the answer.

use super::{Answer, Input, NodeCore, ReplyId, Routed};

/// How long a client request may wait for this node to finish taking over.
const TAKEOVER_WAIT_MS: u64 = 3_000;
/// How long a client request may wait for an election to name a coordinator.
const ELECTION_WAIT_MS: u64 = 1_000;

/// The requests waiting, each with when it came.
#[derive(Default)]
pub(super) struct WaitingRoom(Vec<(u64, Input)>);

impl WaitingRoom {
    /// The client behind `reply` stopped waiting: its request goes (a submission it will
    /// retry must not become a job it never heard of).
    pub(super) fn leave(&mut self, reply: ReplyId) {
        self.0.retain(|(_, input)| reply_of(input) != Some(reply));
    }
}

fn reply_of(input: &Input) -> Option<ReplyId> {
    match input {
        Input::Submit { reply, .. } | Input::Jobs { reply, .. } => Some(*reply),
        _ => None,
    }
}

impl NodeCore {
    /// Whether client requests must wait: this node takes over, or knows no coordinator.
    fn must_wait(&self) -> bool {
        self.role.taking_over().is_some() || matches!(self.route(), super::clients::Route::Nowhere)
    }

    /// A client request waits if it cannot be routed now; returns the input when it need not.
    pub(super) fn wait_if_unroutable(&mut self, input: Input) -> Option<Input> {
        if reply_of(&input).is_some() && self.must_wait() {
            self.waiting_room.0.push((self.now_ms, input));
            return None;
        }
        Some(input)
    }

    /// Once this node can route them, the waiting requests are handled, oldest first.
    pub(super) fn let_waiting_in(&mut self) {
        if self.waiting_room.0.is_empty() || self.must_wait() {
            return;
        }
        for (_, input) in std::mem::take(&mut self.waiting_room.0) {
            self.handle(input);
        }
    }

    /// On a tick: requests that waited past their bound are told why, to retry.
    pub(super) fn turn_away_waited_too_long(&mut self) {
        let (wait_ms, why) = match self.role.taking_over() {
            Some(_) => {
                (TAKEOVER_WAIT_MS, Some(format!("node {} is taking over as coordinator; retry in 1 s", self.me())))
            }
            None => (ELECTION_WAIT_MS, None),
        };
        let now_ms = self.now_ms;
        let (gone, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_room.0)
            .into_iter()
            .partition(|(since_ms, _)| now_ms >= since_ms + wait_ms);
        self.waiting_room.0 = stay;
        for (_, input) in gone {
            match input {
                Input::Submit { reply, .. } => self.reply(reply, Answer::Job(turned_away(&why))),
                Input::Jobs { reply, .. } => self.reply(reply, Answer::Jobs(turned_away(&why))),
                _ => {}
            }
        }
    }
}

/// Why a request is turned away: this node is taking over (`why`), or no coordinator is known.
fn turned_away<T>(why: &Option<String>) -> Routed<T> {
    why.clone().map_or(Routed::NoLeader, Routed::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::node_core::{tests::three_members, Effect, JobsQuery};
    use facto_elections::HardState;

    fn answers(effects: &[Effect]) -> Vec<(ReplyId, String)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { to, answer } => Some((*to, format!("{answer:?}"))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_request_that_finds_no_coordinator_waits_then_is_turned_away() {
        let mut core = NodeCore::new(three_members(), HardState::default(), Checkpoint::default(), 0).unwrap();
        let query =
            |reply| Input::Jobs { query: JobsQuery::One { id: "1-1".into(), wait: false }, reply, forwarded: false };
        assert!(
            answers(&core.step(0, Input::Submit { n: 20, request: None, reply: 1, forwarded: false })).is_empty(),
            "it waits"
        );
        assert!(answers(&core.step(500, query(2))).is_empty());
        core.step(600, Input::ClientGone { reply: 1 });
        let out = answers(&core.step(1_000, Input::Tick));
        assert!(out.is_empty(), "the one that left is not answered, the other waits on: {out:?}");
        let out = answers(&core.step(1_500, Input::Tick));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, 2);
        assert!(out[0].1.contains("NoLeader"), "{out:?}");
    }
}
