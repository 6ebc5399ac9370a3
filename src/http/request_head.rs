//! Every request head of a connection, read before async-h1 sees it, so that limits are
//! answered in words: async-h1 closes the connection without a status on a head over 8 KiB,
//! refuses HTTP/1.0 and requests without `Host`, and reads a request line of any length into
//! memory. Here a request line over the limit gets 414 and a head over it 431, then the
//! connection closes; HTTP/1.0 is served as HTTP/1.1 with `Connection: close`, and a missing
//! `Host` becomes the node's own address. Once a response says `Connection: close` the
//! connection reads at most [`DRAIN_BYTES_MAX`] more, so an oversized body is not drained:
//! enough for a client that sent a modest body whole to read its answer (closing a socket
//! with unread bytes resets it, and the client may lose the answer), never 10 GB.

use crate::transport::stream::Stream;
use async_std::io::{Read, Write};
use std::collections::VecDeque;
use std::io::{IoSlice, Result};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Longest request head (request line and headers): below async-h1's own 8 KiB limit, so
/// every head that passes here also passes there.
pub const HEAD_BYTES_MAX: usize = 8 * 1024 - 1;
/// Most header lines in one head (async-h1's limit).
const HEADERS_MAX: usize = 128;
/// What a connection still reads, and throws away, once it stops reading.
const DRAIN_BYTES_MAX: u64 = 1 << 20;
/// `Connection::left` while the connection reads on.
const UNBOUNDED: u64 = u64::MAX;

/// What reading the next request head found.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A whole head is ready to be served.
    Ready,
    /// The client closed the connection, sent nothing in time, or the connection stopped.
    Closed,
    /// The head broke a limit: answer this status with this reason, then close.
    TooLarge(u16, &'static str),
}

/// A connection whose next bytes may have been read ahead (and mended): reads return them
/// first, then the socket's. Clones share both, as async-h1 needs.
#[derive(Clone)]
pub struct Connection {
    ahead: Arc<Mutex<VecDeque<u8>>>,
    stream: Stream,
    /// Bytes the connection still reads from the socket ([`UNBOUNDED`] until it stops).
    left: Arc<AtomicU64>,
}

impl Connection {
    pub fn new(stream: Stream) -> Connection {
        Connection { ahead: Arc::default(), stream, left: Arc::new(AtomicU64::new(UNBOUNDED)) }
    }

    /// From now on reads end the stream after [`DRAIN_BYTES_MAX`] more bytes: the rest of a
    /// request this node will not serve (an oversized body) is not read.
    pub fn stop_reading(&self) {
        self.left.fetch_min(DRAIN_BYTES_MAX, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.left.load(Ordering::Relaxed) != UNBOUNDED
    }

    /// Reads the next request head into the read-ahead buffer and mends it, waiting at most
    /// `timeout_ms` for it to arrive whole.
    pub async fn next_head(&mut self, host: &str, timeout_ms: u64) -> Head {
        let mut bytes: Vec<u8> = self.take_ahead();
        let found = async_std::future::timeout(Duration::from_millis(timeout_ms), self.read_head(&mut bytes)).await;
        let head = match found {
            Ok(Ok(head)) => head,
            _ => Head::Closed,
        };
        if head == Head::Ready {
            *self.ahead.lock().unwrap_or_else(|e| e.into_inner()) = mend(&bytes, host).into();
        }
        head
    }

    /// The request target of the head read ahead (`/internal/election`), if any.
    pub fn target(&self) -> Option<String> {
        let ahead = self.ahead.lock().ok()?;
        let line: Vec<u8> = ahead.iter().take_while(|&&b| b != b'\r').copied().collect();
        String::from_utf8(line).ok()?.split(' ').nth(1).map(str::to_string)
    }

    /// Answers `status` with a JSON reason and `Connection: close`, then stops reading.
    pub async fn refuse(&mut self, status: u16, reason: &str, why: &str, retry_after_s: Option<u64>) {
        use async_std::io::WriteExt;
        self.stop_reading();
        let body = serde_json::json!({ "error": why }).to_string();
        let retry = retry_after_s.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.stream.write_all(response.as_bytes()).await;
        // Closing the write side (after a TLS close_notify, over TLS).
        let _ = futures::AsyncWriteExt::close(&mut self.stream).await;
    }

    fn take_ahead(&self) -> Vec<u8> {
        self.ahead.lock().map(|mut ahead| ahead.drain(..).collect()).unwrap_or_default()
    }

    /// Reads until `bytes` holds a whole head or breaks a limit.
    async fn read_head(&mut self, bytes: &mut Vec<u8>) -> Result<Head> {
        use async_std::io::ReadExt;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(verdict) = judge(bytes) {
                return Ok(verdict);
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 || self.stopped() {
                return Ok(Head::Closed);
            }
            bytes.extend_from_slice(&buf[..n]);
        }
    }
}

/// Whether `bytes` (from the start of a request) hold a whole head, break a limit, or need
/// more; leading blank lines are allowed, as RFC 9112 asks.
fn judge(bytes: &[u8]) -> Option<Head> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(bytes.len());
    let head = &bytes[start..];
    let end = head.windows(4).position(|w| w == b"\r\n\r\n");
    let line_end = head.windows(2).position(|w| w == b"\r\n");
    let too_long = |n: usize| start + n > HEAD_BYTES_MAX;
    match (line_end, end) {
        (None, _) if too_long(head.len()) => Some(Head::TooLarge(414, "URI Too Long")),
        (Some(line), _) if too_long(line) => Some(Head::TooLarge(414, "URI Too Long")),
        (_, Some(end)) if too_long(end + 4) => Some(Head::TooLarge(431, "Request Header Fields Too Large")),
        (_, None) if too_long(head.len()) => Some(Head::TooLarge(431, "Request Header Fields Too Large")),
        (_, Some(end)) if head[..end].windows(2).filter(|w| w == b"\r\n").count() > HEADERS_MAX => {
            Some(Head::TooLarge(431, "Request Header Fields Too Large"))
        }
        (_, Some(_)) => Some(Head::Ready),
        (_, None) => None,
    }
}

/// `bytes` (a head and perhaps more) with an HTTP/1.0 request line made HTTP/1.1 with
/// `Connection: close`, and a `Host` header added when there is none.
fn mend(bytes: &[u8], host: &str) -> Vec<u8> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return bytes.to_vec() };
    let Ok(head) = std::str::from_utf8(&bytes[..end]) else { return bytes.to_vec() };
    let head = head.trim_start_matches(['\r', '\n']);
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let http10 = lines[0].ends_with(" HTTP/1.0");
    if http10 {
        let len = lines[0].len();
        lines[0].replace_range(len - 3.., "1.1");
        lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
        lines.push("Connection: close".into());
    }
    if !lines.iter().skip(1).any(|l| l.to_ascii_lowercase().starts_with("host:")) {
        lines.push(format!("Host: {host}"));
    }
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&bytes[end..]);
    out
}

impl Read for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        let this = self.get_mut();
        if let Ok(mut ahead) = this.ahead.lock() {
            if !ahead.is_empty() {
                let n = buf.len().min(ahead.len());
                for (slot, byte) in buf.iter_mut().zip(ahead.drain(..n)) {
                    *slot = byte;
                }
                return Poll::Ready(Ok(n));
            }
        }
        let left = this.left.load(Ordering::Relaxed);
        if left == 0 {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = Pin::new(&mut this.stream).poll_read(cx, &mut buf[..len]);
        if let (Poll::Ready(Ok(n)), true) = (&read, left != UNBOUNDED) {
            this.left.fetch_sub((*n as u64).min(left), Ordering::Relaxed);
        }
        read
    }
}

impl Write for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{judge, mend, Head, HEAD_BYTES_MAX};

    #[test]
    fn old_and_hostless_requests_are_mended() {
        let mended = mend(b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "n:1");
        assert_eq!(mended, b"GET /status HTTP/1.1\r\nConnection: close\r\nHost: n:1\r\n\r\n");
        let body = b"POST /jobs HTTP/1.1\r\nhost: a\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(mend(body, "n:1"), body.to_vec(), "a proper request is left alone");
        assert_eq!(mend(b"garbage", "n:1"), b"garbage");
    }

    #[test]
    fn heads_over_the_limits_are_told_apart() {
        assert_eq!(judge(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Head::Ready));
        assert_eq!(judge(b"GET / HTTP/1.1\r\nHost: a\r\n"), None, "half a head waits for more");
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(HEAD_BYTES_MAX));
        assert_eq!(judge(long_line.as_bytes()), Some(Head::TooLarge(414, "URI Too Long")));
        assert_eq!(judge(&long_line.as_bytes()[..HEAD_BYTES_MAX + 1]), Some(Head::TooLarge(414, "URI Too Long")));
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(HEAD_BYTES_MAX));
        assert_eq!(judge(long_header.as_bytes()), Some(Head::TooLarge(431, "Request Header Fields Too Large")));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(200));
        assert_eq!(judge(many.as_bytes()), Some(Head::TooLarge(431, "Request Header Fields Too Large")));
    }
}
