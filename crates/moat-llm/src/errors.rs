//! Errors in the client's own API format.
//!
//! Anthropic clients get `{"type":"error","error":{"type","message"}}`, OpenAI clients
//! `{"error":{"message","type","param","code"}}`, with the status code each API uses for
//! the case. Messages are short, pass the redactor and never carry upstream host names
//! or OS error text: that detail goes to the log.

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// Which API a client speaks (and so which error and stream format it gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Chat Completions.
    OpenAi,
}

/// A failure to report to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// A short message for the client (redacted before it is sent).
    pub message: String,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u32>,
    /// moat's own limit refused the request (audited as `limit.busy`), as opposed to an
    /// upstream that answered 503.
    pub local_limit: bool,
    /// OpenAI's machine-readable `code` (`context_length_exceeded`), for OpenAI clients.
    pub code: Option<String>,
    /// OpenAI's `param`: the request field at fault, for OpenAI clients.
    pub param: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            local_limit: false,
            code: None,
            param: None,
        }
    }

    /// The same error with OpenAI's `code` and `param`.
    pub fn with_code(mut self, code: Option<String>, param: Option<String>) -> Self {
        self.code = code;
        self.param = param;
        self
    }

    /// 503 with `Retry-After: 1`: one of moat's own limits is full.
    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            local_limit: true,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 400: the request is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 502: the upstream failed in a way the client can't fix.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }

    /// The body for `format`.
    pub fn body(&self, format: ApiFormat) -> Value {
        let message = moat_core::redact::global()
            .redact(&self.message)
            .into_owned();
        let mut body = error_body(format, self.status, &message);
        if format == ApiFormat::OpenAi {
            body["error"]["code"] = json!(self.code.as_deref().and_then(clean_word));
            body["error"]["param"] = json!(self.param.as_deref().and_then(clean_word));
        }
        body
    }

    /// The whole response for `format`.
    pub fn response(&self, format: ApiFormat) -> Response {
        let mut resp = crate::json_response(self.status, self.body(format).to_string());
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }

    /// A mid-stream error as one event in `format`'s stream, after which the stream ends.
    pub fn stream_event(&self, format: ApiFormat) -> Bytes {
        let body = self.body(format).to_string();
        match format {
            ApiFormat::Anthropic => crate::sse::encode(Some("error"), &body),
            ApiFormat::OpenAi => crate::sse::encode(None, &body),
        }
    }
}

/// An upstream's `code` or `param` as the client may see it: a word the redactor leaves
/// alone. One it would touch holds a secret (an upstream echoing the key it was sent) or
/// looks like one, and is no code a client acts on: it is dropped, not masked.
fn clean_word(word: &str) -> Option<String> {
    match moat_core::redact::global().redact(word) {
        std::borrow::Cow::Borrowed(w) => Some(w.to_string()),
        std::borrow::Cow::Owned(_) => None,
    }
}

/// An upstream error of the other API, made what a client of `to` acts on: a context
/// overflow reads as "prompt is too long" to Anthropic clients (Claude Code compacts on
/// it) and as `context_length_exceeded` to OpenAI clients; Anthropic's 529 overloaded
/// is OpenAI's 503 and back; a rate limit carries OpenAI's `rate_limit_exceeded`.
pub(crate) fn cross_format(error: &mut ApiError, to: ApiFormat) {
    let lower = error.message.to_ascii_lowercase();
    let overflow = error.code.as_deref() == Some("context_length_exceeded")
        || lower.contains("prompt is too long")
        || lower.contains("maximum context length")
        || lower.contains("context length")
        || lower.contains("context size")
        || lower.contains("context window");
    match to {
        ApiFormat::Anthropic => {
            if overflow
                && error.status == StatusCode::BAD_REQUEST
                && !lower.contains("prompt is too long")
            {
                error.message = format!("prompt is too long: {}", error.message);
            }
            if error.status == StatusCode::SERVICE_UNAVAILABLE {
                error.status = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            }
            error.code = None;
            error.param = None;
        }
        ApiFormat::OpenAi => {
            if overflow && error.status == StatusCode::BAD_REQUEST {
                error.code = Some("context_length_exceeded".into());
                error.param = Some("messages".into());
            }
            if error.status.as_u16() == 529 {
                error.status = StatusCode::SERVICE_UNAVAILABLE;
            }
            if error.status == StatusCode::TOO_MANY_REQUESTS && error.code.is_none() {
                error.code = Some("rate_limit_exceeded".into());
            }
        }
    }
}

/// moat-net's refusals in Anthropic's error shape (see `moat_net::ErrorDialect`).
pub(crate) fn anthropic_dialect(status: StatusCode, _code: &str, message: &str) -> Value {
    error_body(ApiFormat::Anthropic, status, message)
}

/// moat-net's refusals in OpenAI's error shape, its stable code as OpenAI's `code`.
pub(crate) fn openai_dialect(status: StatusCode, code: &str, message: &str) -> Value {
    let mut body = error_body(ApiFormat::OpenAi, status, message);
    body["error"]["code"] = json!(code);
    body
}

/// Anthropic's error type for a status.
pub(crate) fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The status an Anthropic error type stands for (an `event: error` in a stream has no
/// status of its own).
pub(crate) fn status_of_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// OpenAI's error type for a status.
pub(crate) fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

/// The error body of `format` for `status`.
pub(crate) fn error_body(format: ApiFormat, status: StatusCode, message: &str) -> Value {
    match format {
        ApiFormat::Anthropic => json!({
            "type": "error",
            "error": { "type": anthropic_error_type(status), "message": message },
        }),
        ApiFormat::OpenAi => json!({
            "error": {
                "message": message,
                "type": openai_error_type(status),
                "param": null,
                "code": null,
            },
        }),
    }
}

/// OpenAI's `code` and `param` inside an upstream error body, where it has them (a code
/// may be a number on some servers). Short words, not free text: passed on as they are.
pub(crate) fn upstream_code(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let word = |v: &Value| {
        match v {
            Value::String(s) => Some(s.as_str().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
        .filter(|w| {
            w.len() <= 64
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-[]".contains(&b))
        })
    };
    (word(&v["error"]["code"]), word(&v["error"]["param"]))
}

/// The message inside an upstream error body of either format, if it has one.
pub fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    let message = match error {
        Value::String(s) => s.as_str(),
        _ => error.get("message")?.as_str()?,
    };
    Some(for_the_client(message))
}

/// An upstream's own error message as the client may see it: short, and without the
/// addresses of what stands behind the backend (a LiteLLM or Ollama reporting that its
/// own upstream at `10.0.0.5:11434` refused). The words stay: a client acts on them
/// ("prompt is too long", "context_length_exceeded").
pub(crate) fn for_the_client(message: &str) -> String {
    static ADDRESS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"(?x)
              [A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>()\[\]{}]+       # a URL
            | \[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::[0-9]{1,5})?   # [IPv6]:port
            | \b[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?::[0-9]{1,5})?\b    # IPv4:port
            | \b[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*:[0-9]{2,5}\b  # host:port
            "#,
        )
        .expect("a valid pattern")
    });
    let short: String = message.chars().take(500).collect();
    ADDRESS.replace_all(&short, "[address]").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_each_api() {
        let e = ApiError::invalid("bad model");
        assert_eq!(
            e.body(ApiFormat::Anthropic),
            json!({"type":"error","error":{"type":"invalid_request_error","message":"bad model"}})
        );
        assert_eq!(
            e.body(ApiFormat::OpenAi)["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(
            ApiError::new(StatusCode::from_u16(529).unwrap(), "x").body(ApiFormat::Anthropic)["error"]
                ["type"],
            "overloaded_error"
        );
    }

    #[test]
    fn messages_are_redacted() {
        let e = ApiError::upstream("key sk-ant-api03-canarycanarycanary leaked");
        let body = e.body(ApiFormat::OpenAi).to_string();
        assert!(!body.contains("canarycanary"), "{body}");
    }

    #[test]
    fn upstream_messages_from_both_shapes() {
        assert_eq!(
            upstream_message(br#"{"type":"error","error":{"type":"x","message":"m1"}}"#),
            Some("m1".into())
        );
        assert_eq!(
            upstream_message(br#"{"error":{"message":"m2","type":"y"}}"#),
            Some("m2".into())
        );
        assert_eq!(upstream_message(br#"{"error":"m3"}"#), Some("m3".into()));
        assert_eq!(upstream_message(b"<html>"), None);
    }

    #[test]
    fn upstream_messages_lose_addresses_but_keep_their_words() {
        for (from, to) in [
            (
                "litellm.APIConnectionError: OllamaException - [Errno 111] Connection refused: http://10.0.0.5:11434/api/chat",
                "litellm.APIConnectionError: OllamaException - [Errno 111] Connection refused: [address]",
            ),
            (
                "cannot reach 192.168.1.20:8000 (timeout)",
                "cannot reach [address] (timeout)",
            ),
            ("upstream [fd00::1]:443 reset", "upstream [address] reset"),
            (
                "dial tcp gpu-box.internal:8080: refused",
                "dial tcp [address]: refused",
            ),
            (
                "connect to localhost:11434 failed",
                "connect to [address] failed",
            ),
        ] {
            assert_eq!(for_the_client(from), to);
        }
        for kept in [
            "prompt is too long: 210000 tokens > 200000 maximum",
            "This model's maximum context length is 128000 tokens.",
            "model llama3:70b not found, try pulling it first",
            "rate limited until 2026-12-06T23:05:17Z",
            "max_tokens: 8192 > 4096, which is the maximum allowed",
        ] {
            assert_eq!(for_the_client(kept), kept);
        }
        assert_eq!(for_the_client(&"é".repeat(600)).chars().count(), 500);
    }
}
