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
    resp
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
