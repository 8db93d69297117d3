//! The route table: every route is declared with its exposure class, and a listener's
//! dispatcher is compiled from the table, so a route can't exist without a class and a LAN
//! listener can't carry a class it must not.
//!
//! Dispatch is ours rather than axum's `Router`: find the route by path, run its class's
//! checks, then hand the request to the route's axum handlers (which pick by method and
//! answer a wrong one with 405 and `Allow`). The class check is a plain function call on
//! the hot path, not a middleware layer.
//!
//! ```
//! use axum::routing::get;
//! use moat_net::{Exposure, RouteTable};
//! let table = RouteTable::new()
//!     .route("/health", Exposure::Open, get(|| async { "ok" }))
//!     .route("/status", Exposure::Control, get(|| async { "..." }));
//! assert_eq!(table.class_of("/status"), Some(Exposure::Control));
//! ```

use std::sync::Arc;

use axum::response::Response;
use axum::routing::MethodRouter;
use http::{HeaderMap, Request, StatusCode, header};
use tower::ServiceExt;

use crate::error::error_response;
use crate::exposure::{Exposure, Policy, RequestFacts};
use crate::headers::cors_for;
use crate::limits::BodyReader;
use crate::server::ConnInfo;

/// Header carrying the control token (also accepted as `Authorization: Bearer`).
pub const CONTROL_TOKEN_HEADER: &str = "x-moat-control-token";

/// A route declaration error (a programming error in moat, caught at start-up).
#[derive(Debug, thiserror::Error)]
#[error("route {path:?} cannot be declared: {reason}")]
pub struct RouteError {
    /// The path pattern.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Routes with their exposure classes.
#[derive(Default, Clone)]
pub struct RouteTable {
    routes: Vec<(&'static str, Exposure, MethodRouter)>,
    dialects: Vec<(&'static str, crate::error::ErrorDialect)>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(p, c, _)| (p, c)))
            .finish()
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `path` (a matchit pattern: `/v1/items/{id}`) with its `class` and its
    /// handlers, which fix the allowed methods.
    pub fn route(mut self, path: &'static str, class: Exposure, handlers: MethodRouter) -> Self {
        self.routes.push((path, class, handlers));
        self
    }

    /// Answers every error of moat's on paths under `prefix` in `dialect` (an API's own
    /// error format), the server's own refusals included.
    pub fn errors_under(
        mut self,
        prefix: &'static str,
        dialect: crate::error::ErrorDialect,
    ) -> Self {
        self.dialects.push((prefix, dialect));
        self
    }

    /// The class `path` was declared with.
    pub fn class_of(&self, path: &str) -> Option<Exposure> {
        self.routes
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, c, _)| *c)
    }

    /// The dispatcher for one listener: only the routes its kind may carry.
    pub fn compile(&self, policy: Arc<Policy>) -> Result<Routes, RouteError> {
        let cors = policy.cors_origin().and_then(cors_for);
        let mut paths = matchit::Router::new();
        let mut entries = Vec::new();
        for (path, class, handlers) in &self.routes {
            if !class.served_on(policy.kind()) {
                continue;
            }
            paths.insert(*path, entries.len()).map_err(|e| RouteError {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            let handlers = match &cors {
                Some(cors) => handlers.clone().layer(cors.clone()),
                None => handlers.clone(),
            };
            entries.push(Entry {
                class: *class,
                handlers,
            });
        }
        Ok(Routes {
            inner: Arc::new(Compiled {
                paths,
                entries,
                policy,
                cors: cors.is_some(),
                dialects: self.dialects.clone(),
            }),
        })
    }
}

struct Entry {
    class: Exposure,
    handlers: MethodRouter,
}

struct Compiled {
    paths: matchit::Router<usize>,
    entries: Vec<Entry>,
    policy: Arc<Policy>,
    /// Whether the handlers are wrapped in CORS for the configured origin.
    cors: bool,
    /// Error formats by path prefix.
    dialects: Vec<(&'static str, crate::error::ErrorDialect)>,
}

/// A listener's compiled routes; cheap to clone.
#[derive(Clone)]
pub struct Routes {
    inner: Arc<Compiled>,
}

/// Path parameters of the matched route (`{id}` in `/v1/items/{id}`), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

impl Routes {
    /// The error format of the routes `path` falls under, if any.
    pub(crate) fn dialect_for(&self, path: &str) -> Option<crate::error::ErrorDialect> {
        self.inner
            .dialects
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, d)| *d)
    }
}

impl PathParams {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Routes {
    /// Finds the route, applies its class's checks, reads the body, and runs the handlers.
    pub async fn dispatch<B>(
        &self,
        conn: ConnInfo,
        req: Request<B>,
        bodies: &BodyReader,
    ) -> Response
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let compiled = &self.inner;
        if head_bytes(&req) > crate::server::MAX_HEAD_BYTES {
            return crate::error::refused(
                error_response(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request_header_fields_too_large",
                    "the request's headers are over 64 KiB",
                ),
                "limit.headers",
                "request_header_fields_too_large",
            );
        }
        if let Some(why) = ambiguous(&req) {
            return crate::error::refused(
                error_response(StatusCode::BAD_REQUEST, "bad_request", why),
                "request.ambiguous",
                "bad_request",
            );
        }
        if let Some(refusal) = bodies.refuse_declared(req.headers()) {
            return refusal;
        }
        let Ok(found) = compiled.paths.at(req.uri().path()) else {
            return error_response(StatusCode::FORBIDDEN, "forbidden", "no such route");
        };
        let entry = &compiled.entries[*found.value];
        let params = (!found.params.is_empty()).then(|| {
            let owned = found
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()));
            PathParams(owned.collect())
        });
        // A CORS preflight carries no credentials by design. The CORS layer answers it
        // without calling a handler, and only grants the configured origin.
        let preflight = compiled.cors && is_preflight(&req);
        // Read-only media has checks on the main listener only (see `Policy::decide`).
        let checked = !entry.class.checks().is_empty()
            || (entry.class == Exposure::Lan
                && compiled.policy.kind() == crate::exposure::ListenerKind::Main);
        if checked && !preflight {
            let facts = request_facts(&conn, &req);
            if let Err(denial) = compiled.policy.decide(entry.class, &facts) {
                tracing::warn!(
                    peer = %conn.peer,
                    listener = %compiled.policy.kind(),
                    method = %req.method(),
                    path = req.uri().path(),
                    class = ?entry.class,
                    reason = denial.code(),
                    "request refused"
                );
                let action = if denial.status() == StatusCode::UNAUTHORIZED {
                    "auth.denied"
                } else {
                    "exposure.denied"
                };
                return crate::error::refused(
                    error_response(denial.status(), denial.code(), denial.message()),
                    action,
                    denial.code(),
                );
            }
        }
        // Open and Lan routes take no body, and a preflight is answered unread: an
        // unauthenticated caller never makes moat buffer anything (a hook's body is read:
        // its signature covers it).
        let req = if !entry.class.reads_body() || preflight {
            req.map(|_| axum::body::Body::empty())
        } else {
            let reading = req
                .extensions()
                .get::<Arc<crate::conns::ConnState>>()
                .map(crate::conns::ConnState::reading_body);
            let read = bodies.read(req).await;
            drop(reading);
            match read {
                Ok(req) => req,
                Err(refusal) => return refusal,
            }
        };
        let mut req = req;
        if let Some(params) = params {
            req.extensions_mut().insert(params);
        }
        match entry.handlers.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// The size of a request's head as it was sent (target and header lines). hyper's buffer
/// limit bounds the memory a head may take, but only to within one read of it; this is
/// the exact rule.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target
}

/// A request that names its host or origin twice, or two different ways, is refused
/// (RFC 9112 §3.2) before any check reads it: which one a check would take is a guess,
/// and another server behind or in front of moat may guess the other way.
fn ambiguous<B>(req: &Request<B>) -> Option<&'static str> {
    let headers = req.headers();
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some("more than one Host header");
    }
    if headers.get_all(header::ORIGIN).iter().nth(1).is_some() {
        return Some("more than one Origin header");
    }
    if let (Some(authority), Some(host)) = (req.uri().authority(), headers.get(header::HOST))
        && !host
            .to_str()
            .is_ok_and(|h| h.eq_ignore_ascii_case(authority.as_str()))
    {
        return Some("the request target names another host than the Host header");
    }
    None
}

fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// What the exposure checks look at, read from the connection and the headers.
fn request_facts<'a, B>(conn: &ConnInfo, req: &'a Request<B>) -> RequestFacts<'a> {
    let headers = req.headers();
    let host = header_str(headers, header::HOST.as_str())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let bearer = header_str(headers, header::AUTHORIZATION.as_str()).and_then(|v| {
        let (scheme, value) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
    });
    RequestFacts {
        peer: conn.peer.ip(),
        local: conn.local,
        host,
        // An Origin that isn't even text is nobody's own origin: keep it so it fails.
        origin: headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("invalid")),
        tls: conn.tls,
        api_key: header_str(headers, "x-api-key").or(bearer),
        control_token: header_str(headers, CONTROL_TOKEN_HEADER)
            .or(bearer)
            .or_else(|| websocket_token(headers)),
        session: if crate::session::applies_to(req.uri().path()) {
            header_str(headers, header::COOKIE.as_str())
                .and_then(crate::session::from_cookie_header)
        } else {
            None
        },
    }
}

/// The control token a browser's WebSocket offers as a subprotocol (`moat.token.TOKEN`):
/// the one header its API lets a page set.
fn websocket_token(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str())?
        .split(',')
        .find_map(|p| p.trim().strip_prefix(WEBSOCKET_TOKEN_PREFIX))
        .filter(|t| !t.is_empty())
}

/// How a WebSocket client offers the control token as a subprotocol.
pub const WEBSOCKET_TOKEN_PREFIX: &str = "moat.token.";

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}
