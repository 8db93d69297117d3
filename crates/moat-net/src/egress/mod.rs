//! Every request moat makes to the outside goes through here.
//!
//! - [`policy`]: the URL policy. WHATWG parsing (every IPv4 notation, IDNA, trailing dots
//!   normalized), http/https only, no userinfo, allowed ports, built-in name rules
//!   (`localhost`, `*.internal`, cloud metadata names, ...), the IANA special-purpose
//!   address registries ([`addr`]), and the owner's allow and block lists ([`host`] patterns
//!   and CIDRs). Each refusal is a typed [`Refusal`] naming its rule.
//! - [`resolve`]: resolution that cannot be rebound. A name is resolved once per
//!   connection, every address is judged, and the connector connects only to those
//!   addresses, sending SNI and `Host` for the original name.
//! - [`fetch`]: the client for URLs that someone other than the owner supplied (a model's
//!   tool call, a channel, a remote server): redirects followed here, each hop judged
//!   again, https → http refused; total timeout, response size cap, accepted content
//!   types, a cap on requests in flight per session; refusals reported for the audit log.
//! - [`Egress`]: the pooled client for an upstream the owner configured (an LLM
//!   backend's base URL): that host only, at whatever address it has (local model servers
//!   live on loopback), never redirected. Dropping a response (or its body) mid-way closes
//!   that connection, which is how a client's disconnect reaches the upstream at once.

pub mod addr;
pub mod fetch;
pub mod host;
pub mod policy;
pub mod resolve;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use fetch::{EgressEvent, EgressEvents, FetchError, FetchRequest, FetchResponse, Fetcher};
pub use policy::{Checked, Host, Policy, PolicyError, Refusal};
pub use resolve::{Resolve, StaticResolver, SystemResolver};

/// The connector every client here uses: TCP to checked addresses only, then TLS.
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector<resolve::CheckingResolver>>;

/// A pooled HTTP/1.1 and HTTP/2 client whose connections go only where `policy` and
/// `resolver` allow.
/// `roots` replaces the system trust store (tests trust their own CA).
pub(crate) fn build_client(
    policy: Arc<Policy>,
    resolver: Arc<dyn Resolve>,
    connect_timeout: Duration,
    roots: Option<rustls::RootCertStore>,
) -> Client<Connector, Full<Bytes>> {
    let mut http =
        HttpConnector::new_with_resolver(resolve::CheckingResolver::new(policy, resolver));
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match roots {
        Some(roots) => builder.with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ),
        None => match builder.with_provider_and_native_roots(provider()) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "no system trust store; using the bundled roots");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_webpki_roots(provider())
                    .expect("ring supports the default TLS versions")
            }
        },
    };
    let https = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        // Reads of a fixed 4 KiB instead of a buffer that starts at 8 KiB and grows:
        // a thousand open streams of small events then cost half the memory.
        .http1_read_buf_exact_size(4096)
        .build(https)
}

/// Why a request to a configured upstream got no response.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// No connection could be made (refused, unreachable, DNS, TLS, connect timeout).
    #[error("cannot connect to the upstream")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection broke before a complete response head arrived.
    #[error("the upstream closed or broke the connection before responding")]
    Broken(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The pooled client for one upstream the owner configured.
#[derive(Clone, Debug)]
pub struct Egress {
    client: Client<Connector, Full<Bytes>>,
    /// Scheme, host and port of the configured base: the only origin `send` reaches.
    origin: (String, String, u16),
}

/// Scheme, host (no brackets, no trailing dots, lowercase) and port of a URI.
fn origin_of_uri(uri: &http::Uri) -> Option<(String, String, u16)> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some((scheme, host, port))
}

impl Egress {
    /// A client that reaches the host of `base` (and nothing else), connecting within
    /// `connect_timeout`.
    pub fn for_upstream(base: &url::Url, connect_timeout: Duration) -> Self {
        let policy = Arc::new(Policy::configured_upstream(base));
        let origin = base
            .as_str()
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| origin_of_uri(&u))
            .unwrap_or_default();
        Self {
            client: build_client(policy, Arc::new(SystemResolver), connect_timeout, None),
            origin,
        }
    }

    /// Sends `req` and waits for the response head; the body streams from the result.
    /// A request for any origin but the configured base's is refused (an address
    /// literal would not even pass through the checking resolver).
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, EgressError> {
        if origin_of_uri(req.uri()).as_ref() != Some(&self.origin) {
            let host = req.uri().host().unwrap_or("").to_string();
            return Err(EgressError::Connect(Box::new(Refusal::NotListed { host })));
        }
        self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                EgressError::Connect(Box::new(e))
            } else {
                EgressError::Broken(Box::new(e))
            }
        })
    }
}

/// What a dry run found: the checked URL and, for a name, the addresses it resolved to
/// (each one passed).
#[derive(Debug, Clone)]
pub struct Decision {
    /// The URL as it would be sent.
    pub checked: Checked,
    /// The addresses the name resolved to now, each of which passed (a real fetch
    /// resolves again, and judges again).
    pub addrs: Vec<std::net::IpAddr>,
}

/// The whole decision for `url`, DNS included, nothing fetched (`moat egress check`).
pub async fn decide(
    policy: &Policy,
    resolver: &dyn Resolve,
    url: &str,
) -> Result<Decision, Refusal> {
    let checked = policy.check_url(url)?;
    let addrs = match &checked.host {
        Host::Addr(a) => vec![*a],
        Host::Name(name) => resolve::resolve_checked(policy, resolver, name).await?,
    };
    Ok(Decision { checked, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_configured_upstream_client_reaches_its_origin_only() {
        let base = url::Url::parse("http://127.0.0.1:9/v1").unwrap();
        let egress = Egress::for_upstream(&base, Duration::from_secs(1));
        for other in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:10/v1/models",
            "https://127.0.0.1:9/v1/models",
            "http://localhost:9/v1/models",
        ] {
            let req = http::Request::get(other)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let err = egress.send(req).await.unwrap_err();
            let refusal = resolve::find_refusal(&err).map(Refusal::code);
            assert_eq!(refusal, Some("not-allowlisted"), "{other}");
        }
    }
}
