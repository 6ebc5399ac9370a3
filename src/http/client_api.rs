//! The client API, open to anyone (`/status`, `/metrics`, `/jobs`): a follower forwards a
//! request once to the coordinator, and a request that finds an election under way waits
//! for it a little before it gets 503.

use super::guards::busy;
use super::respond::{bytes_response, error, json, read_json, CLIENT_BODY_BYTES_MAX};
use super::{answers, forwards, watches};
use crate::api::{JobInfo, SubmitRequest};
use crate::node::{Handle, JobsQuery, Routed};
use crate::node_core::validate;
use crate::transport::client::{CallError, FORWARDED_HEADER};
use serde::Serialize;
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// How long a follower waits for the coordinator when it forwards a client request.
pub(super) const FORWARD_TIMEOUT_MS: u64 = 5_000;
/// The longest a `GET /jobs/<id>?wait_ms=N` waits (well within [`FORWARD_TIMEOUT_MS`]).
pub(super) const WAIT_MS_MAX: u64 = 2_000;

/// Jobs `/status` lists unless asked (`?jobs=N`), and the most it lists.
pub const STATUS_JOBS_DEFAULT: usize = 20;
const STATUS_JOBS_MAX: usize = 1_000;
/// Jobs `GET /jobs` lists unless asked (`?limit=N`), and the most it lists.
const LIST_JOBS_DEFAULT: usize = 100;
const LIST_JOBS_MAX: usize = 1_000;

/// `GET /status[?jobs=N]`: the node, with the coordinator's N newest jobs and its counts.
pub(super) async fn status(req: Request<Handle>) -> tide::Result {
    let jobs = match count_param(&req, "jobs", STATUS_JOBS_DEFAULT, STATUS_JOBS_MAX) {
        Ok(n) => n,
        Err(res) => return Ok(res),
    };
    Ok(match req.state().status(jobs).await {
        Some(s) => json(StatusCode::Ok, &s),
        None => unavailable(),
    })
}

/// `GET /metrics`: Prometheus text exposition (OpenMetrics); read-only, no key.
pub(super) async fn metrics(req: Request<Handle>) -> tide::Result {
    let handle = req.state();
    let Some(status) = handle.status(0).await else { return Ok(unavailable()) };
    let text = handle.metrics.render(&status);
    let mut res = Response::new(StatusCode::Ok);
    res.set_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8".parse::<tide::http::Mime>()?);
    res.set_body(text);
    Ok(res)
}

/// `GET /trace[?since=SEQ&limit=N]`: the protocol messages this member sent and received
/// after entry SEQ, oldest first (1,000 unless asked, at most the whole trace).
pub(super) async fn trace(req: Request<Handle>) -> tide::Result {
    use crate::node::trace::TRACE_LEN;
    let since = match count_param(&req, "since", 0, usize::MAX) {
        Ok(n) => n as u64,
        Err(res) => return Ok(res),
    };
    let limit = match count_param(&req, "limit", 1_000, TRACE_LEN) {
        Ok(n) => n,
        Err(res) => return Ok(res),
    };
    let page = req.state().trace.since(since, limit);
    Ok(json_off_runtime(page).await)
}

/// A count in the query string (`name=N`): `default` when absent, at most `max`.
fn count_param(req: &Request<Handle>, name: &str, default: usize, max: usize) -> Result<usize, Response> {
    match req.url().query_pairs().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => v.parse::<usize>().map(|n| n.min(max)).map_err(|_| {
            error(StatusCode::BadRequest, &format!("{name} must be a non-negative integer (at most {max} are listed)"))
        }),
    }
}

pub(super) async fn submit(mut req: Request<Handle>) -> tide::Result {
    let body: SubmitRequest = match read_json(&mut req, CLIENT_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    let handle = req.state();
    if let Err(why) = validate::submission(body.n, body.request.as_deref(), handle.config.max_n) {
        return Ok(error(StatusCode::BadRequest, &why));
    }
    let forwarded = req.header(FORWARDED_HEADER).is_some();
    Ok(match handle.submit(body.n, body.request.clone(), forwarded).await {
        Some(Routed::Here(job)) => json(StatusCode::Accepted, &job),
        // The core passes a request on at most once (see `Effect::Forward`).
        Some(Routed::Leader(addr)) => {
            let timeout = Duration::from_millis(FORWARD_TIMEOUT_MS);
            let result: Result<JobInfo, _> =
                handle.client.post(&addr, "/jobs", &body, timeout, &[(FORWARDED_HEADER, "1")]).await;
            relay(StatusCode::Accepted, result)
        }
        Some(Routed::Failed(why)) => error(StatusCode::ServiceUnavailable, &why),
        Some(Routed::Refused(why)) => error(StatusCode::Conflict, &why),
        Some(Routed::Busy(why)) => busy(&why),
        Some(Routed::Unavailable(why)) => retry_later(&why),
        _ => unavailable(),
    })
}

/// `GET /jobs[?limit=N&before=ID]`: the N newest jobs (submitted before job ID), oldest
/// first; a page of the history, never all of it.
pub(super) async fn list_jobs(req: Request<Handle>) -> tide::Result {
    let limit = match count_param(&req, "limit", LIST_JOBS_DEFAULT, LIST_JOBS_MAX) {
        Ok(n) => n,
        Err(res) => return Ok(res),
    };
    let before = req.url().query_pairs().find(|(k, _)| k == "before").map(|(_, v)| v.to_string());
    jobs(req, JobsQuery::Latest { limit, before }, 0).await
}

/// `GET /jobs/<id>[?wait_ms=N]`: with `wait_ms`, the answer waits up to N ms (at most
/// [`WAIT_MS_MAX`]) for the job's result, so a client learns of it at once without polling.
pub(super) async fn get_job(req: Request<Handle>) -> tide::Result {
    let id = req.param("id")?.to_string();
    let wait_ms = req.url().query_pairs().find(|(k, _)| k == "wait_ms").map(|(_, v)| v.parse::<u64>());
    match wait_ms {
        Some(Err(_)) => Ok(error(StatusCode::BadRequest, "wait_ms must be a non-negative integer")),
        Some(Ok(ms)) => jobs(req, JobsQuery::One { id, wait: ms > 0 }, ms.min(WAIT_MS_MAX)).await,
        None => jobs(req, JobsQuery::One { id, wait: false }, 0).await,
    }
}

async fn jobs(req: Request<Handle>, query: JobsQuery, wait_ms: u64) -> tide::Result {
    let handle = req.state();
    // Forwarded as it came (the query string included).
    let path = match req.url().query() {
        Some(q) => format!("{}?{q}", req.url().path()),
        None => req.url().path().to_string(),
    };
    let id = match &query {
        JobsQuery::One { id, .. } => Some(id.clone()),
        JobsQuery::Latest { .. } | JobsQuery::Each { .. } => None,
    };
    let forwarded = req.header(FORWARDED_HEADER).is_some();
    let waited = match &id {
        Some(id) if wait_ms > 0 => {
            let wait = handle.jobs(JobsQuery::One { id: id.clone(), wait: true }, forwarded);
            async_std::future::timeout(Duration::from_millis(wait_ms), wait).await.ok().flatten()
        }
        _ => None,
    };
    // Not done in time, or this node stopped coordinating meanwhile: the job as it stands,
    // at once (asking to wait again would hold the answer until the result, past `wait_ms`
    // and past a forwarding member's timeout).
    let at_once = match query {
        JobsQuery::One { id, .. } => JobsQuery::One { id, wait: false },
        latest => latest,
    };
    let answer = match waited {
        Some(answer) => Some(answer),
        None => handle.jobs(at_once, forwarded).await,
    };
    Ok(match answer {
        // Results can be tens of megabytes: encoded on the blocking pool, not on the threads
        // that carry heartbeats.
        Some(Routed::Here(mut jobs)) => match id {
            None => json_off_runtime(jobs).await,
            Some(id) => match jobs.pop() {
                Some(job) => shared_json(job).await,
                None => error(StatusCode::NotFound, &format!("no job {id}")),
            },
        },
        Some(Routed::Gone(why)) => error(StatusCode::Gone, &why),
        Some(Routed::Unavailable(why)) => retry_later(&why),
        // The core passes a request on at most once (see `Effect::Forward`). The answer is
        // passed on as it came, without decoding it.
        Some(Routed::Leader(addr)) => {
            static FORWARDS: std::sync::LazyLock<forwards::Forwards> = std::sync::LazyLock::new(Default::default);
            static WATCHES: std::sync::LazyLock<watches::Watches> = std::sync::LazyLock::new(Default::default);
            let mut path = path;
            if let Some(id) = id.as_deref().filter(|_| wait_ms > 0) {
                let wait = Duration::from_millis(wait_ms);
                match WATCHES.wait(&handle.client, &addr, id, wait).await {
                    Some(watches::Watched::Done(job)) => return Ok(shared_json(*job).await),
                    Some(watches::Watched::Alone) => {}
                    // Waited in full: the job as it stands, at once.
                    None => path = format!("/jobs/{id}"),
                }
            }
            let timeout = Duration::from_millis(FORWARD_TIMEOUT_MS);
            match FORWARDS.get(&handle.client, &addr, id.as_deref(), &path, timeout).await {
                Ok(answer) => shared_response(answer).await,
                Err(e) => relay::<()>(StatusCode::Ok, Err(e)),
            }
        }
        _ => unavailable(),
    })
}

/// A job's answer, encoded on the blocking pool; a large result's encoding is shared by every
/// client that asks for it (see [`answers`]), and no response copies it.
async fn shared_json(job: JobInfo) -> Response {
    static ANSWERS: std::sync::LazyLock<answers::Answers> = std::sync::LazyLock::new(Default::default);
    match ANSWERS.encoded(job).await {
        Some(encoded) => shared_response(encoded).await,
        None => error(StatusCode::InternalServerError, "the answer could not be encoded"),
    }
}

/// A 200 JSON answer whose body is shared bytes, sent without a copy.
async fn shared_response(answer: answers::Shared) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(answers::body(answer).await);
    res.set_content_type(tide::http::mime::JSON);
    res
}

/// [`json`], encoded on the blocking pool.
async fn json_off_runtime<T: Serialize + Send + 'static>(body: T) -> Response {
    match async_std::task::spawn_blocking(move || serde_json::to_vec(&body)).await {
        Ok(bytes) => bytes_response(bytes, tide::http::mime::JSON),
        Err(e) => error(StatusCode::InternalServerError, &e.to_string()),
    }
}

/// 503 while an election is under way (no member is known to lead), with `Retry-After`.
pub(super) fn unavailable() -> Response {
    retry_later("no coordinator is known: an election is under way; retry in 1 s")
}

/// 503 with `Retry-After: 1` and the true reason.
pub(super) fn retry_later(why: &str) -> Response {
    let mut res = error(StatusCode::ServiceUnavailable, why);
    res.insert_header("Retry-After", "1");
    res
}

/// Answers a forwarded call's outcome as this node's own.
pub(super) fn relay<T: Serialize>(ok_status: StatusCode, result: Result<T, CallError>) -> Response {
    match result {
        Ok(body) => json(ok_status, &body),
        Err(CallError::Status { status, message, .. }) => {
            let mut res = error(StatusCode::try_from(status).unwrap_or(StatusCode::BadGateway), &message);
            if status == 429 || status == 503 {
                res.insert_header("Retry-After", "1");
            }
            res
        }
        Err(e) => error(StatusCode::ServiceUnavailable, &format!("coordinator unreachable: {e}")),
    }
}
