//! `facto chaos`: a fault campaign against a live cluster, checked job by job.
//!
//! Three tasks run side by side until `--duration` ends (or Ctrl-C): the injector crashes,
//! stalls and partitions members through their admin API on a seeded schedule; the workload
//! keeps jobs running and compares each result with n! computed here, in one piece; the
//! watcher polls every member's `/status` and records each change of coordinator with the
//! time from the fault that caused it. Then everything is healed, the cluster must settle on
//! one coordinator, the last jobs must finish, and a report says what happened.

use super::submit::{submit_one, wait_for};
use super::{cluster_addrs, parse_duration_ms};
use crate::api::{AdminResponse, DisruptRequest, NodeStatus};
use crate::bignum::Big;
use crate::error::{Error, Result};
use crate::transport::Client;
use facto_elections::rng::Rng;
use facto_elections::{Epoch, NodeId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use structopt::StructOpt;

/// How often the watcher polls every member.
const WATCH_EVERY_MS: u64 = 50;
/// How long one status or admin request may take (a stalled member does not answer).
const CALL_TIMEOUT_MS: u64 = 500;
/// Jobs the workload keeps running at once.
const JOBS_IN_FLIGHT: usize = 2;

#[derive(StructOpt, Debug)]
pub struct ChaosArgs {
    /// Members to attack: HOST:PORT,... [default: the local `facto cluster`]
    #[structopt(long, env = "FACTO_CLUSTER")]
    cluster: Option<String>,
    /// The cluster key (the admin endpoints refuse requests without it).
    #[structopt(long, env = "FACTO_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// Probability, per member and interval, of a crash.
    #[structopt(long, default_value = "0.1")]
    kill_prob: f64,
    /// Probability, per member and interval, of a stall (every reply held for --stall-for).
    #[structopt(long, default_value = "0.05")]
    slow_prob: f64,
    /// Probability, per member and interval, of a partition from its peers (for --partition-for).
    #[structopt(long, default_value = "0.05")]
    partition_prob: f64,
    /// How often faults are drawn (e.g. 500ms, 1s).
    #[structopt(long, default_value = "1s")]
    interval: String,
    /// How long the campaign attacks (e.g. 30s, 10m).
    #[structopt(long, default_value = "60s")]
    duration: String,
    /// How long a stall lasts: longer than every timeout in the cluster.
    #[structopt(long, default_value = "6s")]
    stall_for: String,
    /// How long a partition lasts.
    #[structopt(long, default_value = "5s")]
    partition_for: String,
    /// After the attack: how long the cluster may take to settle and finish its jobs.
    #[structopt(long, default_value = "120s")]
    settle_timeout: String,
    /// Seed of the fault schedule [default: drawn from the clock, printed in the report].
    #[structopt(long)]
    seed: Option<u64>,
    /// The jobs to keep running, in turn.
    #[structopt(long, default_value = "20,100,1000,5000")]
    jobs: String,
    /// Print the report as one JSON object.
    #[structopt(long)]
    json: bool,
}

/// The campaign's settings, checked.
struct Plan {
    addrs: Vec<String>,
    kill_prob: f64,
    slow_prob: f64,
    partition_prob: f64,
    interval_ms: u64,
    duration_ms: u64,
    stall_ms: u64,
    partition_ms: u64,
    settle_ms: u64,
    seed: u64,
    jobs: Vec<u64>,
}

fn plan(args: &ChaosArgs) -> Result<Plan> {
    let prob = |p: f64, flag: &str| {
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(Error::Usage(format!("{flag} must be between 0 and 1, got {p}")))
        }
    };
    let jobs = args
        .jobs
        .split(',')
        .map(|n| n.trim().parse::<u64>().map_err(|_| Error::Usage(format!("--jobs: '{n}' is not a number"))))
        .collect::<Result<Vec<u64>>>()?;
    let interval_ms = parse_duration_ms(&args.interval, "--interval")?;
    if interval_ms == 0 {
        return Err(Error::Usage("--interval must be above zero".into()));
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    Ok(Plan {
        addrs: cluster_addrs(args.cluster.as_deref())?,
        kill_prob: prob(args.kill_prob, "--kill-prob")?,
        slow_prob: prob(args.slow_prob, "--slow-prob")?,
        partition_prob: prob(args.partition_prob, "--partition-prob")?,
        interval_ms,
        duration_ms: parse_duration_ms(&args.duration, "--duration")?,
        stall_ms: parse_duration_ms(&args.stall_for, "--stall-for")?,
        partition_ms: parse_duration_ms(&args.partition_for, "--partition-for")?,
        settle_ms: parse_duration_ms(&args.settle_timeout, "--settle-timeout")?,
        seed,
        jobs,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    Crash,
    Stall,
    Partition,
}

impl FaultKind {
    fn path(self) -> &'static str {
        match self {
            FaultKind::Crash => "/admin/crash",
            FaultKind::Stall => "/admin/stall",
            FaultKind::Partition => "/admin/partition",
        }
    }
}

struct Fault {
    kind: FaultKind,
    at: Instant,
}

/// A change of coordinator the watcher saw all members agree on.
#[derive(Clone, Debug, Serialize)]
struct Change {
    leader: NodeId,
    epoch: Epoch,
    /// Since the campaign started.
    at_ms: u64,
    /// From the last fault before agreement was lost to agreement on this coordinator.
    after_fault_ms: Option<u64>,
}

#[derive(Default, Serialize)]
struct JobCounts {
    submitted: u64,
    correct: u64,
    wrong: u64,
    lost: u64,
    pending: u64,
    /// No member acknowledged the submission before the campaign ended (not a loss: the
    /// cluster never promised anything).
    not_acknowledged: u64,
}

/// What the three tasks observed, shared between them.
struct Observations {
    started: Instant,
    faults: Vec<Fault>,
    /// Admin requests that got no answer (the member was down already).
    faults_refused: u64,
    /// Members stalled or partitioned, until when: they may disagree meanwhile.
    disrupted_until: HashMap<usize, Instant>,
    agreed: Option<(NodeId, Epoch)>,
    /// When the last agreement was lost (or the campaign started without one).
    lost_at: Option<Instant>,
    changes: Vec<Change>,
    /// Per member address: its id, when its process started, and how many restarts seen.
    incarnations: HashMap<usize, (NodeId, u64, u64)>,
    jobs: JobCounts,
    wrong: Vec<String>,
}

impl Observations {
    fn new(started: Instant) -> Observations {
        Observations {
            started,
            faults: Vec::new(),
            faults_refused: 0,
            disrupted_until: HashMap::new(),
            agreed: None,
            lost_at: None,
            changes: Vec::new(),
            incarnations: HashMap::new(),
            jobs: JobCounts::default(),
            wrong: Vec::new(),
        }
    }

    fn since_start_ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Takes in one round of `/status` answers (index = member).
    fn observe(&mut self, statuses: &[Option<NodeStatus>], now: Instant) {
        for (i, s) in statuses.iter().enumerate() {
            let Some(s) = s else { continue };
            let entry = self.incarnations.entry(i).or_insert((s.id, s.started_unix_ms, 0));
            if s.started_unix_ms != entry.1 {
                entry.2 += 1;
                entry.1 = s.started_unix_ms;
            }
        }
        let agreed = agreement(statuses, |i| self.disrupted_until.get(&i).is_some_and(|&t| t > now));
        if agreed == self.agreed {
            return;
        }
        match agreed {
            None => self.lost_at = Some(now),
            Some((leader, epoch)) => {
                let lost_at = self.lost_at.unwrap_or(now);
                let cause = self.faults.iter().rev().find(|f| f.at <= lost_at).map(|f| f.at);
                let change = Change {
                    leader,
                    epoch,
                    at_ms: self.since_start_ms(now),
                    after_fault_ms: cause.map(|c| now.saturating_duration_since(c).as_millis() as u64),
                };
                self.changes.push(change);
            }
        }
        self.agreed = agreed;
    }
}

/// The coordinator every member that answers (and is not disrupted on purpose) follows, at
/// one epoch, when it says so itself.
fn agreement(statuses: &[Option<NodeStatus>], disrupted: impl Fn(usize) -> bool) -> Option<(NodeId, Epoch)> {
    let considered: Vec<&NodeStatus> =
        statuses.iter().enumerate().filter(|(i, _)| !disrupted(*i)).filter_map(|(_, s)| s.as_ref()).collect();
    let first = considered.first()?;
    let (leader, epoch) = (first.leader?, first.epoch);
    let all_agree = considered.iter().all(|s| s.leader == Some(leader) && s.epoch == epoch);
    let leader_says_so = considered.iter().any(|s| s.id == leader && s.role == "coordinator");
    (all_agree && leader_says_so).then_some((leader, epoch))
}

async fn poll_all(client: &Client, addrs: &[String]) -> Vec<Option<NodeStatus>> {
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    futures::future::join_all(addrs.iter().map(|a| async move { client.get(a, "/status", timeout).await.ok() })).await
}

/// Draws this interval's faults, member by member, and orders them.
async fn inject(client: &Client, plan: &Plan, rng: &mut Rng, seen: &Mutex<Observations>) {
    for (i, addr) in plan.addrs.iter().enumerate() {
        // Every member draws all three numbers, so one member's outcome never shifts
        // another's: the schedule depends on the seed alone.
        let (crash, stall, partition) =
            (rng.chance(plan.kill_prob), rng.chance(plan.slow_prob), rng.chance(plan.partition_prob));
        let now = Instant::now();
        if seen.lock().unwrap().disrupted_until.get(&i).is_some_and(|&t| t > now) {
            continue;
        }
        let (kind, duration_ms) = match (crash, stall, partition) {
            (true, ..) => (FaultKind::Crash, 0),
            (_, true, _) => (FaultKind::Stall, plan.stall_ms),
            (_, _, true) => (FaultKind::Partition, plan.partition_ms),
            _ => continue,
        };
        let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
        let body = DisruptRequest { duration_ms };
        let answer: std::result::Result<AdminResponse, _> = client.post(addr, kind.path(), &body, timeout, &[]).await;
        let mut seen = seen.lock().unwrap();
        match answer {
            Ok(_) => {
                log::info!("{kind:?} of {addr}");
                seen.faults.push(Fault { kind, at: now });
                if kind != FaultKind::Crash {
                    seen.disrupted_until.insert(i, now + Duration::from_millis(duration_ms));
                }
            }
            Err(crate::transport::CallError::Status { status: 401 | 403, message, .. }) => {
                log::error!("{addr} refused the admin request: {message}");
                seen.faults_refused += 1;
            }
            Err(e) => {
                log::debug!("{kind:?} of {addr} not delivered: {e}");
                seen.faults_refused += 1;
            }
        }
    }
}

/// Keeps one job at a time running until `stop`, checking each result.
async fn workload(
    client: Client,
    plan: Arc<Plan>,
    lane: usize,
    stop: Arc<AtomicBool>,
    end_by: Arc<Mutex<Instant>>,
    seen: Arc<Mutex<Observations>>,
) {
    let mut expected: HashMap<u64, String> = HashMap::new();
    let mut turn = lane;
    while !stop.load(Ordering::SeqCst) {
        let n = plan.jobs[turn % plan.jobs.len()];
        turn += JOBS_IN_FLIGHT;
        let submit_by = Instant::now() + Duration::from_millis(plan.duration_ms.max(1_000));
        let job = match submit_one(&client, &plan.addrs, n, submit_by).await {
            Ok(job) => job,
            Err(e) => {
                log::warn!("{n}! was not acknowledged: {e}");
                seen.lock().unwrap().jobs.not_acknowledged += 1;
                continue;
            }
        };
        seen.lock().unwrap().jobs.submitted += 1;
        // The deadline moves to the end of the settling phase once the attack stops.
        let outcome = loop {
            let deadline = *end_by.lock().unwrap();
            match wait_for(&client, &plan.addrs, &job.id, deadline.min(Instant::now() + Duration::from_secs(5))).await {
                Ok(done) => break Ok(done),
                Err(unfinished) if Instant::now() >= *end_by.lock().unwrap() => break Err(unfinished),
                Err(_) => {}
            }
        };
        let expected = expected.entry(n).or_insert_with(|| Big::factorial(n).to_decimal());
        let mut seen = seen.lock().unwrap();
        match outcome {
            Ok(done) if done.result.as_deref() == Some(expected.as_str()) => seen.jobs.correct += 1,
            Ok(done) => {
                log::error!("job {} ({n}!) came back WRONG", done.id);
                seen.jobs.wrong += 1;
                seen.wrong.push(done.id);
            }
            Err(u) if u.unknown => {
                log::error!("job {} ({n}!) was acknowledged and then LOST: {}", job.id, u.why);
                seen.jobs.lost += 1;
            }
            Err(u) => {
                log::error!("job {} ({n}!) did not finish: {}", job.id, u.why);
                seen.jobs.pending += 1;
            }
        }
    }
}

#[derive(Serialize)]
struct Failovers {
    count: usize,
    p50_ms: Option<u64>,
    max_ms: Option<u64>,
}

#[derive(Serialize)]
struct Settled {
    leader: NodeId,
    epoch: Epoch,
}

#[derive(Serialize)]
struct Report {
    seed: u64,
    members: usize,
    duration_ms: u64,
    faults: BTreeMap<FaultKind, u64>,
    faults_refused: u64,
    leadership_changes: Vec<Change>,
    failovers: Failovers,
    jobs: JobCounts,
    wrong_jobs: Vec<String>,
    /// Member id -> restarts seen (a new process answered).
    restarted: BTreeMap<NodeId, u64>,
    settled: Option<Settled>,
    passed: bool,
}

fn report(plan: &Plan, seen: Observations, attacked_ms: u64, settled: Option<(NodeId, Epoch)>) -> Report {
    let mut faults = BTreeMap::new();
    for f in &seen.faults {
        *faults.entry(f.kind).or_insert(0) += 1;
    }
    let mut times: Vec<u64> = seen.changes.iter().filter_map(|c| c.after_fault_ms).collect();
    times.sort_unstable();
    let failovers =
        Failovers { count: times.len(), p50_ms: times.get(times.len() / 2).copied(), max_ms: times.last().copied() };
    let restarted = seen.incarnations.values().filter(|(_, _, r)| *r > 0).map(|(id, _, r)| (*id, *r)).collect();
    let j = &seen.jobs;
    let passed = j.wrong == 0 && j.lost == 0 && j.pending == 0 && settled.is_some();
    Report {
        seed: plan.seed,
        members: plan.addrs.len(),
        duration_ms: attacked_ms,
        faults,
        faults_refused: seen.faults_refused,
        leadership_changes: seen.changes,
        failovers,
        jobs: seen.jobs,
        wrong_jobs: seen.wrong,
        restarted,
        settled: settled.map(|(leader, epoch)| Settled { leader, epoch }),
        passed,
    }
}

fn print_report(r: &Report) {
    let kinds = [FaultKind::Crash, FaultKind::Stall, FaultKind::Partition];
    let count = |k| r.faults.get(&k).copied().unwrap_or(0);
    println!("chaos: seed {}, {} members, attacked for {:.1} s", r.seed, r.members, r.duration_ms as f64 / 1000.0);
    println!(
        "faults injected: {} (crash {}, stall {}, partition {}); {} not delivered",
        kinds.iter().map(|&k| count(k)).sum::<u64>(),
        count(FaultKind::Crash),
        count(FaultKind::Stall),
        count(FaultKind::Partition),
        r.faults_refused
    );
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    println!(
        "leadership changes: {}; failovers after a fault: {}, time to agreement p50 {}, max {}",
        r.leadership_changes.len(),
        r.failovers.count,
        ms(r.failovers.p50_ms),
        ms(r.failovers.max_ms)
    );
    let j = &r.jobs;
    println!(
        "jobs: {} submitted, {} correct, {} wrong, {} lost, {} pending ({} not acknowledged)",
        j.submitted, j.correct, j.wrong, j.lost, j.pending, j.not_acknowledged
    );
    let restarted: Vec<String> = r.restarted.iter().map(|(id, n)| format!("node {id} x{n}")).collect();
    println!("restarted: {}", if restarted.is_empty() { "none".to_string() } else { restarted.join(", ") });
    match &r.settled {
        Some(s) => println!("settled: node {} coordinates at epoch {}", s.leader, s.epoch),
        None => println!("settled: NO - the members did not agree on one coordinator after healing"),
    }
    println!("result: {}", if r.passed { "PASS" } else { "FAIL" });
}

pub fn run(args: ChaosArgs) -> Result<()> {
    let plan = Arc::new(plan(&args)?);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
    let report = async_std::task::block_on(campaign(plan.clone(), args.cluster_key, stop));
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print_report(&report);
    }
    if report.passed {
        Ok(())
    } else {
        Err(Error::Remote(format!("chaos campaign failed (replay it with --seed {})", report.seed)))
    }
}

async fn campaign(plan: Arc<Plan>, cluster_key: Option<String>, interrupted: Arc<AtomicBool>) -> Report {
    let client = Client::new(cluster_key);
    let started = Instant::now();
    let seen = Arc::new(Mutex::new(Observations::new(started)));
    let attack_until = started + Duration::from_millis(plan.duration_ms);
    let end_by = Arc::new(Mutex::new(attack_until + Duration::from_millis(plan.settle_ms)));
    let stop_jobs = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));

    let watcher = {
        let (client, plan, seen, watching) = (client.clone(), plan.clone(), seen.clone(), watching.clone());
        async_std::task::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                let statuses = poll_all(&client, &plan.addrs).await;
                seen.lock().unwrap().observe(&statuses, Instant::now());
                async_std::task::sleep(Duration::from_millis(WATCH_EVERY_MS)).await;
            }
        })
    };
    let lanes: Vec<_> = (0..JOBS_IN_FLIGHT)
        .map(|lane| {
            let task = workload(client.clone(), plan.clone(), lane, stop_jobs.clone(), end_by.clone(), seen.clone());
            async_std::task::spawn(task)
        })
        .collect();

    let mut rng = Rng::new(plan.seed);
    let mut next = started;
    while Instant::now() < attack_until && !interrupted.load(Ordering::SeqCst) {
        inject(&client, &plan, &mut rng, &seen).await;
        next += Duration::from_millis(plan.interval_ms);
        while Instant::now() < next.min(attack_until) && !interrupted.load(Ordering::SeqCst) {
            async_std::task::sleep(Duration::from_millis(20)).await;
        }
    }
    let attacked_ms = started.elapsed().as_millis() as u64;
    stop_jobs.store(true, Ordering::SeqCst);
    *end_by.lock().unwrap() = Instant::now() + Duration::from_millis(plan.settle_ms);

    // Heal: end every stall and partition, then wait for one coordinator that every member
    // (restarted ones included) follows.
    let settle_by = Instant::now() + Duration::from_millis(plan.settle_ms);
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    for addr in &plan.addrs {
        let healed: std::result::Result<AdminResponse, _> = client.post(addr, "/admin/heal", &(), timeout, &[]).await;
        if let Err(e) = healed {
            log::info!("heal {addr}: {e}");
        }
    }
    seen.lock().unwrap().disrupted_until.clear();
    let mut settled = None;
    while Instant::now() < settle_by {
        let statuses = poll_all(&client, &plan.addrs).await;
        if statuses.iter().all(Option::is_some) {
            settled = agreement(&statuses, |_| false);
            if settled.is_some() {
                break;
            }
        }
        async_std::task::sleep(Duration::from_millis(WATCH_EVERY_MS)).await;
    }
    for lane in lanes {
        lane.await;
    }
    watching.store(false, Ordering::SeqCst);
    watcher.await;
    let seen = std::mem::replace(&mut *seen.lock().unwrap(), Observations::new(started));
    report(&plan, seen, attacked_ms, settled)
}
