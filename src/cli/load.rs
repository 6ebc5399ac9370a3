//! `facto bench --load`: many closed-loop clients of small jobs, as etcd's `benchmark put`.
//! Each client holds one keep-alive connection to one member and, until the time is up,
//! submits a job (`POST /jobs`) and waits for its digits (`GET /jobs/<id>?wait_ms=1000`),
//! then the next. Every result is checked; latency runs from the submission to the digits.

use super::bench::{BenchArgs, LocalCluster};
use crate::api::{JobInfo, NodeStatus};
use crate::bignum::Big;
use crate::error::{Error, Result};
use crate::transport::stream::{Stream, Tcp};
use crate::transport::Client;
use async_std::io::{BufReader, ReadExt, WriteExt};
use async_std::net::TcpStream;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one answer may take before the client counts it failed and reconnects.
const ANSWER_TIMEOUT_MS: u64 = 10_000;
/// How long a long-poll waits on the server.
const WAIT_MS: u64 = 1_000;
/// Longest answer head or body a load client reads (20! to 100,000! fit).
const ANSWER_BYTES_MAX: usize = 4 << 20;

/// Which members the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Spread round-robin over every member.
    All,
    /// All on the coordinator.
    Coordinator,
    /// All on one follower.
    Follower,
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target> {
        match s {
            "all" => Ok(Target::All),
            "coordinator" => Ok(Target::Coordinator),
            "follower" => Ok(Target::Follower),
            _ => Err(Error::Usage(format!("--target must be all, coordinator or follower, got '{s}'"))),
        }
    }
}

/// What one load run measured.
#[derive(Debug, Serialize, Default)]
pub struct LoadReport {
    pub clients: u32,
    pub duration_s: f64,
    pub ns: Vec<u64>,
    pub target: String,
    pub jobs: u64,
    pub jobs_per_s: f64,
    pub latency_ms: Percentiles,
    /// Answers by HTTP status ("202", "200", "429", ...), and "error" for failed connections.
    pub http_statuses: BTreeMap<String, u64>,
    /// Results that came back wrong (must be 0).
    pub wrong_results: u64,
    /// New epochs from the start of the run to its end.
    pub leadership_changes: u64,
    /// CPU seconds of all members together per finished job, in microseconds.
    pub cpu_us_per_job: f64,
    /// The largest member's peak resident set, and the sum over members.
    pub peak_rss_bytes_max: u64,
    pub peak_rss_bytes_sum: u64,
}

#[derive(Debug, Serialize, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub(super) fn of(mut latencies_us: Vec<u64>) -> Percentiles {
        latencies_us.sort_unstable();
        let at = |q: f64| {
            let Some(last) = latencies_us.len().checked_sub(1) else { return f64::NAN };
            latencies_us[((last as f64) * q).round() as usize] as f64 / 1000.0
        };
        Percentiles { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
    wrong: u64,
}

/// Runs `facto bench --load` with the bench's arguments.
pub fn run(args: &BenchArgs) -> Result<()> {
    let ns = super::bench::parse_ns(args.n.as_deref().unwrap_or("20"), args.max_n)?;
    let target: Target = args.target.parse()?;
    let duration_ms = super::parse_duration_ms(&args.duration, "--duration")?;
    if args.clients == 0 {
        return Err(Error::Usage("--clients must be at least 1".into()));
    }
    let expected: Arc<BTreeMap<u64, String>> =
        Arc::new(ns.iter().map(|&n| (n, Big::factorial(n).to_decimal())).collect());
    let mut local = None;
    let key = std::env::var("FACTO_CLUSTER_KEY").ok();
    let (addrs, tls) = match &args.cluster {
        Some(list) => (super::cluster_addrs(Some(list))?, args.client_tls.clone()),
        None => {
            let cluster = LocalCluster::start(args, args.tls)?;
            let found = (cluster.addrs.clone(), cluster.tls_args());
            local = Some(cluster);
            found
        }
    };
    let (client, tls) = (tls.client(key)?, tls.config()?);
    let report = async_std::task::block_on(async {
        settle(&client, &addrs).await?;
        let members = pick_members(&client, &addrs, target).await?;
        let before = Snapshot::take(&client, &addrs).await;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(duration_ms);
        let tasks: Vec<_> = (0..args.clients as usize)
            .map(|i| {
                let addr = members[i % members.len()].clone();
                let ns = ns.clone();
                let (expected, tls) = (expected.clone(), tls.clone());
                async_std::task::spawn(closed_loop(Member { addr, tls }, ns, i, expected, deadline))
            })
            .collect();
        let tallies = futures::future::join_all(tasks).await;
        let elapsed_s = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&client, &addrs).await;
        Ok::<_, Error>(report_of(args, &ns, target, tallies, elapsed_s, &before, &after))
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let kept = local.as_mut().map(|c| format!(" (the members' logs are kept in {})", c.keep_dir().display()));
            return Err(Error::Remote(format!("{e}{}", kept.unwrap_or_default())));
        }
    };
    if report.leadership_changes > 0 {
        if let Some(c) = local.as_mut() {
            eprintln!("facto bench: leadership changed; the members' logs are kept in {}", c.keep_dir().display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| Error::Remote(e.to_string()))?);
    } else {
        print_report(&report);
    }
    match report.wrong_results {
        0 => Ok(()),
        wrong => Err(Error::Remote(format!("{wrong} results came back wrong from the cluster"))),
    }
}

/// Waits until every member answering follows one coordinator that has finished taking over.
async fn settle(client: &Client, addrs: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let all = statuses(client, addrs).await;
        let leaders: std::collections::BTreeSet<_> = all.iter().map(|s| s.as_ref().and_then(|s| s.leader)).collect();
        if leaders.len() == 1
            && !leaders.contains(&None)
            && all.iter().flatten().any(|s| s.role == "coordinator" && !s.taking_over)
        {
            return Ok(());
        }
        async_std::task::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Remote("the cluster did not agree on a coordinator within 30 s".into()))
}

async fn statuses(client: &Client, addrs: &[String]) -> Vec<Option<NodeStatus>> {
    let timeout = Duration::from_millis(2_000);
    futures::future::join_all(addrs.iter().map(|a| async move { client.get(a, "/status?jobs=0", timeout).await.ok() }))
        .await
}

/// The members the clients talk to.
async fn pick_members(client: &Client, addrs: &[String], target: Target) -> Result<Vec<String>> {
    let all = statuses(client, addrs).await;
    let is_coordinator = |s: &Option<NodeStatus>| s.as_ref().is_some_and(|s| s.role == "coordinator");
    let pick = |want_coordinator: bool| {
        addrs
            .iter()
            .zip(&all)
            .find(|(_, s)| is_coordinator(s) == want_coordinator && s.is_some())
            .map(|(a, _)| a.clone())
    };
    match target {
        Target::All => Ok(addrs.to_vec()),
        Target::Coordinator => pick(true).map(|a| vec![a]).ok_or_else(|| Error::Remote("no coordinator found".into())),
        Target::Follower => pick(false).map(|a| vec![a]).ok_or_else(|| Error::Remote("no follower found".into())),
    }
}

/// The members' epochs and resource counters at one moment (from `/status` and `/metrics`).
#[derive(Default)]
struct Snapshot {
    max_epoch: u64,
    cpu_s: f64,
    peak_rss: Vec<u64>,
}

impl Snapshot {
    async fn take(client: &Client, addrs: &[String]) -> Snapshot {
        let max_epoch = statuses(client, addrs).await.iter().flatten().map(|s| s.epoch).max().unwrap_or(0);
        let timeout = Duration::from_millis(2_000);
        let metrics = futures::future::join_all(addrs.iter().map(|a| async move {
            let text = client.get_bytes_with(a, "/metrics", timeout, &[]).await.ok()?;
            Some(String::from_utf8_lossy(&text).into_owned())
        }))
        .await;
        let value = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        };
        let texts: Vec<String> = metrics.into_iter().flatten().collect();
        Snapshot {
            max_epoch,
            cpu_s: texts.iter().filter_map(|t| value(t, "process_cpu_seconds_total")).sum(),
            peak_rss: texts
                .iter()
                .filter_map(|t| value(t, "facto_peak_resident_memory_bytes"))
                .map(|v| v as u64)
                .collect(),
        }
    }
}

fn report_of(
    args: &BenchArgs,
    ns: &[u64],
    target: Target,
    tallies: Vec<Tally>,
    elapsed_s: f64,
    before: &Snapshot,
    after: &Snapshot,
) -> LoadReport {
    let mut statuses = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut wrong = 0;
    for t in tallies {
        latencies.extend(t.latencies_us);
        wrong += t.wrong;
        for (k, v) in t.statuses {
            *statuses.entry(k).or_insert(0) += v;
        }
    }
    let jobs = latencies.len() as u64;
    LoadReport {
        clients: args.clients,
        duration_s: elapsed_s,
        ns: ns.to_vec(),
        target: format!("{target:?}").to_lowercase(),
        jobs,
        jobs_per_s: jobs as f64 / elapsed_s,
        latency_ms: Percentiles::of(latencies),
        http_statuses: statuses,
        wrong_results: wrong,
        leadership_changes: after.max_epoch.saturating_sub(before.max_epoch),
        cpu_us_per_job: (after.cpu_s - before.cpu_s) * 1e6 / jobs.max(1) as f64,
        peak_rss_bytes_max: after.peak_rss.iter().copied().max().unwrap_or(0),
        peak_rss_bytes_sum: after.peak_rss.iter().sum(),
    }
}

fn print_report(r: &LoadReport) {
    let ns: Vec<String> = r.ns.iter().map(|n| format!("{n}!")).collect();
    println!(
        "facto bench --load: {} clients on {} for {:.1} s, jobs of {}",
        r.clients,
        r.target,
        r.duration_s,
        ns.join(", ")
    );
    println!("jobs: {} ({:.0} jobs/s), wrong results: {}", r.jobs, r.jobs_per_s, r.wrong_results);
    let l = &r.latency_ms;
    println!(
        "latency submit→digits: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.p50, l.p90, l.p99, l.max
    );
    let statuses: Vec<String> = r.http_statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("HTTP answers: {}", statuses.join(", "));
    println!("leadership changes: {}", r.leadership_changes);
    println!("CPU of all members per job: {:.0} µs", r.cpu_us_per_job);
    println!(
        "peak RSS: largest member {:.1} MiB, all members {:.1} MiB",
        r.peak_rss_bytes_max as f64 / 1048576.0,
        r.peak_rss_bytes_sum as f64 / 1048576.0
    );
}

/// One client: submit, wait for the digits, check them, again, until `deadline`.
async fn closed_loop(
    member: Member,
    ns: Vec<u64>,
    index: usize,
    expected: Arc<BTreeMap<u64, String>>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut turn = index;
    while Instant::now() < deadline {
        let n = ns[turn % ns.len()];
        turn += 1;
        let started = Instant::now();
        match one_job(&mut conn, &member, n, &mut tally).await {
            Ok(Some(job)) => {
                if job.result.as_deref() != expected.get(&n).map(String::as_str) {
                    tally.wrong += 1;
                }
                tally.latencies_us.push(started.elapsed().as_micros() as u64);
            }
            Ok(None) => {}
            Err(_) => {
                *tally.statuses.entry("error".into()).or_insert(0) += 1;
                conn = None;
                async_std::task::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tally
}

/// Submits n! and waits for it; `None` when the member said to retry later (and the client
/// waited as told).
async fn one_job(
    conn: &mut Option<Conn>,
    member: &Member,
    n: u64,
    tally: &mut Tally,
) -> std::io::Result<Option<JobInfo>> {
    let body = format!("{{\"n\":{n}}}");
    let answer = request(conn, member, "POST", "/jobs", body.as_bytes(), tally).await?;
    if answer.status != 202 {
        wait_as_told(&answer).await;
        return Ok(None);
    }
    let mut job: JobInfo = decode(&answer.body)?;
    while job.state != "done" {
        let path = format!("/jobs/{}?wait_ms={WAIT_MS}", job.id);
        let answer = request(conn, member, "GET", &path, b"", tally).await?;
        if answer.status != 200 {
            wait_as_told(&answer).await;
            continue;
        }
        job = decode(&answer.body)?;
    }
    // A large result is not in the JSON: its digits come from their own URL.
    while job.result.is_none() {
        let Some(url) = job.digits_url.clone() else { break };
        let answer = request(conn, member, "GET", &url, b"", tally).await?;
        if answer.status != 200 {
            wait_as_told(&answer).await;
            continue;
        }
        let digits =
            String::from_utf8(answer.body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        job.result = Some(digits.into());
    }
    Ok(Some(job))
}

fn decode(body: &[u8]) -> std::io::Result<JobInfo> {
    serde_json::from_slice(body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A 429 or 503 says when to come back (`Retry-After`, in seconds); anything else is tried
/// again after 100 ms.
async fn wait_as_told(answer: &Answer) {
    let ms = answer.retry_after_s.map_or(100, |s| s * 1000);
    async_std::task::sleep(Duration::from_millis(ms)).await;
}

/// The member a client talks to, and over TLS with what.
struct Member {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One keep-alive connection.
struct Conn {
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Conn {
    async fn open(member: &Member) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(&member.addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match &member.tls {
            None => Stream::plain(tcp),
            Some(config) => {
                let host = member.addr.rsplit_once(':').map_or(member.addr.as_str(), |(h, _)| h);
                let name = crate::transport::tls::server_name(host)
                    .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
                let connector = futures_rustls::TlsConnector::from(config.clone());
                Stream::tls(connector.connect(name, Tcp(tcp)).await?)
            }
        };
        Ok(Conn { reader: BufReader::new(stream.clone()), writer: stream })
    }
}

struct Answer {
    status: u16,
    retry_after_s: Option<u64>,
    body: Vec<u8>,
}

/// Sends one request on the client's connection (opening it first if needed) and reads the
/// answer; the status is tallied.
async fn request(
    conn: &mut Option<Conn>,
    member: &Member,
    method: &str,
    path: &str,
    body: &[u8],
    tally: &mut Tally,
) -> std::io::Result<Answer> {
    if conn.is_none() {
        *conn = Some(Conn::open(member).await?);
    }
    let addr = &member.addr;
    let c = conn.as_mut().expect("just opened");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    let exchange = async {
        c.writer.write_all(&message).await?;
        read_answer(&mut c.reader).await
    };
    let answered = async_std::future::timeout(Duration::from_millis(ANSWER_TIMEOUT_MS), exchange).await;
    let (answer, close) = match answered {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            *conn = None;
            return Err(e);
        }
        Err(_) => {
            *conn = None;
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"));
        }
    };
    if close {
        *conn = None;
    }
    *tally.statuses.entry(answer.status.to_string()).or_insert(0) += 1;
    Ok(answer)
}

/// Reads one answer (a `Content-Length` or chunked body); also whether the server closes.
async fn read_answer(reader: &mut BufReader<Stream>) -> std::io::Result<(Answer, bool)> {
    use async_std::io::prelude::BufReadExt;
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status: u16 =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status line"))?;
    let (mut length, mut chunked, mut close, mut retry_after_s) = (None, false, false, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed in the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else { continue };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "retry-after" => retry_after_s = value.parse().ok(),
            _ => {}
        }
    }
    let body = if chunked { read_chunks(reader).await? } else { read_exactly(reader, length.unwrap_or(0)).await? };
    Ok((Answer { status, retry_after_s, body }, close))
}

async fn read_exactly(reader: &mut BufReader<Stream>, len: usize) -> std::io::Result<Vec<u8>> {
    if len > ANSWER_BYTES_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "answer too large"));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

async fn read_chunks(reader: &mut BufReader<Stream>) -> std::io::Result<Vec<u8>> {
    use async_std::io::prelude::BufReadExt;
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        if body.len() + size > ANSWER_BYTES_MAX {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "answer too large"));
        }
        let chunk = read_exactly(reader, size).await?;
        body.extend_from_slice(&chunk);
        line.clear();
        reader.read_line(&mut line).await?;
        if size == 0 {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let p = Percentiles::of((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (51.0, 90.0, 99.0, 100.0));
        assert!(Percentiles::of(Vec::new()).p50.is_nan());
    }

    #[test]
    fn targets_parse() {
        assert_eq!("follower".parse::<Target>().unwrap(), Target::Follower);
        assert!("leader".parse::<Target>().is_err());
    }
}
