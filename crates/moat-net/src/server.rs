//! Listeners: binding, the accept loop (plain or TLS, HTTP/1.1 and HTTP/2), the
//! cross-cutting layers every listener gets, and graceful shutdown.
//!
//! Layers, outermost first: security headers → JSON body for 405 → per-IP rate limit →
//! CORS (only with a configured origin) → body limits → routing → exposure guard of the
//! route's class → handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::{Next, from_fn, from_fn_with_state, map_response};
use axum::response::Response;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::error::error_response;
use crate::exposure::ListenerKind;
use crate::headers::{cors_for, with_security_headers};
use crate::limits::{BodyLimits, limit_body};
use crate::ratelimit::{PerIpLimiter, limit_rate};

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
    #[error("cannot listen on {addr} ({setting}): {source}")]
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

/// The cross-cutting settings every listener shares.
#[derive(Debug, Clone)]
pub struct Layers {
    /// Body size and time limits.
    pub body: BodyLimits,
    /// The per-IP limiter (shared across listeners).
    pub limiter: PerIpLimiter,
    /// The one CORS origin, if configured.
    pub cors_origin: Option<String>,
}

impl Layers {
    /// Wraps a listener's router in the shared layers.
    pub fn apply(&self, router: Router) -> Router {
        let mut r = router.layer(from_fn_with_state(self.body, limit_body));
        if let Some(cors) = self.cors_origin.as_deref().and_then(cors_for) {
            r = r.layer(cors);
        }
        let r = r
            .layer(from_fn_with_state(self.limiter.clone(), limit_rate))
            .layer(from_fn(access_log))
            .layer(map_response(json_body_for_405));
        with_security_headers(r)
    }
}

async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // The path only: query strings can carry credentials.
    let path = req.uri().path().to_owned();
    let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer);
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        path,
        status = resp.status().as_u16(),
        ms = start.elapsed().as_secs_f64() * 1000.0,
        peer = ?peer,
        "request"
    );
    resp
}

/// axum answers a wrong method with an empty 405 and an `Allow` header; give it our body.
async fn json_body_for_405(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let body = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed; see the Allow header",
    );
    let (body_parts, body) = body.into_parts();
    parts.headers.extend(body_parts.headers);
    Response::from_parts(parts, body)
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

/// Serves `listeners` (each with its router) until `shutdown` completes, then stops
/// accepting and waits up to the grace period for in-flight requests.
pub async fn serve(
    listeners: Vec<(Listener, Router)>,
    settings: ConnSettings,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for (listener, router) in listeners {
        loops.push(tokio::spawn(accept_loop(
            listener,
            router,
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

async fn accept_loop(
    listener: Listener,
    router: Router,
    settings: ConnSettings,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
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
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            local: listener.local,
            tls: listener.tls.is_some(),
        };
        let service = router
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info);
                req
            });
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = listener.tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(&builder, watcher, stream, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        settings.header_read_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve_conn(&builder, watcher, tls_stream, service).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    service: S,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
