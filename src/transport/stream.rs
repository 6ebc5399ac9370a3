//! A connection that is plain TCP or TLS over TCP. Clones share it, as async-h1 needs (it
//! reads and writes through clones); a TLS session is shared behind a lock held only for one
//! poll, never across an await.
//!
//! Writes never use `writev`: the standard library sends with `MSG_NOSIGNAL`, but `writev`
//! has no such flag, and a vectored write (rustls writes its records that way) to a socket
//! its peer had closed raised SIGPIPE, which killed the process (`facto` keeps SIGPIPE's
//! default so that `facto status | head` ends quietly).

use async_std::io::{Read, Write};
use async_std::net::TcpStream;
use futures_rustls::TlsStream;
use std::io::{IoSlice, Result};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Clone)]
pub enum Stream {
    Plain(Tcp),
    Tls(Arc<Mutex<TlsStream<Tcp>>>),
}

/// A TCP connection whose vectored writes are plain writes of their first buffer.
#[derive(Clone)]
pub struct Tcp(pub TcpStream);

impl Stream {
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream::Plain(Tcp(tcp))
    }

    pub fn tls(stream: impl Into<TlsStream<Tcp>>) -> Stream {
        Stream::Tls(Arc::new(Mutex::new(stream.into())))
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> TcpStream {
        match self {
            Stream::Plain(s) => s.0.clone(),
            Stream::Tls(s) => lock(s).get_ref().0 .0.clone(),
        }
    }

    /// Whether an idle connection may carry another request: the peer has neither closed it
    /// nor sent anything unasked (a TLS alert, a late answer). A non-blocking peek at the
    /// socket: one system call, and no registration with the reactor.
    pub fn idle_and_open(&self) -> bool {
        use std::os::fd::AsRawFd;
        let tcp = self.tcp();
        let mut byte = [0u8; 1];
        // SAFETY: the descriptor is open while `tcp` lives; the buffer is one valid byte.
        let peeked =
            unsafe { libc::recv(tcp.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        // Nothing to read yet (EAGAIN) is the healthy case.
        peeked < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }
}

impl Read for Tcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

/// Only `poll_write`: the trait's own `poll_write_vectored` writes the first non-empty
/// buffer through it.
impl Write for Tcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
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
