//! A connection that is plain TCP or TLS over TCP. Clones share it, as async-h1 needs (it
//! reads and writes through clones); a TLS session is shared behind a lock held only for one
//! poll, never across an await.

use async_std::io::{Read, Write};
use async_std::net::TcpStream;
use futures_rustls::TlsStream;
use std::io::{IoSlice, Result};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Clone)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Arc<Mutex<TlsStream<TcpStream>>>),
}

impl Stream {
    pub fn tls(stream: impl Into<TlsStream<TcpStream>>) -> Stream {
        Stream::Tls(Arc::new(Mutex::new(stream.into())))
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> TcpStream {
        match self {
            Stream::Plain(s) => s.clone(),
            Stream::Tls(s) => lock(s).get_ref().0.clone(),
        }
    }

    /// Whether an idle connection may carry another request: the peer has neither closed it
    /// nor sent anything unasked (a TLS alert, a late answer).
    pub fn idle_and_open(&self) -> bool {
        use futures::FutureExt;
        let tcp = self.tcp();
        let mut byte = [0u8; 1];
        // Nothing to read yet is the healthy case.
        tcp.peek(&mut byte).now_or_never().is_none()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Read for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut *lock(s)).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut *lock(s)).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut *lock(s)).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut *lock(s)).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(&mut *lock(s)).poll_close(cx),
        }
    }
}
