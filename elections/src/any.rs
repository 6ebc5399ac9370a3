//! Picking an algorithm by name: one enum that wraps the built-in algorithms, so a runtime can
//! hold "whichever election the cluster chose" without being generic.

use crate::{bully, raft, ring, Actions, Config, Election, Epoch, Error, HardState, Input, Leadership};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The built-in algorithms, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Bully,
    Ring,
    Raft,
}

impl Algorithm {
    /// Every built-in algorithm.
    pub const ALL: [Algorithm; 3] = [Algorithm::Bully, Algorithm::Ring, Algorithm::Raft];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Bully => "bully",
            Algorithm::Ring => "ring",
            Algorithm::Raft => "raft",
        }
    }

    /// Builds this algorithm's state machine for one node, restoring `hard_state`.
    pub fn build(self, config: Config, hard_state: HardState) -> Result<AnyElection, Error> {
        config.validate()?;
        Ok(match self {
            Algorithm::Bully => AnyElection::Bully(bully::Bully::new(config, hard_state)),
            Algorithm::Ring => AnyElection::Ring(ring::Ring::new(config, hard_state)),
            Algorithm::Raft => AnyElection::Raft(raft::Raft::new(config, hard_state)),
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| Error::UnknownAlgorithm(s.to_string()))
    }
}

/// A message of any built-in algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnyMsg {
    Bully(bully::Msg),
    Ring(ring::Msg),
    Raft(raft::Msg),
}

impl AnyMsg {
    /// The message's kind within its algorithm, for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyMsg::Bully(m) => m.kind(),
            AnyMsg::Ring(m) => m.kind(),
            AnyMsg::Raft(m) => m.kind(),
        }
    }

    /// The epoch (term) the message speaks for: a receiver bounds it before stepping, since
    /// a forged epoch near `u64::MAX` would leave every member unable to move past it.
    pub fn epoch(&self) -> Epoch {
        match self {
            AnyMsg::Bully(m) => m.epoch(),
            AnyMsg::Ring(m) => m.epoch(),
            AnyMsg::Raft(m) => m.epoch(),
        }
    }
}

/// Any built-in algorithm's state machine.
#[derive(Clone, Debug)]
pub enum AnyElection {
    Bully(bully::Bully),
    Ring(ring::Ring),
    Raft(raft::Raft),
}

impl Election for AnyElection {
    type Msg = AnyMsg;

    fn name(&self) -> &'static str {
        match self {
            AnyElection::Bully(e) => e.name(),
            AnyElection::Ring(e) => e.name(),
            AnyElection::Raft(e) => e.name(),
        }
    }

    /// A message of another algorithm than this node's is a configuration mistake of the
    /// sender (a mixed cluster); it is ignored rather than trusted.
    fn step(&mut self, input: Input<AnyMsg>) -> Actions<AnyMsg> {
        match self {
            AnyElection::Bully(e) => match unwrap_input(input, |m| match m {
                AnyMsg::Bully(m) => Some(m),
                _ => None,
            }) {
                Some(input) => e.step(input).map(AnyMsg::Bully),
                None => Actions::default(),
            },
            AnyElection::Ring(e) => match unwrap_input(input, |m| match m {
                AnyMsg::Ring(m) => Some(m),
                _ => None,
            }) {
                Some(input) => e.step(input).map(AnyMsg::Ring),
                None => Actions::default(),
            },
            AnyElection::Raft(e) => match unwrap_input(input, |m| match m {
                AnyMsg::Raft(m) => Some(m),
                _ => None,
            }) {
                Some(input) => e.step(input).map(AnyMsg::Raft),
                None => Actions::default(),
            },
        }
    }

    fn leadership(&self) -> Leadership {
        match self {
            AnyElection::Bully(e) => e.leadership(),
            AnyElection::Ring(e) => e.leadership(),
            AnyElection::Raft(e) => e.leadership(),
        }
    }

    fn hard_state(&self) -> HardState {
        match self {
            AnyElection::Bully(e) => e.hard_state(),
            AnyElection::Ring(e) => e.hard_state(),
            AnyElection::Raft(e) => e.hard_state(),
        }
    }

    fn set_checkpoint_version(&mut self, checkpoint_version: u64) {
        match self {
            AnyElection::Bully(e) => e.set_checkpoint_version(checkpoint_version),
            AnyElection::Ring(e) => e.set_checkpoint_version(checkpoint_version),
            AnyElection::Raft(e) => e.set_checkpoint_version(checkpoint_version),
        }
    }
}

/// Converts an input carrying [`AnyMsg`] into one carrying the algorithm's own message, or
/// `None` when the message belongs to another algorithm.
fn unwrap_input<M>(input: Input<AnyMsg>, pick: impl Fn(AnyMsg) -> Option<M>) -> Option<Input<M>> {
    Some(match input {
        Input::Tick => Input::Tick,
        Input::PeerDown(p) => Input::PeerDown(p),
        Input::PeerUp(p) => Input::PeerUp(p),
        Input::EpochSeen(e) => Input::EpochSeen(e),
        Input::Message { from, msg } => Input::Message { from, msg: pick(msg)? },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "paxos".parse::<Algorithm>().unwrap_err();
        assert_eq!(err.to_string(), "unknown election algorithm 'paxos' (choose one of: bully, ring, raft)");
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
        }
    }
}
