//! Outgoing HTTP (surf). One pooled client per process with TCP_NODELAY: with surf's default
//! (Nagle on) a small request waits ~40-88 ms for a delayed ACK on loopback, which would make
//! every election timeout meaningless.

use super::gate::{Gate, Passage};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Why a call to a member failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, reset, or no reply within the timeout.
    #[error("{addr} unreachable: {why}")]
    Unreachable { addr: String, why: String },
    /// The member answered with an error status.
    #[error("{addr} answered {status}: {message}")]
    Status { addr: String, status: u16, message: String },
    /// The member answered something that is not the expected JSON.
    #[error("{addr} sent a malformed answer: {why}")]
    Malformed { addr: String, why: String },
}

/// A header that carries the cluster key on internal calls.
pub const KEY_HEADER: &str = "x-facto-key";
/// A header that marks a client request already forwarded by a follower (no second hop).
pub const FORWARDED_HEADER: &str = "x-facto-forwarded";

/// A shared, pooled HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: surf::Client,
    cluster_key: Option<String>,
    /// A node's client passes its gate: a partitioned node's calls get no answer.
    gate: Option<Arc<Gate>>,
}

impl Client {
    /// A client that sends `cluster_key` (if any) with every request.
    pub fn new(cluster_key: Option<String>) -> Client {
        let http = surf::Config::new()
            .set_tcp_no_delay(true)
            .set_http_keep_alive(true)
            .set_max_connections_per_host(16)
            // Every call sets its own deadline in `call`; this only bounds connection setup.
            .set_timeout(None)
            .try_into()
            .expect("the h1 client accepts this configuration");
        Client { http, cluster_key, gate: None }
    }

    /// A node's client: like [`Client::new`], and every call passes the node's `gate`.
    pub fn behind(cluster_key: Option<String>, gate: Arc<Gate>) -> Client {
        Client { gate: Some(gate), ..Client::new(cluster_key) }
    }

    /// `POST http://{addr}{path}` with a JSON body; decodes a JSON answer.
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<R, CallError> {
        let body =
            surf::Body::from_json(body).map_err(|e| CallError::Malformed { addr: addr.into(), why: e.to_string() })?;
        let mut req = self.http.post(format!("http://{addr}{path}")).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.call(addr, req, timeout).await
    }

    /// `GET http://{addr}{path}`; decodes a JSON answer.
    pub async fn get<R: DeserializeOwned>(&self, addr: &str, path: &str, timeout: Duration) -> Result<R, CallError> {
        let req = self.http.get(format!("http://{addr}{path}"));
        self.call(addr, req, timeout).await
    }

    async fn call<R: DeserializeOwned>(
        &self,
        addr: &str,
        mut req: surf::RequestBuilder,
        timeout: Duration,
    ) -> Result<R, CallError> {
        if let Some(key) = &self.cluster_key {
            req = req.header(KEY_HEADER, key.as_str());
        }
        let unreachable = |why: String| CallError::Unreachable { addr: addr.into(), why };
        let exchange = async {
            if let Some(gate) = &self.gate {
                if gate.pass(true).await == Passage::Dropped {
                    return Err(unreachable("this node is partitioned".into()));
                }
            }
            let mut res = req.await.map_err(|e| unreachable(e.to_string()))?;
            let status = u16::from(res.status());
            let bytes = res.body_bytes().await.map_err(|e| unreachable(e.to_string()))?;
            Ok::<_, CallError>((status, bytes))
        };
        let (status, bytes) = async_std::future::timeout(timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} ms", timeout.as_millis())))??;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<crate::api::ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(CallError::Status { addr: addr.into(), status, message });
        }
        let body = if bytes.is_empty() { b"null".as_slice() } else { &bytes };
        serde_json::from_slice(body).map_err(|e| CallError::Malformed { addr: addr.into(), why: e.to_string() })
    }
}
