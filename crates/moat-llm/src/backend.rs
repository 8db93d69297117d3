//! One upstream server: its fixed URLs, its credential, its concurrency limit and its
//! health.
//!
//! The upstream URL is the configured base plus a path from [`Endpoint`]: a fixed list.
//! Nothing from a client request reaches the URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::Full;
use moat_core::config::llm::{AuthScheme, BackendConfig, BackendKind};
use moat_core::secret::SecretString;
use moat_net::egress::Egress;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::ApiError;

/// The API version sent to Anthropic backends when the client names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The upstream paths moat may call: the whole allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Generation: Anthropic `/v1/messages`, OpenAI `/chat/completions`.
    Generate,
    /// Anthropic `/v1/messages/count_tokens`.
    CountTokens,
    /// Anthropic legacy `/v1/complete`.
    Complete,
    /// The model list of either kind.
    Models,
}

/// A configured backend, ready to take requests.
pub struct Backend {
    name: String,
    kind: BackendKind,
    base: String,
    credential: Option<SecretString>,
    auth: AuthScheme,
    egress: Egress,
    slots: Arc<Semaphore>,
    max_queue: u32,
    waiting: AtomicU32,
    health: Health,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("credential", &self.credential.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// A slot in a backend's concurrency limit; held until the response is complete.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Backend {
    /// A backend from its config and its resolved credential.
    pub fn new(name: &str, config: &BackendConfig, credential: Option<SecretString>) -> Self {
        Self {
            name: name.to_string(),
            kind: config.kind,
            base: config.base_url.trim_end_matches('/').to_string(),
            credential,
            auth: config.auth,
            egress: Egress::new(config.connect_timeout),
            slots: Arc::new(Semaphore::new(config.max_concurrency as usize)),
            max_queue: config.max_queue,
            waiting: AtomicU32::new(0),
            health: Health::default(),
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wire format it speaks.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The URL of `endpoint` on this backend.
    pub fn url(&self, endpoint: Endpoint) -> String {
        let path = match (self.kind, endpoint) {
            (BackendKind::Anthropic, Endpoint::Generate) => "/v1/messages",
            (BackendKind::Anthropic, Endpoint::CountTokens) => "/v1/messages/count_tokens",
            (BackendKind::Anthropic, Endpoint::Complete) => "/v1/complete",
            (BackendKind::Anthropic, Endpoint::Models) => "/v1/models",
            (BackendKind::Openai, Endpoint::Models) => "/models",
            (BackendKind::Openai, _) => "/chat/completions",
        };
        format!("{}{path}", self.base)
    }

    /// Waits for a concurrency slot; refuses at once when the queue is full.
    pub async fn acquire(&self) -> Result<Slot, ApiError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot(p));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "this model's backend is at its concurrency limit and its queue is full; retry shortly",
            )
            .retry_after(1));
        }
        let permit = self.slots.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit
            .map(Slot)
            .map_err(|_| ApiError::upstream("the backend is shutting down"))
    }

    /// A request to `endpoint` with `body`, carrying this backend's credential and the
    /// few client headers the upstream API needs (never the client's own credentials).
    pub fn request(
        &self,
        method: Method,
        endpoint: Endpoint,
        body: Bytes,
        client: &HeaderMap,
    ) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = match self.url(endpoint).parse() {
            Ok(uri) => uri,
            // Validated at config load; a bad one fails the connect like a dead host.
            Err(_) => http::Uri::from_static("http://invalid.invalid/"),
        };
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("moat/", env!("CARGO_PKG_VERSION"))),
        );
        if self.kind == BackendKind::Anthropic {
            let version = client
                .get("anthropic-version")
                .cloned()
                .unwrap_or(HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
            h.insert("anthropic-version", version);
            if let Some(beta) = client.get("anthropic-beta") {
                h.insert("anthropic-beta", beta.clone());
            }
        }
        if let Some(key) = &self.credential
            && let Ok(mut value) = match (self.kind, self.auth) {
                (BackendKind::Anthropic, AuthScheme::XApiKey) => {
                    HeaderValue::from_str(key.expose())
                }
                _ => HeaderValue::from_str(&format!("Bearer {}", key.expose())),
            }
        {
            value.set_sensitive(true);
            let name = match (self.kind, self.auth) {
                (BackendKind::Anthropic, AuthScheme::XApiKey) => {
                    header::HeaderName::from_static("x-api-key")
                }
                _ => header::AUTHORIZATION,
            };
            h.insert(name, value);
        }
        req
    }

    /// Sends a request (see [`Backend::request`]).
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, moat_net::egress::EgressError> {
        self.egress.send(req).await
    }

    /// The backend's health record.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Health and load, for `/status`.
    pub fn status(&self) -> Value {
        let max = self.slots.available_permits();
        let mut v = self.health.json();
        v["name"] = json!(self.name);
        v["kind"] = json!(self.kind.as_str());
        v["available_slots"] = json!(max);
        v["queued"] = json!(self.waiting.load(Ordering::Relaxed));
        v
    }
}

/// What the last exchanges with a backend said about it.
#[derive(Debug, Default)]
pub struct Health {
    last: std::sync::Mutex<Option<(Instant, Result<Duration, &'static str>)>>,
    failures_in_a_row: AtomicU64,
    requests: AtomicU64,
}

impl Health {
    /// An exchange that got a response head after `latency`.
    pub fn ok(&self, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), Ok(latency)));
        }
    }

    /// An exchange that failed, with a stable code (`connect`, `timeout`, `status_5xx`...).
    pub fn failed(&self, code: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), Err(code)));
        }
    }

    fn json(&self) -> Value {
        let last = self.last.lock().ok().and_then(|l| *l);
        let state = match last {
            None => "unknown",
            Some((_, Ok(_))) => "ok",
            Some((_, Err(_))) => "failing",
        };
        json!({
            "state": state,
            "requests": self.requests.load(Ordering::Relaxed),
            "failures_in_a_row": self.failures_in_a_row.load(Ordering::Relaxed),
            "last_seen_secs_ago": last.map(|(at, _)| at.elapsed().as_secs()),
            "last_latency_ms": last.and_then(|(_, r)| r.ok()).map(|d| d.as_millis() as u64),
            "last_error": last.and_then(|(_, r)| r.err()),
        })
    }
}
