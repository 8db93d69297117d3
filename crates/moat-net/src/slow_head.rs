//! A 408 for clients that send a request head too slowly (slow-loris on headers).
//!
//! hyper enforces the header read timeout but, having no request to answer, closes the
//! connection silently. [`TrackedStream`] hands hyper the socket unchanged while noting
//! whether part of a request has arrived since the last response was written, and keeps a
//! duplicate handle of the socket. When hyper gives up on a half-received head,
//! [`TrackedStream::answer_408`] writes the 408 through that handle. A connection that was
//! merely idle between requests is closed silently, so a client can never read the 408 as
//! the answer to a request it sends at that moment.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::headers::SECURITY_HEADERS;

/// A TCP stream for hyper that tracks half-received requests.
pub struct TrackedStream {
    inner: TcpStream,
    head_pending: Arc<AtomicBool>,
}

/// What the accept loop keeps after handing the stream to hyper.
pub struct Tracker {
    socket: Option<socket2::Socket>,
    head_pending: Arc<AtomicBool>,
}

impl TrackedStream {
    /// Wraps `stream`; the tracker can answer 408 after hyper has dropped the stream.
    pub fn new(stream: TcpStream) -> (Self, Tracker) {
        let head_pending = Arc::new(AtomicBool::new(false));
        // A duplicate descriptor: one syscall per connection, nothing per request.
        let socket = socket2::SockRef::from(&stream).try_clone().ok();
        let tracker = Tracker {
            socket,
            head_pending: head_pending.clone(),
        };
        (
            Self {
                inner: stream,
                head_pending,
            },
            tracker,
        )
    }
}

impl Tracker {
    /// The flag behind [`Tracker::head_pending`], for the connection limits.
    pub fn pending_flag(&self) -> Arc<AtomicBool> {
        self.head_pending.clone()
    }

    /// Whether bytes of a request have arrived that no response has followed yet.
    pub fn head_pending(&self) -> bool {
        self.head_pending.load(Ordering::Relaxed)
    }

    /// Writes a 408 with the security headers (best effort, never blocking) and closes.
    pub fn answer_408(&self, timeout_secs: f64) {
        let Some(socket) = &self.socket else { return };
        let body = format!(
            "{{\"type\":\"error\",\"error\":{{\"type\":\"request_timeout\",\"code\":\"request_timeout\",\"message\":\"request headers not received within {timeout_secs}s\"}}}}"
        );
        let mut response = String::from(
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n",
        );
        for (name, value) in SECURITY_HEADERS {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        // The descriptor is non-blocking; a few hundred bytes fit in any send buffer, and a
        // peer that has stopped reading does not get to hold this task.
        let mut writer: &socket2::Socket = socket;
        let _ = writer.write_all(response.as_bytes());
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.head_pending.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A response is going out: what was read belonged to a request being answered.
        self.head_pending.store(false, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.head_pending.store(false, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
