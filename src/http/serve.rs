//! The accept loop and each connection's life, for every caller: TCP_NODELAY, the TLS
//! handshake, and request heads read (their limits answered) before async-h1 decodes them;
//! past the connection limit only peers are served.

use super::{connections, request_head, App};
use crate::transport::stream::{Stream, Tcp};
use crate::transport::tls::{identity_of, Identity};
use async_std::net::TcpListener;
use std::time::Duration;

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
