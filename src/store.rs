//! The node's local database (sled). Only this module names sled.

use crate::error::{Error, Result};
use facto_elections::HardState;
use std::path::Path;

const HARD_STATE_KEY: &[u8] = b"election/hard_state";

/// A node's durable state.
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the database in `dir`. Two nodes cannot share a directory.
    pub fn open(dir: &Path) -> Result<Store> {
        let db = sled::open(dir).map_err(|e| {
            Error::Store(format!(
                "cannot open {} (is another node using it?): {e}",
                dir.display()
            ))
        })?;
        Ok(Store { db })
    }

    /// The election state saved by [`Store::save_hard_state`], or the initial one.
    pub fn hard_state(&self) -> Result<HardState> {
        match self.db.get(HARD_STATE_KEY).map_err(store_err)? {
            None => Ok(HardState::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Store(format!("corrupt election state: {e}"))),
        }
    }

    /// Saves the election state and waits until it is on disk: the messages that depend on
    /// it (a vote, a higher epoch) may only leave after this returns.
    pub fn save_hard_state(&self, state: &HardState) -> Result<()> {
        let bytes = serde_json::to_vec(state).map_err(|e| Error::Store(e.to_string()))?;
        self.db.insert(HARD_STATE_KEY, bytes).map_err(store_err)?;
        self.db.flush().map_err(store_err)?;
        Ok(())
    }
}

fn store_err(e: sled::Error) -> Error {
    Error::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("facto-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.hard_state().unwrap(), HardState::default());
            store
                .save_hard_state(&HardState {
                    epoch: 7,
                    voted_for: Some(3),
                })
                .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.hard_state().unwrap(),
            HardState {
                epoch: 7,
                voted_for: Some(3)
            }
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
