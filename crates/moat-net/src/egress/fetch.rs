//! Fetching a URL that someone other than the owner supplied.
//!
//! Every hop is judged by the [`Policy`] before anything is sent, and every connection
//! goes only to addresses that passed ([`super::resolve`]). Redirects are followed here,
//! never by the HTTP client: each `Location` is judged as a new URL, an https → http hop
//! is refused, and credentials are not carried to another origin. The whole exchange has
//! one deadline, the body one size cap, and each session a cap on requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use moat_core::config::egress::EgressConfig;
use url::Url;

use super::policy::{Policy, Refusal};
use super::resolve::{Resolve, SystemResolver, find_refusal};
use super::{Connector, build_client};

/// A refusal, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct EgressEvent<'a> {
    /// Who asked (a session, a tool, a channel).
    pub session: &'a str,
    /// `scheme://host:port` of the URL refused, never its path or query (they can carry
    /// credentials); `-` when the text was not a URL.
    pub origin: &'a str,
    /// The refusal.
    pub refusal: &'a Refusal,
}

/// Receives every refusal. Called on the request's task: keep it quick.
pub trait EgressEvents: Send + Sync {
    /// One refusal.
    fn refused(&self, event: EgressEvent<'_>);
}

/// One request.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The method.
    pub method: Method,
    /// The URL, as supplied.
    pub url: String,
    /// Headers to send (`Host` is always the URL's).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Media types accepted (`image/png`, `image/*`); empty accepts any.
    pub accept: Vec<String>,
    /// A smaller body cap than the fetcher's, for this request.
    pub max_bytes: Option<u64>,
}

impl FetchRequest {
    /// A GET of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            url: url.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            accept: Vec::new(),
            max_bytes: None,
        }
    }

    /// Accepts only these media types.
    pub fn accept(mut self, types: &[&str]) -> Self {
        self.accept = types.iter().map(|t| t.to_ascii_lowercase()).collect();
        self
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// The status of the last hop.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, at most the cap.
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub url: Url,
    /// How many redirects were followed.
    pub redirects: u8,
}

/// Why a fetch produced no response.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The policy or a limit refused it.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// No connection could be made.
    #[error("cannot connect to {origin}: {reason}")]
    Connect {
        /// `scheme://host:port`.
        origin: String,
        /// Why.
        reason: String,
    },
    /// The exchange broke after connecting.
    #[error("the exchange with {origin} failed: {reason}")]
    Broken {
        /// `scheme://host:port`.
        origin: String,
        /// Why.
        reason: String,
    },
}

impl FetchError {
    /// The refusal, when this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// Limits of one fetcher.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Most redirects followed.
    pub max_redirects: u8,
    /// Longest the whole exchange may take.
    pub total_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Largest body read.
    pub max_response_bytes: u64,
    /// Most requests in flight per session.
    pub max_concurrent_per_session: u32,
}

impl FetchLimits {
    /// The limits `[egress]` sets.
    pub fn from_config(c: &EgressConfig) -> Self {
        Self {
            max_redirects: c.max_redirects,
            total_timeout: c.total_timeout,
            connect_timeout: c.connect_timeout,
            max_response_bytes: c.max_response_bytes,
            max_concurrent_per_session: c.max_concurrent_per_session,
        }
    }
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self::from_config(&EgressConfig::default())
    }
}

/// Builds a [`Fetcher`].
pub struct FetcherBuilder {
    policy: Policy,
    limits: FetchLimits,
    resolver: Arc<dyn Resolve>,
    roots: Option<rustls::RootCertStore>,
    events: Option<Arc<dyn EgressEvents>>,
}

impl FetcherBuilder {
    /// Limits other than the defaults.
    pub fn limits(mut self, limits: FetchLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A resolver other than the system's (tests answer from a table).
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Trusts these roots instead of the system's.
    pub fn roots(mut self, roots: rustls::RootCertStore) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Reports refusals to `events` (the audit log).
    pub fn events(mut self, events: Arc<dyn EgressEvents>) -> Self {
        self.events = Some(events);
        self
    }

    /// The fetcher.
    pub fn build(self) -> Fetcher {
        let policy = Arc::new(self.policy);
        Fetcher {
            client: build_client(
                policy.clone(),
                self.resolver,
                self.limits.connect_timeout,
                self.roots,
            ),
            policy,
            limits: self.limits,
            in_flight: Arc::default(),
            events: self.events,
        }
    }
}

/// The client for URLs that someone other than the owner supplied.
#[derive(Clone)]
pub struct Fetcher {
    policy: Arc<Policy>,
    client: Client<Connector, Full<Bytes>>,
    limits: FetchLimits,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    events: Option<Arc<dyn EgressEvents>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with the system resolver and trust store.
    pub fn new(policy: Policy, limits: FetchLimits) -> Self {
        Self::builder(policy).limits(limits).build()
    }

    /// A fetcher with more choices.
    pub fn builder(policy: Policy) -> FetcherBuilder {
        FetcherBuilder {
            policy,
            limits: FetchLimits::default(),
            resolver: Arc::new(SystemResolver),
            roots: None,
            events: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Fetches `req` on behalf of `session`.
    pub async fn fetch(
        &self,
        session: &str,
        req: FetchRequest,
    ) -> Result<FetchResponse, FetchError> {
        let mut origin = origin_of(&req.url);
        let result = match self.enter(session) {
            Err(r) => Err(FetchError::Refused(r)),
            Ok(_guard) => {
                let deadline = self.limits.total_timeout;
                match tokio::time::timeout(deadline, self.follow(req, &mut origin)).await {
                    Ok(r) => r,
                    Err(_) => Err(FetchError::Refused(Refusal::Timeout(deadline))),
                }
            }
        };
        if let Err(FetchError::Refused(refusal)) = &result {
            tracing::info!(session, origin = %origin, rule = %refusal.rule(), "egress refused: {refusal}");
            if let Some(events) = &self.events {
                events.refused(EgressEvent {
                    session,
                    origin: &origin,
                    refusal,
                });
            }
        }
        result
    }

    fn enter(&self, session: &str) -> Result<SessionGuard, Refusal> {
        let limit = self.limits.max_concurrent_per_session;
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(session.to_string()).or_insert(0);
        if *n >= limit {
            return Err(Refusal::SessionBusy(limit));
        }
        *n += 1;
        Ok(SessionGuard {
            map: self.in_flight.clone(),
            session: session.to_string(),
        })
    }

    async fn follow(
        &self,
        req: FetchRequest,
        origin: &mut String,
    ) -> Result<FetchResponse, FetchError> {
        let FetchRequest {
            mut method,
            url,
            mut headers,
            mut body,
            accept,
            max_bytes,
        } = req;
        let cap = max_bytes.map_or(self.limits.max_response_bytes, |m| {
            m.min(self.limits.max_response_bytes)
        });
        if matches!(method, Method::CONNECT | Method::TRACE) {
            return Err(Refusal::Method(method.to_string()).into());
        }
        let mut checked = self.policy.check_url(&url)?;
        let mut redirects = 0u8;
        loop {
            *origin = origin_of(checked.url.as_str());
            let resp = self
                .send(&method, &checked.url, &headers, &body, origin)
                .await?;
            let status = resp.status();
            let follows = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if follows && let Some(location) = resp.headers().get(header::LOCATION) {
                if resp.headers().get_all(header::LOCATION).iter().count() > 1 {
                    return Err(Refusal::BadRedirect.into());
                }
                if redirects >= self.limits.max_redirects {
                    return Err(Refusal::TooManyRedirects(self.limits.max_redirects).into());
                }
                let location = location.to_str().map_err(|_| Refusal::BadRedirect)?;
                if let Ok(next) = checked.url.join(location) {
                    // A refusal names the hop refused, not the one that redirected.
                    *origin = origin_of(next.as_str());
                }
                let next = self.policy.check_redirect(&checked.url, location)?;
                drop(resp);
                if status == StatusCode::SEE_OTHER && method != Method::HEAD
                    || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                        && method == Method::POST
                {
                    method = Method::GET;
                    body = Bytes::new();
                    for h in [
                        header::CONTENT_TYPE,
                        header::CONTENT_LENGTH,
                        header::CONTENT_ENCODING,
                        header::CONTENT_LANGUAGE,
                        header::CONTENT_LOCATION,
                    ] {
                        headers.remove(h);
                    }
                }
                if next.url.origin() != checked.url.origin() {
                    // Another origin gets no credentials of any name: only headers that
                    // describe the request travel on.
                    headers = headers
                        .iter()
                        .filter(|(name, _)| CROSS_ORIGIN_HEADERS.contains(name))
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect();
                }
                checked = next;
                redirects += 1;
                continue;
            }
            return finish(resp, checked.url, redirects, &accept, cap).await;
        }
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
        origin: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, FetchError> {
        let uri: http::Uri = url.as_str().parse().map_err(|_| {
            Refusal::InvalidUrl("not representable as an HTTP request target".into())
        })?;
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Full::new(body.clone()))
            .map_err(|_| Refusal::InvalidUrl("not representable as an HTTP request".into()))?;
        for (name, value) in headers {
            // Framing and hop-by-hop headers are the HTTP client's own business.
            if !HOP_BY_HOP.contains(name) {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        self.client.request(req).await.map_err(|e| {
            if let Some(r) = find_refusal(&e) {
                return FetchError::Refused(r.clone());
            }
            let reason = innermost(&e);
            if e.is_connect() {
                FetchError::Connect {
                    origin: origin.into(),
                    reason,
                }
            } else {
                FetchError::Broken {
                    origin: origin.into(),
                    reason,
                }
            }
        })
    }
}

/// Headers that may follow a redirect to another origin.
const CROSS_ORIGIN_HEADERS: [header::HeaderName; 5] = [
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
];

/// Headers a caller may not set: the HTTP client frames the request itself.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::HOST,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::PROXY_AUTHORIZATION,
];

async fn finish(
    resp: http::Response<hyper::body::Incoming>,
    url: Url,
    redirects: u8,
    accept: &[String],
    cap: u64,
) -> Result<FetchResponse, FetchError> {
    // Only a success is held to the media types asked for: an error page is returned
    // with its status for the caller to see.
    if !accept.is_empty() && resp.status().is_success() {
        let got = media_type(resp.headers());
        if !accept.iter().any(|a| media_matches(a, &got)) {
            return Err(Refusal::ContentType {
                got,
                accepted: accept.to_vec(),
            }
            .into());
        }
    }
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(Refusal::TooLarge(cap).into());
    }
    let (parts, mut incoming) = resp.into_parts();
    let origin = origin_of(url.as_str());
    let mut body = BytesMut::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| FetchError::Broken {
            origin: origin.clone(),
            reason: innermost(&e),
        })?;
        if let Ok(data) = frame.into_data() {
            if body.len() as u64 + data.len() as u64 > cap {
                return Err(Refusal::TooLarge(cap).into());
            }
            body.extend_from_slice(&data);
        }
    }
    Ok(FetchResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.freeze(),
        url,
        redirects,
    })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn media_matches(pattern: &str, got: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    if pattern == "*/*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(kind) => got
            .split_once('/')
            .is_some_and(|(k, sub)| k == kind && !sub.is_empty()),
        None => pattern == got,
    }
}

/// `scheme://host:port` of a URL, or `-`: what logs and the audit log may show.
fn origin_of(url: &str) -> String {
    if url.len() > super::policy::MAX_URL_LEN {
        return "-".into();
    }
    match Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => format!("{}:", u.scheme()),
        },
        Err(_) => "-".into(),
    }
}

/// The message of the deepest error in the chain (hyper's outer ones say little).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

struct SessionGuard {
    map: Arc<Mutex<HashMap<String, u32>>>,
    session: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(media_matches("image/*", "image/png"));
        assert!(!media_matches("image/*", "image/"));
        assert!(!media_matches("image/*", "text/html"));
        assert!(media_matches("text/html", "text/html"));
        assert!(!media_matches("text/html", "text/htmlx"));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Text/HTML; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(media_type(&h), "text/html");
    }

    #[test]
    fn origins_never_show_paths_or_queries() {
        assert_eq!(
            origin_of("https://user:pw@example.com/a?token=sk-123"),
            "https://example.com:443"
        );
        assert_eq!(origin_of("not a url sk-123"), "-");
    }
}
