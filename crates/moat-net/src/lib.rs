//! moat-net: how moat meets the network.
//!
//! Exposure by construction ([`exposure`], [`routes`]), the listeners and their accept
//! loop with TLS and graceful shutdown ([`server`]), the per-request gate ([`gate`]) with
//! request limits ([`limits`]), per-IP rate limits ([`ratelimit`]) and the headers on every
//! response ([`headers`]), and the error body shape ([`error`]); and the way out: the
//! SSRF-safe egress client ([`egress`]). It knows nothing of LLMs.
#![deny(missing_docs)]

pub mod conns;
pub mod egress;
pub mod error;
pub mod exposure;
pub mod gate;
pub mod headers;
pub mod limits;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod slow_head;
pub mod tls;
