//! The middlewares: those every request passes (request id, counting, the gate, the protocol
//! version) and those in front of the client, admin and internal routes (the client limit,
//! the cluster key, certificates, cluster settings), with the checks peer handlers share.

use super::respond::error;
use super::slots;
use crate::node::Handle;
use crate::node_core::validate;
use crate::transport::client::{FORWARDED_HEADER, KEY_HEADER, PROTOCOL_HEADER, REQUEST_ID_HEADER, SETTINGS_HEADER};
use crate::transport::gate::Passage;
use crate::transport::tls::Identity;
use facto_elections::NodeId;
use tide::{Request, Response, StatusCode};

/// Client requests (`/jobs...`) a member serves at once; beyond, 429 with `Retry-After`.
/// Long-polls count: each holds a place until its answer leaves.
const CLIENT_REQUESTS_MAX: usize = 8_192;

/// Bounds the client work in flight on this member.
#[derive(Clone)]
pub(super) struct ClientLimit(slots::Slots);

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
pub(super) fn busy(why: &str) -> Response {
    let mut res = error(StatusCode::TooManyRequests, why);
    res.insert_header("Retry-After", "1");
    res
}

/// The single check in front of every internal and admin endpoint. Endpoints that
/// `required` a key (the admin API) are disabled when the node has none: a cluster started
/// without a key cannot be crashed by whoever reaches it.
pub(super) struct KeyGuard {
    pub(super) key: Option<String>,
    pub(super) required: bool,
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
pub(super) struct ProtocolGuard;

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
pub(super) enum CertificateGuard {
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
pub(super) fn check_sender(req: &Request<Handle>, from: NodeId) -> Result<(), Response> {
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
pub(super) struct SettingsGuard;

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
pub(super) struct CountRequests;

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
    const ROUTES: [&str; 21] = [
        "/",
        "/status",
        "/metrics",
        "/trace",
        "/cluster",
        "/cluster/trace",
        "/diagram.js",
        "/jobs",
        "/admin/crash",
        "/admin/stall",
        "/admin/partition",
        "/admin/heal",
        "/internal/election",
        "/internal/work",
        "/internal/decimal",
        "/internal/checkpoint",
        "/internal/checkpoint/query",
        "/internal/checkpoint/root",
        "/internal/jobs/wait",
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

/// Echoes the caller's request id, so that it can tell its answer from a late answer to an
/// earlier request on the same pooled connection.
pub(super) struct EchoRequestId;

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
pub(super) struct GateGuard;

#[tide::utils::async_trait]
impl tide::Middleware<Handle> for GateGuard {
    async fn handle(&self, req: Request<Handle>, next: tide::Next<'_, Handle>) -> tide::Result {
        let path = req.url().path();
        // Faults and their relay pass, so that a stalled member can still be healed.
        if path.starts_with("/admin/") || path.starts_with("/cluster/faults/") {
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
