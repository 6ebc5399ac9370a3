//! The live web view on every member (`GET /`): one page, its script and its style sheet,
//! embedded in the binary (no CDN, no build step), fed by short polling of `GET /cluster`.
//! Polling, not server-sent events: the page needs every member's state, which one request
//! to any member gathers, and a page whose member dies notices a failed poll at once and can
//! move to another member; an event stream would need the same fallback anyway. Measured cost
//! in docs/BENCHMARKS.md ("Web view").

use super::client_api::unavailable;
use super::respond::json;
use super::slots::Slots;
use super::Handle;
use crate::api::NodeStatus;
use crate::node::trace::TracePage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// How long `/cluster` waits for each member's status.
const MEMBER_STATUS_TIMEOUT_MS: u64 = 400;
/// The most `/cluster` requests a member serves at once (each asks every member): beyond,
/// 429 with `Retry-After`, so open pages can never pile up work on a member.
const CLUSTER_VIEWS_MAX: usize = 64;

/// `/cluster` requests being served right now.
static CLUSTER_VIEWS: std::sync::LazyLock<Slots> = std::sync::LazyLock::new(|| Slots::new(CLUSTER_VIEWS_MAX));

const PAGE: &str = include_str!("view/index.html");
const SCRIPT: &str = include_str!("view/view.js");
const STYLE: &str = include_str!("view/view.css");
const DIAGRAM: &str = include_str!("view/diagram.js");

fn asset(body: &'static str, mime: &str) -> tide::Result {
    let mut res = Response::new(StatusCode::Ok);
    res.set_content_type(mime.parse::<tide::http::Mime>()?);
    res.insert_header("Cache-Control", "no-cache");
    res.insert_header("X-Content-Type-Options", "nosniff");
    res.insert_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'");
    res.set_body(body);
    Ok(res)
}

pub(super) async fn page(_: Request<Handle>) -> tide::Result {
    asset(PAGE, "text/html; charset=utf-8")
}

pub(super) async fn script(_: Request<Handle>) -> tide::Result {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(super) async fn diagram(_: Request<Handle>) -> tide::Result {
    asset(DIAGRAM, "text/javascript; charset=utf-8")
}

pub(super) async fn style(_: Request<Handle>) -> tide::Result {
    asset(STYLE, "text/css; charset=utf-8")
}

/// One member as `/cluster` shows it.
#[derive(Serialize)]
struct Member {
    id: u32,
    address: String,
    up: bool,
    status: Option<NodeStatus>,
}

/// Everything the page shows, as this member sees it.
#[derive(Serialize)]
struct ClusterView {
    /// The member that answered.
    node: u32,
    members: Vec<Member>,
}

/// `GET /cluster`: every member's `/status` (asked in parallel, each within
/// [`MEMBER_STATUS_TIMEOUT_MS`]; `up: false` when it did not answer). Read-only, no key.
pub(super) async fn cluster(req: Request<Handle>) -> tide::Result {
    let Some(_slot) = CLUSTER_VIEWS.take() else {
        return Ok(super::guards::busy("too many views are open on this member; retry in 1 s"));
    };
    let handle = req.state().clone();
    let Some(own) = handle.status(super::STATUS_JOBS_DEFAULT).await else { return Ok(unavailable()) };
    let me = handle.config.id;
    let asks = handle.config.members.0.iter().map(|(&id, addr)| {
        let (handle, addr, own) = (handle.clone(), addr.clone(), own.clone());
        async move {
            let status = if id == me {
                Some(own)
            } else {
                let timeout = Duration::from_millis(MEMBER_STATUS_TIMEOUT_MS);
                handle.client.get::<NodeStatus>(&addr, "/status", timeout).await.ok()
            };
            Member { id, address: addr, up: status.is_some(), status }
        }
    });
    let members = futures::future::join_all(asks).await;
    Ok(json(StatusCode::Ok, &ClusterView { node: me, members }))
}

/// Trace entries one `/cluster/trace` asks each member for: a page polls twice a second.
const TRACE_PAGE_ENTRIES: usize = 500;

/// One member's trace as `/cluster/trace` shows it (`page: null`: it did not answer).
#[derive(Serialize)]
struct MemberTrace {
    id: u32,
    page: Option<TracePage>,
}

#[derive(Serialize)]
struct ClusterTrace {
    node: u32,
    algorithm: String,
    members: Vec<MemberTrace>,
}

/// `GET /cluster/trace?since=ID:SEQ,...`: every member's trace after the entry SEQ the page
/// already has from member ID (at most [`TRACE_PAGE_ENTRIES`] each), asked in parallel like
/// `/cluster`; the page draws its message diagram from them.
pub(super) async fn cluster_trace(req: Request<Handle>) -> tide::Result {
    let since = match req.url().query_pairs().find(|(k, _)| k == "since") {
        None => BTreeMap::new(),
        Some((_, v)) => match parse_since(&v) {
            Some(since) => since,
            None => return Ok(super::respond::error(StatusCode::BadRequest, "since must be ID:SEQ,...")),
        },
    };
    let Some(_slot) = CLUSTER_VIEWS.take() else {
        return Ok(super::guards::busy("too many views are open on this member; retry in 1 s"));
    };
    let handle = req.state().clone();
    let me = handle.config.id;
    let asks = handle.config.members.0.iter().map(|(&id, addr)| {
        let (handle, addr, after) = (handle.clone(), addr.clone(), since.get(&id).copied().unwrap_or(0));
        async move {
            let page = if id == me {
                Some(handle.trace.since(after, TRACE_PAGE_ENTRIES))
            } else {
                let path = format!("/trace?since={after}&limit={TRACE_PAGE_ENTRIES}");
                handle.client.get::<TracePage>(&addr, &path, Duration::from_millis(MEMBER_STATUS_TIMEOUT_MS)).await.ok()
            };
            MemberTrace { id, page }
        }
    });
    let members = futures::future::join_all(asks).await;
    let algorithm = handle.config.algorithm.to_string();
    Ok(json(StatusCode::Ok, &ClusterTrace { node: me, algorithm, members }))
}

fn parse_since(text: &str) -> Option<BTreeMap<u32, u64>> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (id, seq) = pair.split_once(':')?;
            Some((id.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}
