//! Listeners: binding, the accept loop (plain or TLS, HTTP/1.1 and HTTP/2, each connection
//! behind a [`Gate`]), and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::conns::{ConnLimits, ConnState};
use crate::exposure::ListenerKind;
use crate::gate::{Gate, GateConfig};
use crate::routes::Routes;
use crate::slow_head::TrackedStream;

/// Facts about the connection a request arrived on, inserted into every request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The peer.
    pub peer: SocketAddr,
    /// The local address the peer connected to.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Errors starting a listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} ({setting}){}", bind_hint(.source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The setting that chose it.
        setting: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; the address is in use: is another moat running? Choose another port with --listen"
        }
        std::io::ErrorKind::AddrNotAvailable => "; no interface of this machine has that address",
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: choose a higher port"
        }
        _ => "",
    }
}

/// A bound listener, ready to serve.
pub struct Listener {
    kind: ListenerKind,
    tcp: TcpListener,
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("kind", &self.kind)
            .field("local", &self.local)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Listener {
    /// Binds `addr`; `setting` names the config key for error messages.
    pub async fn bind(
        kind: ListenerKind,
        addr: SocketAddr,
        setting: &'static str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, ServeError> {
        let err = |source| ServeError::Bind {
            addr,
            setting,
            source,
        };
        let tcp = TcpListener::bind(addr).await.map_err(err)?;
        let local = tcp.local_addr().map_err(err)?;
        Ok(Self {
            kind,
            tcp,
            local,
            tls: tls.map(TlsAcceptor::from),
        })
    }

    /// The address actually bound (the port is known even when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Which listener this is.
    pub fn kind(&self) -> ListenerKind {
        self.kind
    }

    /// Whether it speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Connection-level settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// Time allowed for a request head (and for a TLS handshake).
    pub header_read_timeout: Duration,
    /// Time shutdown waits for in-flight requests before dropping them.
    pub shutdown_grace: Duration,
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished within the grace period.
    All,
    /// The grace period ran out; remaining connections were dropped.
    TimedOut,
}

/// Serves `listeners` (each with its routes) until `shutdown` completes, then stops
/// accepting and waits up to the grace period for in-flight requests.
pub async fn serve(
    listeners: Vec<(Listener, Routes)>,
    gate: GateConfig,
    conns: ConnLimits,
    settings: ConnSettings,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(gate);
    let mut loops = Vec::new();
    for (listener, routes) in listeners {
        loops.push(tokio::spawn(accept_loop(
            listener,
            routes,
            gate.clone(),
            conns.clone(),
            settings,
            graceful.clone(),
            stop_rx.clone(),
        )));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // Connections hold watchers, not the Arc; with the loops gone this is the last owner.
    let Some(graceful) = Arc::into_inner(graceful) else {
        return Drained::TimedOut;
    };
    match tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Drained::All,
        Err(_) => Drained::TimedOut,
    }
}

/// How often an HTTP/2 connection is pinged to see that its peer is still there.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// The most a request's header section may take, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The protocol builders, configured once per listener.
struct Protocols {
    header_timeout: Duration,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(settings: &ConnSettings) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        // A request head over 64 KiB gets hyper's 431: 256 connections per client must not
        // each hold half a megabyte of headers (hyper's default buffer).
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // A peer that stops answering pings is gone; one that holds a connection open
        // with nothing in flight is idle, and the connection limits may close it.
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(settings.header_read_timeout);
        Self {
            header_timeout: settings.header_read_timeout,
            http1,
            http2,
        }
    }

    /// Serves a plain connection: HTTP/1.1 (no client of an LLM API speaks HTTP/2 without
    /// TLS, and sniffing every connection for it costs). A request head that stalls past
    /// the header timeout gets a 408.
    async fn serve_plain(
        &self,
        watcher: Watcher,
        stop: watch::Receiver<bool>,
        stream: TcpStream,
        service: Gate,
        state: &ConnState,
    ) {
        let (stream, tracker) = TrackedStream::new(stream);
        state.track(tracker.activity());
        // With upgrades: the web chat's WebSocket takes the connection over.
        let conn = self
            .http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let Some(result) = until_evicted(http1_gracefully(conn, watcher, stop), state).await else {
            return;
        };
        if let Err(e) = result {
            if e.is_timeout() && tracker.head_pending() {
                tracker.answer_408(self.header_timeout.as_secs_f64());
            }
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Serves a TLS connection: HTTP/2 when ALPN negotiated `h2`, else HTTP/1.1. Like a
    /// plain one, it is closed when its client is at its limit and it is idle or stalled.
    async fn serve_tls<I>(
        &self,
        watcher: Watcher,
        stop: watch::Receiver<bool>,
        io: I,
        h2: bool,
        service: Gate,
        state: &ConnState,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let result = if h2 {
            let conn = watcher.watch(self.http2.serve_connection(io, service));
            until_evicted(conn, state).await
        } else {
            let conn = self.http1.serve_connection(io, service).with_upgrades();
            until_evicted(http1_gracefully(conn, watcher, stop), state).await
        };
        if let Some(Err(e)) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Runs `conn` to its end, or until the connection limits close it to make room (`None`).
/// An HTTP/1 connection that may be upgraded (hyper-util's watcher cannot watch one):
/// shut down gracefully when the server stops, and counted by `watcher` until it ends.
async fn http1_gracefully<I, S, B>(
    conn: hyper::server::conn::http1::UpgradeableConnection<I, S>,
    watcher: Watcher,
    mut stop: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    let stopping = async {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let result = tokio::select! {
        result = &mut conn => result,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    drop(watcher);
    result
}

async fn until_evicted<F: Future>(conn: F, state: &ConnState) -> Option<F::Output> {
    let mut conn = std::pin::pin!(conn);
    loop {
        tokio::select! {
            result = &mut conn => return Some(result),
            () = state.evicted() => {
                if state.close_if_still_evictable() {
                    tracing::debug!("closing an idle or stalled connection: its client is at its connection limit and opened another");
                    return None;
                }
            }
        }
    }
}

async fn accept_loop(
    listener: Listener,
    routes: Routes,
    gate: Arc<GateConfig>,
    conns: ConnLimits,
    settings: ConnSettings,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let protocols = Arc::new(Protocols::new(&settings));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, listener = %listener.kind, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = conns.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection limit reached; closing (limits.max_connections[_per_ip])");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            // The address this connection reached, not the bound one: with a wildcard
            // listener, Host must match the interface the client actually used.
            local: stream.local_addr().unwrap_or(listener.local),
            tls: listener.tls.is_some(),
        };
        let service = Gate::new(routes.clone(), gate.clone(), info, slot.state().clone());
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let stop = stop.clone();
        let tls = listener.tls.clone();
        let Some(acceptor) = tls else {
            tokio::spawn(async move {
                protocols
                    .serve_plain(watcher, stop, stream, service, slot.state())
                    .await
            });
            continue;
        };
        // A task of its own type: the TLS and HTTP/2 state is several KiB, and a plain
        // connection's task would otherwise be as large as the largest path.
        tokio::spawn(async move {
            // Tracked from the first byte: a handshake that stalls, or a connection idle
            // after it, gives way to a new connection of its client at its limit.
            let (stream, tracker) = TrackedStream::new(stream);
            slot.state().track(tracker.activity());
            let handshake =
                tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream));
            match until_evicted(handshake, slot.state()).await {
                None => {}
                Some(Ok(Ok(tls_stream))) => {
                    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    protocols
                        .serve_tls(watcher, stop, tls_stream, h2, service, slot.state())
                        .await
                }
                Some(Ok(Err(e))) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Some(Err(_)) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
