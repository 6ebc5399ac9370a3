//! The answers and body reads every handler here shares: JSON, frame and error responses, and
//! request bodies read within a size limit and a deadline.

use crate::api::ErrorBody;
use crate::node::{Handle, Refusal};
use async_std::io::ReadExt;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// Largest client request body (a job is `{"n": ...}`).
pub(super) const CLIENT_BODY_BYTES_MAX: u64 = 64 * 1024;
/// Largest internal request body (a batch of partial products of a large factorial).
pub(super) const INTERNAL_BODY_BYTES_MAX: u64 = 512 * 1024 * 1024;

pub(super) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut res = Response::new(status);
    match tide::Body::from_json(body) {
        Ok(b) => res.set_body(b),
        Err(e) => return error(StatusCode::InternalServerError, &e.to_string()),
    }
    res
}

/// A 200 answer whose body is a [`crate::frame`].
pub(super) fn frame_response(frame: Vec<u8>) -> Response {
    bytes_response(frame, crate::frame::FRAME_CONTENT_TYPE)
}

/// A 200 answer with a body already encoded as `mime`.
pub(super) fn bytes_response(bytes: Vec<u8>, mime: impl Into<tide::http::Mime>) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_bytes(bytes));
    res.set_content_type(mime);
    res
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    error_body(status, ErrorBody { error: message.to_string(), known_epoch: None })
}

/// 409 to a peer's request this node refused, with the epoch it knows.
pub(super) fn refused(refusal: &Refusal) -> Response {
    let body = ErrorBody { error: refusal.why.clone(), known_epoch: Some(refusal.known_epoch) };
    error_body(StatusCode::Conflict, body)
}

fn error_body(status: StatusCode, body: ErrorBody) -> Response {
    let mut res = Response::new(status);
    res.set_body(serde_json::to_value(body).unwrap_or_default());
    res
}

/// Reads and decodes a JSON body of at most `limit` bytes; any failure is a 400 answer.
pub(super) async fn read_json<T: DeserializeOwned>(req: &mut Request<Handle>, limit: u64) -> Result<T, Response> {
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
pub(super) async fn read_body(req: &mut Request<Handle>, limit: u64) -> Result<Vec<u8>, Response> {
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
