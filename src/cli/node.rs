//! `facto node`: run one member.

use crate::config::{Members, NodeConfig};
use crate::error::{Error, Result};
use crate::node::faults::Faults;
use facto_elections::Algorithm;
use std::path::PathBuf;
use structopt::StructOpt;

#[derive(StructOpt, Debug)]
pub struct NodeArgs {
    /// This node's id (must appear in --peers).
    #[structopt(long, env = "FACTO_ID", required_unless = "id-from-hostname")]
    id: Option<u32>,
    /// Take the id from the host name's last `-N` (a Kubernetes StatefulSet's pod `facto-3`
    /// is member 3) instead of --id.
    #[structopt(long, conflicts_with = "id")]
    id_from_hostname: bool,
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
    /// Length of one election tick in milliseconds (timeouts are counted in ticks)
    /// [default: 10, or per member beyond 10: see docs/DESIGN.md "Many members"].
    #[structopt(long, env = "FACTO_TICK_MS")]
    tick_ms: Option<u64>,
    /// The largest n a job may ask for.
    #[structopt(long, env = "FACTO_MAX_N", default_value = "1000000")]
    max_n: u64,
    /// Probability of crashing at each task computed or batch answer recorded (and once a second while idle).
    #[structopt(long = "fail-prob", value_name = "P", env = "FACTO_FAIL_PROB", default_value = "0")]
    crash_prob: f64,
    /// Probability of stalling an operation or reply for --slow seconds.
    #[structopt(long, env = "FACTO_SLOW_PROB", default_value = "0")]
    slow_prob: f64,
    /// How long an injected stall lasts, in seconds.
    #[structopt(long, env = "FACTO_SLOW", default_value = "10")]
    slow: f64,
    /// Move this node's data directory aside (to <dir>.reset-<time>) and start empty, on
    /// purpose: for a directory the node refuses as damaged. The node then takes its epoch
    /// from its peers before it votes.
    #[structopt(long)]
    reset_data: bool,
    /// The most unfinished jobs the coordinator holds; beyond, submissions get 429.
    #[structopt(long, env = "FACTO_QUEUE_JOBS_MAX", default_value = "64")]
    queue_jobs_max: u64,
    /// The most operations unfinished jobs may still need (a single job is always taken).
    #[structopt(long, env = "FACTO_QUEUE_OPS_MAX", default_value = "16000000")]
    queue_ops_max: u64,
    /// Finished jobs the cluster keeps, newest first: older ones leave memory, every
    /// checkpoint and status answers, and asking for one gets 410.
    #[structopt(long, env = "FACTO_RETAIN_JOBS", default_value = "10000")]
    retain_jobs: usize,
    /// How long a finished job is kept at most (e.g. 1h, 7d is 168h); no limit unless given.
    #[structopt(long, env = "FACTO_RETAIN_FOR")]
    retain_for: Option<String>,
    /// Probability of answering a wrong product for a task (tests the coordinator's checks).
    #[structopt(long, env = "FACTO_CORRUPT_PROB", default_value = "0")]
    corrupt_prob: f64,
    /// Checkpoint and replicate the coordinator's state: on or off (off only to measure its cost).
    #[structopt(long, env = "FACTO_CHECKPOINT", default_value = "on")]
    checkpoint: String,
    /// Shared secret required on internal endpoints (never logged).
    #[structopt(long, env = "FACTO_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// Serve and call peers over mutual TLS with the cluster CA's `ca.pem` and this member's
    /// `node-ID.pem` and `node-ID.key` from this directory (made by `facto certs`).
    #[structopt(long, env = "FACTO_TLS_DIR", parse(from_os_str))]
    tls_dir: Option<PathBuf>,
}

/// The election tick for a cluster of `members`: 10 ms up to 10 members, then one
/// millisecond per member with Raft-lite and half a millisecond with bully and ring, so that a
/// coordinator's heartbeats (every 3 ticks, to every other member) and their answers stay
/// near 660 messages a second however many members there are (Raft-lite's followers answer
/// every heartbeat; bully's and ring's do not), and every timeout (in ticks) grows with the
/// cluster.
pub fn default_tick_ms(members: usize, algorithm: Algorithm) -> u64 {
    let per_member = match algorithm {
        Algorithm::Raft => members as u64,
        Algorithm::Bully | Algorithm::Ring => members as u64 / 2,
    };
    per_member.max(10)
}

/// The id at the end of a host name: `facto-3` is 3.
pub fn id_of_hostname(host: &str) -> Result<u32> {
    let host = host.trim().split('.').next().unwrap_or_default();
    host.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).ok_or_else(|| {
        Error::Usage(format!("--id-from-hostname: host name '{host}' does not end in -N (like facto-3)"))
    })
}

/// This machine's host name (`HOSTNAME`, else the kernel's).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default()
}

pub fn run(mut args: NodeArgs) -> Result<()> {
    if args.id_from_hostname {
        args.id = Some(id_of_hostname(&hostname())?);
    }
    let id = args.id.ok_or_else(|| Error::Usage("give --id or --id-from-hostname".into()))?;
    let members = Members::parse(&args.peers)?;
    let algorithm: Algorithm = args.election.parse()?;
    let delay_ms = seconds_to_ms(args.delay, "--delay")?;
    let listen = match args.listen {
        Some(l) => l,
        None => members.addr(id).ok_or_else(|| Error::Usage(format!("--id {id} is not in --peers")))?.to_string(),
    };
    let members_count = members.0.len();
    let config = NodeConfig {
        id,
        data_dir: args.data_dir.unwrap_or_else(|| PathBuf::from(format!("facto-data/node-{id}"))),
        members,
        listen,
        algorithm,
        delay_ms,
        tick_ms: args.tick_ms.unwrap_or_else(|| default_tick_ms(members_count, algorithm)),
        max_n: args.max_n,
        checkpoint: match args.checkpoint.as_str() {
            "on" => true,
            "off" => false,
            other => return Err(Error::Usage(format!("--checkpoint must be on or off, got '{other}'"))),
        },
        restarts: std::env::var("FACTO_RESTARTS").ok().and_then(|r| r.parse().ok()).unwrap_or(0),
        reset_data: args.reset_data,
        queue_jobs_max: args.queue_jobs_max,
        queue_ops_max: args.queue_ops_max,
        retain_jobs: args.retain_jobs,
        retain_for_ms: args.retain_for.as_deref().map(|d| super::parse_duration_ms(d, "--retain-for")).transpose()?,
        converter: Some(this_program()),
    };
    let faults = Faults::new(
        probability(args.crash_prob, "--fail-prob")?,
        probability(args.slow_prob, "--slow-prob")?,
        seconds_to_ms(args.slow, "--slow")?,
    )
    .corrupting(probability(args.corrupt_prob, "--corrupt-prob")?);
    let tls = match &args.tls_dir {
        Some(dir) => {
            Some(crate::transport::tls::member(dir, id).map_err(|why| Error::Usage(format!("--tls-dir: {why}")))?)
        }
        None => None,
    };
    tune_the_allocator();
    async_std::task::block_on(crate::member::run(config, args.cluster_key, tls, faults))
}

/// This very program, for child processes: `/proc/self/exe` on Linux stays valid even when
/// the file was replaced or deleted since the node started (an upgrade in place).
fn this_program() -> PathBuf {
    if cfg!(target_os = "linux") {
        return PathBuf::from("/proc/self/exe");
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("facto"))
}

/// Buffers of this size and above are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 16 << 20;
/// A heap that grows grows by this much more than it needs, and one that shrinks keeps it.
const TOP_PAD_BYTES: i32 = 16 << 20;

/// Two glibc allocator settings for products of hundreds of kilobytes to tens of megabytes
/// (their effect on memory and CPU is in docs/BENCHMARKS.md).
///
/// glibc raises its mmap threshold to the largest block freed (up to 32 MiB), so after the
/// first multi-megabyte product every later one would come from the heap arenas, which a
/// multi-threaded process fragments and seldom gives back: a member would grow by 100-150 MB
/// per 10,000,000! job. A fixed 16 MiB threshold keeps large products in maps of their own,
/// unmapped when freed, at no cost in speed.
///
/// By default a heap grows by what is asked for and gives its free top back at once, so
/// every product of a few hundred kilobytes to megabytes would grow a heap, touch fresh pages
/// (page faults, which cost far more in a virtual machine than on bare metal) and give them
/// back. A 16 MiB pad keeps those pages for the next product, which saves about a tenth of
/// the members' CPU on 1,000,000! jobs; a larger pad saves no more.
fn tune_the_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD_BYTES);
    }
}

/// Checks a probability flag.
pub(crate) fn probability(p: f64, flag: &str) -> Result<f64> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::Usage(format!("{flag} must be between 0 and 1, got {p}")));
    }
    Ok(p)
}

/// Converts a user's seconds (fractions allowed) to milliseconds.
pub(crate) fn seconds_to_ms(seconds: f64, flag: &str) -> Result<u64> {
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(Error::Usage(format!("{flag} must be between 0 and 86400 seconds, got {seconds}")));
    }
    Ok((seconds * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_host_names_last_number() {
        assert_eq!(id_of_hostname("facto-3").unwrap(), 3);
        assert_eq!(id_of_hostname("my-facto-12.facto.default.svc.cluster.local\n").unwrap(), 12);
        for bad in ["facto", "facto-", "facto-x", ""] {
            let why = id_of_hostname(bad).unwrap_err().to_string();
            assert!(why.contains("does not end in -N"), "{bad}: {why}");
        }
    }
}
