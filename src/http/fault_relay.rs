//! `/cluster/faults/...`: the web view's fault buttons. The page may only call the member that
//! served it (its CSP is `default-src 'self'`), so that member relays each fault to the target
//! member's own admin API, with the cluster key the page sent. The relay adds no authority: it
//! checks the key as `/admin/` does and the target checks it again.
//!
//! Over TLS admins are named by certificate, and a relaying member would need an admin's
//! certificate itself: then any one member could crash every other, which a cluster of mutually
//! distrusting hosts must not allow. There the relay is refused with that reason, and `facto
//! chaos` with an admin certificate is the way to inject faults.

use super::guards::KeyGuard;
use super::respond::{error, json, read_json, CLIENT_BODY_BYTES_MAX};
use crate::api::{AdminResponse, DisruptRequest};
use crate::node::Handle;
use crate::transport::client::{CallError, Client};
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// How long the relay waits for the target member's answer (admin calls pass a stall).
const RELAY_TIMEOUT_MS: u64 = 2_000;

/// The routes under `/cluster/faults`: `POST /members/<id>/crash|stall|partition` (stall and
/// partition take `{"duration_ms": N}`) and `POST /heal` (every member).
pub(super) fn routes(handle: Handle, cluster_key: Option<String>, tls: bool) -> tide::Server<Handle> {
    let mut faults = tide::with_state(handle);
    if tls {
        faults.at("/*").post(|_| async { Ok(refused_over_tls()) });
        return faults;
    }
    faults.with(KeyGuard { key: cluster_key.clone(), required: true });
    // Not the node's own client: that one passes the node's gate, and a partitioned member
    // must still be able to relay a heal.
    let client = Client::new(cluster_key);
    let to_one = client.clone();
    faults.at("/members/:id/:fault").post(move |req| relay_one(req, to_one.clone()));
    faults.at("/heal").post(move |req| heal_all(req, client.clone()));
    faults
}

fn refused_over_tls() -> Response {
    error(
        StatusCode::Forbidden,
        "fault buttons need a cluster key: this cluster names admins by certificate, and a member \
         relaying for one would need an admin's certificate itself; use `facto chaos` with FACTO_CERT",
    )
}

async fn relay_one(mut req: Request<Handle>, client: Client) -> tide::Result {
    let fault = req.param("fault").unwrap_or_default().to_string();
    let Some(addr) = req.param("id").ok().and_then(|id| id.parse::<u32>().ok()).and_then(|id| member(&req, id)) else {
        return Ok(error(StatusCode::NotFound, "no such member"));
    };
    let body = match fault.as_str() {
        "crash" => None,
        "stall" | "partition" => match read_json::<DisruptRequest>(&mut req, CLIENT_BODY_BYTES_MAX).await {
            Ok(body) => Some(body),
            Err(res) => return Ok(res),
        },
        _ => return Ok(error(StatusCode::NotFound, "faults are crash, stall and partition")),
    };
    let path = format!("/admin/{fault}");
    let answer: Result<AdminResponse, CallError> = match body {
        Some(body) => client.post(&addr, &path, &body, relay_timeout(), &[]).await,
        None => client.post(&addr, &path, &(), relay_timeout(), &[]).await,
    };
    Ok(relayed(answer))
}

/// Heals every member (in parallel) and answers what each said; members that did not answer
/// are listed with the reason.
async fn heal_all(req: Request<Handle>, client: Client) -> tide::Result {
    let addrs: Vec<(u32, String)> = req.state().config.members.0.iter().map(|(&id, a)| (id, a.clone())).collect();
    let heals = addrs.into_iter().map(|(id, addr)| {
        let client = client.clone();
        async move {
            let answer: Result<AdminResponse, CallError> =
                client.post(&addr, "/admin/heal", &(), relay_timeout(), &[]).await;
            serde_json::json!({ "node": id, "healed": answer.is_ok(), "error": answer.err().map(|e| e.to_string()) })
        }
    });
    let answers = futures::future::join_all(heals).await;
    Ok(json(StatusCode::Ok, &answers))
}

fn member(req: &Request<Handle>, id: u32) -> Option<String> {
    req.state().config.members.0.get(&id).cloned()
}

fn relay_timeout() -> Duration {
    Duration::from_millis(RELAY_TIMEOUT_MS)
}

/// The target's answer as the page's: its own status and reason when it refused, 502 when it
/// did not answer.
fn relayed(answer: Result<AdminResponse, CallError>) -> Response {
    match answer {
        Ok(done) => json(StatusCode::Ok, &done),
        Err(CallError::Status { status, message, .. }) => {
            error(StatusCode::try_from(status).unwrap_or(StatusCode::BadGateway), &message)
        }
        Err(e) => error(StatusCode::BadGateway, &e.to_string()),
    }
}
