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
use serde::Serialize;
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
