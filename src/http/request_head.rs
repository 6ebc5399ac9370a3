//! The first request head of each connection, read before async-h1 sees it: async-h1 refuses
//! HTTP/1.0 and requests without `Host` by closing the connection without a word. Such a
//! request is served as HTTP/1.1 (with `Connection: close`, as HTTP/1.0 expects) and the
//! node's own address as its host.

use async_std::io::{Read, Write};
use async_std::net::TcpStream;
use std::io::{IoSlice, Result};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Longest request head read ahead; a longer one goes to async-h1 as it is.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// How long a client may take to send its first request head.
const HEAD_TIMEOUT_MS: u64 = 10_000;

/// A connection whose first bytes were read ahead (and perhaps rewritten): reads return them
/// first, then the socket's. Clones share both, as async-h1 needs.
#[derive(Clone)]
pub struct Connection {
    ahead: Arc<Mutex<std::collections::VecDeque<u8>>>,
    stream: TcpStream,
}

impl Connection {
    /// Reads the first request head and mends it; `None` if the client sent nothing in time.
    pub async fn accept(mut stream: TcpStream, host: &str) -> Option<Connection> {
        use async_std::io::ReadExt;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_BYTES_MAX {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(())
        };
        async_std::future::timeout(Duration::from_millis(HEAD_TIMEOUT_MS), read).await.ok()?.ok()?;
        let mended = mend(&head, host);
        Some(Connection { ahead: Arc::new(Mutex::new(mended.into())), stream })
    }
}

/// `bytes` (a head and perhaps more) with an HTTP/1.0 request line made HTTP/1.1 with
/// `Connection: close`, and a `Host` header added when there is none.
fn mend(bytes: &[u8], host: &str) -> Vec<u8> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return bytes.to_vec() };
    let Ok(head) = std::str::from_utf8(&bytes[..end]) else { return bytes.to_vec() };
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
        Pin::new(&mut this.stream).poll_read(cx, buf)
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
    use super::mend;

    #[test]
    fn old_and_hostless_requests_are_mended() {
        let mended = mend(b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "n:1");
        assert_eq!(mended, b"GET /status HTTP/1.1\r\nConnection: close\r\nHost: n:1\r\n\r\n");
        let body = b"POST /jobs HTTP/1.1\r\nhost: a\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(mend(body, "n:1"), body.to_vec(), "a proper request is left alone");
        assert_eq!(mend(b"garbage", "n:1"), b"garbage");
    }
}
