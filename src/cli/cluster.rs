//! `facto cluster`: a local cluster of `facto node` child processes on 127.0.0.1, restarted
//! when they exit, all stopped on Ctrl-C or SIGTERM.

use super::{DEFAULT_BASE_PORT, DEFAULT_NODES};
use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use structopt::StructOpt;

/// First wait before restarting a node that exited; doubles while it keeps exiting quickly.
const RESTART_BACKOFF_MS_MIN: u64 = 100;
const RESTART_BACKOFF_MS_MAX: u64 = 2_000;
/// A node that ran this long before exiting is restarted with the smallest backoff again.
const STABLE_AFTER_MS: u64 = 3_000;

#[derive(StructOpt, Debug)]
pub struct ClusterArgs {
    /// How many nodes to start.
    #[structopt(long, default_value = "6")]
    nodes: u16,
    /// Election algorithm: bully, ring or raft.
    #[structopt(long, env = "FACTO_ELECTION", default_value = "raft")]
    election: String,
    /// Port of node 1; node i listens on base-port + i - 1.
    #[structopt(long, default_value = "7001")]
    base_port: u16,
    /// Seconds each worker waits before replying.
    #[structopt(long, env = "FACTO_DELAY", default_value = "0")]
    delay: f64,
    /// Where the nodes keep their databases and logs.
    #[structopt(long, env = "FACTO_DATA_DIR", default_value = "./facto-data", parse(from_os_str))]
    data_dir: PathBuf,
    /// Each node's probability of crashing at each task (see `facto node --help`).
    #[structopt(long = "fail-prob", value_name = "P", default_value = "0")]
    crash_prob: f64,
    /// Each node's probability of stalling an operation or reply for --slow seconds.
    #[structopt(long, default_value = "0")]
    slow_prob: f64,
    /// How long an injected stall lasts, in seconds.
    #[structopt(long, default_value = "10")]
    slow: f64,
    /// Length of one election tick in milliseconds [default: as `facto node`: 10, or more per
    /// member beyond 10].
    #[structopt(long)]
    tick_ms: Option<u64>,
    /// Shared secret for internal endpoints, handed to every node (never logged).
    #[structopt(long, env = "FACTO_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// Members talk mutual TLS, with a CA, their certificates and an admin client's made in
    /// DATA_DIR/tls (kept across restarts).
    #[structopt(long)]
    tls: bool,
}

struct Member {
    id: u16,
    child: Option<Child>,
    started: Instant,
    backoff_ms: u64,
    restart_at: Option<Instant>,
    restarts: u64,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    debug_assert_eq!((DEFAULT_NODES, DEFAULT_BASE_PORT), (6, 7001), "keep the flag defaults in step");
    if args.nodes == 0 || u32::from(args.base_port) + u32::from(args.nodes) > 65_536 {
        return Err(Error::Usage(format!("cannot place {} nodes from port {}", args.nodes, args.base_port)));
    }
    args.election.parse::<facto_elections::Algorithm>()?;
    super::node::seconds_to_ms(args.delay, "--delay")?;
    super::node::seconds_to_ms(args.slow, "--slow")?;
    super::node::probability(args.crash_prob, "--fail-prob")?;
    super::node::probability(args.slow_prob, "--slow-prob")?;
    std::fs::create_dir_all(&args.data_dir)?;
    if args.tls {
        super::local_certificates(&tls_dir(&args), args.nodes)?;
    }
    let peers =
        (1..=args.nodes).map(|i| format!("{i}=127.0.0.1:{}", args.base_port + i - 1)).collect::<Vec<_>>().join(",");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;

    let mut members: Vec<Member> = (1..=args.nodes)
        .map(|id| Member {
            id,
            child: None,
            started: Instant::now(),
            backoff_ms: RESTART_BACKOFF_MS_MIN,
            restart_at: None,
            restarts: 0,
        })
        .collect();
    for m in &mut members {
        m.child = Some(spawn(&args, &peers, m.id, 0)?);
        m.started = Instant::now();
    }
    println!(
        "facto cluster: {} nodes ({} election) on 127.0.0.1:{}-{}; logs in {}/node-<ID>.log; Ctrl-C stops all",
        args.nodes,
        args.election,
        args.base_port,
        args.base_port + args.nodes - 1,
        args.data_dir.display()
    );
    if args.tls {
        let dir = tls_dir(&args);
        let files = super::TlsArgs::local(&dir);
        println!(
            "facto cluster: mutual TLS; clients use --ca {} (and --cert {} --key {} for the admin API)",
            dir.join("ca.pem").display(),
            files.cert.unwrap_or_default().display(),
            files.key.unwrap_or_default().display()
        );
    }
    while !stop.load(Ordering::SeqCst) {
        for m in &mut members {
            supervise(m, &args, &peers)?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("facto cluster: stopping {} nodes", members.len());
    // Every member is killed first and reaped after: one at a time, each member costs a
    // loaded machine about a third of a second, over half a minute for a hundred.
    for m in &mut members {
        if let Some(child) = &mut m.child {
            let _ = child.kill();
        }
    }
    for m in &mut members {
        if let Some(child) = &mut m.child {
            let _ = child.wait();
        }
    }
    Ok(())
}

/// Restarts a member whose process exited, after a backoff that grows while it keeps failing.
fn supervise(m: &mut Member, args: &ClusterArgs, peers: &str) -> Result<()> {
    if let Some(child) = &mut m.child {
        if let Some(status) = child.try_wait()? {
            let ran_ms = m.started.elapsed().as_millis() as u64;
            m.backoff_ms = if ran_ms >= STABLE_AFTER_MS {
                RESTART_BACKOFF_MS_MIN
            } else {
                (m.backoff_ms * 2).min(RESTART_BACKOFF_MS_MAX)
            };
            log::warn!("node {} exited ({status}); restarting in {} ms", m.id, m.backoff_ms);
            m.child = None;
            m.restart_at = Some(Instant::now() + Duration::from_millis(m.backoff_ms));
        }
    }
    if m.restart_at.is_some_and(|at| Instant::now() >= at) {
        m.restarts += 1;
        m.child = Some(spawn(args, peers, m.id, m.restarts)?);
        m.started = Instant::now();
        m.restart_at = None;
    }
    Ok(())
}

/// `--tick-ms`, or the default `facto node` would choose for this cluster.
fn tick_ms(args: &ClusterArgs) -> u64 {
    let algorithm = args.election.parse().unwrap_or(facto_elections::Algorithm::Raft);
    args.tick_ms.unwrap_or_else(|| super::node::default_tick_ms(args.nodes.into(), algorithm))
}

fn spawn(args: &ClusterArgs, peers: &str, id: u16, restarts: u64) -> Result<Child> {
    let extra = [
        ["--delay", &args.delay.to_string()],
        ["--tick-ms", &tick_ms(args).to_string()],
        ["--fail-prob", &args.crash_prob.to_string()],
        ["--slow-prob", &args.slow_prob.to_string()],
        ["--slow", &args.slow.to_string()],
    ];
    let data_dir = args.data_dir.join(format!("node-{id}"));
    let mut cmd = node_command(id, peers, &args.election, &data_dir, &log_file(&args.data_dir, id), &extra)?;
    cmd.env("FACTO_RESTARTS", restarts.to_string());
    if let Some(key) = &args.cluster_key {
        cmd.env("FACTO_CLUSTER_KEY", key);
    }
    if args.tls {
        cmd.env("FACTO_TLS_DIR", tls_dir(args));
    }
    Ok(cmd.spawn()?)
}

fn tls_dir(args: &ClusterArgs) -> PathBuf {
    args.data_dir.join("tls")
}

/// `facto node` as a child of this process, with its output appended to `log_path`.
pub(super) fn node_command(
    id: u16,
    peers: &str,
    election: &str,
    data_dir: &Path,
    log_path: &Path,
    extra: &[[&str; 2]],
) -> Result<Command> {
    let log = OpenOptions::new().create(true).append(true).open(log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("node")
        .args(["--id", &id.to_string(), "--peers", peers, "--election", election])
        .args(extra.iter().flatten())
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

fn log_file(data_dir: &Path, id: u16) -> PathBuf {
    data_dir.join(format!("node-{id}.log"))
}
