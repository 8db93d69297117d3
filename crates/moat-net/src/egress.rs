//! The outbound HTTP client: every request moat makes to the outside goes through here.
//!
//! One [`Egress`] per upstream (its own connection pool and connect timeout). The caller
//! passes a complete URL built from configuration only; request data never picks the
//! host. TLS is rustls with the system's trust store (falling back to the bundled Mozilla
//! roots when the system has none). Dropping a response (or its body) mid-way closes that
//! connection, which is how a client's disconnect reaches the upstream at once.
//!
//! Not yet here (issue: SSRF-safe egress): the URL policy that resolves, pins and
//! re-checks addresses. Backends are configured by the machine's owner, so for now the
//! client trusts the configured base URL.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// No connection could be made (refused, unreachable, DNS, TLS, connect timeout).
    #[error("cannot connect to the upstream")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection broke before a complete response head arrived.
    #[error("the upstream closed or broke the connection before responding")]
    Broken(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A pooled HTTP/1.1 and HTTP/2 client for one upstream.
#[derive(Clone, Debug)]
pub struct Egress {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Egress {
    /// A client whose connections must be made within `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let provider = || std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider()) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "no system trust store; using the bundled roots");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_webpki_roots(provider())
                    .expect("ring supports the default TLS versions")
            }
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // Reads of a fixed 4 KiB instead of a buffer that starts at 8 KiB and grows:
            // a thousand open streams of small events then cost half the memory.
            .http1_read_buf_exact_size(4096)
            .build(https);
        Self { client }
    }

    /// Sends `req` and waits for the response head; the body streams from the result.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, EgressError> {
        self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                EgressError::Connect(Box::new(e))
            } else {
                EgressError::Broken(Box::new(e))
            }
        })
    }
}
