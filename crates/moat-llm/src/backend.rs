//! One upstream server: its fixed URLs, its pool of accounts, its concurrency limit and
//! its health.
//!
//! The upstream URL is the configured base plus a path from [`Endpoint`]: a fixed list.
//! Nothing from a client request reaches the URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::Full;
use moat_core::config::llm::{AuthScheme, BackendConfig, BackendKind, PoolConfig, ResponsesMode};
use moat_core::secret::SecretString;
use moat_net::egress::Egress;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::ApiError;
use crate::pool::{Account, Pool, QueuePlace};

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
    /// OpenAI `/responses`, for backends with `responses = "native"`.
    Responses,
}

/// A configured backend, ready to take requests.
pub struct Backend {
    name: String,
    kind: BackendKind,
    native_responses: bool,
    /// What translation does with what this backend cannot take as it is.
    translation: crate::translate::Options,
    /// The upstream URL of each [`Endpoint`] the kind has, built once from the
    /// configured base.
    urls: [Option<http::Uri>; 5],
    pool: Pool,
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
            .field("accounts", &self.pool.accounts().len())
            .finish_non_exhaustive()
    }
}

/// A slot in a backend's concurrency limit; held until the response is complete.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A backend whose base URL is not a usable URL.
#[derive(Debug, thiserror::Error)]
#[error("llm.backends.{backend}.base_url is not a valid URL: {reason}")]
pub struct InvalidBaseUrl {
    /// The backend's name.
    pub backend: String,
    /// What the URL parser said.
    pub reason: String,
}

impl Endpoint {
    /// The path under the base URL; none where the kind's API has no such endpoint.
    fn path(self, kind: BackendKind) -> Option<&'static str> {
        Some(match (kind, self) {
            (BackendKind::Anthropic, Endpoint::Generate) => "/v1/messages",
            (BackendKind::Anthropic, Endpoint::CountTokens) => "/v1/messages/count_tokens",
            (BackendKind::Anthropic, Endpoint::Complete) => "/v1/complete",
            (BackendKind::Anthropic, Endpoint::Models) => "/v1/models",
            (BackendKind::Anthropic, Endpoint::Responses) => return None,
            (BackendKind::Openai, Endpoint::Generate) => "/chat/completions",
            (BackendKind::Openai, Endpoint::Models) => "/models",
            (BackendKind::Openai, Endpoint::Responses) => "/responses",
            (BackendKind::Openai, Endpoint::CountTokens | Endpoint::Complete) => return None,
        })
    }
}

impl Backend {
    /// A backend from its config and its accounts (at least one, in config order).
    pub fn new(
        name: &str,
        config: &BackendConfig,
        accounts: Vec<Account>,
        pools: &PoolConfig,
    ) -> Result<Self, InvalidBaseUrl> {
        // The URL parser's normal form, so that the host the egress policy trusts and the
        // host each request names are one and the same.
        let base_url = url::Url::parse(&config.base_url).map_err(|e| InvalidBaseUrl {
            backend: name.to_string(),
            reason: e.to_string(),
        })?;
        let base = base_url.as_str().trim_end_matches('/');
        let parse = |endpoint: Endpoint| {
            endpoint
                .path(config.kind)
                .map(|path| {
                    format!("{base}{path}")
                        .parse::<http::Uri>()
                        .map_err(|e| InvalidBaseUrl {
                            backend: name.to_string(),
                            reason: e.to_string(),
                        })
                })
                .transpose()
        };
        // In declaration order: `url` indexes by the discriminant.
        let urls = [
            parse(Endpoint::Generate)?,
            parse(Endpoint::CountTokens)?,
            parse(Endpoint::Complete)?,
            parse(Endpoint::Models)?,
            parse(Endpoint::Responses)?,
        ];
        Ok(Self {
            name: name.to_string(),
            kind: config.kind,
            native_responses: config.responses == ResponsesMode::Native,
            translation: crate::translate::Options {
                unsupported_tools: config.unsupported_tools,
                system_messages: config.system_messages,
                max_output_tokens: config.max_output_tokens,
                web_search: config.kind == BackendKind::Anthropic,
            },
            urls,
            pool: Pool::new(accounts, config.strategy, pools.clone()),
            auth: config.auth,
            egress: Egress::for_upstream(&base_url, config.connect_timeout),
            slots: Arc::new(Semaphore::new(config.max_concurrency as usize)),
            max_queue: config.max_queue,
            waiting: AtomicU32::new(0),
            health: Health::default(),
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wire format it speaks.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Whether `/v1/responses` passes through untouched to the backend's own `/responses`.
    pub fn native_responses(&self) -> bool {
        self.native_responses
    }

    /// What translation does with hosted tools and mid-conversation system messages.
    pub fn translation(&self) -> &crate::translate::Options {
        &self.translation
    }

    /// The accounts and how they are shared.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How this backend's API keys are sent.
    pub fn auth(&self) -> AuthScheme {
        self.auth
    }

    /// The URL of `endpoint` on this backend, if its API has that endpoint.
    pub fn url(&self, endpoint: Endpoint) -> Option<&http::Uri> {
        self.urls[endpoint as usize].as_ref()
    }

    /// Waits for a concurrency slot; refuses at once when the queue is full.
    pub async fn acquire(&self) -> Result<Slot, ApiError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot(p));
        }
        // Counted while waiting, and uncounted however the wait ends: a client that
        // disconnects while queued drops this future mid-await.
        let place = QueuePlace::take(&self.waiting, self.max_queue).ok_or_else(|| {
            ApiError::busy(
                "this model's backend is at its concurrency limit and its queue is full; retry shortly",
            )
        })?;
        let permit = self.slots.clone().acquire_owned().await;
        drop(place);
        permit
            .map(Slot)
            .map_err(|_| ApiError::upstream("the backend is shutting down"))
    }

    /// A request to `endpoint` with `body`, carrying an account's `credential` and the
    /// few client headers the upstream API needs (never the client's own credentials).
    pub fn request(
        &self,
        method: Method,
        endpoint: Endpoint,
        body: Bytes,
        client: &HeaderMap,
        credential: Option<&(SecretString, AuthScheme)>,
    ) -> Result<http::Request<Full<Bytes>>, ApiError> {
        let uri = self
            .url(endpoint)
            .ok_or_else(|| self.no_endpoint())?
            .clone();
        Ok(self.request_to(method, uri, body, client, credential))
    }

    /// A request about one stored response on a backend with native Responses:
    /// `GET`/`DELETE /responses/{id}`, or `POST /responses/{id}/cancel` with `cancel`.
    /// The id is one the backend itself gave, percent-encoded as one path segment all
    /// the same.
    pub fn response_request(
        &self,
        method: Method,
        id: &str,
        cancel: bool,
        credential: Option<&(SecretString, AuthScheme)>,
    ) -> Result<http::Request<Full<Bytes>>, ApiError> {
        if matches!(id, "" | "." | "..") {
            return Err(ApiError::invalid("not a response id"));
        }
        let base = self
            .url(Endpoint::Responses)
            .ok_or_else(|| self.no_endpoint())?;
        let mut url = url::Url::parse(&base.to_string())
            .map_err(|_| ApiError::upstream("the backend's URL is not usable"))?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ApiError::upstream("the backend's URL is not usable"))?;
            path.push(id);
            if cancel {
                path.push("cancel");
            }
        }
        let uri = url
            .as_str()
            .parse::<http::Uri>()
            .map_err(|_| ApiError::upstream("the backend's URL is not usable"))?;
        Ok(self.request_to(method, uri, Bytes::new(), &HeaderMap::new(), credential))
    }

    fn no_endpoint(&self) -> ApiError {
        ApiError::invalid(format!(
            "backend {:?} ({} API) has no endpoint for this request",
            self.name,
            self.kind.as_str()
        ))
    }

    fn request_to(
        &self,
        method: Method,
        uri: http::Uri,
        body: Bytes,
        client: &HeaderMap,
        credential: Option<&(SecretString, AuthScheme)>,
    ) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
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
        if let Some((key, scheme)) = credential
            && let Ok(mut value) = match (self.kind, scheme) {
                (BackendKind::Anthropic, AuthScheme::XApiKey) => {
                    HeaderValue::from_str(key.expose())
                }
                _ => HeaderValue::from_str(&format!("Bearer {}", key.expose())),
            }
        {
            value.set_sensitive(true);
            let name = match (self.kind, scheme) {
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
        let mut v = self.health.json();
        v["name"] = json!(self.name);
        v["kind"] = json!(self.kind.as_str());
        if self.native_responses {
            v["responses"] = json!("native");
        }
        v["available_slots"] = json!(self.slots.available_permits());
        v["queued"] = json!(self.waiting.load(Ordering::Relaxed));
        v["accounts"] = json!(self.pool.accounts().len());
        v["strategy"] = json!(self.pool.strategy().as_str());
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

#[cfg(test)]
mod tests {
    use moat_core::config::llm::ResponsesMode;

    use super::*;

    fn backend(kind: BackendKind, base: &str) -> Backend {
        let mut config = BackendConfig::new(kind, base);
        config.responses = match kind {
            BackendKind::Openai => ResponsesMode::Native,
            BackendKind::Anthropic => ResponsesMode::Translate,
        };
        Backend::new("b", &config, Vec::new(), &PoolConfig::default()).unwrap()
    }

    #[test]
    fn each_kind_has_only_its_own_endpoints() {
        let o = backend(BackendKind::Openai, "http://127.0.0.1:1/v1/");
        assert_eq!(
            o.url(Endpoint::Generate).unwrap(),
            "http://127.0.0.1:1/v1/chat/completions"
        );
        assert_eq!(
            o.url(Endpoint::Responses).unwrap(),
            "http://127.0.0.1:1/v1/responses"
        );
        assert!(o.url(Endpoint::CountTokens).is_none());
        assert!(o.url(Endpoint::Complete).is_none());
        let a = backend(BackendKind::Anthropic, "http://127.0.0.1:1");
        assert!(a.url(Endpoint::Responses).is_none());
        let refused = a
            .request(
                Method::POST,
                Endpoint::Responses,
                Bytes::new(),
                &HeaderMap::new(),
                None,
            )
            .unwrap_err();
        assert!(
            refused.message.contains("no endpoint"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_response_id_is_one_path_segment() {
        let o = backend(BackendKind::Openai, "http://127.0.0.1:1/v1");
        let uri = |id: &str| {
            o.response_request(Method::DELETE, id, false, None)
                .map(|r| r.uri().to_string())
        };
        assert_eq!(
            uri("resp_abc").unwrap(),
            "http://127.0.0.1:1/v1/responses/resp_abc"
        );
        assert_eq!(
            uri("../../admin?x=1#y").unwrap(),
            "http://127.0.0.1:1/v1/responses/..%2F..%2Fadmin%3Fx=1%23y"
        );
        for bad in ["", ".", ".."] {
            assert!(uri(bad).is_err(), "{bad:?}");
        }
        let cancel = o
            .response_request(Method::POST, "resp_abc", true, None)
            .unwrap();
        assert_eq!(
            cancel.uri().to_string(),
            "http://127.0.0.1:1/v1/responses/resp_abc/cancel"
        );
    }
}
