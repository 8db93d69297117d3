//! The gate: the one service in front of every listener's routes. Per request it applies
//! the per-IP rate limit, then dispatch (the route's exposure class is checked before its
//! body is read), then puts the JSON body on axum's bare 405s and the security headers on
//! every response, refusals included.
//!
//! It is one hand-written service rather than a stack of middleware layers because it runs
//! on every request: one allocation for the future instead of one per layer (see
//! `bench/health`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use http::{HeaderValue, Request, StatusCode};

use crate::conns::{ConnState, Responding};
use crate::error::{Refused, error_response, refused};
use crate::headers::set_security_headers;
use crate::limits::BodyReader;
use crate::ratelimit::{ClientLimiter, too_many_requests};
use crate::routes::Routes;
use crate::server::ConnInfo;

/// Settings shared by the gates of all connections.
#[derive(Clone)]
pub struct GateConfig {
    /// Reads request bodies under the size, time and memory limits.
    pub bodies: BodyReader,
    /// The per-client limiter (shared across listeners).
    pub limiter: ClientLimiter,
    /// Where refusals are reported (the audit log), if anywhere.
    pub events: Option<Arc<dyn NetEvents>>,
}

impl std::fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateConfig")
            .field("bodies", &self.bodies)
            .field("limiter", &self.limiter)
            .field("events", &self.events.is_some())
            .finish()
    }
}

/// A refusal the gate made, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct NetEvent<'a> {
    /// What was refused and why, see [`Refused`].
    pub refused: Refused,
    /// The client.
    pub peer: std::net::SocketAddr,
    /// The request's method.
    pub method: &'a http::Method,
    /// The request's path (never the query: it can carry credentials).
    pub path: &'a str,
    /// The status sent.
    pub status: StatusCode,
}

/// Receives the gate's refusals. Called on the request's task: keep it quick.
pub trait NetEvents: Send + Sync {
    /// One refusal.
    fn refused(&self, event: NetEvent<'_>);
}

/// The gate of one connection.
#[derive(Clone)]
pub(crate) struct Gate {
    routes: Routes,
    config: Arc<GateConfig>,
    conn: ConnInfo,
    /// The connection's state under the limits: a response counts there until its body
    /// is finished, so a connection answering is never closed as idle.
    state: Arc<ConnState>,
}

impl Gate {
    /// A gate for one connection in front of `routes`.
    pub(crate) fn new(
        routes: Routes,
        config: Arc<GateConfig>,
        conn: ConnInfo,
        state: Arc<ConnState>,
    ) -> Self {
        Self {
            routes,
            config,
            conn,
            state,
        }
    }
}

/// A response body that keeps its connection counted as answering until it is finished.
struct Answering {
    body: axum::body::Body,
    _responding: Responding,
}

impl http_body::Body for Answering {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> hyper::service::Service<Request<B>> for Gate
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.conn);
        if self.state.is_tracked() {
            req.extensions_mut().insert(self.state.clone());
        }
        let gate = self.clone();
        // Only a connection the limits may close as idle needs its answers counted.
        let responding = self.state.is_tracked().then(|| self.state.responding());
        Box::pin(async move {
            let resp = gate.pass(req).await;
            let Some(responding) = responding else {
                return Ok(resp);
            };
            Ok(resp.map(|body| {
                axum::body::Body::new(Answering {
                    body,
                    _responding: responding,
                })
            }))
        })
    }
}

impl Gate {
    async fn pass<B>(self, req: Request<B>) -> Response
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The path only: query strings can carry credentials.
        // Kept for the refusal report; cloning a Uri and a Method is reference counting.
        let report = self
            .config
            .events
            .is_some()
            .then(|| (req.method().clone(), req.uri().clone()));
        let log = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            (
                Instant::now(),
                req.method().clone(),
                req.uri().path().to_owned(),
            )
        });
        let credential = [
            "x-api-key",
            "authorization",
            crate::routes::CONTROL_TOKEN_HEADER,
        ]
        .into_iter()
        .find_map(|name| req.headers().get(name))
        .map(HeaderValue::as_bytes);
        let dialect = self.routes.dialect_for(req.uri().path());
        let mut resp = match self.config.limiter.check(self.conn.peer.ip(), credential) {
            Err(limited) => refused(
                too_many_requests(&limited),
                "ratelimit.hit",
                "rate_limit_error",
            ),
            Ok(()) => {
                self.routes
                    .dispatch(self.conn, req, &self.config.bodies)
                    .await
            }
        };
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            resp = json_body_for_405(resp);
        }
        if let Some(dialect) = dialect {
            resp = crate::error::in_dialect(resp, dialect);
        }
        set_security_headers(resp.headers_mut());
        if let (Some(events), Some((method, uri)), Some(r)) = (
            &self.config.events,
            &report,
            resp.extensions().get::<Refused>(),
        ) {
            events.refused(NetEvent {
                refused: *r,
                peer: self.conn.peer,
                method,
                path: uri.path(),
                status: resp.status(),
            });
        }
        if let Some((start, method, path)) = log {
            tracing::debug!(
                %method,
                path,
                status = resp.status().as_u16(),
                ms = start.elapsed().as_secs_f64() * 1000.0,
                peer = %self.conn.peer,
                "request"
            );
        }
        resp
    }
}

/// axum answers a wrong method with an empty 405 and an `Allow` header; give it our body.
fn json_body_for_405(resp: Response) -> Response {
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let (body_parts, body) = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed; see the Allow header",
    )
    .into_parts();
    parts.headers.extend(body_parts.headers);
    parts.extensions.extend(body_parts.extensions);
    Response::from_parts(parts, body)
}
