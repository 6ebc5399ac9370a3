//! A node's configuration and the parsing of the member list.

use crate::error::{Error, Result};
use facto_elections::{Algorithm, NodeId};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The largest cluster facto supports (each member holds a link to every other).
pub const MEMBERS_MAX: usize = 1_000;

/// Every member of the cluster: id → `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members(pub BTreeMap<NodeId, String>);

impl Members {
    /// Parses `ID=HOST:PORT,ID=HOST:PORT,...`.
    pub fn parse(text: &str) -> Result<Members> {
        let mut members: BTreeMap<NodeId, String> = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("malformed peer '{entry}': expected ID=HOST:PORT")))?;
            let id: NodeId = id.trim().parse().map_err(|_| {
                Error::Usage(format!("malformed peer '{entry}': the id must be a non-negative integer"))
            })?;
            let addr = addr.trim();
            check_addr(addr).map_err(|why| Error::Usage(format!("malformed peer '{entry}': {why}")))?;
            if let Some((other, _)) = members.iter().find(|(_, a)| a.as_str() == addr) {
                return Err(Error::Usage(format!("address {addr} is given to both id {other} and id {id} in --peers")));
            }
            if members.insert(id, addr.to_string()).is_some() {
                return Err(Error::Usage(format!("peer id {id} appears twice in --peers")));
            }
        }
        if members.is_empty() {
            return Err(Error::Usage("--peers is empty: list every member as ID=HOST:PORT".into()));
        }
        if members.len() > MEMBERS_MAX {
            return Err(Error::Usage(format!(
                "--peers lists {} members; at most {MEMBERS_MAX} are supported",
                members.len()
            )));
        }
        Ok(Members(members))
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.0.keys().copied().collect()
    }

    pub fn addr(&self, id: NodeId) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }

    /// A digest of the whole list (ids and addresses, FNV-1a 64): equal on every member of
    /// one cluster, different for any other list. Never 0.
    pub fn fingerprint(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (id, addr) in &self.0 {
            for byte in format!("{id}={addr},").bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash.max(1)
    }
}

/// Checks that `addr` looks like `HOST:PORT` with a numeric port.
pub fn check_addr(addr: &str) -> std::result::Result<(), String> {
    let (host, port) = addr.rsplit_once(':').ok_or("expected HOST:PORT")?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 is not an address a peer can reach".into()),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("'{port}' is not a port number")),
    }
}

/// Everything one node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub members: Members,
    pub listen: String,
    pub algorithm: Algorithm,
    /// How long a worker waits after computing before it replies.
    pub delay_ms: u64,
    pub data_dir: PathBuf,
    /// Length of one election tick.
    pub tick_ms: u64,
    /// The largest n a job may ask for.
    pub max_n: u64,
    /// Whether the coordinator checkpoints and replicates its state (off only to measure
    /// what checkpointing costs).
    pub checkpoint: bool,
    /// How often the supervisor restarted this node (shown in `/status`).
    pub restarts: u64,
    /// Move the data directory aside and start empty on purpose (`--reset-data`).
    pub reset_data: bool,
    /// The most unfinished jobs the coordinator holds; beyond, `POST /jobs` answers 429.
    pub queue_jobs_max: u64,
    /// The most operations unfinished jobs may still need (one job is always taken).
    pub queue_ops_max: u64,
    /// The program that converts large products to decimal in a child process
    /// (`PROGRAM to-decimal`; see [`crate::node::converter`]); `None`: in this process.
    pub converter: Option<PathBuf>,
}

impl NodeConfig {
    /// Checks what parsing alone cannot: this node is a member.
    pub fn validate(&self) -> Result<()> {
        if self.members.addr(self.id).is_none() {
            return Err(Error::Usage(format!(
                "--id {} is not in --peers (members: {})",
                self.id,
                self.members.ids().iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        check_addr(&self.listen).map_err(|why| Error::Usage(format!("bad --listen '{}': {why}", self.listen)))?;
        if self.tick_ms == 0 {
            return Err(Error::Usage("--tick-ms must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_member_lists_apart() {
        let a = Members::parse("1=h:1,2=h:2").unwrap();
        assert_eq!(a.fingerprint(), Members::parse("2=h:2, 1=h:1").unwrap().fingerprint(), "order does not matter");
        assert_ne!(a.fingerprint(), Members::parse("1=h:1,2=h:3").unwrap().fingerprint());
        assert_ne!(a.fingerprint(), Members::parse("1=h:1,2=h:2,3=h:3").unwrap().fingerprint());
    }

    #[test]
    fn parses_members() {
        let m = Members::parse("1=127.0.0.1:7001, 2=localhost:7002,").unwrap();
        assert_eq!(m.ids(), vec![1, 2]);
        assert_eq!(m.addr(2), Some("localhost:7002"));
    }

    #[test]
    fn rejects_malformed_members_with_one_line_reasons() {
        for (text, why) in [
            ("", "--peers is empty"),
            ("1:7001", "expected ID=HOST:PORT"),
            ("x=127.0.0.1:7001", "non-negative integer"),
            ("1=127.0.0.1", "expected HOST:PORT"),
            ("1=127.0.0.1:99999", "not a port number"),
            ("1=a:1,1=b:2", "appears twice"),
            ("1=a:0", "port 0"),
            ("1=a:1,2=a:1", "both id 1 and id 2"),
        ] {
            let err = Members::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'));
        }
    }
}
