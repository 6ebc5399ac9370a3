//! `facto chaos`: a fault campaign against a live cluster, checked job by job.
//!
//! Three tasks run side by side until `--duration` ends (or Ctrl-C): the injector crashes,
//! stalls and partitions members through their admin API on a seeded schedule; the workload
//! keeps jobs running and compares each result with n! computed here, in one piece; the
//! watcher polls every member's `/status` and records each change of coordinator with the
//! time from the fault that caused it. Then everything is healed, the cluster must settle on
//! one coordinator, the last jobs must finish, and a report says what happened.

use super::submit::{submit_one, wait_for, Deadlines};
use super::{cluster_addrs, parse_duration_ms};
use crate::api::{AdminResponse, DisruptRequest, NodeStatus};
use crate::bignum::Big;
use crate::error::{Error, Result};
use crate::transport::gate::DISRUPTION_MS_MAX;
use crate::transport::{CallError, Client};
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
    #[structopt(flatten)]
    tls: super::TlsArgs,
    /// Probability, per member and interval, of a crash.
    #[structopt(long = "kill-prob", value_name = "P", default_value = "0.1")]
    crash_prob: f64,
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
    /// How long a stall lasts: longer than every timeout in the cluster (the longest, for
    /// checkpoint replication and client calls, is 10 s).
    #[structopt(long, default_value = "12s")]
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
    /// Also write the run as a self-contained HTML page: a timeline of faults, leadership
    /// changes and jobs, and the summary.
    #[structopt(long, value_name = "FILE.html", parse(from_os_str))]
    report: Option<std::path::PathBuf>,
}

/// The campaign's settings, checked.
struct Campaign {
    addrs: Vec<String>,
    crash_prob: f64,
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

fn campaign_of(args: &ChaosArgs) -> Result<Campaign> {
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
    let disruption_ms = |text: &str, flag: &str| {
        let ms = parse_duration_ms(text, flag)?;
        if ms > DISRUPTION_MS_MAX {
            return Err(Error::Usage(format!("{flag} must be at most {} s", DISRUPTION_MS_MAX / 1000)));
        }
        Ok(ms)
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    Ok(Campaign {
        addrs: cluster_addrs(args.cluster.as_deref())?,
        crash_prob: prob(args.crash_prob, "--kill-prob")?,
        slow_prob: prob(args.slow_prob, "--slow-prob")?,
        partition_prob: prob(args.partition_prob, "--partition-prob")?,
        interval_ms,
        duration_ms: parse_duration_ms(&args.duration, "--duration")?,
        stall_ms: disruption_ms(&args.stall_for, "--stall-for")?,
        partition_ms: disruption_ms(&args.partition_for, "--partition-for")?,
        settle_ms: parse_duration_ms(&args.settle_timeout, "--settle-timeout")?,
        seed,
        jobs,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FaultKind {
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
    /// The member's index in the campaign's addresses.
    member: usize,
    duration_ms: u64,
}

/// A fault as the report shows it.
#[derive(Serialize)]
pub(super) struct FaultEvent {
    pub(super) member: usize,
    pub(super) kind: FaultKind,
    /// Since the campaign started.
    pub(super) at_ms: u64,
    pub(super) duration_ms: u64,
}

/// A job as the report shows it: from its acknowledgement to its checked answer (or to the
/// end of the campaign, for one that did not finish).
#[derive(Clone, Serialize)]
pub(super) struct JobEvent {
    pub(super) id: String,
    pub(super) n: u64,
    /// The workload lane that ran it.
    pub(super) lane: usize,
    pub(super) submitted_at_ms: u64,
    pub(super) finished_at_ms: u64,
    /// `correct`, `wrong`, `lost` or `pending`.
    pub(super) outcome: &'static str,
}

/// A change of coordinator the watcher saw all members agree on.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Change {
    pub(super) leader: NodeId,
    pub(super) epoch: Epoch,
    /// Since the campaign started.
    pub(super) at_ms: u64,
    /// From the last fault before agreement was lost to agreement on this coordinator.
    pub(super) after_fault_ms: Option<u64>,
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
    faults_not_delivered: u64,
    /// Members stalled or partitioned, until when: they may disagree meanwhile.
    disrupted_until: HashMap<usize, Instant>,
    /// The coordinator all members follow right now (None while they disagree).
    agreed: Option<(NodeId, Epoch)>,
    /// The last coordinator they all followed: a change is a new agreement that differs.
    last_agreed: Option<(NodeId, Epoch)>,
    /// When that agreement was lost.
    lost_at: Option<Instant>,
    last_poll: Option<Instant>,
    /// Why the campaign stopped early (a refused admin request, a refused job).
    aborted: Option<String>,
    changes: Vec<Change>,
    /// The first coordinator all members agreed on (the baseline the changes start from).
    first_agreed: Option<Change>,
    job_log: Vec<JobEvent>,
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
            faults_not_delivered: 0,
            disrupted_until: HashMap::new(),
            agreed: None,
            last_agreed: None,
            lost_at: None,
            last_poll: None,
            aborted: None,
            changes: Vec::new(),
            first_agreed: None,
            job_log: Vec::new(),
            incarnations: HashMap::new(),
            jobs: JobCounts::default(),
            wrong: Vec::new(),
        }
    }

    /// The campaign so far, in one line (drawn live on a terminal).
    fn summary_line(&self) -> String {
        let coordinator = self.agreed.map_or_else(|| "none agreed".into(), |(l, e)| format!("node {l} (epoch {e})"));
        let j = &self.jobs;
        format!(
            "chaos: {:.1} s · {} faults · coordinator {coordinator} · {} changes · jobs {} correct, {} wrong, {} lost, {} pending",
            self.started.elapsed().as_secs_f64(),
            self.faults.len(),
            self.changes.len(),
            j.correct,
            j.wrong,
            j.lost,
            j.pending
        )
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
        let previous_poll = self.last_poll.replace(now);
        if agreed == self.agreed {
            return;
        }
        let was_agreed = self.agreed.is_some();
        self.agreed = agreed;
        let Some(now_agreed) = agreed else {
            self.lost_at = Some(now);
            return;
        };
        // Straight from one coordinator to another between two polls: lost at the last poll.
        let lost_at = if was_agreed { previous_poll.unwrap_or(now) } else { self.lost_at.unwrap_or(now) };
        self.lost_at = None;
        match self.last_agreed.replace(now_agreed) {
            // The first agreement is the baseline; the same one again is no change (a member
            // that restarted or answered late broke it for a moment).
            None => {
                let at_ms = self.since_start_ms(now);
                let (leader, epoch) = now_agreed;
                self.first_agreed = Some(Change { leader, epoch, at_ms, after_fault_ms: None });
            }
            Some(previous) if previous == now_agreed => {}
            Some(_) => {
                let cause = self.faults.iter().rev().find(|f| f.at <= lost_at).map(|f| f.at);
                let change = Change {
                    leader: now_agreed.0,
                    epoch: now_agreed.1,
                    at_ms: self.since_start_ms(now),
                    after_fault_ms: cause.map(|c| now.saturating_duration_since(c).as_millis() as u64),
                };
                self.changes.push(change);
            }
        }
    }
}

/// The coordinator every member that answers (and is not disrupted on purpose) follows, at
/// one epoch, when it says so itself.
pub(super) fn agreement(statuses: &[Option<NodeStatus>], disrupted: impl Fn(usize) -> bool) -> Option<(NodeId, Epoch)> {
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

/// The whole fault schedule, drawn from the seed alone before the campaign starts: for each
/// interval, which member gets which fault. Every member draws all three numbers every
/// interval, so that one outcome never shifts another's; a member still stalled or
/// partitioned by an earlier fault is left alone until that fault ends.
fn schedule(campaign: &Campaign) -> Vec<Vec<(usize, FaultKind)>> {
    let mut rng = Rng::new(campaign.seed);
    let intervals = campaign.duration_ms.div_ceil(campaign.interval_ms);
    let mut busy_until = vec![0u64; campaign.addrs.len()];
    (0..intervals)
        .map(|k| {
            let mut faults = Vec::new();
            for (i, busy) in busy_until.iter_mut().enumerate() {
                let (crash, stall, partition) = (
                    rng.chance(campaign.crash_prob),
                    rng.chance(campaign.slow_prob),
                    rng.chance(campaign.partition_prob),
                );
                if *busy > k {
                    continue;
                }
                let (kind, lasts_ms) = match (crash, stall, partition) {
                    (true, ..) => (FaultKind::Crash, 0),
                    (_, true, _) => (FaultKind::Stall, campaign.stall_ms),
                    (_, _, true) => (FaultKind::Partition, campaign.partition_ms),
                    _ => continue,
                };
                *busy = k + lasts_ms.div_ceil(campaign.interval_ms);
                faults.push((i, kind));
            }
            faults
        })
        .collect()
}

/// Orders one interval's faults, all at once.
async fn inject(client: &Client, campaign: &Campaign, faults: &[(usize, FaultKind)], seen: &Mutex<Observations>) {
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    let now = Instant::now();
    let answers = futures::future::join_all(faults.iter().map(|&(i, kind)| {
        let duration_ms = match kind {
            FaultKind::Crash => 0,
            FaultKind::Stall => campaign.stall_ms,
            FaultKind::Partition => campaign.partition_ms,
        };
        async move {
            let body = DisruptRequest { duration_ms };
            let answer: std::result::Result<AdminResponse, _> =
                client.post(&campaign.addrs[i], kind.path(), &body, timeout, &[]).await;
            (i, kind, duration_ms, answer)
        }
    }))
    .await;
    let mut seen = seen.lock().unwrap();
    for (i, kind, duration_ms, answer) in answers {
        let addr = &campaign.addrs[i];
        match answer {
            Ok(_) => {
                log::info!("{kind:?} of {addr}");
                seen.faults.push(Fault { kind, at: now, member: i, duration_ms });
                if kind != FaultKind::Crash {
                    seen.disrupted_until.insert(i, now + Duration::from_millis(duration_ms));
                }
            }
            // The campaign cannot do what it was asked: a wrong key, admin disabled, or a
            // request the node refuses. Passing would be a lie.
            Err(CallError::Status { status: status @ (400 | 401 | 403), message, .. }) => {
                seen.aborted.get_or_insert(format!("{addr} refused the {kind:?} request ({status}): {message}"));
            }
            Err(e) => {
                log::debug!("{kind:?} of {addr} not delivered: {e}");
                seen.faults_not_delivered += 1;
            }
        }
    }
}

/// Keeps one job at a time running until `stop`, checking each result.
async fn workload(
    client: Client,
    campaign: Arc<Campaign>,
    lane: usize,
    stop: Arc<AtomicBool>,
    attack_until: Instant,
    end_by: Arc<Mutex<Instant>>,
    seen: Arc<Mutex<Observations>>,
) {
    let mut expected: HashMap<u64, String> = HashMap::new();
    let mut turn = lane;
    while !stop.load(Ordering::SeqCst) {
        let n = campaign.jobs[turn % campaign.jobs.len()];
        turn += JOBS_IN_FLIGHT;
        // New jobs are submitted while the attack lasts; submit_one retries until then.
        let job = match submit_one(&client, &campaign.addrs, n, Deadlines::at(attack_until)).await {
            Ok(job) => job,
            Err(e) if Instant::now() < attack_until => {
                // Refused outright (not a retryable failure): the workload cannot run.
                seen.lock().unwrap().aborted.get_or_insert(format!("the cluster refused {n}!: {e}"));
                return;
            }
            Err(e) => {
                log::warn!("{n}! was not acknowledged: {e}");
                seen.lock().unwrap().jobs.not_acknowledged += 1;
                continue;
            }
        };
        let submitted_at_ms = {
            let mut seen = seen.lock().unwrap();
            seen.jobs.submitted += 1;
            seen.since_start_ms(Instant::now())
        };
        // The deadline moves to the end of the settling phase once the attack stops.
        let outcome = loop {
            let deadline = *end_by.lock().unwrap();
            match wait_for(
                &client,
                &campaign.addrs,
                &job.id,
                deadline.min(Instant::now() + Duration::from_secs(5)),
                &mut |_, _| {},
            )
            .await
            {
                Ok(done) => match super::digits::with_result(&client, &campaign.addrs, done, deadline).await {
                    Ok(done) => break Ok(done),
                    Err(e) => log::warn!("job {}: its digits were not read: {e}", job.id),
                },
                Err(unfinished) if Instant::now() >= *end_by.lock().unwrap() => break Err(unfinished),
                Err(_) => {}
            }
        };
        let expected = expected.entry(n).or_insert_with(|| Big::factorial(n).to_decimal());
        let mut seen = seen.lock().unwrap();
        let outcome = match outcome {
            Ok(done) if done.result.as_deref() == Some(expected.as_str()) => {
                seen.jobs.correct += 1;
                "correct"
            }
            Ok(done) => {
                log::error!("job {} ({n}!) came back WRONG", done.id);
                seen.jobs.wrong += 1;
                seen.wrong.push(done.id);
                "wrong"
            }
            Err(u) if u.unknown => {
                log::error!("job {} ({n}!) was acknowledged and then LOST: {}", job.id, u.why);
                seen.jobs.lost += 1;
                "lost"
            }
            Err(u) => {
                log::error!("job {} ({n}!) did not finish: {}", job.id, u.why);
                seen.jobs.pending += 1;
                "pending"
            }
        };
        let finished_at_ms = seen.since_start_ms(Instant::now());
        seen.job_log.push(JobEvent { id: job.id, n, lane, submitted_at_ms, finished_at_ms, outcome });
    }
}

#[derive(Serialize)]
pub(super) struct Failovers {
    pub(super) count: usize,
    pub(super) p50_ms: Option<u64>,
    pub(super) max_ms: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct Settled {
    pub(super) leader: NodeId,
    pub(super) epoch: Epoch,
}

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) seed: u64,
    pub(super) members: usize,
    /// The members' addresses, in the order `fault_log` numbers them.
    pub(super) addresses: Vec<String>,
    pub(super) duration_ms: u64,
    faults: BTreeMap<FaultKind, u64>,
    /// Faults drawn for a member that could not take them (down already); the JSON name
    /// predates this one and is kept.
    #[serde(rename = "faults_refused")]
    faults_not_delivered: u64,
    pub(super) leadership_changes: Vec<Change>,
    /// The coordinator the members agreed on first, before any change.
    pub(super) first_agreed: Option<Change>,
    pub(super) failovers: Failovers,
    jobs: JobCounts,
    wrong_jobs: Vec<String>,
    /// Every fault delivered, in order.
    pub(super) fault_log: Vec<FaultEvent>,
    /// Every acknowledged job, in the order it ended.
    pub(super) job_log: Vec<JobEvent>,
    /// Member id -> restarts seen (a new process answered).
    restarted: BTreeMap<NodeId, u64>,
    pub(super) settled: Option<Settled>,
    /// Why the campaign stopped early, if it did.
    aborted: Option<String>,
    pub(super) passed: bool,
}

fn report(campaign: &Campaign, seen: Observations, attacked_ms: u64, settled: Option<(NodeId, Epoch)>) -> Report {
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
    let passed = j.wrong == 0 && j.lost == 0 && j.pending == 0 && settled.is_some() && seen.aborted.is_none();
    let fault_log = seen
        .faults
        .iter()
        .map(|f| FaultEvent {
            member: f.member,
            kind: f.kind,
            at_ms: seen.since_start_ms(f.at),
            duration_ms: f.duration_ms,
        })
        .collect();
    Report {
        seed: campaign.seed,
        members: campaign.addrs.len(),
        addresses: campaign.addrs.clone(),
        duration_ms: attacked_ms,
        faults,
        faults_not_delivered: seen.faults_not_delivered,
        leadership_changes: seen.changes,
        first_agreed: seen.first_agreed,
        failovers,
        fault_log,
        job_log: seen.job_log,
        jobs: seen.jobs,
        wrong_jobs: seen.wrong,
        restarted,
        settled: settled.map(|(leader, epoch)| Settled { leader, epoch }),
        aborted: seen.aborted,
        passed,
    }
}

/// The report in words, as printed (and shown in the HTML report).
pub(super) fn summary(r: &Report) -> String {
    let mut lines = Vec::new();
    let kinds = [FaultKind::Crash, FaultKind::Stall, FaultKind::Partition];
    let count = |k| r.faults.get(&k).copied().unwrap_or(0);
    lines.push(format!(
        "chaos: seed {}, {} members, attacked for {:.1} s",
        r.seed,
        r.members,
        r.duration_ms as f64 / 1000.0
    ));
    lines.push(format!(
        "faults injected: {} (crash {}, stall {}, partition {}); {} not delivered",
        kinds.iter().map(|&k| count(k)).sum::<u64>(),
        count(FaultKind::Crash),
        count(FaultKind::Stall),
        count(FaultKind::Partition),
        r.faults_not_delivered
    ));
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    lines.push(format!(
        "leadership changes: {}; failovers after a fault: {}, time to agreement p50 {}, max {}",
        r.leadership_changes.len(),
        r.failovers.count,
        ms(r.failovers.p50_ms),
        ms(r.failovers.max_ms)
    ));
    let j = &r.jobs;
    lines.push(format!(
        "jobs: {} submitted, {} correct, {} wrong, {} lost, {} pending ({} not acknowledged)",
        j.submitted, j.correct, j.wrong, j.lost, j.pending, j.not_acknowledged
    ));
    let restarted: Vec<String> = r.restarted.iter().map(|(id, n)| format!("node {id} x{n}")).collect();
    lines.push(format!("restarted: {}", if restarted.is_empty() { "none".to_string() } else { restarted.join(", ") }));
    match &r.settled {
        Some(s) => lines.push(format!("settled: node {} coordinates at epoch {}", s.leader, s.epoch)),
        None => lines.push("settled: NO - the members did not agree on one coordinator after healing".to_string()),
    }
    if let Some(why) = &r.aborted {
        lines.push(format!("aborted: {why}"));
    }
    lines.push(format!("result: {}", if r.passed { "PASS" } else { "FAIL" }));
    lines.join("\n") + "\n"
}

pub fn run(args: ChaosArgs) -> Result<()> {
    let campaign = Arc::new(campaign_of(&args)?);
    // Created before the campaign: a path that cannot be written is an error before any fault.
    let report_file = args.report.as_ref().map(|path| create(path)).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
    let report =
        async_std::task::block_on(run_campaign(campaign.clone(), args.tls.client(args.cluster_key.clone())?, stop));
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", summary(&report));
    }
    if let (Some(mut file), Some(path)) = (report_file, &args.report) {
        std::io::Write::write_all(&mut file, super::chaos_report::html(&report).as_bytes())
            .map_err(|e| super::digits::write_error(path, e))?;
    }
    if report.passed {
        Ok(())
    } else {
        Err(Error::Remote(format!("chaos campaign failed (replay it with --seed {})", report.seed)))
    }
}

fn create(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::File::create(path).map_err(|e| super::digits::write_error(path, e))
}

async fn run_campaign(campaign: Arc<Campaign>, client: Client, interrupted: Arc<AtomicBool>) -> Report {
    let started = Instant::now();
    let seen = Arc::new(Mutex::new(Observations::new(started)));
    let attack_until = started + Duration::from_millis(campaign.duration_ms);
    let end_by = Arc::new(Mutex::new(attack_until + Duration::from_millis(campaign.settle_ms)));
    let stop_jobs = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));

    let watcher = {
        let (client, campaign, seen, watching) = (client.clone(), campaign.clone(), seen.clone(), watching.clone());
        let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
        async_std::task::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                let statuses = poll_all(&client, &campaign.addrs).await;
                let line = {
                    let mut seen = seen.lock().unwrap();
                    seen.observe(&statuses, Instant::now());
                    seen.summary_line()
                };
                if live {
                    // One line, redrawn in place on the terminal.
                    eprint!("\r\x1b[2K{line}");
                }
                async_std::task::sleep(Duration::from_millis(WATCH_EVERY_MS)).await;
            }
        })
    };
    let lanes: Vec<_> = (0..JOBS_IN_FLIGHT)
        .map(|lane| {
            let (stop, end_by, seen) = (stop_jobs.clone(), end_by.clone(), seen.clone());
            let task = workload(client.clone(), campaign.clone(), lane, stop, attack_until, end_by, seen);
            async_std::task::spawn(task)
        })
        .collect();

    let stopping = || interrupted.load(Ordering::SeqCst) || seen.lock().unwrap().aborted.is_some();
    for (k, faults) in schedule(&campaign).iter().enumerate() {
        let at = started + Duration::from_millis(k as u64 * campaign.interval_ms);
        while Instant::now() < at && !stopping() {
            async_std::task::sleep(Duration::from_millis(20)).await;
        }
        if stopping() || Instant::now() >= attack_until {
            break;
        }
        inject(&client, &campaign, faults, &seen).await;
    }
    while Instant::now() < attack_until && !stopping() {
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    let attacked_ms = started.elapsed().as_millis() as u64;
    stop_jobs.store(true, Ordering::SeqCst);
    *end_by.lock().unwrap() = Instant::now() + Duration::from_millis(campaign.settle_ms);

    // Heal: end every stall and partition, then wait for one coordinator that every member
    // (restarted ones included) follows.
    let settle_by = Instant::now() + Duration::from_millis(campaign.settle_ms);
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    for addr in &campaign.addrs {
        let healed: std::result::Result<AdminResponse, _> = client.post(addr, "/admin/heal", &(), timeout, &[]).await;
        if let Err(e) = healed {
            log::info!("heal {addr}: {e}");
        }
    }
    seen.lock().unwrap().disrupted_until.clear();
    let mut settled = None;
    while Instant::now() < settle_by {
        let statuses = poll_all(&client, &campaign.addrs).await;
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
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    let seen = std::mem::replace(&mut *seen.lock().unwrap(), Observations::new(started));
    report(&campaign, seen, attacked_ms, settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_campaign(seed: u64) -> Campaign {
        Campaign {
            addrs: (0..6).map(|i| format!("127.0.0.1:{}", 7001 + i)).collect(),
            crash_prob: 0.1,
            slow_prob: 0.05,
            partition_prob: 0.05,
            interval_ms: 1_000,
            duration_ms: 60_000,
            stall_ms: 12_000,
            partition_ms: 5_000,
            settle_ms: 1_000,
            seed,
            jobs: vec![20],
        }
    }

    #[test]
    fn the_schedule_follows_the_seed_alone() {
        assert_eq!(schedule(&test_campaign(1)), schedule(&test_campaign(1)));
        assert_ne!(schedule(&test_campaign(1)), schedule(&test_campaign(2)));
        let faults: usize = schedule(&test_campaign(1)).iter().map(Vec::len).sum();
        assert!(faults > 10, "{faults} faults in 60 intervals x 6 members");
    }

    #[test]
    fn a_stalled_or_partitioned_member_is_left_alone_until_its_fault_ends() {
        let campaign = test_campaign(3);
        let s = schedule(&campaign);
        for (k, faults) in s.iter().enumerate() {
            for &(member, kind) in faults {
                let lasts = match kind {
                    FaultKind::Crash => 0,
                    FaultKind::Stall => 12,
                    FaultKind::Partition => 5,
                };
                for later in s.iter().skip(k + 1).take(lasts.max(1) - 1) {
                    assert!(later.iter().all(|&(m, _)| m != member), "member {member} hit again during its {kind:?}");
                }
            }
        }
    }

    fn status(id: NodeId, leader: Option<NodeId>, epoch: Epoch) -> Option<NodeStatus> {
        let role = if leader == Some(id) { "coordinator" } else { "worker" };
        Some(
            serde_json::from_value(serde_json::json!({
                "id": id, "address": "a", "role": role, "leader": leader, "epoch": epoch, "election": "raft",
                "operations_computed": 0, "max_operands": 0, "last_leader_contact_ms": null, "uptime_ms": 1
            }))
            .unwrap(),
        )
    }

    fn all_follow(leader: NodeId, epoch: Epoch) -> Vec<Option<NodeStatus>> {
        (1..=3).map(|id| status(id, Some(leader), epoch)).collect()
    }

    #[test]
    fn a_change_of_coordinator_is_counted_once_and_timed_from_its_fault() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut seen = Observations::new(t0);
        seen.observe(&all_follow(1, 1), at(10));
        assert!(seen.changes.is_empty(), "the first agreement is the baseline");
        // A member restarts: agreement breaks and comes back on the same coordinator.
        let mut restarting = all_follow(1, 1);
        restarting[2] = status(3, None, 1);
        seen.observe(&restarting, at(20));
        seen.observe(&all_follow(1, 1), at(30));
        assert!(seen.changes.is_empty(), "the same coordinator again is no change");
        // The coordinator is crashed; the others agree on node 2 later.
        seen.faults.push(Fault { kind: FaultKind::Crash, at: at(100), member: 0, duration_ms: 0 });
        seen.observe(&[None, status(2, None, 1), status(3, None, 1)], at(150));
        seen.observe(&[None, status(2, Some(2), 2), status(3, Some(2), 2)], at(400));
        assert_eq!(seen.changes.len(), 1);
        assert_eq!((seen.changes[0].leader, seen.changes[0].epoch), (2, 2));
        assert_eq!(seen.changes[0].after_fault_ms, Some(300));
    }
}
