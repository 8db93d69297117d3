//! One `GET /models` to a backend, as `moat backend test` and `moat account check` send it:
//! the answer's status, latency, headers (rate-limit headroom) and body, or why there was
//! none.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use moat_core::config::llm::AuthScheme;
use moat_core::secret::SecretString;

use crate::backend::{Backend, Endpoint};

/// The most of a models list read: large catalogues (OpenRouter's) fit well inside.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the backend answered.
#[derive(Debug)]
pub struct ModelsAnswer {
    /// The HTTP status.
    pub status: StatusCode,
    /// From sending the request to the end of the answer's head.
    pub latency: Duration,
    /// The answer's headers (rate-limit headers among them).
    pub headers: HeaderMap,
    /// The body, at most 8 MiB.
    pub body: Bytes,
}

impl ModelsAnswer {
    /// The model ids of an OpenAI- or Anthropic-shaped list (`{"data":[{"id":..}]}`).
    pub fn model_ids(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect()
    }

    /// The upstream's own error message, when it answered with one.
    pub fn error_message(&self) -> Option<String> {
        crate::errors::upstream_message(&self.body)
    }
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The request could not be made (the backend has no models endpoint, a bad header).
    #[error("{0}")]
    Request(String),
    /// Nothing came back in time.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The connection failed; the innermost cause says why, without addresses.
    #[error("cannot reach {base_url}: {cause}")]
    Unreachable {
        /// The backend's configured base URL.
        base_url: String,
        /// What failed, innermost cause last.
        cause: String,
    },
    /// The answer's body broke off or was larger than 8 MiB.
    #[error("the answer broke off")]
    BrokeOff,
}

/// Sends `GET /models` with `credential`, waiting at most `wait` for the whole answer.
pub async fn models(
    backend: &Backend,
    base_url: &str,
    credential: Option<&(SecretString, AuthScheme)>,
    wait: Duration,
) -> Result<ModelsAnswer, ProbeError> {
    let req = backend
        .request(
            Method::GET,
            Endpoint::Models,
            Bytes::new(),
            &HeaderMap::new(),
            credential,
        )
        .map_err(|e| ProbeError::Request(e.message))?;
    let started = Instant::now();
    let exchange = async {
        let resp = backend
            .send(req)
            .await
            .map_err(|e| ProbeError::Unreachable {
                base_url: base_url.to_string(),
                cause: chain(&e),
            })?;
        let latency = started.elapsed();
        let (head, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| ProbeError::BrokeOff)?
            .to_bytes();
        Ok(ModelsAnswer {
            status: head.status,
            latency,
            headers: head.headers,
            body,
        })
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| ProbeError::NoAnswer(wait))?
}

/// An error and its innermost cause, which is what a person at a terminal can act on.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let (outer, innermost) = (e.to_string(), inner.to_string());
    if outer == innermost {
        outer
    } else {
        format!("{outer}: {innermost}")
    }
}
