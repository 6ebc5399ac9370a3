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
    /// Finished jobs the cluster keeps (the newest; `--retain-jobs`) and for how long at
    /// most (`--retain-for`; `None`: no time limit).
    pub retain_jobs: usize,
    pub retain_for_ms: Option<u64>,
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

/// The version of the protocol members speak to each other. Members of builds that speak
/// another refuse each other (a build before this setting existed sends none).
pub const PROTOCOL_VERSION: u32 = 2;

/// The settings every member of one cluster must share, as `name=value` pairs: the protocol,
/// the member list (as [`Members::fingerprint`]), the election algorithm, `--max-n`,
/// `--checkpoint` and `--tick-ms` (the elections' timeouts count ticks). A member whose
/// settings differ could lead at epochs the others' election never hears of, take jobs
/// the others refuse, or time out on a healthy leader: it is refused. Per-member settings
/// (`--delay`, queue limits, failure injection) are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedSettings(Vec<(String, String)>);

impl SharedSettings {
    pub fn of(cfg: &NodeConfig) -> SharedSettings {
        let pairs = [
            ("protocol", PROTOCOL_VERSION.to_string()),
            ("members", format!("{:016x}", cfg.members.fingerprint())),
            ("election", cfg.algorithm.to_string()),
            ("max_n", cfg.max_n.to_string()),
            ("checkpoint", if cfg.checkpoint { "on" } else { "off" }.to_string()),
            ("tick_ms", cfg.tick_ms.to_string()),
        ];
        SharedSettings(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// `name=value;name=value` (no name or value holds `;` or `=`).
    pub fn text(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }

    /// Reads [`SharedSettings::text`]; pairs that do not parse are left out (and then differ).
    pub fn parse(text: &str) -> SharedSettings {
        let pairs = text.split(';').filter_map(|pair| pair.split_once('='));
        SharedSettings(pairs.map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every setting in which `theirs` differs from these, as one line naming both sides
    /// (`us`, `them`): `"election: node 1 has raft, node 6 has bully; max_n: ..."`. `None`:
    /// they are equal.
    pub fn differences(&self, us: &str, theirs: &SharedSettings, them: &str) -> Option<String> {
        let mut names: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        names.extend(theirs.0.iter().map(|(k, _)| k.as_str()).filter(|k| self.get(k).is_none()));
        let lines: Vec<String> = names
            .into_iter()
            .filter(|name| self.get(name) != theirs.get(name))
            .map(|name| {
                let (ours, their) = (self.get(name).unwrap_or("none"), theirs.get(name).unwrap_or("none"));
                format!("{name}: {us} has {ours}, {them} has {their}")
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(algorithm: Algorithm, max_n: u64) -> NodeConfig {
        NodeConfig {
            id: 1,
            members: Members::parse("1=h:1,2=h:2").unwrap(),
            listen: "h:1".into(),
            algorithm,
            delay_ms: 0,
            data_dir: PathBuf::from("d"),
            tick_ms: 10,
            max_n,
            checkpoint: true,
            restarts: 0,
            reset_data: false,
            queue_jobs_max: 64,
            queue_ops_max: 1,
            retain_jobs: 10_000,
            retain_for_ms: None,
            converter: None,
        }
    }

    #[test]
    fn shared_settings_name_each_difference_with_both_values() {
        let ours = SharedSettings::of(&config(Algorithm::Raft, 1_000_000));
        assert_eq!(SharedSettings::parse(&ours.text()), ours);
        assert_eq!(ours.differences("node 1", &ours, "node 2"), None);
        let theirs = SharedSettings::of(&config(Algorithm::Bully, 2_000_000));
        assert_eq!(
            ours.differences("node 1", &theirs, "node 6").unwrap(),
            "election: node 1 has raft, node 6 has bully; max_n: node 1 has 1000000, node 6 has 2000000"
        );
        let older = SharedSettings::parse("");
        let said = ours.differences("node 1", &older, "node 6").unwrap();
        assert!(said.starts_with("protocol: node 1 has 2, node 6 has none"), "{said}");
    }

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
