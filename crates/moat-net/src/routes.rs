//! The route table: every route is declared with its exposure class, and a listener's
//! router is built from the table, so a route can't exist without a class and a LAN
//! listener can't carry a class it must not.
//!
//! ```
//! use axum::routing::get;
//! use moat_net::exposure::Exposure;
//! use moat_net::routes::RouteTable;
//! let table = RouteTable::new()
//!     .route("/health", Exposure::Open, get(|| async { "ok" }))
//!     .route("/status", Exposure::Control, get(|| async { "..." }));
//! assert_eq!(table.class_of("/status"), Some(Exposure::Control));
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::MethodRouter;
use http::{HeaderMap, StatusCode, header};

use crate::error::error_response;
use crate::exposure::{Exposure, Policy, RequestFacts};
use crate::server::ConnInfo;

/// Header carrying the control token (also accepted as `Authorization: Bearer`).
pub const CONTROL_TOKEN_HEADER: &str = "x-moat-control-token";

/// Routes with their exposure classes.
#[derive(Default, Clone)]
pub struct RouteTable {
    routes: Vec<(&'static str, Exposure, MethodRouter)>,
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

    /// Declares `path` with its `class` and its handlers (which fix the allowed methods).
    pub fn route(mut self, path: &'static str, class: Exposure, handlers: MethodRouter) -> Self {
        self.routes.push((path, class, handlers));
        self
    }

    /// The class `path` was declared with.
    pub fn class_of(&self, path: &str) -> Option<Exposure> {
        self.routes
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, c, _)| *c)
    }

    /// The router for one listener: the routes its kind may carry, each behind the
    /// checks of its class; any other path is 403.
    pub fn router_for(&self, policy: Arc<Policy>) -> Router {
        let mut router = Router::new();
        for (path, class, handlers) in &self.routes {
            if !class.served_on(policy.kind) {
                continue;
            }
            let guarded = if class.checks().is_empty() {
                handlers.clone()
            } else {
                handlers
                    .clone()
                    .route_layer(from_fn_with_state((policy.clone(), *class), guard))
            };
            router = router.route(path, guarded);
        }
        router.fallback(|| async {
            error_response(StatusCode::FORBIDDEN, "forbidden", "no such route")
        })
    }
}

/// Applies the exposure policy of the route's class to one request.
async fn guard(
    State((policy, class)): State<(Arc<Policy>, Exposure)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(conn) = req.extensions().get::<ConnInfo>().copied() else {
        // Only reachable if a router is served without moat's accept loop: fail closed.
        return error_response(StatusCode::FORBIDDEN, "peer_not_allowed", "unknown peer");
    };
    let headers = req.headers();
    let host = header_str(headers, header::HOST.as_str())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let bearer = header_str(headers, header::AUTHORIZATION.as_str()).and_then(|v| {
        let (scheme, value) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
    });
    let facts = RequestFacts {
        peer: conn.peer.ip(),
        local: conn.local,
        host,
        origin: headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("invalid")),
        tls: conn.tls,
        api_key: header_str(headers, "x-api-key").or(bearer),
        control_token: header_str(headers, CONTROL_TOKEN_HEADER).or(bearer),
    };
    match policy.decide(class, &facts) {
        Ok(()) => next.run(req).await,
        Err(denial) => {
            tracing::warn!(
                peer = %conn.peer,
                listener = %policy.kind,
                method = %req.method(),
                path = req.uri().path(),
                class = ?class,
                reason = denial.code(),
                "request refused"
            );
            error_response(denial.status(), denial.code(), denial.message())
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}
