//! Job queries a follower forwards to the coordinator, shared. Clients that ask the same
//! thing at once share one forward, and a finished job's large answer is kept here for a
//! while: two thousand clients long-polling a 1,000,000! job (5.5 MB of digits) over six
//! members cost the coordinator one answer per follower, not one per client, and no client's
//! answer is a copy.

use super::answers::{Shared, SHARED_DIGITS_MIN};
use crate::transport::client::{CallError, Client, FORWARDED_HEADER};
use futures::future::{BoxFuture, FutureExt};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Finished answers kept: the jobs clients are most likely still reading.
const KEPT_MAX: usize = 4;
/// How long a finished answer is served from here: long enough for a crowd of clients
/// to read it, short enough that a job retired at the coordinator soon answers 410 here too.
const KEPT_FOR_MS: u64 = 10_000;

type Forward = futures::future::Shared<BoxFuture<'static, Result<(Shared, bool), CallError>>>;

#[derive(Default)]
pub struct Forwards {
    /// Forwards under way, by coordinator and path (the query string included).
    in_flight: Mutex<HashMap<String, Forward>>,
    /// Finished jobs' large answers, by coordinator and job id, with when they arrived. Only
    /// the coordinator that answered is spared the question: after a failover the new one is
    /// asked, and checks the result it holds.
    kept: Mutex<VecDeque<(String, Instant, Shared)>>,
}

impl Forwards {
    /// The coordinator's answer to `GET path` (about job `id`, if it names one): kept, joined
    /// to a forward of the same request under way, or forwarded.
    pub async fn get(
        &self,
        client: &Client,
        addr: &str,
        id: Option<&str>,
        path: &str,
        timeout: Duration,
    ) -> Result<Shared, CallError> {
        let kept_key = id.map(|id| format!("{addr} {id}"));
        if let Some(kept) = kept_key.as_deref().and_then(|k| self.kept(k)) {
            return Ok(kept);
        }
        let key = format!("{addr}{path}");
        let keepable = kept_key.is_some();
        let forward = lock(&self.in_flight)
            .entry(key.clone())
            .or_insert_with(|| forward(client, (addr, path), timeout, keepable))
            .clone();
        let result = forward.clone().await;
        {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.get(&key).is_some_and(|f| f.ptr_eq(&forward)) {
                in_flight.remove(&key);
            }
        }
        let (answer, finished) = result?;
        if let Some(k) = kept_key.filter(|_| finished) {
            self.keep(&k, &answer);
        }
        Ok(answer)
    }

    fn kept(&self, id: &str) -> Option<Shared> {
        let mut kept = lock(&self.kept);
        kept.retain(|(_, at, _)| at.elapsed() < Duration::from_millis(KEPT_FOR_MS));
        kept.iter().find(|(i, _, _)| i == id).map(|(_, _, answer)| answer.clone())
    }

    fn keep(&self, id: &str, answer: &Shared) {
        let mut kept = lock(&self.kept);
        if kept.iter().any(|(i, _, _)| i == id) {
            return;
        }
        kept.push_back((id.to_string(), Instant::now(), answer.clone()));
        if kept.len() > KEPT_MAX {
            kept.pop_front();
        }
    }
}

/// One forward, with whether its answer is a finished job (read off the runtime's threads:
/// the answer can be megabytes), if it may be kept.
fn forward(client: &Client, (addr, path): (&str, &str), timeout: Duration, keepable: bool) -> Forward {
    let (client, addr, path) = (client.clone(), addr.to_string(), path.to_string());
    async move {
        let bytes = client.get_bytes_with(&addr, &path, timeout, &[(FORWARDED_HEADER, "1")]).await?;
        if !keepable || bytes.len() < SHARED_DIGITS_MIN {
            // Never kept, so not read: most answers are small, and a hand-off would cost more.
            return Ok((Shared::from(bytes), false));
        }
        Ok(async_std::task::spawn_blocking(move || {
            let finished = is_finished(&bytes);
            (Shared::from(bytes), finished)
        })
        .await)
    }
    .boxed()
    .shared()
}

fn is_finished(answer: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct State<'a> {
        state: &'a str,
    }
    serde_json::from_slice::<State>(answer).is_ok_and(|s| s.state == "done")
}

/// The mutex's data even if a holder panicked (the forwards' and the watches' maps).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_done_job_is_finished() {
        assert!(is_finished(br#"{"id":"1-1","state":"done","result":"120"}"#));
        assert!(!is_finished(br#"{"id":"1-1","state":"running"}"#));
        assert!(!is_finished(br#"[{"id":"1-1","state":"done"}]"#), "a page of jobs is never kept");
        assert!(!is_finished(b"not json"));
    }
}
