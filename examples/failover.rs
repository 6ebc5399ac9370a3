//! Failover benchmark: SIGKILL the coordinator of a busy 6-node cluster again and again and
//! measure, per kill, the time until every live node agrees on a new coordinator and the time
//! until the new coordinator completes its first operation.
//!
//! `cargo build --release && cargo run --release --example failover -- [ALGORITHM] [KILLS] [tls]`
//! (defaults: raft 30, plain HTTP; `tls`: members talk mutual TLS). Runs real
//! `target/release/facto node` processes on loopback.

use facto::api::{JobInfo, NodeStatus, SubmitRequest};
use facto::transport::Client;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: u32 = 6;
/// Each job keeps the workers busy for a while (about 0.1 s); several are queued so one is
/// always running when the coordinator is killed.
const JOB_N: u64 = 200_000;
const POLL: Duration = Duration::from_millis(2);

struct Node {
    id: u32,
    addr: String,
    child: Option<Child>,
}

impl Drop for Node {
    /// No node outlives the benchmark, even when it panics.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let algorithm = args.next().unwrap_or_else(|| "raft".into());
    let kills: usize = args.next().and_then(|k| k.parse().ok()).unwrap_or(30);
    let tls = args.next().as_deref() == Some("tls");
    let bin = std::env::current_dir().unwrap().join("target/release/facto");
    assert!(bin.exists(), "build first: cargo build --release");
    let ports: Vec<u16> = (0..NODES)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let peers: String = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p},", i + 1)).collect();
    let data = std::env::temp_dir().join(format!("facto-failover-{}", std::process::id()));
    let certs = data.join("tls");
    if tls {
        make_certificates(&certs);
    }
    let mut nodes: Vec<Node> =
        (1..=NODES).map(|id| Node { id, addr: format!("127.0.0.1:{}", ports[id as usize - 1]), child: None }).collect();
    let start = |node: &mut Node| {
        let child = Command::new(&bin)
            .args(["node", "--id", &node.id.to_string(), "--peers", &peers, "--election", &algorithm])
            .arg("--data-dir")
            .arg(data.join(format!("node-{}", node.id)))
            .args(if tls { vec!["--tls-dir".into(), certs.clone()] } else { vec![] })
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        node.child = Some(child);
    };
    for node in nodes.iter_mut() {
        start(node);
    }
    let client = match tls {
        true => Client::connecting(None, Some(facto::transport::tls::client(&certs.join("ca.pem"), None).unwrap())),
        false => Client::new(None),
    };
    let mut agree_ms = Vec::new();
    let mut progress_ms = Vec::new();
    async_std::task::block_on(async {
        let mut leader = wait_agreement(&client, &nodes, None).await;
        for round in 0..kills {
            // Let the coordinator get going, then make sure work is queued, then kill it.
            async_std::task::sleep(Duration::from_millis(300)).await;
            ensure_work(&client, &nodes, leader).await;
            let addr = &nodes[leader as usize - 1].addr;
            let done_at_kill = jobs_of(&client, addr, Duration::from_secs(2)).await.map_or(0, |j| operations_done(&j));
            let victim = &mut nodes[leader as usize - 1];
            let mut child = victim.child.take().unwrap();
            let killed_at = Instant::now();
            child.kill().unwrap();
            let _ = child.wait();
            let new = wait_agreement(&client, &nodes, Some(leader)).await;
            let agreed = killed_at.elapsed();
            wait_first_operation(&client, &nodes[new as usize - 1].addr, done_at_kill).await;
            let progressed = killed_at.elapsed();
            agree_ms.push(agreed.as_secs_f64() * 1e3);
            progress_ms.push(progressed.as_secs_f64() * 1e3);
            println!(
                "kill {:>2}: node {leader} -> node {new}: agreement {:>6.1} ms, first operation {:>6.1} ms",
                round + 1,
                agree_ms.last().unwrap(),
                progress_ms.last().unwrap()
            );
            start(&mut nodes[leader as usize - 1]);
            leader = wait_agreement(&client, &nodes, None).await;
        }
    });
    drop(nodes);
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "{algorithm}{}, {NODES} nodes, {kills} coordinator kills: agreement p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         first operation p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        if tls { " over mutual TLS" } else { "" },
        percentile(&agree_ms, 50.0),
        percentile(&agree_ms, 99.0),
        percentile(&agree_ms, 100.0),
        percentile(&progress_ms, 50.0),
        percentile(&progress_ms, 99.0),
        percentile(&progress_ms, 100.0),
    );
}

/// A CA and a certificate for each member, valid on loopback.
fn make_certificates(dir: &std::path::Path) {
    use facto::transport::certs;
    certs::init(dir).unwrap();
    for id in 1..=NODES {
        certs::member(dir, id, &["127.0.0.1".to_string()], certs::Validity { days: 1 }).unwrap();
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Polls every running node until all name the same coordinator (other than `not`), which
/// says it is the coordinator.
async fn wait_agreement(client: &Client, nodes: &[Node], not: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for node in nodes.iter().filter(|n| n.child.is_some()) {
            views.push(client.get::<NodeStatus>(&node.addr, "/status", Duration::from_millis(500)).await.ok());
        }
        if let Some(Some(first)) = views.first() {
            let leader = first.leader;
            let agreed = views.iter().all(|v| v.as_ref().is_some_and(|s| s.leader == leader && s.epoch == first.epoch));
            let leads = views.iter().flatten().any(|s| Some(s.id) == leader && s.role == "coordinator");
            if let Some(l) = leader.filter(|&l| agreed && leads && Some(l) != not) {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no agreement within 60 s");
        async_std::task::sleep(POLL).await;
    }
}

/// Keeps a few jobs queued so a failover always has work to resume.
async fn ensure_work(client: &Client, nodes: &[Node], leader: u32) {
    let addr = &nodes[leader as usize - 1].addr;
    let jobs = jobs_of(client, addr, Duration::from_secs(2)).await.unwrap_or_default();
    // Open: operations left to do (a finished job may still be converting its digits).
    let open = jobs.iter().filter(|j| j.operations_done < j.operations_total).count();
    // At least one fresh job: work left over from earlier reigns may be a single task, which
    // a new coordinator finishes before anyone can see it start.
    for _ in open.min(4)..5 {
        // A coordinator still taking over answers 503: try again shortly.
        let request = SubmitRequest { n: JOB_N, request: Some(format!("failover-{}", unique())) };
        for _ in 0..200 {
            let submitted: Result<JobInfo, _> = client.post(addr, "/jobs", &request, Duration::from_secs(5), &[]).await;
            if submitted.is_ok() {
                break;
            }
            async_std::task::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The jobs a coordinator lists in `/status` (without their digits: `GET /jobs` would carry
/// megabytes of them on every poll).
async fn jobs_of(client: &Client, addr: &str, timeout: Duration) -> Option<Vec<JobInfo>> {
    client.get::<NodeStatus>(addr, "/status", timeout).await.ok().map(|s| s.jobs)
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn operations_done(jobs: &[JobInfo]) -> u64 {
    jobs.iter().map(|j| j.operations_done).sum()
}

/// Waits until the coordinator at `addr` completes an operation after taking over: its count
/// of completed operations rises above the count it resumed with, or above the old
/// coordinator's count at the kill (a fast new coordinator may finish a small remainder
/// before its first answer).
async fn wait_first_operation(client: &Client, addr: &str, done_at_kill: u64) {
    let done = operations_done;
    let mut baseline = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    loop {
        if let Some(jobs) = jobs_of(client, addr, Duration::from_millis(500)).await {
            last = jobs.iter().map(|j| (j.id.clone(), j.state.clone(), j.operations_done)).collect();
            // The first answer is the state it resumed from; any increase is new work.
            if !jobs.is_empty() {
                match baseline {
                    _ if done(&jobs) > done_at_kill => return,
                    None => baseline = Some(done(&jobs)),
                    Some(b) if done(&jobs) > b => return,
                    Some(_) => {}
                }
            }
        }
        assert!(Instant::now() < deadline, "no progress within 60 s: {last:?}");
        async_std::task::sleep(POLL).await;
    }
}
