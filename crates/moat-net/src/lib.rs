//! moat-net: how moat meets the network.
//!
//! Exposure by construction ([`Exposure`], [`Policy`], [`RouteTable`]), the listeners and
//! their accept loop with TLS and graceful shutdown ([`Listener`], [`serve`]), the
//! per-request gate ([`GateConfig`]) with request limits ([`BodyReader`]), per-IP rate
//! limits ([`ClientLimiter`]), connection caps ([`ConnLimits`]) and the headers on every
//! response ([`SECURITY_HEADERS`]), and the error body shape ([`refused`]); and the way
//! out: the SSRF-safe egress client ([`egress`]). It knows nothing of LLMs.
//!
//! The crate's surface is what this page lists; the modules behind it are private.
#![deny(missing_docs)]

mod conns;
pub mod egress;
mod error;
mod exposure;
mod gate;
mod headers;
mod limits;
mod ratelimit;
mod routes;
mod server;
pub mod session;
mod slow_head;
mod tls;

pub use conns::ConnLimits;
pub use error::{ErrorDialect, ErrorInfo, Refused, error_response, refused};
pub use exposure::{
    ApiKeyState, Check, Denial, Exposure, ExposureProblem, KeyWeakness, ListenerKind,
    MIN_REMOTE_API_KEY_CHARS, Policy, PolicySettings, RequestFacts, exposure_problems,
    key_weakness,
};
pub use gate::{GateConfig, NetEvent, NetEvents};
pub use headers::{SECURITY_HEADERS, cors_for, set_security_headers};
pub use limits::{BodyLimits, BodyReader};
pub use ratelimit::{ClientLimiter, Limited, RateLimits, client_key, too_many_requests};
pub use routes::{
    CONTROL_TOKEN_HEADER, PathParams, RouteError, RouteTable, Routes, WEBSOCKET_TOKEN_PREFIX,
};
pub use server::{ConnSettings, Drained, Listener, MAX_HEAD_BYTES, ServeError, serve};
pub use tls::{TlsError, TlsServerConfig, server_config};
