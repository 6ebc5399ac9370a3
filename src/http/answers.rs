//! The encoded answers of finished jobs with large results, kept and shared: a thousand
//! clients long-polling one 1,000,000! job (5.5 MB of digits) cost one encoding, not a
//! thousand, and no client's answer is a copy of it.

use crate::api::JobInfo;
use futures::future::{BoxFuture, FutureExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Results shorter than this are encoded for each client: cheaper than the bookkeeping.
pub const SHARED_DIGITS_MIN: usize = 64 * 1024;
/// Encoded answers kept: the jobs clients are most likely still reading.
const KEPT_MAX: usize = 4;

/// Bytes shared by every response that sends them: an encoded answer, or a range of a
/// result's digits (sent straight from the coordinator's copy).
#[derive(Clone)]
pub struct Shared {
    source: Source,
    range: std::ops::Range<usize>,
}

#[derive(Clone)]
enum Source {
    Encoded(Arc<Vec<u8>>),
    Digits(Arc<str>),
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        let all = match &self.source {
            Source::Encoded(bytes) => bytes.as_slice(),
            Source::Digits(digits) => digits.as_bytes(),
        };
        &all[self.range.clone()]
    }
}

impl From<Vec<u8>> for Shared {
    fn from(bytes: Vec<u8>) -> Shared {
        Shared { range: 0..bytes.len(), source: Source::Encoded(Arc::new(bytes)) }
    }
}

impl Shared {
    /// A result's digits, shared rather than copied.
    pub fn digits(digits: Arc<str>) -> Shared {
        Shared { range: 0..digits.len(), source: Source::Digits(digits) }
    }

    /// `range` of these bytes (clamped to them), sharing them.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Shared {
        let end = (self.range.start + range.end).min(self.range.end);
        Shared { range: (self.range.start + range.start).min(end)..end, source: self.source.clone() }
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }
}

/// An encoding under way or done, awaited by every client that asks for it meanwhile.
type Encoding = futures::future::Shared<BoxFuture<'static, Option<Shared>>>;

/// Answers of finished jobs by their digits (the same `Arc` is the same result).
#[derive(Default)]
pub struct Answers {
    kept: Mutex<VecDeque<(String, usize, Encoding)>>,
}

impl Answers {
    /// The job's encoded answer: kept (or being encoded) if it is, else encoded on the
    /// blocking pool and, for a large result, kept. Clients that ask while it is encoded
    /// wait for that one encoding: hundreds of clients each encoding 5.5 MB on a thread of
    /// its own would starve a coordinator's heartbeats. `None` if encoding failed.
    pub async fn encoded(&self, job: JobInfo) -> Option<Shared> {
        let Some(digits) = job.result.clone().filter(|d| d.len() >= SHARED_DIGITS_MIN) else {
            return encode(job).await;
        };
        let (id, digits) = (job.id.clone(), Arc::as_ptr(&digits) as *const u8 as usize);
        let encoding = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            match kept.iter().find(|(i, d, _)| *i == id && *d == digits) {
                Some((_, _, encoding)) => encoding.clone(),
                None => {
                    let encoding = encode(job).boxed().shared();
                    kept.push_back((id, digits, encoding.clone()));
                    if kept.len() > KEPT_MAX {
                        kept.pop_front();
                    }
                    encoding
                }
            }
        };
        encoding.await
    }
}

async fn encode(job: JobInfo) -> Option<Shared> {
    let bytes = async_std::task::spawn_blocking(move || serde_json::to_vec(&job)).await.ok()?;
    Some(Shared::from(bytes))
}

/// A large answer gives up its thread after each this many bytes it hands to the socket.
/// async-std's executor has no budget of its own: a task writing to a client that reads fast
/// keeps its thread for milliseconds a poll, and hundreds of them (a crowd long-polling one big
/// result) would keep a coordinator's heartbeats queued past the election timeout.
const YIELD_EVERY_BYTES: usize = 64 * 1024;

/// Large answers a member sends at once; the others wait their turn. Without a limit, two
/// thousand clients reading one 1,000,000! job from the coordinator each keep a task runnable,
/// and a heartbeat queued behind all of them misses the election timeout.
const LARGE_SENDS_MAX: usize = 32;
/// How long a large answer may take to leave: a client that reads slowly (or never) gives its
/// turn back after this, so a few of them cannot hold every turn.
const LARGE_SEND_MS_MAX: u64 = 60_000;

/// A response body of shared bytes, paced so that it yields its thread regularly; a large
/// one waits for one of [`LARGE_SENDS_MAX`] turns first.
pub async fn body(answer: Shared) -> tide::Body {
    static LARGE_SENDS: std::sync::LazyLock<Arc<async_lock::Semaphore>> =
        std::sync::LazyLock::new(|| Arc::new(async_lock::Semaphore::new(LARGE_SENDS_MAX)));
    let len = answer.len();
    let turn = if len >= SHARED_DIGITS_MIN { Some(LARGE_SENDS.acquire_arc().await) } else { None };
    let deadline = Instant::now() + Duration::from_millis(LARGE_SEND_MS_MAX);
    let paced = Paced { inner: futures::io::Cursor::new(answer), since_yield: 0, deadline, _turn: turn };
    tide::Body::from_reader(paced, Some(len))
}

struct Paced {
    inner: futures::io::Cursor<Shared>,
    since_yield: usize,
    deadline: Instant,
    _turn: Option<async_lock::SemaphoreGuardArc>,
}

impl futures::io::AsyncRead for Paced {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(late) = this.too_late() {
            return Poll::Ready(Err(late));
        }
        if this.must_yield(cx) {
            return Poll::Pending;
        }
        let cap = buf.len().min(YIELD_EVERY_BYTES);
        let read = Pin::new(&mut this.inner).poll_read(cx, &mut buf[..cap]);
        if let Poll::Ready(Ok(n)) = read {
            this.since_yield += n;
        }
        read
    }
}

impl futures::io::AsyncBufRead for Paced {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if let Some(late) = this.too_late() {
            return Poll::Ready(Err(late));
        }
        if this.must_yield(cx) {
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_fill_buf(cx) {
            Poll::Ready(Ok(bytes)) => Poll::Ready(Ok(&bytes[..bytes.len().min(YIELD_EVERY_BYTES)])),
            other => other,
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.since_yield += amt;
        Pin::new(&mut this.inner).consume(amt);
    }
}

impl Paced {
    fn too_late(&self) -> Option<std::io::Error> {
        let late = Instant::now() >= self.deadline;
        late.then(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client read its answer too slowly"))
    }

    /// After [`YIELD_EVERY_BYTES`], once: wakes itself and says "not now", so the executor
    /// runs the tasks queued behind this one first.
    fn must_yield(&mut self, cx: &mut Context<'_>) -> bool {
        if self.since_yield < YIELD_EVERY_BYTES {
            return false;
        }
        self.since_yield = 0;
        cx.waker().wake_by_ref();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::scheduler::JobProgress;
    use futures::io::AsyncReadExt;

    fn finished(id: &str, digits: Arc<str>) -> JobInfo {
        let progress = JobProgress {
            id: id.into(),
            n: 1,
            ops_total: 1,
            ops_done: 1,
            ops_reexecuted: 0,
            ops_in_flight: 0,
            workers: vec![],
            finished: true,
        };
        JobInfo::new(&progress, Some(digits))
    }

    #[test]
    fn clients_asking_at_once_share_one_encoding_of_a_large_answer() {
        let answers = Answers::default();
        let digits: Arc<str> = Arc::from("7".repeat(SHARED_DIGITS_MIN));
        let encoded = async_std::task::block_on(futures::future::join_all(
            (0..16).map(|_| answers.encoded(finished("1-1", digits.clone()))),
        ));
        let first = encoded[0].clone().expect("encoded");
        assert!(encoded.iter().all(|e| e.as_ref().is_some_and(|e| e.as_ref().as_ptr() == first.as_ref().as_ptr())));
        let other = async_std::task::block_on(answers.encoded(finished("1-2", digits))).expect("encoded");
        assert!(other.as_ref().as_ptr() != first.as_ref().as_ptr(), "another job's answer is its own");
    }

    #[test]
    fn a_paced_body_sends_every_byte() {
        let bytes: Vec<u8> = (0..3 * YIELD_EVERY_BYTES + 5).map(|i| i as u8).collect();
        let mut body = async_std::task::block_on(body(Shared::from(bytes.clone())));
        let mut read = Vec::new();
        async_std::task::block_on(body.read_to_end(&mut read)).expect("read");
        assert_eq!(read, bytes);
    }
}
