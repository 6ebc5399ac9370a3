//! Incoming HTTP (tide). Handlers only decode, validate and hand the request to the runtime
//! through the node's [`Handle`]; they never touch node state. Client endpoints (`/jobs`,
//! `/status`) are open; everything under `/internal/` and `/admin/` passes one guard, the
//! single place where the cluster key is checked. Every request but the admin API passes the
//! node's [`Gate`](crate::transport::Gate) first, so that a partition or stall ordered by `facto chaos`
//! cuts the node off while the campaign can still heal it.

mod answers;
mod connections;
mod forwards;
mod request_head;
mod slots;
mod view;

use crate::api::{
    self, AdminResponse, CheckpointQuery, CheckpointWrite, DisruptRequest, ElectionEnvelope, ErrorBody, JobInfo,
    RootQuery, SubmitRequest,
};
use crate::checkpoint::{decode_facts, encode_facts};
use crate::node::{Event, Handle, Input, JobsQuery, Refusal, Routed, WorkRefused};
use crate::node_core::{validate, worker};
use crate::transport::client::{
    CallError, FORWARDED_HEADER, KEY_HEADER, PROTOCOL_HEADER, REQUEST_ID_HEADER, SETTINGS_HEADER,
};
use crate::transport::gate::{Gate, Passage, DISRUPTION_MS_MAX};
use crate::transport::stream::{Stream, Tcp};
use crate::transport::tls::{identity_of, Identity};
use async_std::io::ReadExt;
use async_std::net::TcpListener;
use facto_elections::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// Largest client request body (a job is `{"n": ...}`).
const CLIENT_BODY_BYTES_MAX: u64 = 64 * 1024;
/// How long a crashing node waits for its answer to `POST /admin/crash` to leave.
const CRASH_AFTER_MS: u64 = 50;
/// Longest idempotency key a client may attach to a submission.
const REQUEST_KEY_BYTES_MAX: usize = 128;
/// Largest internal request body (a batch of partial products of a large factorial).
const INTERNAL_BODY_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// How long a follower waits for the coordinator when it forwards a client request.
const FORWARD_TIMEOUT_MS: u64 = 5_000;
/// The longest a `GET /jobs/<id>?wait_ms=N` waits (well within [`FORWARD_TIMEOUT_MS`]).
const WAIT_MS_MAX: u64 = 2_000;

type App = tide::Server<Handle>;

/// The node's HTTP application. Over `tls`, certificates decide who may call what: the
/// internal routes need a member's, the admin routes an admin client's.
pub fn app(handle: Handle, cluster_key: Option<String>, tls: bool) -> App {
    let mut app = tide::with_state(handle.clone());
    app.with(EchoRequestId);
    app.with(CountRequests);
    app.with(GateGuard);
    app.with(ProtocolGuard);
    app.at("/status").get(status);
    app.at("/metrics").get(metrics);
    app.at("/").get(view::page);
    app.at("/view.js").get(view::script);
    app.at("/view.css").get(view::style);
    app.at("/cluster").get(view::cluster);
    let limit = ClientLimit::default();
    app.at("/jobs").with(limit.clone()).post(submit).get(list_jobs);
    app.at("/jobs/:id").with(limit).get(get_job);

    let mut admin = tide::with_state(handle.clone());
    if tls {
        admin.with(CertificateGuard::Admin);
    } else {
        admin.with(KeyGuard { key: cluster_key.clone(), required: true });
    }
    admin.at("/crash").post(crash);
    admin.at("/stall").post(stall);
    admin.at("/partition").post(partition);
    admin.at("/heal").post(heal);
    app.at("/admin").nest(admin);

    let mut internal = tide::with_state(handle);
    if tls {
        internal.with(CertificateGuard::Member);
    }
    internal.with(KeyGuard { key: cluster_key, required: false });
    internal.with(SettingsGuard);
    internal.at("/election").post(election);
    internal.at("/work").post(work);
    internal.at("/checkpoint").post(write_checkpoint);
    internal.at("/checkpoint/query").post(read_checkpoint);
    internal.at("/checkpoint/root").post(read_root);
    app.at("/internal").nest(internal);
    app
}

/// Accepts connections with TCP_NODELAY set (tide's own listener leaves Nagle on, which
/// costs ~40-88 ms per small request on loopback) and serves each with the tide app, over
/// TLS when the node has a `tls` configuration.
pub async fn serve(listener: TcpListener, app: App, tls: Option<std::sync::Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(futures_rustls::TlsAcceptor::from);
    let connections = connections::Connections::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("accept failed: {e}");
                async_std::task::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let place = connections.open();
        let (app, acceptor) = (app.clone(), acceptor.clone());
        async_std::task::spawn(async move {
            if let Some((stream, identity)) = handshake(stream, acceptor, &app, place.over_limit).await {
                serve_connection(stream, identity, app, place).await;
            }
        });
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Whether a new connection's first byte opens a TLS handshake (a plain HTTP request there
/// gets a 400 in words instead of a closed connection).
async fn starts_tls(tcp: &async_std::net::TcpStream, timeout_ms: u64) -> bool {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    let peeked = async_std::future::timeout(Duration::from_millis(timeout_ms), tcp.peek(&mut first)).await;
    matches!(peeked, Ok(Ok(1))) && first[0] == TLS_HANDSHAKE_RECORD
}

/// The connection as served, and who its certificate names (none over plain HTTP, or for a
/// TLS client that presented none). A connection past the limit gets the shorter time a
/// connection there gets to show it is a peer's. A failed handshake (no certificate of the cluster's CA,
/// an expired one, not TLS at all) is counted and closes the connection.
async fn handshake(
    tcp: async_std::net::TcpStream,
    acceptor: Option<futures_rustls::TlsAcceptor>,
    app: &App,
    over_limit: bool,
) -> Option<(Stream, Option<Identity>)> {
    let timeout_ms = if over_limit { OVER_LIMIT_HEAD_TIMEOUT_MS } else { HANDSHAKE_TIMEOUT_MS };
    let Some(acceptor) = acceptor else { return Some((Stream::plain(tcp), None)) };
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    if !starts_tls(&tcp, timeout_ms).await {
        app.state().metrics.tls_refused();
        let why = "this member speaks only HTTPS (mutual TLS): call https:// with the cluster's CA";
        // The head is read first: a socket closed with unread bytes resets, and the client
        // would lose the answer.
        let mut plain = request_head::Connection::new(Stream::plain(tcp));
        let _ = plain.next_head("", OVER_LIMIT_HEAD_TIMEOUT_MS).await;
        plain.refuse(400, "Bad Request", why, None).await;
        return None;
    }
    let accepted = async_std::future::timeout(Duration::from_millis(timeout_ms), acceptor.accept(Tcp(tcp))).await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            app.state().metrics.tls_refused();
            log::debug!("TLS handshake with {peer} failed: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let identity = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).and_then(|c| identity_of(c));
    Some((Stream::tls(tls), identity))
}

/// How long a client may take to send its first request head.
const FIRST_HEAD_TIMEOUT_MS: u64 = 10_000;
/// How long a connection past the limit may take to show it is a peer's.
const OVER_LIMIT_HEAD_TIMEOUT_MS: u64 = 1_000;
/// How long an idle keep-alive connection stays open between requests.
const KEEP_ALIVE_IDLE_MS: u64 = 60_000;

/// Serves one connection request by request; each head is read (and its limits answered)
/// before async-h1 decodes it.
async fn serve_connection(stream: Stream, identity: Option<Identity>, app: App, place: connections::Place) {
    let tcp = stream.tcp();
    // Past the connection limit only peers are served: over TLS, callers whose certificate
    // names a member (a request target is the caller's to choose).
    let peer_certified = matches!(identity, Some(Identity::Member(_)));
    let over_tls = matches!(stream, Stream::Tls(_));
    let local_addr = tcp.local_addr().ok().map(|a| a.to_string());
    let peer_addr = tcp.peer_addr().ok().map(|a| a.to_string());
    let host = local_addr.clone().unwrap_or_default();
    let mut connection = request_head::Connection::new(stream);
    let answer = connection.clone();
    let mut server = async_h1::server::Server::new(connection.clone(), move |mut req| {
        let (app, answer) = (app.clone(), answer.clone());
        req.set_local_addr(local_addr.clone());
        req.set_peer_addr(peer_addr.clone());
        if let Some(identity) = &identity {
            req.ext_mut().insert(identity.clone());
        }
        async move {
            let res: tide::http::Response = app.respond(req).await?;
            if res.header("Connection").is_some_and(|c| c.as_str().eq_ignore_ascii_case("close")) {
                answer.stop_reading();
            }
            Ok(res)
        }
    });
    let mut timeout_ms = if place.over_limit { OVER_LIMIT_HEAD_TIMEOUT_MS } else { FIRST_HEAD_TIMEOUT_MS };
    loop {
        match connection.next_head(&host, timeout_ms).await {
            request_head::Head::Ready => {}
            request_head::Head::Closed => return,
            request_head::Head::TooLarge(status, reason) => {
                let why = format!("request head over {} bytes", request_head::HEAD_BYTES_MAX);
                return connection.refuse(status, reason, &why, None).await;
            }
        }
        let peer =
            if over_tls { peer_certified } else { connection.target().is_some_and(|t| t.starts_with("/internal/")) };
        if place.over_limit && !peer {
            let why = "too many open connections on this member: retry in 1 s";
            return connection.refuse(429, "Too Many Requests", why, Some(1)).await;
        }
        match server.accept_one().await {
            Ok(async_h1::server::ConnectionStatus::KeepAlive) => timeout_ms = KEEP_ALIVE_IDLE_MS,
            Ok(_) => return,
            Err(e) => return log::debug!("connection closed with an error: {e}"),
        }
    }
}

/// Client requests (`/jobs...`) a member serves at once; beyond, 429 with `Retry-After`.
/// Long-polls count: each holds a place until its answer leaves.
const CLIENT_REQUESTS_MAX: usize = 8_192;

/// Bounds the client work in flight on this member.
#[derive(Clone)]
struct ClientLimit(slots::Slots);

impl Default for ClientLimit {
    fn default() -> ClientLimit {
        ClientLimit(slots::Slots::new(CLIENT_REQUESTS_MAX))
    }
}

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for ClientLimit {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let Some(_slot) = self.0.take() else {
            return Ok(busy("too many client requests on this member; retry in 1 s"));
        };
        Ok(next.run(req).await)
    }
}

/// 429 with `Retry-After: 1`: come back shortly, nothing is wrong.
fn busy(why: &str) -> Response {
    let mut res = error(StatusCode::TooManyRequests, why);
    res.insert_header("Retry-After", "1");
    res
}

/// The single check in front of every internal and admin endpoint. Endpoints that
/// `required` a key (the admin API) are disabled when the node has none: a cluster started
/// without a key cannot be crashed by whoever reaches it.
struct KeyGuard {
    key: Option<String>,
    required: bool,
}

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for KeyGuard {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        if self.required && self.key.is_none() {
            return Ok(error(StatusCode::Forbidden, "admin endpoints are disabled: the node has no --cluster-key"));
        }
        if authorized(self.key.as_deref(), req.header(KEY_HEADER).map(|v| v.as_str())) {
            Ok(next.run(req).await)
        } else {
            Ok(error(StatusCode::Unauthorized, "missing or wrong cluster key"))
        }
    }
}

/// Refuses (400, naming both versions) a request from a facto build of another protocol.
/// Requests that say none (curl, a browser) are served; peers' settings are checked as a
/// whole by [`SettingsGuard`].
struct ProtocolGuard;

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for ProtocolGuard {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let theirs = req.header(PROTOCOL_HEADER).map(|v| v.as_str().trim().to_string());
        match theirs.filter(|_| !req.url().path().starts_with("/internal/")) {
            Some(theirs) if theirs != crate::config::PROTOCOL_VERSION.to_string() => {
                let why = format!(
                    "protocol versions differ: this member speaks {}, the caller {theirs}; use a facto build of protocol {}",
                    crate::config::PROTOCOL_VERSION,
                    crate::config::PROTOCOL_VERSION
                );
                Ok(error(StatusCode::BadRequest, &why))
            }
            _ => Ok(next.run(req).await),
        }
    }
}

/// Over TLS, who may call a group of routes: its caller's certificate must name a member
/// (and the member its request says it comes from), or an admin client.
enum CertificateGuard {
    Member,
    Admin,
}

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for CertificateGuard {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let identity = req.ext::<Identity>();
        let refusal = match (self, identity) {
            (CertificateGuard::Admin, Some(Identity::Client { admin: true, .. })) => None,
            (CertificateGuard::Admin, _) => {
                Some(("not_admin", "the admin API needs an admin client certificate".into()))
            }
            (CertificateGuard::Member, Some(Identity::Member(id))) => certified_member(&req, *id),
            (CertificateGuard::Member, other) => {
                let presented = other.map_or("none".to_string(), |i| format!("the certificate of {i}"));
                Some((
                    "no_member_certificate",
                    format!("internal routes need a member certificate; the caller presented {presented}"),
                ))
            }
        };
        match refusal {
            None => Ok(next.run(req).await),
            Some((reason, why)) => Ok(identity_refused(&req, reason, &why)),
        }
    }
}

/// Whether member `id` (as its certificate names it) may send this request: it is a peer of
/// this node, and the request says it comes from `id`.
fn certified_member(req: &Request<Handle>, id: NodeId) -> Option<(&'static str, String)> {
    let handle = req.state();
    if let Err(why) = validate::sender(&handle.config.members, handle.config.id, id) {
        return Some(("not_a_peer", format!("the certificate of member {id}: {why}")));
    }
    let said = req.header(SETTINGS_HEADER).and_then(|v| validate::sender_in_settings(v.as_str()));
    match said {
        Some(from) if from == id => None,
        Some(from) => Some(("impersonation", format!("member {id}'s certificate cannot speak for member {from}"))),
        None => Some(("impersonation", format!("member {id}'s request does not say it comes from member {id}"))),
    }
}

/// 403 for a caller whose certificate does not allow the request; counted, and logged once
/// in a while under the member the certificate names.
fn identity_refused(req: &Request<Handle>, reason: &'static str, why: &str) -> Response {
    let handle = req.state();
    handle.metrics.identity_refused(reason);
    if let Some(Identity::Member(id)) = req.ext::<Identity>() {
        handle.refusals.note(*id, "a request", why);
    } else {
        log::debug!("refused {}: {why}", req.url().path());
    }
    error(StatusCode::Forbidden, why)
}

/// A peer message's sender is another member, and over TLS the one its certificate names.
fn check_sender(req: &Request<Handle>, from: NodeId) -> Result<(), Response> {
    let handle = req.state();
    validate::sender(&handle.config.members, handle.config.id, from)
        .map_err(|why| error(StatusCode::BadRequest, &why))?;
    match req.ext::<Identity>() {
        Some(Identity::Member(id)) if *id != from => {
            let why = format!("member {id}'s certificate cannot speak for member {from}");
            Err(identity_refused(req, "impersonation", &why))
        }
        _ => Ok(()),
    }
}

/// Refuses (409) a peer's request that does not carry this node's cluster settings: a member
/// started with another algorithm, `--max-n` or member list, or of another protocol, can
/// neither vote, nor gather, nor hand out work here.
struct SettingsGuard;

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for SettingsGuard {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let handle = req.state();
        let theirs = req.header(SETTINGS_HEADER).map(|v| v.as_str());
        match validate::shared_settings(handle.config.id, &handle.settings, theirs) {
            Ok(()) => Ok(next.run(req).await),
            Err(why) => {
                // Logged under the sender's id only if that is a member: ids in a refused
                // header are not to be trusted with a log entry each.
                let sender = theirs.and_then(validate::sender_in_settings);
                let sender = sender.filter(|&id| handle.config.members.addr(id).is_some()).unwrap_or(0);
                handle.refusals.note(sender, "a request", &why);
                Ok(error(StatusCode::Conflict, &why))
            }
        }
    }
}

/// Counts every request by route template and status for `/metrics` (never by raw path:
/// job ids would make a label without bound).
struct CountRequests;

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for CountRequests {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let (route, metrics) = (route_of(req.url().path()), req.state().metrics.clone());
        let res = next.run(req).await;
        metrics.http_request(route, u16::from(res.status()));
        Ok(res)
    }
}

/// The route template a path belongs to.
fn route_of(path: &str) -> &'static str {
    const ROUTES: [&str; 16] = [
        "/",
        "/status",
        "/metrics",
        "/cluster",
        "/jobs",
        "/admin/crash",
        "/admin/stall",
        "/admin/partition",
        "/admin/heal",
        "/internal/election",
        "/internal/work",
        "/internal/checkpoint",
        "/internal/checkpoint/query",
        "/internal/checkpoint/root",
        "/view.js",
        "/view.css",
    ];
    if let Some(route) = ROUTES.iter().find(|r| **r == path) {
        return route;
    }
    match path.strip_prefix("/jobs/") {
        Some(rest) if rest.ends_with("/digits") => "/jobs/:id/digits",
        Some(_) => "/jobs/:id",
        None => "other",
    }
}

/// `GET /metrics`: Prometheus text exposition (OpenMetrics); read-only, no key.
async fn metrics(req: Request<Handle>) -> tide::Result {
    let handle = req.state();
    let Some(status) = handle.status(0).await else { return Ok(unavailable()) };
    let text = handle.metrics.render(&status);
    let mut res = Response::new(StatusCode::Ok);
    res.set_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8".parse::<tide::http::Mime>()?);
    res.set_body(text);
    Ok(res)
}

/// Echoes the caller's request id, so that it can tell its answer from a late answer to an
/// earlier request on the same pooled connection.
struct EchoRequestId;

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for EchoRequestId {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let id = req.header(REQUEST_ID_HEADER).map(|v| v.as_str().to_string());
        let mut res = next.run(req).await;
        if let Some(id) = id {
            res.insert_header(REQUEST_ID_HEADER, id);
        }
        Ok(res)
    }
}

/// Holds requests while the node is stalled and drops peer traffic while it is partitioned.
/// The admin API always passes, so a campaign can heal what it broke.
struct GateGuard;

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for GateGuard {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let path = req.url().path();
        if path.starts_with("/admin/") {
            return Ok(next.run(req).await);
        }
        let peer_traffic = path.starts_with("/internal/") || req.header(FORWARDED_HEADER).is_some();
        let gate = req.state().gate.clone();
        if gate.pass(peer_traffic).await == Passage::Dropped {
            // The sender gave up long ago; this answer only closes the connection.
            return Ok(error(StatusCode::ServiceUnavailable, "partitioned"));
        }
        let res = next.run(req).await;
        // A stall or partition that began while the request was being handled holds or
        // drops its answer too.
        if gate.pass(peer_traffic).await == Passage::Dropped {
            return Ok(error(StatusCode::ServiceUnavailable, "partitioned"));
        }
        Ok(res)
    }
}

/// With a key configured, internal requests must carry it. Keys are compared as keyed
/// hashes (SipHash with a per-process random key): the time taken depends neither on how
/// much of a guess matches nor on the real key's length; two different keys pass only if
/// their 64-bit hashes collide, which a guesser cannot aim for without the process's key.
fn authorized(expected: Option<&str>, presented: Option<&str>) -> bool {
    match expected {
        None => true,
        Some(expected) => presented.is_some_and(|p| constant_time_eq(&digest(expected), &digest(p))),
    }
}

fn digest(key: &str) -> [u8; 8] {
    use std::hash::BuildHasher;
    static HASHER: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    HASHER.get_or_init(Default::default).hash_one(key.as_bytes()).to_le_bytes()
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
fn constant_time_eq(a: &[u8; 8], b: &[u8; 8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut res = Response::new(status);
    match tide::Body::from_json(body) {
        Ok(b) => res.set_body(b),
        Err(e) => return error(StatusCode::InternalServerError, &e.to_string()),
    }
    res
}

/// A 200 answer whose body is a [`crate::frame`].
fn frame_response(frame: Vec<u8>) -> Response {
    bytes_response(frame, crate::frame::FRAME_CONTENT_TYPE)
}

/// A 200 answer with a body already encoded as `mime`.
fn bytes_response(bytes: Vec<u8>, mime: impl Into<tide::http::Mime>) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_bytes(bytes));
    res.set_content_type(mime);
    res
}

fn error(status: StatusCode, message: &str) -> Response {
    error_body(status, ErrorBody { error: message.to_string(), known_epoch: None })
}

/// 409 to a peer's request this node refused, with the epoch it knows.
fn refused(refusal: &Refusal) -> Response {
    let body = ErrorBody { error: refusal.why.clone(), known_epoch: Some(refusal.known_epoch) };
    error_body(StatusCode::Conflict, body)
}

fn error_body(status: StatusCode, body: ErrorBody) -> Response {
    let mut res = Response::new(status);
    res.set_body(serde_json::to_value(body).unwrap_or_default());
    res
}

/// Reads and decodes a JSON body of at most `limit` bytes; any failure is a 400 answer.
async fn read_json<T: DeserializeOwned>(req: &mut Request<Handle>, limit: u64) -> Result<T, Response> {
    let bytes = read_body(req, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BadRequest, &format!("malformed JSON: {e}")))
}

/// How long a client's body may take to arrive (a body shorter than its Content-Length
/// would otherwise hold the request forever) ...
const CLIENT_BODY_TIMEOUT_MS: u64 = 10_000;
/// ... and a peer's, which can be tens of megabytes.
const INTERNAL_BODY_TIMEOUT_MS: u64 = 60_000;

/// Reads a body of at most `limit` bytes; any failure is a 400 answer, a body that does not
/// arrive in time a 408.
async fn read_body(req: &mut Request<Handle>, limit: u64) -> Result<Vec<u8>, Response> {
    if req.len().is_some_and(|len| len as u64 > limit) {
        return Err(too_large(limit));
    }
    let timeout_ms = if limit > CLIENT_BODY_BYTES_MAX { INTERNAL_BODY_TIMEOUT_MS } else { CLIENT_BODY_TIMEOUT_MS };
    let mut bytes = Vec::new();
    let mut body = req.take_body().take(limit + 1);
    async_std::future::timeout(Duration::from_millis(timeout_ms), body.read_to_end(&mut bytes))
        .await
        .map_err(|_| error(StatusCode::RequestTimeout, &format!("the body did not arrive within {timeout_ms} ms")))?
        .map_err(|e| error(StatusCode::BadRequest, &format!("unreadable body: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// 413 for a body over `limit`, closing the connection so the rest of it is never read.
fn too_large(limit: u64) -> Response {
    let mut res = error(StatusCode::PayloadTooLarge, &format!("body larger than {limit} bytes"));
    res.insert_header("Connection", "close");
    res
}

/// 503 while an election is under way (no member is known to lead), with `Retry-After`.
fn unavailable() -> Response {
    retry_later("no coordinator is known: an election is under way; retry in 1 s")
}

/// How long a client request may wait for this node to finish taking over: gathering takes
/// at most 2 s.
const TAKEOVER_WAIT_MS: u64 = 3_000;

/// 503 with `Retry-After: 1` and the true reason.
fn retry_later(why: &str) -> Response {
    let mut res = error(StatusCode::ServiceUnavailable, why);
    res.insert_header("Retry-After", "1");
    res
}

/// Asks the runtime; a request held because this node is taking over waits at most
/// [`TAKEOVER_WAIT_MS`], then gets 503 saying so.
async fn ask_within_takeover<T>(
    handle: &Handle,
    ask: impl std::future::Future<Output = Option<T>>,
) -> Result<Option<T>, Response> {
    futures::pin_mut!(ask);
    if let Ok(answer) = async_std::future::timeout(Duration::from_millis(TAKEOVER_WAIT_MS), &mut ask).await {
        return Ok(answer);
    }
    // Only a takeover is cut short: any other answer (a job made durable on a slow peer)
    // comes when it comes.
    if handle.taking_over.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(retry_later(&format!("node {} is taking over as coordinator; retry in 1 s", handle.config.id)));
    }
    Ok(ask.await)
}

/// How long a client request that finds no coordinator waits for the election under way
/// to end before it gets 503: an election takes 0.1-0.3 s, and a follower that merely
/// missed a few heartbeats (as a burst of hundreds of clients on a small machine can cause) knows its
/// coordinator again sooner. Asking again is safe: "no coordinator" changed nothing.
const ELECTION_WAIT_MS: u64 = 1_000;
const ELECTION_POLL_MS: u64 = 20;

/// [`ask_within_takeover`], asked again while no coordinator is known, for at most
/// [`ELECTION_WAIT_MS`].
async fn ask_through_election<T, F, Fut>(handle: &Handle, ask: F) -> Result<Option<Routed<T>>, Response>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Routed<T>>>,
{
    let deadline = std::time::Instant::now() + Duration::from_millis(ELECTION_WAIT_MS);
    loop {
        let answer = ask_within_takeover(handle, ask()).await?;
        if !matches!(answer, Some(Routed::NoLeader)) || std::time::Instant::now() >= deadline {
            return Ok(answer);
        }
        async_std::task::sleep(Duration::from_millis(ELECTION_POLL_MS)).await;
    }
}

/// Answers a forwarded call's outcome as this node's own.
fn relay<T: Serialize>(ok_status: StatusCode, result: Result<T, CallError>) -> Response {
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

/// Jobs `/status` lists unless asked (`?jobs=N`), and the most it lists.
pub const STATUS_JOBS_DEFAULT: usize = 20;
const STATUS_JOBS_MAX: usize = 1_000;
/// Jobs `GET /jobs` lists unless asked (`?limit=N`), and the most it lists.
const LIST_JOBS_DEFAULT: usize = 100;
const LIST_JOBS_MAX: usize = 1_000;

/// `GET /status[?jobs=N]`: the node, with the coordinator's N newest jobs and its counts.
async fn status(req: Request<Handle>) -> tide::Result {
    let jobs = match count_param(&req, "jobs", STATUS_JOBS_DEFAULT, STATUS_JOBS_MAX) {
        Ok(n) => n,
        Err(res) => return Ok(res),
    };
    Ok(match req.state().status(jobs).await {
        Some(s) => json(StatusCode::Ok, &s),
        None => unavailable(),
    })
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

async fn submit(mut req: Request<Handle>) -> tide::Result {
    let body: SubmitRequest = match read_json(&mut req, CLIENT_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    let handle = req.state();
    let max_n = handle.config.max_n;
    if body.n > max_n {
        return Ok(error(StatusCode::BadRequest, &format!("n = {} is above this cluster's --max-n {max_n}", body.n)));
    }
    if body.request.as_ref().is_some_and(|r| r.len() > REQUEST_KEY_BYTES_MAX) {
        return Ok(error(StatusCode::BadRequest, &format!("request is longer than {REQUEST_KEY_BYTES_MAX} bytes")));
    }
    let forwarded = req.header(FORWARDED_HEADER).is_some();
    let answer = match ask_through_election(handle, || handle.submit(body.n, body.request.clone())).await {
        Ok(answer) => answer,
        Err(res) => return Ok(res),
    };
    Ok(match answer {
        Some(Routed::Here(job)) => json(StatusCode::Accepted, &job),
        Some(Routed::Leader(addr)) if !forwarded => {
            let timeout = Duration::from_millis(FORWARD_TIMEOUT_MS);
            let result: Result<JobInfo, _> =
                handle.client.post(&addr, "/jobs", &body, timeout, &[(FORWARDED_HEADER, "1")]).await;
            relay(StatusCode::Accepted, result)
        }
        Some(Routed::Failed(why)) => error(StatusCode::ServiceUnavailable, &why),
        Some(Routed::Refused(why)) => error(StatusCode::Conflict, &why),
        Some(Routed::Busy(why)) => busy(&why),
        _ => unavailable(),
    })
}

/// `GET /jobs[?limit=N&before=ID]`: the N newest jobs (submitted before job ID), oldest
/// first; a page of the history, never all of it.
async fn list_jobs(req: Request<Handle>) -> tide::Result {
    let limit = match count_param(&req, "limit", LIST_JOBS_DEFAULT, LIST_JOBS_MAX) {
        Ok(n) => n,
        Err(res) => return Ok(res),
    };
    let before = req.url().query_pairs().find(|(k, _)| k == "before").map(|(_, v)| v.to_string());
    jobs(req, JobsQuery::Latest { limit, before }, 0).await
}

/// `GET /jobs/<id>[?wait_ms=N]`: with `wait_ms`, the answer waits up to N ms (at most
/// [`WAIT_MS_MAX`]) for the job's result, so a client learns of it at once without polling.
async fn get_job(req: Request<Handle>) -> tide::Result {
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
        JobsQuery::Latest { .. } => None,
    };
    let waited = match &id {
        Some(id) if wait_ms > 0 => {
            async_std::future::timeout(Duration::from_millis(wait_ms), handle.job_result(id.clone()))
                .await
                .ok()
                .flatten()
        }
        _ => None,
    };
    // Not done in time, or this node stopped coordinating meanwhile: the job as it stands.
    let answer = match waited {
        Some(answer) => Some(answer),
        None => match ask_through_election(handle, || handle.jobs(query.clone())).await {
            Ok(answer) => answer,
            Err(res) => return Ok(res),
        },
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
        // One hop only: two nodes that each think the other leads must not bounce it. The
        // answer is passed on as it came, without decoding it.
        Some(Routed::Leader(addr)) if req.header(FORWARDED_HEADER).is_none() => {
            static FORWARDS: std::sync::LazyLock<forwards::Forwards> = std::sync::LazyLock::new(Default::default);
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

async fn election(mut req: Request<Handle>) -> tide::Result {
    let envelope: ElectionEnvelope = match read_json(&mut req, CLIENT_BODY_BYTES_MAX).await {
        Ok(e) => e,
        Err(res) => return Ok(res),
    };
    let handle = req.state();
    if let Err(res) = check_sender(&req, envelope.from) {
        return Ok(res);
    }
    let known = handle.known_epoch.load(std::sync::atomic::Ordering::Relaxed);
    if let Err(why) = validate::epoch_ahead(known, envelope.msg.epoch()) {
        handle.refusals.note(envelope.from, "an election message", &why);
        return Ok(error(StatusCode::Conflict, &why));
    }
    handle.send(Event::Input(Input::Election { from: envelope.from, msg: envelope.msg }));
    Ok(Response::new(StatusCode::NoContent))
}

/// `POST /internal/work`: a frame of tasks; answers a frame of their products.
async fn work(mut req: Request<Handle>) -> tide::Result {
    let bytes = match read_body(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    let handle = req.state().clone();
    let max_n = handle.config.max_n;
    let decoded = async_std::task::spawn_blocking(move || {
        let (from, epoch, tasks) = api::decode_work(&bytes)?;
        tasks.iter().try_for_each(|(_, task)| worker::check(task, max_n))?;
        Ok::<_, String>((from, epoch, tasks))
    })
    .await;
    let (from, epoch, tasks) = match decoded {
        Ok(d) => d,
        Err(why) => return Ok(error(StatusCode::BadRequest, &why)),
    };
    if let Err(res) = check_sender(&req, from) {
        return Ok(res);
    }
    Ok(match handle.work(from, epoch, tasks).await {
        Ok(answer) => frame_response(answer),
        Err(WorkRefused::Fenced(refusal)) => {
            handle.refusals.note(from, "work", &refusal.why);
            refused(&refusal)
        }
        Err(WorkRefused::Failed(why)) => error(StatusCode::InternalServerError, &why),
    })
}

/// `POST /admin/crash`: answers, then ends the process abruptly, as a crash would.
async fn crash(req: Request<Handle>) -> tide::Result {
    let id = req.state().config.id;
    async_std::task::spawn(async {
        // Long enough for the answer to leave; a crash never waits for anything else.
        async_std::task::sleep(Duration::from_millis(CRASH_AFTER_MS)).await;
        crate::node::faults::crash("an admin request");
    });
    Ok(json(StatusCode::Accepted, &AdminResponse { node: id, fault: "crash".into(), duration_ms: None }))
}

/// `POST /admin/stall {"duration_ms": N}`: holds every request and reply for N ms.
async fn stall(req: Request<Handle>) -> tide::Result {
    disrupt(req, "stall", Gate::stall).await
}

/// `POST /admin/partition {"duration_ms": N}`: drops peer traffic both ways for N ms.
async fn partition(req: Request<Handle>) -> tide::Result {
    disrupt(req, "partition", Gate::partition).await
}

async fn disrupt(mut req: Request<Handle>, fault: &str, start: fn(&Gate, u64)) -> tide::Result {
    let body: DisruptRequest = match read_json(&mut req, CLIENT_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    if body.duration_ms > DISRUPTION_MS_MAX {
        return Ok(error(StatusCode::BadRequest, &format!("duration_ms is above {DISRUPTION_MS_MAX}")));
    }
    let handle = req.state();
    start(&handle.gate, body.duration_ms);
    log::warn!("admin request: {fault} for {} ms", body.duration_ms);
    let answer = AdminResponse { node: handle.config.id, fault: fault.into(), duration_ms: Some(body.duration_ms) };
    Ok(json(StatusCode::Ok, &answer))
}

/// `POST /admin/heal`: ends this node's stall and partition.
async fn heal(req: Request<Handle>) -> tide::Result {
    let handle = req.state();
    handle.gate.heal();
    log::warn!("admin request: heal");
    Ok(json(StatusCode::Ok, &AdminResponse { node: handle.config.id, fault: "heal".into(), duration_ms: None }))
}

/// `POST /internal/checkpoint`: a facts frame from the coordinator, acknowledged once the
/// facts are on this node's disk.
async fn write_checkpoint(mut req: Request<Handle>) -> tide::Result {
    let bytes = match read_body(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(res) => return Ok(res),
    };
    let decoded = async_std::task::spawn_blocking(move || decode_facts::<CheckpointWrite>(&bytes)).await;
    let (write, facts) = match decoded {
        Ok(d) => d,
        Err(why) => return Ok(error(StatusCode::BadRequest, &why)),
    };
    let handle = req.state();
    if let Err(res) = check_sender(&req, write.from) {
        return Ok(res);
    }
    Ok(match handle.apply_facts(write.from, write.epoch, facts).await {
        Ok(()) => Response::new(StatusCode::NoContent),
        Err(refusal) => {
            handle.refusals.note(write.from, "a checkpoint write", &refusal.why);
            refused(&refusal)
        }
    })
}

/// `POST /internal/checkpoint/query`: this node's facts, as a facts frame.
async fn read_checkpoint(mut req: Request<Handle>) -> tide::Result {
    let query: CheckpointQuery = match read_json(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(q) => q,
        Err(res) => return Ok(res),
    };
    let handle = req.state();
    if let Err(res) = check_sender(&req, query.from) {
        return Ok(res);
    }
    let facts = match handle.checkpoint(query.from, query.epoch, query.finished).await {
        Some(Ok(facts)) => facts,
        Some(Err(refusal)) => {
            handle.refusals.note(query.from, "a checkpoint query", &refusal.why);
            return Ok(refused(&refusal));
        }
        None => return Ok(unavailable()),
    };
    Ok(match async_std::task::spawn_blocking(move || encode_facts((), &facts)).await {
        Ok(frame) => frame_response(frame),
        Err(why) => error(StatusCode::InternalServerError, &why),
    })
}

/// `POST /internal/checkpoint/root`: a finished job's root product from this node's disk.
async fn read_root(mut req: Request<Handle>) -> tide::Result {
    let query: RootQuery = match read_json(&mut req, INTERNAL_BODY_BYTES_MAX).await {
        Ok(q) => q,
        Err(res) => return Ok(res),
    };
    let store = req.state().store.clone();
    let read = async_std::task::spawn_blocking(move || match store.root_fact(&query.job) {
        Ok(Some(root)) => encode_facts((), [&root]).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    })
    .await;
    Ok(match read {
        Ok(Some(frame)) => frame_response(frame),
        Ok(None) => error(StatusCode::NotFound, "this node does not hold that job's result"),
        Err(why) => error(StatusCode::InternalServerError, &why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_calls_need_the_key_only_when_one_is_set() {
        assert!(authorized(None, None));
        assert!(authorized(Some("k3y"), Some("k3y")));
        assert!(!authorized(Some("k3y"), None));
        assert!(!authorized(Some("k3y"), Some("k3z")));
        assert!(!authorized(Some("k3y"), Some("k3y ")));
    }
}
