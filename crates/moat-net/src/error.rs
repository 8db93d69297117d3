//! Error responses sent to clients.
//!
//! One body shape that both official SDK families parse: Anthropic's
//! (`{"type":"error","error":{"type","message"}}`) and OpenAI's (`{"error":{"message","type","code"}}`).
//! Bodies carry a stable code and a short message and pass the redactor; details belong
//! in the server log.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Marks a response as a policy refusal worth an audit entry: `action` is the audit
/// action (`auth.denied`, `exposure.denied`, `ratelimit.hit`, `limit.*`), `code` the
/// error code the client got. The gate reports marked responses to its [`crate::gate::NetEvents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The audit action.
    pub action: &'static str,
    /// The client-facing error code.
    pub code: &'static str,
}

/// `resp`, marked as a refusal.
pub fn refused(mut resp: Response, action: &'static str, code: &'static str) -> Response {
    resp.extensions_mut().insert(Refused { action, code });
    resp
}

/// A JSON error response with a stable `code` and a short, redacted `message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let message = moat_core::redact::global().redact(message).into_owned();
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": code, "code": code, "message": message },
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.extensions_mut().insert(ErrorInfo {
        code: code.to_string(),
        message,
    });
    resp
}

/// What an error response of moat's says, kept with it so that a route can answer it in
/// its clients' own error format (see [`ErrorDialect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The stable code.
    pub code: String,
    /// The message, already redacted.
    pub message: String,
}

/// How the routes under a path prefix spell an error: status, code and message in, the
/// JSON body out. An API with official SDKs (which raise on the exact shape) registers
/// one, so that even the server's own refusals (413, 408, 405, 403, 429...) parse there.
pub type ErrorDialect = fn(StatusCode, &str, &str) -> serde_json::Value;

/// `resp` with its body in `dialect`, if it is one of moat's error responses.
pub(crate) fn in_dialect(resp: Response, dialect: ErrorDialect) -> Response {
    let Some(info) = resp.extensions().get::<ErrorInfo>().cloned() else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = dialect(parts.status, &info.code, &info.message).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_is_json_and_redacted() {
        let resp = error_response(
            StatusCode::BAD_REQUEST,
            "bad",
            "key sk-ant-api03-canary0000000000 refused",
        );
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "bad");
        assert_eq!(v["error"]["message"], "key [REDACTED] refused");
    }
}
