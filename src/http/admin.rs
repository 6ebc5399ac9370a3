//! The admin API under `/admin/` that `facto chaos` calls: crash, stall, partition, heal.

use super::respond::{error, json, read_json, CLIENT_BODY_BYTES_MAX};
use crate::api::{AdminResponse, DisruptRequest};
use crate::node::Handle;
use crate::transport::gate::{Gate, DISRUPTION_MS_MAX};
use std::time::Duration;
use tide::{Request, StatusCode};

/// How long a crashing node waits for its answer to `POST /admin/crash` to leave.
const CRASH_AFTER_MS: u64 = 50;

/// `POST /admin/crash`: answers, then ends the process abruptly, as a crash would.
pub(super) async fn crash(req: Request<Handle>) -> tide::Result {
    let id = req.state().config.id;
    async_std::task::spawn(async {
        // Long enough for the answer to leave; a crash never waits for anything else.
        async_std::task::sleep(Duration::from_millis(CRASH_AFTER_MS)).await;
        crate::node::faults::crash("an admin request");
    });
    Ok(json(StatusCode::Accepted, &AdminResponse { node: id, fault: "crash".into(), duration_ms: None }))
}

/// `POST /admin/stall {"duration_ms": N}`: holds every request and reply for N ms.
pub(super) async fn stall(req: Request<Handle>) -> tide::Result {
    disrupt(req, "stall", Gate::stall).await
}

/// `POST /admin/partition {"duration_ms": N}`: drops peer traffic both ways for N ms.
pub(super) async fn partition(req: Request<Handle>) -> tide::Result {
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
pub(super) async fn heal(req: Request<Handle>) -> tide::Result {
    let handle = req.state();
    handle.gate.heal();
    log::warn!("admin request: heal");
    Ok(json(StatusCode::Ok, &AdminResponse { node: handle.config.id, fault: "heal".into(), duration_ms: None }))
}
