//! surf's connection layer between members, for plain HTTP and for HTTPS with the cluster's
//! CA: TCP_NODELAY connections (TLS over them when configured), at most
//! `connections_per_host` at once and kept alive per host. A connection goes back to the pool
//! only after an answer was read whole, so no request ever reads another's answer.
//!
//! surf's own pool (http-client's, over deadpool) is not used for plain HTTP either: it
//! checks each connection it hands out with two system calls and a registration with the
//! reactor. Measured on the 2-core VM with `examples/http_floor.rs --relay` (64 clients whose
//! requests a second process forwards through this crate's client): 4,289 request pairs/s
//! and 241 µs of the relay's CPU per pair with surf's pool, 4,806-5,349/s and 190-206 µs with
//! this one. In the whole cluster the gain is within the machine's noise (docs/BENCHMARKS.md,
//! "The HTTP floor").

use super::resolver::Resolver;
use super::stream::Stream;
use super::tls::{identity_of, Identity};
use facto_elections::NodeId;
use futures_rustls::TlsConnector;
use http_client::{Config, Error, HttpClient, Request, Response};
use rustls::ClientConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long opening a connection (the lookup, TCP and any TLS handshake) may take.
const DIAL_TIMEOUT_MS: u64 = 5_000;
/// How long a connection may sit idle before it is not reused (members close theirs after
/// a minute).
const IDLE_MS_MAX: u64 = 30_000;

pub struct Pool {
    /// TLS over each connection, or plain HTTP.
    connector: Option<TlsConnector>,
    idle: Mutex<HashMap<String, Vec<(Instant, Stream)>>>,
    /// Connections in use per host, bounded.
    in_use: Mutex<HashMap<String, Arc<async_lock::Semaphore>>>,
    connections_per_host: usize,
    resolver: Arc<Resolver>,
    /// The member at each address (`HOST:PORT`): a server there must hold that member's
    /// certificate, not just any of the cluster's.
    members: HashMap<String, NodeId>,
    /// When a wrong certificate at an address was last logged (once a minute at most).
    warned: Mutex<HashMap<String, Instant>>,
    config: Config,
}

/// How often a wrong certificate at one address is logged.
const WARN_EVERY_MS: u64 = 60_000;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    /// Connections over TLS with `config` when given, else plain; over TLS the server at each
    /// address of `members` must hold that member's certificate.
    pub fn new(
        config: Option<Arc<ClientConfig>>,
        connections_per_host: usize,
        resolver: Arc<Resolver>,
        members: HashMap<String, NodeId>,
    ) -> Pool {
        Pool {
            connector: config.map(TlsConnector::from),
            idle: Mutex::default(),
            in_use: Mutex::default(),
            connections_per_host,
            resolver,
            members,
            warned: Mutex::default(),
            config: Config::new(),
        }
    }

    fn take_idle(&self, host: &str) -> Option<Stream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let streams = idle.get_mut(host)?;
        while let Some((since, stream)) = streams.pop() {
            if since.elapsed() < Duration::from_millis(IDLE_MS_MAX) && stream.idle_and_open() {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, host: String, stream: Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let streams = idle.entry(host).or_default();
        if streams.len() < self.connections_per_host {
            streams.push((Instant::now(), stream));
        }
    }

    /// A misconfiguration an operator must hear of, without a line per call.
    fn warn(&self, key: &str, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let due = warned.get(key).is_none_or(|at| at.elapsed() >= Duration::from_millis(WARN_EVERY_MS));
        if due {
            warned.insert(key.to_string(), Instant::now());
            log::warn!("refusing the server at {why}");
        }
    }

    fn limit(&self, host: &str) -> Arc<async_lock::Semaphore> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let limit = in_use.entry(host.to_string());
        limit.or_insert_with(|| Arc::new(async_lock::Semaphore::new(self.connections_per_host))).clone()
    }

    async fn dial(&self, host: &str, port: u16) -> Result<Stream, Error> {
        let key = format!("{host}:{port}");
        let addr = self.resolver.resolve(&key).await.map_err(unavailable)?;
        let tcp = async_std::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let Some(connector) = &self.connector else {
            return Ok(Stream::plain(tcp));
        };
        let name = super::tls::server_name(host).map_err(unavailable)?;
        let tls = connector.connect(name, super::stream::Tcp(tcp)).await?;
        if let Some(&id) = self.members.get(&key) {
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let identity = cert.and_then(|c| identity_of(c));
            if identity != Some(Identity::Member(id)) {
                let who = identity.map_or("no member".to_string(), |i| i.to_string());
                let why = format!("{key} is member {id}'s address, but its certificate names {who}");
                self.warn(&key, &why);
                return Err(unavailable(why));
            }
        }
        Ok(Stream::tls(tls))
    }
}

fn unavailable(why: String) -> Error {
    Error::from_str(http_client::http_types::StatusCode::ServiceUnavailable, why)
}

#[http_client::async_trait]
impl HttpClient for Pool {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        let url = req.url();
        let host = url.host_str().ok_or_else(|| unavailable(format!("no host in {url}")))?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let key = format!("{host}:{port}");
        let _turn = self.limit(&key).acquire_arc().await;
        let stream = match self.take_idle(&key) {
            Some(stream) => stream,
            None => async_std::future::timeout(Duration::from_millis(DIAL_TIMEOUT_MS), self.dial(&host, port))
                .await
                .map_err(|_| unavailable(format!("no connection to {key} within {DIAL_TIMEOUT_MS} ms")))??,
        };
        // async-h1 writes a request through `poll_write` alone (futures-lite's copy), so a
        // plain connection needs no guard against `writev`'s SIGPIPE (see `stream.rs`), and
        // the bare socket measured cheaper than the wrapper.
        let mut res = match &stream {
            Stream::Plain(tcp) => async_h1::client::connect(tcp.0.clone(), req).await?,
            Stream::Tls(_) => async_h1::client::connect(stream.clone(), req).await?,
        };
        let body = res.body_bytes().await?;
        let closing = res.header("connection").is_some_and(|c| c.as_str().eq_ignore_ascii_case("close"));
        if !closing {
            self.put_idle(key, stream);
        }
        res.set_body(body);
        Ok(res)
    }

    fn set_config(&mut self, config: Config) -> http_client::http_types::Result<()> {
        self.config = config;
        Ok(())
    }

    fn config(&self) -> &Config {
        &self.config
    }
}
