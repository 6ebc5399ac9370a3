//! The hard-state barrier: nothing that tells the world something at an epoch leaves before
//! that epoch is durable.
//!
//! A vote must be on disk before it is sent, and a new coordinator's epoch before it gathers,
//! takes a job or sends work: a crash must not let it vote twice, or lead at that epoch again
//! and give the same job id to another job. So once an [`Effect::SaveHardState`] leaves the
//! core, every later effect that [`Effect::waits_for_hard_state`] — of this step or of later
//! ones — is held here until the driver reports [`super::Input::HardStateSaved`], and then
//! released in order. Another save among them raises the barrier again. This is etcd-io/raft's
//! rule that messages wait for their entries' append (`msgsAfterAppend`), kept in the core so
//! that no driver has to know it.

use super::Effect;

#[derive(Default)]
pub(super) struct Barrier {
    /// While a save is on its way to the disk: the effects waiting behind it.
    held: Option<Vec<Effect>>,
    /// [`super::Bugs::coordinate_before_epoch_durable`]: never raised.
    down_for_good: bool,
}

impl Barrier {
    pub(super) fn new(down_for_good: bool) -> Barrier {
        Barrier { held: None, down_for_good }
    }

    /// The effects of a step that may leave now; the rest are held.
    pub(super) fn pass(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len());
        for effect in effects {
            match &mut self.held {
                Some(held) if effect.waits_for_hard_state() => held.push(effect),
                _ => {
                    if matches!(effect, Effect::SaveHardState(_)) && !self.down_for_good {
                        self.held = Some(Vec::new());
                    }
                    out.push(effect);
                }
            }
        }
        out
    }

    /// The save in flight is durable: what waited behind it, to pass again in order.
    pub(super) fn open(&mut self) -> Vec<Effect> {
        self.held.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_core::{Answer, Routed};
    use facto_elections::HardState;

    fn reply(to: u64) -> Effect {
        Effect::Reply { to, answer: Answer::Jobs(Routed::NoLeader) }
    }

    fn replies(effects: &[Effect]) -> Vec<u64> {
        effects.iter().filter_map(|e| if let Effect::Reply { to, .. } = e { Some(*to) } else { None }).collect()
    }

    #[test]
    fn what_tells_the_world_waits_for_the_save_and_leaves_in_order() {
        let mut b = Barrier::new(false);
        let save = || Effect::SaveHardState(HardState::default());
        let write = || Effect::Write {
            write: None,
            facts: Vec::new(),
            finished: Vec::new(),
            retired: Vec::new(),
            checkpoint_version: 0,
        };
        let out = b.pass(vec![reply(1), save(), reply(2), write()]);
        assert_eq!(replies(&out), [1], "a reply after the save waits");
        assert_eq!(out.len(), 3, "the save and the write leave");
        assert!(b.pass(vec![reply(3), save(), reply(4)]).is_empty(), "a second save waits behind the first");
        let held = b.open();
        let out = b.pass(held);
        assert_eq!(replies(&out), [2, 3], "released in order, up to the next save");
        assert!(matches!(out.last(), Some(Effect::SaveHardState(_))));
        let held = b.open();
        assert_eq!(replies(&b.pass(held)), [4]);
        assert_eq!(replies(&b.pass(vec![reply(5)])), [5], "no save in flight: nothing waits");
    }

    #[test]
    fn the_bug_switch_holds_nothing() {
        let mut b = Barrier::new(true);
        let out = b.pass(vec![Effect::SaveHardState(HardState::default()), reply(1)]);
        assert_eq!(replies(&out), [1]);
    }
}
