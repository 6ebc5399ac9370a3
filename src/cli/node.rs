//! `facto node`: run one member.

use crate::config::{Members, NodeConfig};
use crate::error::{Error, Result};
use facto_elections::Algorithm;
use std::path::PathBuf;
use structopt::StructOpt;

#[derive(StructOpt, Debug)]
pub struct NodeArgs {
    /// This node's id (must appear in --peers).
    #[structopt(long, env = "FACTO_ID")]
    id: u32,
    /// Every member, this one included: ID=HOST:PORT,...
    #[structopt(long, env = "FACTO_PEERS")]
    peers: String,
    /// Address to listen on [default: this node's entry in --peers].
    #[structopt(long, env = "FACTO_LISTEN")]
    listen: Option<String>,
    /// Election algorithm: bully, ring or raft.
    #[structopt(long, env = "FACTO_ELECTION", default_value = "raft")]
    election: String,
    /// Seconds a worker waits after computing before it replies (simulated processing time).
    #[structopt(long, env = "FACTO_DELAY", default_value = "0")]
    delay: f64,
    /// Directory of this node's database [default: ./facto-data/node-<ID>].
    #[structopt(long, env = "FACTO_DATA_DIR", parse(from_os_str))]
    data_dir: Option<PathBuf>,
    /// Length of one election tick in milliseconds (timeouts are counted in ticks).
    #[structopt(long, env = "FACTO_TICK_MS", default_value = "10")]
    tick_ms: u64,
    /// The largest n a job may ask for.
    #[structopt(long, env = "FACTO_MAX_N", default_value = "1000000")]
    max_n: u64,
    /// Shared secret required on internal endpoints (never logged).
    #[structopt(long, env = "FACTO_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
}

pub fn run(args: NodeArgs) -> Result<()> {
    let members = Members::parse(&args.peers)?;
    let algorithm: Algorithm = args.election.parse()?;
    let delay_ms = seconds_to_ms(args.delay, "--delay")?;
    let listen = match args.listen {
        Some(l) => l,
        None => members
            .addr(args.id)
            .ok_or_else(|| Error::Usage(format!("--id {} is not in --peers", args.id)))?
            .to_string(),
    };
    let config = NodeConfig {
        id: args.id,
        data_dir: args
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("facto-data/node-{}", args.id))),
        members,
        listen,
        algorithm,
        delay_ms,
        tick_ms: args.tick_ms,
        max_n: args.max_n,
    };
    async_std::task::block_on(crate::node::run(config, args.cluster_key))
}

/// Converts a user's seconds (fractions allowed) to milliseconds.
pub(crate) fn seconds_to_ms(seconds: f64, flag: &str) -> Result<u64> {
    if !seconds.is_finite() || seconds < 0.0 || seconds > 86_400.0 {
        return Err(Error::Usage(format!(
            "{flag} must be between 0 and 86400 seconds, got {seconds}"
        )));
    }
    Ok((seconds * 1000.0).round() as u64)
}
