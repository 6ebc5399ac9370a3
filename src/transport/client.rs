//! Outgoing HTTP (surf). One pooled client per process with TCP_NODELAY: with surf's default
//! (Nagle on) a small request waits ~40-88 ms for a delayed ACK on loopback, which would make
//! every election timeout meaningless.

use super::gate::{Gate, Passage};
use super::resolver::Resolver;
use facto_elections::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a call to a member failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, reset, or no reply within the timeout.
    #[error("{addr} unreachable: {why}")]
    Unreachable { addr: String, why: String },
    /// The member answered with an error status (`known_epoch`: the epoch it knows, when it
    /// refused a request from a lower one).
    #[error("{addr} answered {status}: {message}")]
    Status { addr: String, status: u16, message: String, known_epoch: Option<u64> },
    /// The member answered something that is not the expected JSON.
    #[error("{addr} sent a malformed answer: {why}")]
    Malformed { addr: String, why: String },
}

/// A header that carries the cluster key on internal calls.
pub const KEY_HEADER: &str = "x-facto-key";
/// A header that carries a member's cluster settings and id on its calls
/// ([`crate::node_core::validate::shared_settings`]).
pub const SETTINGS_HEADER: &str = "x-facto-settings";
/// A header that carries a request's id; the server echoes it in the answer.
pub const REQUEST_ID_HEADER: &str = "x-facto-request";
/// How long an exchange whose caller gave up may still read its answer off the connection.
const DRAIN_MS: u64 = 10 * 60 * 1000;
/// Ids for [`REQUEST_ID_HEADER`], unique within this process.
static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// A header that carries the caller's protocol version ([`crate::config::PROTOCOL_VERSION`]): a
/// member of another refuses the request (400) naming both.
pub const PROTOCOL_HEADER: &str = "x-facto-protocol";

/// A header that marks a client request already forwarded by a follower (no second hop).
pub const FORWARDED_HEADER: &str = "x-facto-forwarded";

/// A shared, pooled HTTP client. Cheap to clone.
///
/// It holds two connection pools: one for data (work, checkpoints, client calls) and one for
/// control traffic ([`Client::control`]: elections and heartbeats), so that a heartbeat never
/// waits behind a multi-megabyte body on a pooled connection.
#[derive(Clone)]
pub struct Client {
    http: surf::Client,
    control_http: surf::Client,
    /// Calls go over TLS, to `https://` with the member's own name (its certificate names it).
    tls: bool,
    cluster_key: Option<String>,
    /// A node's client: its [`SETTINGS_HEADER`].
    settings: Option<String>,
    /// A node's client passes its gate: a partitioned node's calls get no answer.
    gate: Option<Arc<Gate>>,
    /// Bytes of request bodies sent and answer bodies received (every exchange between two
    /// nodes has one caller, so the sum over nodes counts each byte once).
    bytes_moved: Arc<AtomicU64>,
}

impl Client {
    /// A client that sends `cluster_key` (if any) with every request.
    pub fn new(cluster_key: Option<String>) -> Client {
        Client::connecting(cluster_key, None)
    }

    /// A client that calls over TLS with `tls` (trusting the cluster's CA, and presenting a
    /// certificate if it has one) when given, else plain HTTP.
    pub fn connecting(cluster_key: Option<String>, tls: Option<Arc<rustls::ClientConfig>>) -> Client {
        Client::trusting(cluster_key, tls, &HashMap::new())
    }

    /// [`Client::connecting`], and over TLS the server at each address of `members` must
    /// hold that member's certificate.
    fn trusting(
        cluster_key: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
        members: &HashMap<String, NodeId>,
    ) -> Client {
        let resolver = Arc::<Resolver>::default();
        let http = pool(tls.clone(), 16, &resolver, members.clone());
        let control_http = pool(tls.clone(), 4, &resolver, members.clone());
        Client {
            http,
            control_http,
            tls: tls.is_some(),
            cluster_key,
            settings: None,
            gate: None,
            bytes_moved: Arc::default(),
        }
    }

    /// Body bytes this client sent and received so far.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_moved.load(Ordering::Relaxed)
    }

    /// The same client on the control connections.
    pub fn control(&self) -> Client {
        Client { http: self.control_http.clone(), ..self.clone() }
    }

    /// A node's client: like [`Client::connecting`], every call passes the node's `gate` and
    /// says its cluster `settings`; over TLS each of the `members` must answer with its own
    /// certificate.
    pub fn behind(
        cluster_key: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
        members: &crate::config::Members,
        gate: Arc<Gate>,
        settings: String,
    ) -> Client {
        let members = members.0.iter().map(|(id, addr)| (addr.clone(), *id)).collect();
        Client { gate: Some(gate), settings: Some(settings), ..Client::trusting(cluster_key, tls, &members) }
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
        let bytes =
            serde_json::to_vec(body).map_err(|e| CallError::Malformed { addr: addr.into(), why: e.to_string() })?;
        self.bytes_moved.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut body = surf::Body::from_bytes(bytes);
        body.set_mime(surf::http::mime::JSON);
        let mut req = self.http.post(self.url(addr, path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.call(addr, req, timeout).await
    }

    /// `POST http://{addr}{path}` with a binary body (a [`crate::frame`]); returns the
    /// answer's bytes.
    pub async fn post_bytes(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<Vec<u8>, CallError> {
        self.bytes_moved.fetch_add(body.len() as u64, Ordering::Relaxed);
        let mut body = surf::Body::from_bytes(body);
        body.set_mime(crate::frame::FRAME_CONTENT_TYPE);
        let mut req = self.http.post(self.url(addr, path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.exchange(addr, req, timeout).await
    }

    /// `GET http://{addr}{path}`; decodes a JSON answer.
    pub async fn get<R: DeserializeOwned>(&self, addr: &str, path: &str, timeout: Duration) -> Result<R, CallError> {
        self.get_with(addr, path, timeout, &[]).await
    }

    /// [`Client::get`] with extra request headers.
    pub async fn get_with<R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<R, CallError> {
        let bytes = self.get_bytes_with(addr, path, timeout, headers).await?;
        decode_json(addr, &bytes)
    }

    /// [`Client::get_with`], returning the answer's bytes undecoded.
    pub async fn get_bytes_with(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<Vec<u8>, CallError> {
        let mut req = self.http.get(self.url(addr, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.exchange(addr, req, timeout).await
    }

    /// The URL of `path` on `addr`, named as configured: the connection layer looks the name
    /// up (off the runtime's threads), and over TLS checks the member's certificate against it.
    fn url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// One request whose answer is JSON.
    async fn call<R: DeserializeOwned>(
        &self,
        addr: &str,
        req: surf::RequestBuilder,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let bytes = self.exchange(addr, req, timeout).await?;
        decode_json(addr, &bytes)
    }

    /// One request: the answer's body once its status is a success.
    async fn exchange(&self, addr: &str, req: surf::RequestBuilder, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let (req, request_id) = self.with_headers(req);
        let unreachable = |why: String| CallError::Unreachable { addr: addr.into(), why };
        let gate = self.gate.clone();
        let exchange = async move {
            if let Some(gate) = &gate {
                if gate.pass(true).await == Passage::Dropped {
                    return Err("this node is partitioned".to_string());
                }
            }
            let mut res = req.await.map_err(|e| e.to_string())?;
            let status = u16::from(res.status());
            let echoed = res.header(REQUEST_ID_HEADER).map(|v| v.as_str().to_string());
            let bytes = res.body_bytes().await.map_err(|e| e.to_string())?;
            Ok((status, echoed, bytes))
        };
        // The exchange runs on its own task, which outlives a caller that stops waiting: it
        // reads the late answer off the pooled connection before the pool hands that
        // connection to another request. (Dropped mid-exchange, the connection would go back
        // to the pool with the answer still coming, and the next request on it would read
        // this one's answer as its own.)
        let drained = async_std::task::spawn(async_std::future::timeout(Duration::from_millis(DRAIN_MS), exchange));
        let (status, echoed, bytes) = match async_std::future::timeout(timeout, drained).await {
            Ok(Ok(answer)) => answer.map_err(unreachable)?,
            _ => return Err(unreachable(format!("no answer within {} ms", timeout.as_millis()))),
        };
        // A connection that fell out of step anyway (an answer later than DRAIN_MS) is
        // caught here: an answer to another request is never taken for this one's.
        if echoed.as_deref() != Some(request_id.as_str()) {
            return Err(unreachable(format!("the answer belongs to request {echoed:?}, not {request_id}")));
        }
        if !(200..300).contains(&status) {
            return Err(status_error(addr, status, &bytes));
        }
        self.bytes_moved.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// The headers every call carries; returns the request and its id.
    fn with_headers(&self, mut req: surf::RequestBuilder) -> (surf::RequestBuilder, String) {
        if let Some(settings) = &self.settings {
            req = req.header(SETTINGS_HEADER, settings.as_str());
        }
        if let Some(key) = &self.cluster_key {
            req = req.header(KEY_HEADER, key.as_str());
        }
        let request_id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed).to_string();
        req = req.header(REQUEST_ID_HEADER, request_id.as_str());
        req = req.header(PROTOCOL_HEADER, crate::config::PROTOCOL_VERSION.to_string().as_str());
        (req, request_id)
    }

    /// `GET path` whose answer's body is read by the caller as it arrives, not held whole
    /// (100,000,000! has 757 MB of digits): the response, once its status is a success and
    /// its headers came within `timeout`. Each read of the body needs a timeout of its own.
    pub async fn get_stream(&self, addr: &str, path: &str, timeout: Duration) -> Result<surf::Response, CallError> {
        let (req, request_id) = self.with_headers(self.http.get(self.url(addr, path)));
        let unreachable = |why: String| CallError::Unreachable { addr: addr.into(), why };
        let mut res = async_std::future::timeout(timeout, req)
            .await
            .map_err(|_| unreachable(format!("no answer within {} ms", timeout.as_millis())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let echoed = res.header(REQUEST_ID_HEADER).map(|v| v.as_str().to_string());
        if echoed.as_deref() != Some(request_id.as_str()) {
            return Err(unreachable(format!("the answer belongs to request {echoed:?}, not {request_id}")));
        }
        let status = u16::from(res.status());
        if !(200..300).contains(&status) {
            let bytes = async_std::future::timeout(timeout, res.body_bytes()).await.ok().and_then(Result::ok);
            return Err(status_error(addr, status, &bytes.unwrap_or_default()));
        }
        Ok(res)
    }
}

/// An error status's answer: the member's JSON error, or the start of whatever it sent.
fn status_error(addr: &str, status: u16, bytes: &[u8]) -> CallError {
    let (message, known_epoch) = match serde_json::from_slice::<crate::api::ErrorBody>(bytes) {
        Ok(e) => (e.error, e.known_epoch),
        Err(_) => (String::from_utf8_lossy(bytes).chars().take(200).collect(), None),
    };
    CallError::Status { addr: addr.into(), status, message, known_epoch }
}

impl CallError {
    /// The epoch a member that refused the call as stale knows.
    pub fn known_epoch(&self) -> Option<u64> {
        match self {
            CallError::Status { known_epoch, .. } => *known_epoch,
            _ => None,
        }
    }
}

/// An answer's JSON (an empty body reads as `null`).
fn decode_json<R: DeserializeOwned>(addr: &str, bytes: &[u8]) -> Result<R, CallError> {
    let body = if bytes.is_empty() { b"null".as_slice() } else { bytes };
    serde_json::from_slice(body).map_err(|e| CallError::Malformed { addr: addr.into(), why: e.to_string() })
}

/// A pool of at most `connections_per_host` keep-alive connections with TCP_NODELAY, over
/// TLS with `tls` when given (see `pool.rs`).
fn pool(
    tls: Option<Arc<rustls::ClientConfig>>,
    connections_per_host: usize,
    resolver: &Arc<Resolver>,
    members: HashMap<String, NodeId>,
) -> surf::Client {
    let connections = super::pool::Pool::new(tls, connections_per_host, resolver.clone(), members);
    surf::Config::new()
        .set_http_client(connections)
        // Every call sets its own deadline in `exchange`; the pool bounds connection setup.
        .set_timeout(None)
        .try_into()
        .expect("a client with its own connection layer accepts this configuration")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A keep-alive HTTP/1.1 server that answers every request with its path as a JSON
    /// string, echoing the request id (when `echo`); `/slow` is answered after `slow_ms`.
    fn serve(slow_ms: u64, echo: bool) -> String {
        serve_on("127.0.0.1:0", slow_ms, echo)
    }

    fn serve_on(bind: &str, slow_ms: u64, echo: bool) -> String {
        let listener = std::net::TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    loop {
                        let (mut path, mut id) = (String::new(), String::new());
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if path.is_empty() {
                                path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                            } else if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("x-facto-request:").filter(|_| echo)
                            {
                                id = v.trim().to_string();
                            }
                        }
                        if path == "/slow" {
                            std::thread::sleep(Duration::from_millis(slow_ms));
                        }
                        let body = format!("\"{path}\"");
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-facto-request: {id}\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if stream.write_all(format!("{head}{body}").as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Found by `facto chaos`: a caller that stopped waiting left its answer on a pooled
    /// connection, and the next request read it as its own (a 100! job was handed a 20!
    /// job's id, and its result).
    #[test]
    fn a_late_answer_is_never_taken_for_the_next_requests_answer() {
        let addr = serve(300, true);
        let client = Client::new(None);
        async_std::task::block_on(async {
            let slow: Result<String, _> = client.get(&addr, "/slow", Duration::from_millis(50)).await;
            assert!(matches!(slow, Err(CallError::Unreachable { .. })), "{slow:?}");
            for _ in 0..5 {
                let fast: Result<String, _> = client.get(&addr, "/fast", Duration::from_secs(2)).await;
                assert_eq!(fast, Ok("/fast".to_string()));
            }
        });
    }

    #[test]
    fn an_answer_that_does_not_echo_the_request_id_is_refused() {
        let addr = serve(0, false);
        let answer: Result<String, _> =
            async_std::task::block_on(Client::new(None).get(&addr, "/x", Duration::from_secs(2)));
        assert!(matches!(&answer, Err(CallError::Unreachable { why, .. }) if why.contains("belongs to")), "{answer:?}");
    }

    /// Members named by host name (as in containers) are looked up and reached; a name that
    /// does not resolve is an unreachable member, not a hang.
    #[test]
    fn a_member_named_by_host_name_is_reached() {
        let port = serve_on("localhost:0", 0, true).rsplit(':').next().unwrap().to_string();
        let addr = format!("localhost:{port}");
        let client = Client::new(None);
        for _ in 0..3 {
            let answer: Result<String, _> = async_std::task::block_on(client.get(&addr, "/y", Duration::from_secs(2)));
            assert_eq!(answer, Ok("/y".to_string()));
        }
        let unknown: Result<String, _> =
            async_std::task::block_on(client.get("no-such-member.invalid:7000", "/y", Duration::from_secs(5)));
        assert!(matches!(unknown, Err(CallError::Unreachable { .. })), "{unknown:?}");
    }
}
