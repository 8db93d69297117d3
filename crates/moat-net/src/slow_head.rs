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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::headers::SECURITY_HEADERS;

/// What the socket has seen, shared with the connection limits (which close an idle
/// connection for a new one of the same client: see `conns`).
#[derive(Debug)]
pub struct Activity {
    /// Bytes of a request have arrived that no response has followed yet.
    head_pending: AtomicBool,
    /// Bytes were written that hyper has not flushed since.
    unflushed: AtomicBool,
    /// When the connection last went quiet (opened, or a write flushed), in milliseconds
    /// since [`Activity::now_ms`]'s start.
    quiet_since_ms: AtomicU64,
    /// When the first byte of the request now arriving came (same clock).
    pending_since_ms: AtomicU64,
    /// Bytes of the request now arriving, so far.
    pending_bytes: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            head_pending: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            quiet_since_ms: AtomicU64::new(Self::now_ms()),
            pending_since_ms: AtomicU64::new(0),
            pending_bytes: AtomicU64::new(0),
        }
    }

    fn now_ms() -> u64 {
        // A start a day back (where the clock allows), so "quiet since" never clamps at 0.
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(|| {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
        });
        start.elapsed().as_millis() as u64
    }

    /// An activity as the limits' tests need it: `pending` or quiet for `quiet`.
    #[cfg(test)]
    pub(crate) fn for_test(pending: bool, quiet: Duration) -> Arc<Activity> {
        let a = Activity::new();
        if pending {
            a.received(1);
        }
        let now = Self::now_ms();
        a.quiet_since_ms.store(
            now.saturating_sub(quiet.as_millis() as u64),
            Ordering::Release,
        );
        Arc::new(a)
    }

    /// Marks bytes of a request received (tests).
    #[cfg(test)]
    pub(crate) fn set_pending(&self, pending: bool) {
        if pending {
            self.received(1);
        } else {
            self.head_pending.store(false, Ordering::Release);
        }
    }

    /// A connection whose request head has been arriving for `for_` (tests).
    #[cfg(test)]
    pub(crate) fn pending_for_test(for_: Duration) -> Arc<Activity> {
        let a = Activity::new();
        a.head_pending.store(true, Ordering::Release);
        a.pending_since_ms.store(
            Self::now_ms().saturating_sub(for_.as_millis() as u64),
            Ordering::Release,
        );
        Arc::new(a)
    }

    /// Notes `n` bytes of a request received; the first since the last response starts
    /// the request's clock.
    fn received(&self, n: usize) {
        if !self.head_pending.swap(true, Ordering::AcqRel) {
            self.pending_bytes.store(0, Ordering::Release);
            self.pending_since_ms
                .store(Self::now_ms(), Ordering::Release);
        }
        self.pending_bytes.fetch_add(n as u64, Ordering::AcqRel);
    }

    /// How long the request now arriving (head, or body not yet read whole) has taken so
    /// far, and how many bytes of it came; `None` when none is arriving (or the last
    /// response is still being written).
    pub(crate) fn arriving(&self) -> Option<(Duration, u64)> {
        if !self.head_pending.load(Ordering::Acquire) || self.unflushed.load(Ordering::Acquire) {
            return None;
        }
        let since = self.pending_since_ms.load(Ordering::Acquire);
        Some((
            Duration::from_millis(Self::now_ms().saturating_sub(since)),
            self.pending_bytes.load(Ordering::Acquire),
        ))
    }

    /// How long the connection has had nothing of a request in and nothing unsent out,
    /// or `None` while it has.
    pub fn quiet_for(&self) -> Option<Duration> {
        if self.head_pending.load(Ordering::Acquire) || self.unflushed.load(Ordering::Acquire) {
            return None;
        }
        let since = self.quiet_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(Self::now_ms().saturating_sub(since)))
    }
}

/// A TCP stream for hyper that tracks half-received requests.
pub(crate) struct TrackedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

/// What the accept loop keeps after handing the stream to hyper.
pub(crate) struct Tracker {
    socket: Option<socket2::Socket>,
    activity: Arc<Activity>,
}

impl TrackedStream {
    /// Wraps `stream`; the tracker can answer 408 after hyper has dropped the stream.
    pub(crate) fn new(stream: TcpStream) -> (Self, Tracker) {
        let activity = Arc::new(Activity::new());
        // A duplicate descriptor: one syscall per connection, nothing per request.
        let socket = socket2::SockRef::from(&stream).try_clone().ok();
        let tracker = Tracker {
            socket,
            activity: activity.clone(),
        };
        (
            Self {
                inner: stream,
                activity,
            },
            tracker,
        )
    }

    fn wrote(&self) {
        // A response is going out: what was read belonged to a request being answered.
        self.activity.head_pending.store(false, Ordering::Release);
        self.activity.unflushed.store(true, Ordering::Release);
    }
}

impl Tracker {
    /// What the socket has seen, for the connection limits.
    pub(crate) fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Whether bytes of a request have arrived that no response has followed yet.
    pub(crate) fn head_pending(&self) -> bool {
        self.activity.head_pending.load(Ordering::Relaxed)
    }

    /// Writes a 408 with the security headers (best effort, never blocking) and closes.
    pub(crate) fn answer_408(&self, timeout_secs: f64) {
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
            self.activity.received(buf.filled().len() - before);
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
        self.wrote();
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        // hyper flushes the socket once its own buffer is written out: all sent.
        if matches!(flushed, Poll::Ready(Ok(())))
            && self.activity.unflushed.swap(false, Ordering::AcqRel)
        {
            self.activity
                .quiet_since_ms
                .store(Activity::now_ms(), Ordering::Release);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
