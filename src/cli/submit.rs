//! `facto submit`: send jobs to any member, wait for the results, print them.

use super::{cluster_addrs, digits};
use crate::api::{JobInfo, SubmitRequest};
use crate::error::{Error, Result};
use crate::transport::{CallError, Client};
use std::time::{Duration, Instant};
use structopt::StructOpt;

/// How long one request to a member may take.
const CALL_TIMEOUT_MS: u64 = 10_000;

#[derive(StructOpt, Debug)]
pub struct SubmitArgs {
    /// The numbers whose factorials to compute.
    #[structopt(required = true)]
    ns: Vec<String>,
    /// Members to contact: HOST:PORT,... [default: the local `facto cluster`]
    #[structopt(long, env = "FACTO_CLUSTER")]
    cluster: Option<String>,
    /// Print one JSON object per job: {"n": N, "id": ..., "result": "<digits>"}.
    #[structopt(long)]
    json: bool,
    /// Print the job ids and return without waiting for results.
    #[structopt(long)]
    no_wait: bool,
    /// Refuse n above this (the cluster has its own limit too; `facto node` reads the same
    /// variable, so one setting serves both).
    #[structopt(long, env = "FACTO_MAX_N", default_value = "1000000")]
    max_n: u64,
    /// Give up after this many seconds.
    #[structopt(long, default_value = "3600")]
    timeout: f64,
    /// Give up after this many seconds when no member answers at all.
    #[structopt(long, default_value = "30")]
    connect_timeout: f64,
    /// Write the digits of n! to FILE as they arrive, checked on the way, instead of printing
    /// them (one number only). The file is created before anything is submitted.
    #[structopt(long, parse(from_os_str))]
    output: Option<std::path::PathBuf>,
    #[structopt(flatten)]
    tls: super::TlsArgs,
}

pub fn run(args: SubmitArgs) -> Result<()> {
    let addrs = cluster_addrs(args.cluster.as_deref())?;
    // Every argument is checked before anything is sent: a typo submits nothing.
    let ns = args.ns.iter().map(|s| parse_n(s, args.max_n)).collect::<Result<Vec<u64>>>()?;
    let output = output_file(args.output.as_deref(), ns.len(), args.no_wait)?;
    let deadline = Instant::now() + Duration::from_millis(super::node::seconds_to_ms(args.timeout, "--timeout")?);
    let connect_ms = super::node::seconds_to_ms(args.connect_timeout, "--connect-timeout")?;
    let deadline = Deadlines { all: deadline, connect: Instant::now() + Duration::from_millis(connect_ms) };
    let client = args.tls.client(None)?;
    async_std::task::block_on(async {
        let mut jobs = Vec::new();
        for n in ns {
            let job = submit_one(&client, &addrs, n, deadline).await?;
            if args.no_wait {
                print_job(&job, args.json);
            }
            jobs.push(job);
        }
        if args.no_wait {
            return Ok(());
        }
        let mut progress = super::progress::Progress::new(&jobs, !args.json);
        let mut output = output;
        for job in jobs {
            let done =
                wait_for(&client, &addrs, &job.id, deadline.all, &mut |j, addr| progress.update(j, addr)).await?;
            progress.update(&done, "");
            if let Some((path, file)) = output.take() {
                let written = digits::write_to_file(&client, &addrs, &done, (&path, file), deadline.all).await?;
                progress.finish(&done);
                print_written(&done, &path, written, args.json);
                continue;
            }
            let done = digits::with_result(&client, &addrs, done, deadline.all).await?;
            check_result(&done)?;
            progress.finish(&done);
            print_job(&done, args.json);
        }
        Ok(())
    })
}

/// The `--output` file, created now: a path that cannot be written is refused before
/// anything is computed.
fn output_file(
    path: Option<&std::path::Path>,
    numbers: usize,
    no_wait: bool,
) -> Result<Option<(std::path::PathBuf, std::fs::File)>> {
    let Some(path) = path else { return Ok(None) };
    if numbers != 1 || no_wait {
        return Err(Error::Usage("--output takes exactly one number, and waits for it (no --no-wait)".into()));
    }
    let file = std::fs::File::create(path).map_err(|e| digits::write_error(path, e))?;
    Ok(Some((path.to_path_buf(), file)))
}

fn print_written(job: &JobInfo, path: &std::path::Path, digits: u64, as_json: bool) {
    if as_json {
        let out = serde_json::json!({ "n": job.n, "id": job.id, "state": job.state, "digits": digits,
            "output": path.display().to_string() });
        println!("{out}");
    } else {
        println!("{}! = {digits} digits, written to {}", job.n, path.display());
    }
}

/// When `facto submit` gives up: on everything, and when no member has answered at all.
#[derive(Clone, Copy)]
pub(crate) struct Deadlines {
    pub all: Instant,
    pub connect: Instant,
}

impl Deadlines {
    /// One deadline for both.
    pub(crate) fn at(when: Instant) -> Deadlines {
        Deadlines { all: when, connect: when }
    }
}

/// A number as people write it: digits only, no sign, no leading zero (`+5` and `05` are
/// refused rather than guessed at).
fn parse_n(text: &str, max_n: u64) -> Result<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    let n: u64 = text.parse().ok().filter(|_| canonical).ok_or_else(|| {
        Error::Usage(format!("'{text}' is not a non-negative integer (digits only, no sign or leading zero)"))
    })?;
    if n > max_n {
        return Err(Error::Usage(format!("{n} is above --max-n {max_n}")));
    }
    Ok(n)
}

fn print_job(job: &JobInfo, as_json: bool) {
    match (&job.result, as_json) {
        (Some(result), false) => println!("{}! = {result}", job.n),
        (None, false) => println!("{}! submitted as job {}", job.n, job.id),
        (_, true) => {
            let mut out = serde_json::json!({ "n": job.n, "id": job.id, "state": job.state });
            if let Some(result) = &job.result {
                out["result"] = (**result).into();
            }
            println!("{out}");
        }
    }
}

/// Checks a result without trusting the cluster: n! and the digits received must agree
/// modulo a prime drawn here at random (O(n) small multiplications and one pass over the
/// digits; 10,000,000! takes about 0.1 s).
fn check_result(job: &JobInfo) -> Result<()> {
    let Some(digits) = &job.result else { return Ok(()) };
    let fp = digits::random_fingerprint();
    if fp.of_decimal(digits) != Some(fp.of_range(2, job.n)) {
        return Err(Error::Remote(format!("the cluster answered a wrong {}! (job {}): refused", job.n, job.id)));
    }
    Ok(())
}

/// Whether trying again (another member, or later) may help.
pub(crate) fn retryable(e: &CallError) -> bool {
    match e {
        CallError::Unreachable { .. } | CallError::Malformed { .. } => true,
        CallError::Status { status, .. } => *status == 429 || *status >= 500,
    }
}

/// Tells the user once, within 2 s, that nobody answers (the retries go on); fails once
/// nobody has answered by `--connect-timeout`.
struct Silence<'a> {
    addrs: &'a [String],
    started: Instant,
    told: bool,
    anyone_answered: bool,
}

impl<'a> Silence<'a> {
    fn new(addrs: &'a [String]) -> Silence<'a> {
        Silence { addrs, started: Instant::now(), told: false, anyone_answered: false }
    }

    fn heard(&mut self, e: Option<&CallError>) {
        if !matches!(e, Some(CallError::Unreachable { .. })) {
            self.anyone_answered = true;
        }
    }

    fn check(&mut self, deadline: Deadlines, last_error: &str) -> Result<()> {
        if self.anyone_answered {
            return Ok(());
        }
        if Instant::now() >= deadline.connect {
            return Err(Error::Remote(format!("no member of {} answers: {last_error}", self.addrs.join(","))));
        }
        if !self.told && self.started.elapsed() >= Duration::from_millis(SILENCE_NOTICE_MS) {
            self.told = true;
            eprintln!("facto: no member of {} answers; retrying", self.addrs.join(","));
        }
        Ok(())
    }
}

/// How long `facto submit` waits for any answer before saying that nobody answers.
const SILENCE_NOTICE_MS: u64 = 1_500;

/// Sends the job to the members in turn until one accepts it.
pub(crate) async fn submit_one(client: &Client, addrs: &[String], n: u64, deadline: Deadlines) -> Result<JobInfo> {
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    // Every attempt carries the same key, so a retry after a lost answer cannot start a
    // second job.
    let request = SubmitRequest { n, request: Some(request_key()) };
    let mut last_error = String::new();
    let mut silence = Silence::new(addrs);
    for attempt in 0.. {
        let addr = &addrs[attempt % addrs.len()];
        let answer = client.post::<_, JobInfo>(addr, "/jobs", &request, timeout, &[]).await;
        silence.heard(answer.as_ref().err());
        let busy = matches!(answer, Err(CallError::Status { status: 429, .. }));
        match answer {
            Ok(job) if job.n == n => return Ok(job),
            // Never taken for this job: whatever it is, it is not n!.
            Ok(job) => last_error = format!("{addr} answered with job {} ({}!) for {n}!", job.id, job.n),
            Err(e) if retryable(&e) => last_error = e.to_string(),
            Err(e) => return Err(Error::Remote(e.to_string())),
        }
        silence.check(deadline, &last_error)?;
        if Instant::now() >= deadline.all {
            break;
        }
        if busy {
            // 429 comes with Retry-After: 1; the cluster has taken as much as it can.
            async_std::task::sleep(Duration::from_secs(1)).await;
        } else if attempt % addrs.len() == addrs.len() - 1 {
            async_std::task::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(Error::Remote(format!("no member accepted {n}!: {last_error}")))
}

/// A key no other submission uses: this process, this instant, a counter.
fn request_key() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}-{nanos:x}-{count}", std::process::id())
}

/// Why a job has no result yet.
#[derive(Debug)]
pub(crate) struct Unfinished {
    /// The last answer was "no such job": it is lost if the cluster has settled.
    pub unknown: bool,
    pub why: String,
}

impl From<Unfinished> for Error {
    fn from(u: Unfinished) -> Error {
        Error::Remote(u.why)
    }
}

/// How long one `GET /jobs/<id>?wait_ms=N` may wait for the result before answering.
const RESULT_WAIT_MS: u64 = 1_000;

/// Asks any member for the job until it is done; each request waits up to
/// [`RESULT_WAIT_MS`] for the result, so it arrives as soon as it is known. A 404 is retried
/// too: the job was acknowledged, so a coordinator that does not know it yet is still
/// gathering checkpoints.
pub(crate) async fn wait_for(
    client: &Client,
    addrs: &[String],
    id: &str,
    deadline: Instant,
    on_progress: &mut (dyn FnMut(&JobInfo, &str) + Send),
) -> std::result::Result<JobInfo, Unfinished> {
    let timeout = Duration::from_millis(CALL_TIMEOUT_MS);
    let mut pause_ms = 5;
    let mut last = Unfinished { unknown: false, why: String::new() };
    for attempt in 0.. {
        let addr = &addrs[attempt % addrs.len()];
        match client.get::<JobInfo>(addr, &format!("/jobs/{id}?wait_ms={RESULT_WAIT_MS}"), timeout).await {
            Ok(job) if job.id != id => {
                last = Unfinished { unknown: false, why: format!("{addr} answered with job {} for {id}", job.id) }
            }
            Ok(job) if job.is_done() => return Ok(job),
            Ok(job) => {
                on_progress(&job, addr);
                last = Unfinished { unknown: false, why: String::new() };
                pause_ms = 0; // the member already waited for the result: ask again at once
            }
            Err(e @ CallError::Status { status: 404, .. }) => last = Unfinished { unknown: true, why: e.to_string() },
            Err(e) if retryable(&e) => last = Unfinished { unknown: false, why: e.to_string() },
            Err(e) => return Err(Unfinished { unknown: false, why: e.to_string() }),
        }
        if Instant::now() >= deadline {
            break;
        }
        async_std::task::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms = (pause_ms * 2).clamp(5, 200);
    }
    last.why = format!("job {id} did not finish in time {}", last.why);
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_result_is_refused() {
        let job = |result: &str| -> JobInfo {
            serde_json::from_value(serde_json::json!({"id": "1-1", "n": 25, "state": "done", "progress": 1.0,
                "operations_total": 8, "operations_done": 8, "operations_reexecuted": 0, "result": result}))
            .unwrap()
        };
        assert!(check_result(&job("15511210043330985984000000")).is_ok());
        assert!(check_result(&job("15511210043330985984000001")).is_err());
        assert!(check_result(&job("7")).is_err());
    }

    #[test]
    fn bad_numbers_are_refused_with_one_line() {
        for (text, why) in [
            ("-5", "not a non-negative integer"),
            ("abc", "not a non-negative"),
            ("2.5", "not a non-negative"),
            ("99999999999999", "above --max-n"),
        ] {
            let err = parse_n(text, 1_000_000).unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert_eq!(parse_n("20", 1_000_000).unwrap(), 20);
    }
}
