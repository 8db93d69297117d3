//! Request body limits: size, time and a budget for all bodies in memory at once.
//!
//! A declared `Content-Length` over the limit is refused with 413 before a byte of the
//! body is read, whatever the path. Bodies are read only once the route exists and the
//! caller passed its class's checks, so unknown paths and unauthenticated callers never
//! make moat buffer anything. A body is then collected under the size cap (a chunked body
//! that grows past it gets 413 the moment it does) and a deadline (a body still incomplete
//! when it passes gets 408: slow-loris), taking its share of a global budget of buffered
//! bytes as its bytes arrive and holding it until the request is done (none left: 503
//! with `Retry-After`). Shares follow what was received, not what was declared: idle
//! connections that declare 10 MiB each and send a byte must not use the budget up for
//! everyone. Refusals close the connection, so the unread rest of a body is never
//! consumed.
//!
//! Slow *headers* get a 408 from the accept loop (see `slow_head`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{error_response, refused};

/// The limits applied to request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body in bytes.
    pub max_bytes: u64,
    /// Time allowed from the request head to the end of the body.
    pub read_timeout: Duration,
}

/// The unit of the buffered-bytes budget.
const BUDGET_UNIT: u64 = 1024;

/// Reads bodies under [`BodyLimits`] and the global budget; shared by all listeners.
#[derive(Debug, Clone)]
pub struct BodyReader {
    limits: BodyLimits,
    budget: Arc<Semaphore>,
}

/// A body's share of the budget, held in the request's extensions until it is dropped.
#[derive(Debug, Clone)]
pub(crate) struct BudgetShare(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl BodyReader {
    /// `budget_bytes` is the most all request bodies may hold in memory at once.
    pub fn new(limits: BodyLimits, budget_bytes: u64) -> Self {
        let units = (budget_bytes / BUDGET_UNIT).clamp(1, u64::from(u32::MAX >> 3));
        Self {
            limits,
            budget: Arc::new(Semaphore::new(units as usize)),
        }
    }

    /// The 413 for a declared length over the limit, before anything else is done.
    pub fn refuse_declared(&self, headers: &http::HeaderMap) -> Option<Response> {
        declared_length(headers)
            .is_some_and(|n| n > self.limits.max_bytes)
            .then(|| too_large(self.limits.max_bytes))
    }

    /// The request with its whole body, or the refusal (413, 408, 503 or 400).
    pub async fn read<B>(&self, req: http::Request<B>) -> Result<Request, Response>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.body().is_end_stream() {
            let (parts, _) = req.into_parts();
            return Ok(Request::from_parts(parts, Body::empty()));
        }
        if let Some(refusal) = self.refuse_declared(req.headers()) {
            return Err(refusal);
        }
        let (req, share) = Box::pin(read_body(self.limits, &self.budget, req)).await?;
        let mut req = req;
        req.extensions_mut().insert(BudgetShare(Arc::new(share)));
        Ok(req)
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Collects `req`'s body under `limits`, taking budget for its bytes as they arrive.
async fn read_body<B>(
    limits: BodyLimits,
    budget: &Arc<Semaphore>,
    req: http::Request<B>,
) -> Result<(Request, OwnedSemaphorePermit), Response>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let mut body = std::pin::pin!(body);
    let deadline = tokio::time::Instant::now() + limits.read_timeout;
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut received: u64 = 0;
    let mut share: Option<OwnedSemaphorePermit> = None;
    let mut held: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out(limits)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                tracing::debug!(error = %e, "request body could not be read");
                return Err(closing(error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "request body could not be read",
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received += data.len() as u64;
        if received > limits.max_bytes {
            return Err(too_large(limits.max_bytes));
        }
        let need = received.div_ceil(BUDGET_UNIT).max(1) - held;
        if need > 0 {
            let units = u32::try_from(need).unwrap_or(u32::MAX);
            let Ok(more) = budget.clone().try_acquire_many_owned(units) else {
                return Err(busy());
            };
            held += need;
            match &mut share {
                Some(s) => s.merge(more),
                None => share = Some(more),
            }
        }
        chunks.push(data);
    }
    let share = match share {
        Some(s) => s,
        // Nothing arrived after all: a unit, so that every body holds a share.
        None => budget.clone().try_acquire_owned().map_err(|_| busy())?,
    };
    let bytes = match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), share))
}

/// 503: the budget of buffered bytes is used up.
fn busy() -> Response {
    let mut resp = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many request bodies in flight; retry shortly",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    refused(closing(resp), "limit.busy", "overloaded")
}

/// 408: the body did not arrive within the read timeout (slow-loris).
fn timed_out(limits: BodyLimits) -> Response {
    refused(
        closing(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!(
                "request body not received within {}s",
                limits.read_timeout.as_secs_f64()
            ),
        )),
        "limit.body_timeout",
        "request_timeout",
    )
}

fn too_large(max: u64) -> Response {
    refused(
        closing(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!(
                "request body is larger than the limit of {max} bytes (limits.max_body_bytes)"
            ),
        )),
        "limit.body_too_large",
        "request_too_large",
    )
}

/// Marks a refusal so hyper closes the connection instead of reading the rest of the body.
fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
