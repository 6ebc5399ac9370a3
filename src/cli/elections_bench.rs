//! `facto bench --elections`: bully, ring and Raft-lite side by side on local clusters, under
//! the same seeded schedule of coordinator crashes. For each algorithm: a fresh cluster, an
//! idle stretch (elections there are spurious: nothing failed), then `--kills` times: wait the
//! schedule's pause, keep work queued, SIGKILL the coordinator, and time until every live
//! member agrees on a new one and until that one completes an operation; count the election
//! messages the members sent meanwhile (from their `GET /trace`); restart the killed member
//! and let the cluster settle. The pauses come from `--seed`, so every algorithm meets the
//! same schedule; which member is the coordinator is each algorithm's own doing.

use super::bench::{BenchArgs, LocalCluster};
use super::load::Percentiles;
use crate::api::{JobInfo, NodeStatus, SubmitRequest};
use crate::error::{Error, Result};
use crate::html::{escape, page};
use crate::node::trace::{TracePage, TRACE_LEN};
use crate::transport::Client;
use facto_elections::rng::Rng;
use facto_elections::NodeId;
use serde::Serialize;
use std::fmt::Write;
use std::time::{Duration, Instant};

const ALGORITHMS: [&str; 3] = ["bully", "ring", "raft"];
/// How often agreement and progress are polled.
const POLL_MS: u64 = 2;
/// A job that keeps the workers busy for about a tenth of a second; a few stay queued so a
/// crash always interrupts work.
const JOB_N: u64 = 200_000;
const JOBS_QUEUED: usize = 5;
/// How long one wait (agreement, progress) may take before the bench gives up.
const WAIT_TIMEOUT_MS: u64 = 60_000;
const CALL_TIMEOUT_MS: u64 = 500;
/// The pause before each kill is drawn from this range.
const PAUSE_MS: (u64, u64) = (300, 1_000);

/// One coordinator crash.
#[derive(Serialize)]
struct Kill {
    victim: NodeId,
    successor: NodeId,
    pause_ms: u64,
    /// From the SIGKILL until every live member names the same new coordinator, which says so.
    agreement_ms: f64,
    /// From the SIGKILL until the new coordinator completed an operation.
    progress_ms: f64,
    /// Election messages (not heartbeats) the live members sent from the kill until then.
    election_messages: u64,
}

#[derive(Serialize)]
struct AlgorithmRun {
    algorithm: String,
    agreement_ms: Percentiles,
    progress_ms: Percentiles,
    /// Mean over the kills.
    messages_per_election: f64,
    /// Epochs begun while nothing failed, over `idle_ms`.
    spurious_elections: u64,
    /// Election messages sent while nothing failed.
    idle_election_messages: u64,
    idle_ms: u64,
    kills: Vec<Kill>,
}

#[derive(Serialize)]
struct Report {
    nodes: u16,
    seed: u64,
    tls: bool,
    algorithms: Vec<AlgorithmRun>,
}

/// The pauses before each kill, from the seed alone.
fn schedule(seed: u64, kills: u32) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    (0..kills).map(|_| rng.range(PAUSE_MS.0, PAUSE_MS.1)).collect()
}

pub(super) fn run(args: &BenchArgs) -> Result<()> {
    if args.nodes < 3 {
        return Err(Error::Usage("--elections needs --nodes 3 or more (a crash must leave a majority)".into()));
    }
    if args.kills == 0 {
        return Err(Error::Usage("--kills must be at least 1".into()));
    }
    let idle_ms = super::parse_duration_ms(&args.idle, "--idle")?;
    // Created first: a page that cannot be written is an error before any cluster starts.
    let html =
        args.html.as_ref().map(|path| std::fs::File::create(path).map_err(|e| super::digits::write_error(path, e)));
    let mut html = html.transpose()?;
    let seed = args.seed.unwrap_or_else(|| super::bench::unique() as u64);
    let pauses = schedule(seed, args.kills);
    let mut report = Report { nodes: args.nodes, seed, tls: args.tls, algorithms: Vec::new() };
    for algorithm in ALGORITHMS {
        eprintln!("facto bench --elections: {algorithm}, {} nodes, {} kills", args.nodes, pauses.len());
        let mut cluster = LocalCluster::start_electing(args, algorithm, args.tls)?;
        let client = cluster.client(None)?;
        match async_std::task::block_on(run_algorithm(&mut cluster, &client, algorithm, &pauses, idle_ms)) {
            Ok(run) => report.algorithms.push(run),
            Err(e) => {
                let dir = cluster.keep_dir();
                return Err(Error::Remote(format!(
                    "{algorithm}: {e} (the members' logs are kept in {})",
                    dir.display()
                )));
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| Error::Remote(e.to_string()))?);
    } else {
        print!("{}", table(&report));
    }
    if let (Some(file), Some(path)) = (html.as_mut(), &args.html) {
        std::io::Write::write_all(file, to_html(&report).as_bytes())
            .map_err(|e| super::digits::write_error(path, e))?;
    }
    Ok(())
}

async fn run_algorithm(
    cluster: &mut LocalCluster,
    client: &Client,
    algorithm: &str,
    pauses: &[u64],
    idle_ms: u64,
) -> Result<AlgorithmRun> {
    cluster.settle(client).await?;
    let (mut leader, epoch_before) = agreement(cluster, client, None).await?;
    let marks = trace_marks(cluster, client).await;
    async_std::task::sleep(Duration::from_millis(idle_ms)).await;
    let (_, epoch_after) = agreement(cluster, client, None).await?;
    let idle_election_messages = election_messages_since(cluster, client, &marks).await;
    let mut kills = Vec::new();
    for &pause_ms in pauses {
        async_std::task::sleep(Duration::from_millis(pause_ms)).await;
        let addr = cluster.addrs[leader as usize - 1].clone();
        ensure_work(client, &addr).await;
        let done_at_kill = jobs_of(client, &addr).await.map_or(0, |j| operations_done(&j));
        let marks = trace_marks(cluster, client).await;
        let killed_at = Instant::now();
        cluster.kill(leader as u16);
        let (successor, _) = agreement(cluster, client, Some(leader)).await?;
        let agreement_ms = killed_at.elapsed().as_secs_f64() * 1e3;
        wait_first_operation(client, &cluster.addrs[successor as usize - 1], done_at_kill).await?;
        let progress_ms = killed_at.elapsed().as_secs_f64() * 1e3;
        let election_messages = election_messages_since(cluster, client, &marks).await;
        kills.push(Kill { victim: leader, successor, pause_ms, agreement_ms, progress_ms, election_messages });
        cluster.restart(leader as u16)?;
        cluster.settle(client).await?;
        leader = agreement(cluster, client, None).await?.0;
    }
    let us = |f: fn(&Kill) -> f64| Percentiles::of(kills.iter().map(|k| (f(k) * 1e3) as u64).collect());
    let messages: u64 = kills.iter().map(|k| k.election_messages).sum();
    Ok(AlgorithmRun {
        algorithm: algorithm.to_string(),
        agreement_ms: us(|k| k.agreement_ms),
        progress_ms: us(|k| k.progress_ms),
        messages_per_election: messages as f64 / kills.len().max(1) as f64,
        spurious_elections: epoch_after.saturating_sub(epoch_before),
        idle_election_messages,
        idle_ms,
        kills,
    })
}

/// Waits until every member but `down` answers and they agree as `facto chaos` means it (one
/// coordinator at one epoch, which says so), on a member other than `down`; returns it and
/// the epoch.
async fn agreement(cluster: &LocalCluster, client: &Client, down: Option<NodeId>) -> Result<(NodeId, u64)> {
    let deadline = Instant::now() + Duration::from_millis(WAIT_TIMEOUT_MS);
    while Instant::now() < deadline {
        let statuses = cluster.statuses(client).await;
        let is_down = |i: usize| Some(i as NodeId + 1) == down;
        let all_answer = statuses.iter().enumerate().all(|(i, s)| is_down(i) || s.is_some());
        let agreed = super::chaos::agreement(&statuses, is_down).filter(|&(l, _)| all_answer && Some(l) != down);
        if let Some(agreed) = agreed {
            return Ok(agreed);
        }
        async_std::task::sleep(Duration::from_millis(POLL_MS)).await;
    }
    Err(Error::Remote(format!("no agreement within {WAIT_TIMEOUT_MS} ms")))
}

/// Where each member's trace stands now (`None`: it did not answer).
async fn trace_marks(cluster: &LocalCluster, client: &Client) -> Vec<Option<u64>> {
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    let asks = cluster.addrs.iter().map(|addr| async move {
        let page: Option<TracePage> = client.get(addr, "/trace?limit=1", timeout).await.ok();
        page.map(|p| p.next)
    });
    futures::future::join_all(asks).await
}

/// Election messages (not heartbeats) the members sent since `marks`.
async fn election_messages_since(cluster: &LocalCluster, client: &Client, marks: &[Option<u64>]) -> u64 {
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    let asks = cluster.addrs.iter().zip(marks).map(|(addr, mark)| async move {
        let Some(next) = mark else { return 0 };
        let path = format!("/trace?since={}&limit={TRACE_LEN}", next.saturating_sub(1));
        let page: Option<TracePage> = client.get(addr, &path, timeout).await.ok();
        let entries = page.map(|p| p.entries).unwrap_or_default();
        entries.iter().filter(|e| e.seq >= *next && e.dir == "sent" && e.class == "election").count() as u64
    });
    futures::future::join_all(asks).await.into_iter().sum()
}

/// Keeps a few jobs queued on the coordinator at `addr`, so that a crash interrupts work.
async fn ensure_work(client: &Client, addr: &str) {
    let jobs = jobs_of(client, addr).await.unwrap_or_default();
    let open = jobs.iter().filter(|j| j.operations_done < j.operations_total).count();
    // At least one fresh job: work left from earlier reigns may be one last task, which a
    // new coordinator finishes before anyone can see it start.
    for _ in open.min(JOBS_QUEUED - 1)..JOBS_QUEUED {
        let request = SubmitRequest { n: JOB_N, request: Some(format!("elections-{}", super::bench::unique())) };
        let timeout = Duration::from_secs(5);
        for _ in 0..200 {
            // A coordinator still taking over answers 503: again shortly.
            let submitted: std::result::Result<JobInfo, _> = client.post(addr, "/jobs", &request, timeout, &[]).await;
            if submitted.is_ok() {
                break;
            }
            async_std::task::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The jobs a coordinator lists in `/status`.
async fn jobs_of(client: &Client, addr: &str) -> Option<Vec<JobInfo>> {
    let status: Option<NodeStatus> = client.get(addr, "/status", Duration::from_millis(CALL_TIMEOUT_MS)).await.ok();
    status.map(|s| s.jobs)
}

fn operations_done(jobs: &[JobInfo]) -> u64 {
    jobs.iter().map(|j| j.operations_done).sum()
}

/// Waits until the coordinator at `addr` completes an operation after taking over: its count
/// of completed operations rises above the one it resumed with, or above the old
/// coordinator's at the kill (a fast successor may finish a small remainder before its first
/// answer).
async fn wait_first_operation(client: &Client, addr: &str, done_at_kill: u64) -> Result<()> {
    let mut resumed_with = None;
    let deadline = Instant::now() + Duration::from_millis(WAIT_TIMEOUT_MS);
    while Instant::now() < deadline {
        if let Some(jobs) = jobs_of(client, addr).await.filter(|j| !j.is_empty()) {
            let done = operations_done(&jobs);
            if done > done_at_kill || resumed_with.is_some_and(|r| done > r) {
                return Ok(());
            }
            resumed_with.get_or_insert(done);
        }
        async_std::task::sleep(Duration::from_millis(POLL_MS)).await;
    }
    Err(Error::Remote(format!("no operation completed within {WAIT_TIMEOUT_MS} ms of a crash")))
}

fn table(r: &Report) -> String {
    let kills = r.algorithms.first().map_or(0, |a| a.kills.len());
    let idle_s = r.algorithms.first().map_or(0.0, |a| a.idle_ms as f64 / 1000.0);
    let mut out = format!(
        "elections: {} nodes{}, {kills} coordinator kills each (seed {}: the same pauses for every algorithm)\n",
        r.nodes,
        if r.tls { " over mutual TLS" } else { "" },
        r.seed
    );
    let _ = writeln!(
        out,
        "{:<9} {:>15} {:>15} {:>17} {:>17} {:>13} {:>22}",
        "algorithm",
        "agreement p50",
        "agreement p99",
        "first op. p50",
        "first op. p99",
        "msgs/election",
        format!("spurious idle ({idle_s:.0} s)")
    );
    for a in &r.algorithms {
        let _ = writeln!(
            out,
            "{:<9} {:>12.0} ms {:>12.0} ms {:>14.0} ms {:>14.0} ms {:>13.1} {:>22}",
            a.algorithm,
            a.agreement_ms.p50,
            a.agreement_ms.p99,
            a.progress_ms.p50,
            a.progress_ms.p99,
            a.messages_per_election,
            format!("{} ({} msgs)", a.spurious_elections, a.idle_election_messages)
        );
    }
    out
}

const WIDTH: f64 = 900.0;
const LABEL_WIDTH: f64 = 90.0;
const ROW_HEIGHT: f64 = 34.0;

const STYLE: &str = "
.kill { fill: var(--accent); opacity: 0.75; } .progress { fill: var(--ok); opacity: 0.75; }
.p50 { stroke: var(--fg); stroke-width: 2; } .bar { fill: var(--part); opacity: 0.8; }
";

/// The report as a page: the table, and per algorithm every kill's time to agreement and to
/// the first operation as dots on one scale, and messages per election as bars.
fn to_html(r: &Report) -> String {
    let mut body = format!("<h1>facto bench --elections</h1>\n<pre>{}</pre>\n", escape(&table(r)));
    let slowest = r.algorithms.iter().flat_map(|a| a.kills.iter().map(|k| k.progress_ms)).fold(1.0, f64::max);
    let step = crate::html::tick_step_ms(slowest as u64, 10);
    let span_ms = (slowest / step as f64).ceil().max(1.0) * step as f64;
    body.push_str("<h2>Time after a coordinator crash</h2>\n<p class=\"muted\">Each blue dot: one kill, until every live member agreed on a new coordinator; green: until it completed an operation. Lines: medians.</p>\n");
    body.push_str(&dots(r, span_ms, step));
    body.push_str("<h2>Election messages per election</h2>\n");
    body.push_str(&bars(r));
    page("facto bench --elections", STYLE, &body)
}

fn dots(r: &Report, span_ms: f64, step_ms: u64) -> String {
    let x = |ms: f64| LABEL_WIDTH + (WIDTH - LABEL_WIDTH - 20.0) * ms / span_ms;
    let height = 30.0 + r.algorithms.len() as f64 * ROW_HEIGHT * 2.0;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">\n");
    svg.push_str(&crate::html::time_axis(span_ms as u64, step_ms, |at| x(at as f64), 20.0, height));
    for (row, a) in r.algorithms.iter().enumerate() {
        let y = 30.0 + row as f64 * ROW_HEIGHT * 2.0;
        let _ = writeln!(svg, "<text x=\"6\" y=\"{:.1}\">{}</text>", y + ROW_HEIGHT / 2.0 + 4.0, escape(&a.algorithm));
        let agreement: Vec<f64> = a.kills.iter().map(|k| k.agreement_ms).collect();
        let progress: Vec<f64> = a.kills.iter().map(|k| k.progress_ms).collect();
        for (class, cy, median, values) in [
            ("kill", y + ROW_HEIGHT / 2.0, a.agreement_ms.p50, agreement),
            ("progress", y + ROW_HEIGHT * 1.3, a.progress_ms.p50, progress),
        ] {
            for (k, value) in a.kills.iter().zip(values) {
                let _ = writeln!(
                    svg,
                    "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"4\"><title>node {} → node {}: {value:.0} ms</title></circle>",
                    x(value),
                    k.victim,
                    k.successor
                );
            }
            let _ = writeln!(
                svg,
                "<line class=\"p50\" x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\"/>",
                x(median),
                cy - 8.0,
                cy + 8.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn bars(r: &Report) -> String {
    let most = r.algorithms.iter().map(|a| a.messages_per_election).fold(1.0, f64::max);
    let height = 10.0 + r.algorithms.len() as f64 * ROW_HEIGHT;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">\n");
    for (row, a) in r.algorithms.iter().enumerate() {
        let y = 10.0 + row as f64 * ROW_HEIGHT;
        let width = (WIDTH - LABEL_WIDTH - 80.0) * a.messages_per_election / most;
        let _ = writeln!(
            svg,
            "<text x=\"6\" y=\"{:.1}\">{}</text><rect class=\"bar\" x=\"{LABEL_WIDTH}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"20\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.1}</text>",
            y + 15.0,
            escape(&a.algorithm),
            LABEL_WIDTH + width + 6.0,
            y + 15.0,
            a.messages_per_election
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_the_seed_alone() {
        assert_eq!(schedule(7, 20), schedule(7, 20));
        assert_ne!(schedule(7, 20), schedule(8, 20));
        assert!(schedule(7, 20).iter().all(|p| (PAUSE_MS.0..PAUSE_MS.1).contains(p)));
    }
}
