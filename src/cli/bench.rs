//! `facto bench`: start a local cluster on free loopback ports, compute factorials on it, check
//! every result against an independent computation, and compare with the same tree computed
//! in this process, in the same run.

use super::cluster::node_command;
use crate::api::{JobInfo, NodeStatus, SubmitRequest};
use crate::bignum::Big;
use crate::error::{Error, Result};
use crate::node_core::worker::{self, WorkerStats};
use crate::transport::{CallError, Client};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use structopt::StructOpt;

/// How long the cluster may take to elect a coordinator that has finished taking over.
const SETTLE_TIMEOUT_MS: u64 = 30_000;
/// How long one request to a member may take.
const CALL_TIMEOUT_MS: u64 = 10_000;
/// How long one job may take before the bench gives up on it.
const JOB_TIMEOUT_MS: u64 = 600_000;

#[derive(StructOpt, Debug)]
pub struct BenchArgs {
    /// Factorials to compute: one n or a list, e.g. 20,100000,1000000 (default 1000000; with
    /// --load, 20, and a list is a mix the clients take in turn).
    #[structopt(long)]
    pub(super) n: Option<String>,
    /// How many times each n is computed.
    #[structopt(long, default_value = "3")]
    runs: u32,
    /// Members of the local cluster.
    #[structopt(long, default_value = "6")]
    pub(super) nodes: u16,
    /// Election algorithm: bully, ring or raft.
    #[structopt(long, default_value = "raft")]
    election: String,
    /// Checkpoints: on or off.
    #[structopt(long, default_value = "on")]
    checkpoint: String,
    /// Seconds each worker waits before it answers a batch.
    #[structopt(long, default_value = "0")]
    delay: f64,
    /// The cluster's --max-n (raise it to bench larger factorials).
    #[structopt(long, default_value = "1000000")]
    pub(super) max_n: u64,
    /// Print one JSON object instead of the table.
    #[structopt(long)]
    pub(super) json: bool,
    /// Keep this many web views open meanwhile (each polls `GET /cluster` every 500 ms on one
    /// member, as the page does), to measure what open pages cost.
    #[structopt(long, default_value = "0")]
    pages: u32,
    /// Load instead of one job at a time: closed-loop clients of small jobs (`--clients`,
    /// `--duration`, `--target`, `--cluster`).
    #[structopt(long)]
    load: bool,
    /// With --load: concurrent clients, each on one keep-alive connection.
    #[structopt(long, default_value = "64")]
    pub(super) clients: u32,
    /// With --load: how long the clients run (15s, 500ms, 1m).
    #[structopt(long, default_value = "15s")]
    pub(super) duration: String,
    /// With --load: all (clients spread over every member), coordinator or follower.
    #[structopt(long, default_value = "all")]
    pub(super) target: String,
    /// With --load: a running cluster (HOST:PORT,...) instead of a local one.
    #[structopt(long)]
    pub(super) cluster: Option<String>,
    /// Also time each n on a second local cluster whose members talk mutual TLS, run for
    /// run with the plain one, and give the ratio; with --load, load a TLS cluster.
    #[structopt(long)]
    pub(super) tls: bool,
    /// With --load --cluster: how to reach a TLS cluster.
    #[structopt(flatten)]
    pub(super) client_tls: super::TlsArgs,
    /// Compare the election algorithms instead: bully, ring and Raft-lite, each on its own
    /// local cluster of --nodes, under the same seeded schedule of coordinator crashes
    /// (`--kills`, `--seed`, `--idle`, `--html`).
    #[structopt(long)]
    elections: bool,
    /// With --elections: coordinator crashes per algorithm.
    #[structopt(long, default_value = "20")]
    pub(super) kills: u32,
    /// With --elections: the seed of the pauses between crashes [default: from the clock].
    #[structopt(long)]
    pub(super) seed: Option<u64>,
    /// With --elections: how long each cluster is watched idle first (elections there are
    /// spurious).
    #[structopt(long, default_value = "5s")]
    pub(super) idle: String,
    /// With --elections: also write the comparison as a self-contained HTML page with plots.
    #[structopt(long, value_name = "FILE.html", parse(from_os_str))]
    pub(super) html: Option<PathBuf>,
}

/// Polls `GET /cluster` every 500 ms on member `addr` while `open`: one open web view.
async fn web_view(client: Client, addr: String, open: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while open.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = client.get_bytes_with(&addr, "/cluster", Duration::from_secs(2), &[]).await;
        async_std::task::sleep(Duration::from_millis(500)).await;
    }
}

/// Median, least and greatest of a measurement over the runs.
#[derive(Debug, Serialize, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => f64::NAN,
            len if len % 2 == 1 => v[len / 2],
            len => (v[len / 2 - 1] + v[len / 2]) / 2.0,
        };
        Spread { median, min: v.first().copied().unwrap_or(f64::NAN), max: v.last().copied().unwrap_or(f64::NAN) }
    }
}

/// One run of one n.
struct Run {
    product_ms: f64,
    digits_ms: f64,
    tree_ms: f64,
    builtin_ms: f64,
    /// The built-in factorial and its decimal digits, on one thread.
    one_thread_digits_ms: f64,
    operations: u64,
    bytes_moved: u64,
    tls_digits_ms: Option<f64>,
}

/// What `--json` prints per n (documented in docs/BENCHMARKS.md).
#[derive(Debug, Serialize)]
struct NReport {
    n: u64,
    runs: u32,
    operations: u64,
    product_ms: Spread,
    digits_ms: Spread,
    tree_ms: Spread,
    builtin_ms: Spread,
    /// One thread in this process: the built-in factorial, then its decimal digits.
    one_thread_digits_ms: Spread,
    /// Digits at the client over [`NReport::one_thread_digits_ms`]: below 1, the cluster wins.
    digits_to_one_thread: Spread,
    product_to_tree: Spread,
    operations_per_s: Spread,
    bytes_moved: Spread,
    /// With `--tls`: the same job on the TLS cluster, and its time over the plain one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_digits_ms: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_to_plain: Option<Spread>,
    leadership_changes: u64,
    http_503: u64,
    peak_rss_bytes: u64,
    /// The peaks of all members added up.
    peak_rss_bytes_sum: u64,
    correct: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    pub(super) nodes: u16,
    election: String,
    checkpoint: bool,
    delay_s: f64,
    max_n: u64,
    /// Web views kept open during the runs (`--pages`).
    pages: u32,
    results: Vec<NReport>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.elections {
        return super::elections_bench::run(&args);
    }
    if args.load {
        check_args(&args)?;
        return super::load::run(&args);
    }
    let ns = parse_ns(args.n.as_deref().unwrap_or("1000000"), args.max_n)?;
    check_args(&args)?;
    let mut cluster = LocalCluster::start(&args, false)?;
    let client = Client::new(None);
    let mut secure = match args.tls {
        true => {
            let tls = LocalCluster::start(&args, true)?;
            let client = tls.client(None)?;
            Some((tls, client))
        }
        false => None,
    };
    let progress = Progress { on: std::io::stderr().is_terminal() };
    progress.say("starting the cluster");
    let mut report = Report {
        nodes: args.nodes,
        election: args.election.clone(),
        checkpoint: args.checkpoint == "on",
        delay_s: args.delay,
        max_n: args.max_n,
        pages: args.pages,
        results: Vec::new(),
    };
    let ran = async_std::task::block_on(async {
        cluster.settle(&client).await?;
        // A first job opens the connections between members; it is not measured.
        measure_job(&client, &cluster.addrs, 20, &mut 0).await?;
        if let Some((tls, tls_client)) = &secure {
            tls.settle(tls_client).await?;
            measure_job(tls_client, &tls.addrs, 20, &mut 0).await?;
        }
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let pages: Vec<_> = (0..args.pages as usize)
            .map(|i| {
                let addr = cluster.addrs[i % cluster.addrs.len()].clone();
                async_std::task::spawn(web_view(client.clone(), addr, open.clone()))
            })
            .collect();
        for &n in &ns {
            let secure = secure.as_ref().map(|(c, client)| (c, client));
            report.results.push(bench_n(&args, (&cluster, &client), secure, n, &progress).await?);
        }
        open.store(false, std::sync::atomic::Ordering::Relaxed);
        futures::future::join_all(pages).await;
        Ok::<(), Error>(())
    });
    progress.done();
    if let Err(e) = ran {
        // The members' logs explain a failed run: kept for the user.
        if let Some((tls, _)) = &mut secure {
            tls.keep_dir();
        }
        let dir = cluster.keep_dir();
        return Err(Error::Remote(format!("{e} (the members' logs are kept in {})", dir.display())));
    }
    if report.results.iter().any(|r| r.leadership_changes > 0) {
        // Leadership should not change in a benchmark: the logs say why it did.
        eprintln!("facto bench: leadership changed; the members' logs are kept in {}", cluster.keep_dir().display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| Error::Remote(e.to_string()))?);
    } else {
        print_table(&report);
    }
    match report.results.iter().find(|r| !r.correct) {
        Some(wrong) => Err(Error::Remote(format!("{}! came back wrong from the cluster", wrong.n))),
        None => Ok(()),
    }
}

fn check_args(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 {
        return Err(Error::Usage("--runs must be at least 1".into()));
    }
    if args.nodes < 2 {
        return Err(Error::Usage("--nodes must be at least 2 (the coordinator never multiplies)".into()));
    }
    args.election.parse::<facto_elections::Algorithm>()?;
    if !matches!(args.checkpoint.as_str(), "on" | "off") {
        return Err(Error::Usage(format!("--checkpoint must be on or off, got '{}'", args.checkpoint)));
    }
    super::node::seconds_to_ms(args.delay, "--delay")?;
    if args.tls && args.cluster.is_some() {
        return Err(Error::Usage(
            "--tls starts local TLS clusters; with --cluster give --ca (and --cert --key)".into(),
        ));
    }
    Ok(())
}

/// `1000000` or `20,100000,1000000`.
pub(super) fn parse_ns(text: &str, max_n: u64) -> Result<Vec<u64>> {
    let ns = text
        .split(',')
        .map(str::trim)
        .map(|t| {
            let n: u64 = t.parse().map_err(|_| Error::Usage(format!("--n: '{t}' is not a non-negative integer")))?;
            if n > max_n {
                return Err(Error::Usage(format!("--n: {n} is above --max-n {max_n}")));
            }
            Ok(n)
        })
        .collect::<Result<Vec<u64>>>()?;
    Ok(ns)
}

/// Times n! `args.runs` times on `plain` and in this process, and on `secure` (a TLS cluster)
/// right after each run on `plain` when given.
async fn bench_n(
    args: &BenchArgs,
    (cluster, client): (&LocalCluster, &Client),
    secure: Option<(&LocalCluster, &Client)>,
    n: u64,
    progress: &Progress,
) -> Result<NReport> {
    progress.say(&format!("{n}!: computing the reference"));
    let reference = Big::factorial(n).to_decimal();
    let epoch_before = cluster.max_epoch(client).await;
    let mut http_503 = 0;
    let mut runs = Vec::new();
    let mut correct = true;
    let watch = MemoryWatch::start(cluster.children.iter().map(Child::id).collect());
    for run in 1..=args.runs {
        progress.say(&format!("{n}!: run {run}/{}: on the cluster", args.runs));
        let bytes_before = cluster.peer_bytes(client).await;
        let started = Instant::now();
        let job = measure_job(client, &cluster.addrs, n, &mut http_503).await?;
        let digits_ms = ms(started.elapsed());
        let bytes_moved = cluster.peer_bytes(client).await.saturating_sub(bytes_before);
        correct &= job.result.as_deref() == Some(reference.as_str());
        let mut tls_digits_ms = None;
        if let Some((tls, tls_client)) = secure {
            progress.say(&format!("{n}!: run {run}/{}: on the TLS cluster", args.runs));
            let started = Instant::now();
            let job = measure_job(tls_client, &tls.addrs, n, &mut http_503).await?;
            tls_digits_ms = Some(ms(started.elapsed()));
            correct &= job.result.as_deref() == Some(reference.as_str());
        }
        progress.say(&format!("{n}!: run {run}/{}: in this process", args.runs));
        let (tree_ms, builtin_ms, one_thread_digits_ms) = in_process(n, &reference)?;
        runs.push(Run {
            product_ms: job.product_ms.map_or(f64::NAN, |p| p as f64),
            digits_ms,
            tree_ms,
            builtin_ms,
            one_thread_digits_ms,
            operations: job.operations_total,
            bytes_moved,
            tls_digits_ms,
        });
    }
    let leadership_changes = cluster.max_epoch(client).await.saturating_sub(epoch_before);
    let (peak_rss_bytes, peak_rss_bytes_sum) = watch.stop();
    let spread = |f: &dyn Fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(NReport {
        n,
        runs: args.runs,
        operations: runs.first().map_or(0, |r| r.operations),
        product_ms: spread(&|r| r.product_ms),
        digits_ms: spread(&|r| r.digits_ms),
        tree_ms: spread(&|r| r.tree_ms),
        builtin_ms: spread(&|r| r.builtin_ms),
        one_thread_digits_ms: spread(&|r| r.one_thread_digits_ms),
        digits_to_one_thread: spread(&|r| r.digits_ms / r.one_thread_digits_ms),
        product_to_tree: spread(&|r| r.product_ms / r.tree_ms),
        operations_per_s: spread(&|r| r.operations as f64 / (r.product_ms.max(0.001) / 1000.0)),
        bytes_moved: spread(&|r| r.bytes_moved as f64),
        tls_digits_ms: secure.map(|_| spread(&|r| r.tls_digits_ms.unwrap_or(f64::NAN))),
        tls_to_plain: secure.map(|_| spread(&|r| r.tls_digits_ms.unwrap_or(f64::NAN) / r.digits_ms)),
        leadership_changes,
        http_503,
        peak_rss_bytes,
        peak_rss_bytes_sum,
        correct,
    })
}

/// The same tree in this thread, the big-integer crate's own factorial, and that factorial
/// with its decimal digits on one thread; all checked.
fn in_process(n: u64, reference: &str) -> Result<(f64, f64, f64)> {
    let started = Instant::now();
    let tree = worker::compute_in_one_thread(n, &WorkerStats::default());
    let tree_ms = ms(started.elapsed());
    let started = Instant::now();
    let builtin = Big::factorial(n);
    let builtin_ms = ms(started.elapsed());
    let digits = builtin.to_decimal_in_one_thread();
    let one_thread_digits_ms = ms(started.elapsed());
    if tree != builtin || digits != reference {
        return Err(Error::Remote(format!("the in-process tree disagrees with the built-in {n}!")));
    }
    Ok((tree_ms, builtin_ms, one_thread_digits_ms))
}

/// Submits n! and waits for its digits, counting the 503 answers met on the way.
async fn measure_job(client: &Client, addrs: &[String], n: u64, http_503: &mut u64) -> Result<JobInfo> {
    let deadline = Instant::now() + Duration::from_millis(JOB_TIMEOUT_MS);
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    let request = SubmitRequest { n, request: Some(format!("bench-{}-{n}-{}", std::process::id(), unique())) };
    let mut attempt = 0;
    let job: JobInfo = loop {
        let addr = &addrs[attempt % addrs.len()];
        match client.post(addr, "/jobs", &request, timeout, &[]).await {
            Ok(job) => break job,
            Err(e) => note_failure(e, http_503, deadline).await?,
        }
        attempt += 1;
    };
    let path = format!("/jobs/{}?wait_ms=1000", job.id);
    loop {
        let addr = &addrs[attempt % addrs.len()];
        match client.get::<JobInfo>(addr, &path, timeout).await {
            Ok(done) if done.is_done() && done.id == job.id => {
                // The digits at the client: read from the stream when the JSON left them out.
                return super::digits::with_result(client, addrs, done, deadline).await;
            }
            Ok(_) => {}
            Err(e) => {
                note_failure(e, http_503, deadline).await?;
                attempt += 1;
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Remote(format!("{n}! did not finish within {JOB_TIMEOUT_MS} ms")));
        }
    }
}

async fn note_failure(e: CallError, http_503: &mut u64, deadline: Instant) -> Result<()> {
    if matches!(e, CallError::Status { status: 503, .. }) {
        *http_503 += 1;
    }
    if Instant::now() >= deadline {
        return Err(Error::Remote(e.to_string()));
    }
    async_std::task::sleep(Duration::from_millis(20)).await;
    Ok(())
}

pub(super) fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The bench's own cluster: its processes and its temporary directory, both gone on drop.
pub(super) struct LocalCluster {
    pub(super) addrs: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
    /// Whether the directory stays when the bench ends (it failed).
    keep: bool,
    /// Where the certificates of a TLS cluster are.
    tls: Option<PathBuf>,
    /// How a member is started: `--peers`, `--election` and the other flags.
    peers: String,
    election: String,
    extra: Vec<[String; 2]>,
}

impl LocalCluster {
    /// Starts `args.nodes` members on loopback, talking mutual TLS when `tls`.
    pub(super) fn start(args: &BenchArgs, tls: bool) -> Result<LocalCluster> {
        LocalCluster::start_electing(args, &args.election, tls)
    }

    /// [`LocalCluster::start`] with the `election` algorithm.
    pub(super) fn start_electing(args: &BenchArgs, election: &str, tls: bool) -> Result<LocalCluster> {
        let dir = std::env::temp_dir().join(format!("facto-bench-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir)?;
        let addrs = free_loopback_addrs(args.nodes)?;
        let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let extra = [
            ["--delay".to_string(), args.delay.to_string()],
            ["--checkpoint".to_string(), args.checkpoint.clone()],
            ["--max-n".to_string(), args.max_n.to_string()],
        ];
        let mut cluster = LocalCluster {
            addrs,
            children: Vec::new(),
            tls: tls.then(|| dir.join("tls")),
            dir,
            keep: false,
            peers: peers.join(","),
            election: election.to_string(),
            extra: extra.to_vec(),
        };
        if let Some(tls) = &cluster.tls {
            super::local_certificates(tls, args.nodes)?;
        }
        for id in 1..=args.nodes {
            let node = cluster.spawn(id)?;
            cluster.children.push(node);
        }
        Ok(cluster)
    }

    /// Starts member `id` (again), on its data directory and log.
    fn spawn(&self, id: u16) -> Result<Child> {
        let log = self.dir.join(format!("node-{id}.log"));
        let data = self.dir.join(format!("node-{id}"));
        let extra: Vec<[&str; 2]> = self.extra.iter().map(|[k, v]| [k.as_str(), v.as_str()]).collect();
        let mut node = node_command(id, &self.peers, &self.election, &data, &log, &extra)?;
        if let Some(tls) = &self.tls {
            node.env("FACTO_TLS_DIR", tls);
        }
        Ok(node.spawn()?)
    }

    /// SIGKILLs member `id` and reaps it.
    pub(super) fn kill(&mut self, id: u16) {
        let child = &mut self.children[usize::from(id) - 1];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts member `id` again after [`LocalCluster::kill`].
    pub(super) fn restart(&mut self, id: u16) -> Result<()> {
        self.children[usize::from(id) - 1] = self.spawn(id)?;
        Ok(())
    }

    /// A client of this cluster (over TLS with the admin certificate, for a TLS one).
    pub(super) fn client(&self, cluster_key: Option<String>) -> Result<Client> {
        self.tls_args().client(cluster_key)
    }

    /// How a client reaches this cluster.
    pub(super) fn tls_args(&self) -> super::TlsArgs {
        self.tls.as_deref().map(super::TlsArgs::local).unwrap_or_default()
    }

    /// Keeps the directory (with the members' logs) when the bench ends; returns it.
    pub(super) fn keep_dir(&mut self) -> PathBuf {
        self.keep = true;
        self.dir.clone()
    }

    pub(super) async fn statuses(&self, client: &Client) -> Vec<Option<NodeStatus>> {
        let timeout = Duration::from_millis(1_000);
        futures::future::join_all(
            self.addrs.iter().map(|a| async move { client.get(a, "/status", timeout).await.ok() }),
        )
        .await
    }

    /// Waits for one coordinator that every member follows and that has finished taking over.
    pub(super) async fn settle(&self, client: &Client) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
        while Instant::now() < deadline {
            let all = self.statuses(client).await;
            let leaders: std::collections::BTreeSet<_> =
                all.iter().map(|s| s.as_ref().and_then(|s| s.leader)).collect();
            let ready = all.iter().flatten().any(|s| s.role == "coordinator" && !s.taking_over);
            if leaders.len() == 1 && !leaders.contains(&None) && ready {
                return Ok(());
            }
            async_std::task::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Remote(format!("the bench cluster did not settle within {SETTLE_TIMEOUT_MS} ms")))
    }

    async fn max_epoch(&self, client: &Client) -> u64 {
        self.statuses(client).await.iter().flatten().map(|s| s.epoch).max().unwrap_or(0)
    }

    async fn peer_bytes(&self, client: &Client) -> u64 {
        self.statuses(client).await.iter().flatten().map(|s| s.peer_bytes).sum()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Watches the members' memory while an n runs (Linux). A member converts a large result to
/// decimal in a child process, so a member's figure is the larger of its own peak (`VmHWM`)
/// and, sampled every 20 ms, its resident set plus its children's peaks.
struct MemoryWatch {
    pids: Vec<u32>,
    sampled_peaks: std::sync::Arc<Vec<std::sync::atomic::AtomicU64>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    fn start(pids: Vec<u32>) -> MemoryWatch {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        for pid in &pids {
            // Starts the peak afresh (Linux: `clear_refs` 5).
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
        let sampled_peaks: std::sync::Arc<Vec<AtomicU64>> =
            std::sync::Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (peaks, stopped, watched) = (sampled_peaks.clone(), stop.clone(), pids.clone());
        let sampler = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                for (peak, &pid) in peaks.iter().zip(&watched) {
                    let children: u64 = children_of(pid).into_iter().filter_map(|c| status_kib(c, "VmHWM:")).sum();
                    let now = status_kib(pid, "VmRSS:").unwrap_or(0) + children;
                    peak.fetch_max(now * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        MemoryWatch { pids, sampled_peaks, stop, sampler: Some(sampler) }
    }

    fn stop_sampling(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }

    /// Stops watching; the largest member's peak, and all members' peaks added up.
    fn stop(mut self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop_sampling();
        let own = self.pids.iter().map(|&pid| status_kib(pid, "VmHWM:").unwrap_or(0) * 1024);
        let peaks: Vec<u64> =
            own.zip(self.sampled_peaks.iter()).map(|(own, sampled)| own.max(sampled.load(Ordering::Relaxed))).collect();
        (peaks.iter().copied().max().unwrap_or(0), peaks.iter().sum())
    }
}

impl Drop for MemoryWatch {
    /// A run that failed midway stops the sampler too.
    fn drop(&mut self) {
        self.stop_sampling();
    }
}

/// A process's children (Linux: each thread lists the children it started).
fn children_of(pid: u32) -> Vec<u32> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let lists = threads.map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default());
    lists.flat_map(|list| list.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>()).collect()
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmHWM:` or `VmRSS:`.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Loopback addresses nobody listens on right now (the kernel picks the ports).
fn free_loopback_addrs(count: u16) -> Result<Vec<String>> {
    let listeners =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.to_string())).collect()
}

/// One line on a terminal, rewritten as the bench goes; nothing otherwise.
struct Progress {
    on: bool,
}

impl Progress {
    fn say(&self, what: &str) {
        if self.on {
            eprint!("\r\x1b[2Kfacto bench: {what}");
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

fn print_table(report: &Report) {
    println!(
        "facto bench: {} nodes, {} election, checkpoints {}, delay {} s, {} web views open (median [min-max] of each n's runs)",
        report.nodes,
        report.election,
        if report.checkpoint { "on" } else { "off" },
        report.delay_s,
        report.pages
    );
    let row = |name: &str, s: Spread, unit: &str| {
        // Ratios near 1 need two decimals to be read.
        let places = if unit == "x" { 2 } else { 1 };
        println!("  {name:<34} {:>12.places$} {unit:<4} [{:.places$}-{:.places$}]", s.median, s.min, s.max);
    };
    for r in &report.results {
        println!(
            "{}! ({} runs, {} operations): {}",
            r.n,
            r.runs,
            r.operations,
            if r.correct { "correct" } else { "WRONG" }
        );
        row("submit -> product at coordinator", r.product_ms, "ms");
        row("submit -> digits at client", r.digits_ms, "ms");
        row("in-process tree (one thread)", r.tree_ms, "ms");
        row("built-in factorial (malachite)", r.builtin_ms, "ms");
        row("one thread: factorial + digits", r.one_thread_digits_ms, "ms");
        row("digits at client / one thread", r.digits_to_one_thread, "x");
        row("product / in-process tree", r.product_to_tree, "x");
        row("operations per second", r.operations_per_s, "");
        row("bytes moved between nodes", r.bytes_moved, "B");
        if let (Some(tls), Some(ratio)) = (r.tls_digits_ms, r.tls_to_plain) {
            row("digits at client, mutual TLS", tls, "ms");
            row("mutual TLS / plain (digits)", ratio, "x");
        }
        println!("  {:<34} {:>12}", "leadership changes", r.leadership_changes);
        println!("  {:<34} {:>12}", "HTTP 503 answers seen", r.http_503);
        println!("  {:<34} {:>12.1} MiB", "peak RSS of any node", r.peak_rss_bytes as f64 / 1_048_576.0);
        println!("  {:<34} {:>12.1} MiB", "peak RSS, all nodes", r.peak_rss_bytes_sum as f64 / 1_048_576.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_lists_of_n() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(Spread::of(&[4.0]).median, 4.0);
        assert_eq!(parse_ns("20, 100000,1000000", 1_000_000).unwrap(), vec![20, 100_000, 1_000_000]);
        assert!(parse_ns("20,x", 100).unwrap_err().to_string().contains("'x'"));
        assert!(parse_ns("2000000", 1_000_000).unwrap_err().to_string().contains("--max-n"));
    }
}
