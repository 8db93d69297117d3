//! Request body limits: size and time, for every request on every listener.
//!
//! A declared `Content-Length` over the limit is refused with 413 before a byte of the
//! body is read. Otherwise the body is collected under the size cap (a chunked body that
//! grows past it gets 413 the moment it does) and a deadline (a body still incomplete
//! when it passes gets 408: slow-loris). Handlers then see a complete, bounded body.
//! Refusals close the connection, so the unread rest of a body is never consumed.
//!
//! Slow *headers* are hyper's job (`header_read_timeout`, same duration): it closes the
//! connection without a response, as it has no request to answer yet.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::error_response;

/// The limits applied to request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body in bytes.
    pub max_bytes: u64,
    /// Time allowed from the request head to the end of the body.
    pub read_timeout: Duration,
}

/// Reads `req`'s body under `limits`: the request with its whole body, or the refusal.
pub async fn read_body<B>(limits: BodyLimits, req: http::Request<B>) -> Result<Request, Response>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(too_large(limits.max_bytes));
    }
    if body.is_end_stream() {
        return Ok(Request::from_parts(parts, Body::empty()));
    }
    let limit = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
    let collected =
        tokio::time::timeout(limits.read_timeout, Limited::new(body, limit).collect()).await;
    match collected {
        Err(_) => Err(closing(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!(
                "request body not received within {}s",
                limits.read_timeout.as_secs_f64()
            ),
        ))),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large(limits.max_bytes)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request body could not be read");
            Err(closing(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "request body could not be read",
            )))
        }
        Ok(Ok(c)) => Ok(Request::from_parts(parts, Body::from(c.to_bytes()))),
    }
}

fn too_large(max: u64) -> Response {
    closing(error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!("request body is larger than the limit of {max} bytes (limits.max_body_bytes)"),
    ))
}

/// Marks a refusal so hyper closes the connection instead of reading the rest of the body.
fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
