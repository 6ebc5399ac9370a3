//! A finished job's digits at the client: read from `GET /jobs/<id>/digits` as they arrive
//! (resumed at the offset reached when a member fails), into memory or straight to a file,
//! and checked against n! modulo a prime drawn here at random, never trusting the cluster.

use crate::api::JobInfo;
use crate::coordinator::Fingerprint;
use crate::error::{Error, Result};
use crate::transport::{CallError, Client};
use futures::io::AsyncReadExt;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one request, or one read of the digits, may wait.
const READ_TIMEOUT_MS: u64 = 10_000;
/// How much of the digits is handed on at a time.
const CHUNK_BYTES: usize = 1 << 16;

/// The job with its digits in `result`, read from the cluster when the job's JSON left them
/// out (above [`crate::api::RESULT_INLINE_DIGITS_MAX`]).
pub(crate) async fn with_result(client: &Client, addrs: &[String], job: JobInfo, deadline: Instant) -> Result<JobInfo> {
    if job.result.is_some() || job.digits_url.is_none() {
        return Ok(job);
    }
    let mut digits = Vec::with_capacity(job.digits.unwrap_or(0) as usize);
    stream(client, addrs, &job, deadline, &mut |piece| {
        digits.extend_from_slice(piece);
        Ok(())
    })
    .await?;
    let digits =
        String::from_utf8(digits).map_err(|_| Error::Remote(format!("job {}: digits that are not text", job.id)))?;
    Ok(JobInfo { result: Some(digits.into()), ..job })
}

/// A fingerprint no member can know in advance.
pub(crate) fn random_fingerprint() -> Fingerprint {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Fingerprint::new(seed ^ u64::from(std::process::id()))
}

/// Writes the job's digits to `file` as they arrive, with a progress line on a terminal,
/// checking them on the way; returns how many were written. A wrong or cut result is
/// refused and the file removed: a file that is there holds n! exactly.
pub(crate) async fn write_to_file(
    client: &Client,
    addrs: &[String],
    job: &JobInfo,
    (path, file): (&Path, std::fs::File),
    deadline: Instant,
) -> Result<u64> {
    let fp = random_fingerprint();
    let mut residue = fp.decimal_residue();
    let mut out = std::io::BufWriter::with_capacity(CHUNK_BYTES * 16, file);
    let mut progress = FileProgress::new(job.digits);
    let streamed = stream(client, addrs, job, deadline, &mut |piece| {
        if !residue.feed(piece) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the cluster sent something not a digit"));
        }
        out.write_all(piece)?;
        progress.show(residue.digits());
        Ok(())
    })
    .await
    .map_err(|e| match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => Error::Remote(e.to_string()),
        Error::Io(e) => write_error(path, e),
        e => e,
    });
    progress.finish();
    let checked = streamed.and_then(|written| {
        // The digits only, no newline: the file compares equal to n! written out.
        out.flush().map_err(|e| write_error(path, e))?;
        let expected = fp.of_range(2, job.n);
        match residue.finish() == Some(expected) {
            true => Ok(written),
            false => Err(Error::Remote(format!("the cluster answered a wrong {}! (job {}): refused", job.n, job.id))),
        }
    });
    if checked.is_err() {
        let _ = std::fs::remove_file(path);
    }
    checked
}

pub(crate) fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::Usage(format!("cannot write {}: {e}", path.display()))
}

/// Hands the job's digits to `sink` in pieces: the inline result, or the stream from any
/// member, resumed at the offset reached when one fails. Returns how many there were.
async fn stream(
    client: &Client,
    addrs: &[String],
    job: &JobInfo,
    deadline: Instant,
    sink: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
) -> Result<u64> {
    if let Some(digits) = &job.result {
        sink(digits.as_bytes())?;
        return Ok(digits.len() as u64);
    }
    let url = job.digits_url.as_deref().ok_or_else(|| Error::Remote(format!("job {} has no result", job.id)))?;
    let mut done = 0u64;
    let mut last_error = String::new();
    for attempt in 0.. {
        let addr = &addrs[attempt % addrs.len()];
        match read_from(client, addr, &format!("{url}?offset={done}"), &mut done, sink).await {
            Ok(()) if job.digits.is_none_or(|total| done == total) => return Ok(done),
            Ok(()) => last_error = format!("{addr} stopped at digit {done} of {}", job.digits.unwrap_or(0)),
            Err(Failed::Sink(e)) => return Err(Error::Io(e)),
            Err(Failed::Call(e)) if worth_retrying(&e) => last_error = e.to_string(),
            Err(Failed::Call(e)) => return Err(Error::Remote(e.to_string())),
        }
        if Instant::now() >= deadline {
            break;
        }
        async_std::task::sleep(Duration::from_millis(if attempt % addrs.len() == addrs.len() - 1 { 500 } else { 0 }))
            .await;
    }
    Err(Error::Remote(format!("the digits of job {} could not be read: {last_error}", job.id)))
}

enum Failed {
    /// The member, or the way to it.
    Call(CallError),
    /// Where the digits go (a full disk).
    Sink(std::io::Error),
}

/// A member that does not answer, or answers "not now" (its coordinator is gathering
/// checkpoints, or converting the digits again), may answer later; so may another member.
fn worth_retrying(e: &CallError) -> bool {
    super::submit::retryable(e) || matches!(e, CallError::Status { status: 404 | 409, .. })
}

/// Reads one answer of digits from `addr` into `sink`, counting them in `done`.
async fn read_from(
    client: &Client,
    addr: &str,
    path: &str,
    done: &mut u64,
    sink: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
) -> std::result::Result<(), Failed> {
    let timeout = Duration::from_millis(READ_TIMEOUT_MS);
    let mut res = client.get_stream(addr, path, timeout).await.map_err(Failed::Call)?;
    let unreachable = |why: String| Failed::Call(CallError::Unreachable { addr: addr.into(), why });
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match async_std::future::timeout(timeout, res.read(&mut buf)).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no digits within {READ_TIMEOUT_MS} ms"))),
        };
        if read == 0 {
            return Ok(());
        }
        sink(&buf[..read]).map_err(Failed::Sink)?;
        *done += read as u64;
    }
}

/// "written 1234567 of 5565709 digits (22%)" on a terminal, at most a few times a second.
struct FileProgress {
    total: Option<u64>,
    shown: bool,
    last: Instant,
}

impl FileProgress {
    fn new(total: Option<u64>) -> FileProgress {
        FileProgress { total, shown: std::io::stderr().is_terminal(), last: Instant::now() }
    }

    fn show(&mut self, written: u64) {
        if !self.shown || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        match self.total {
            Some(total) if total > 0 => {
                eprint!("\rfacto: written {written} of {total} digits ({}%)", written * 100 / total)
            }
            _ => eprint!("\rfacto: written {written} digits"),
        }
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
