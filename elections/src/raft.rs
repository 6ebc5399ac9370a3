//! PLACEHOLDER: replaced by the real algorithm.
use crate::{Actions, Config, Election, HardState, Input, Leadership};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {}

#[derive(Clone, Debug)]
pub struct Raft {
    hard: HardState,
}

impl Raft {
    pub fn new(_config: Config, hard_state: HardState) -> Self {
        Raft { hard: hard_state }
    }
}

impl Election for Raft {
    type Msg = Msg;
    fn name(&self) -> &'static str {
        "raft"
    }
    fn step(&mut self, _input: Input<Msg>) -> Actions<Msg> {
        Actions::default()
    }
    fn leadership(&self) -> Leadership {
        Leadership::Unknown
    }
    fn hard_state(&self) -> HardState {
        self.hard
    }
    fn set_freshness(&mut self, _freshness: u64) {}
}
