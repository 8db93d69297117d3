//! `http_request`: one HTTP request through moat's egress client, the way an API is
//! called: a method, headers and a body, where secret handles may stand for credentials.
//! No redirect is followed, so a credential reaches only the host it was allowed for.

use std::sync::Arc;

use moat_net::egress::{FetchRequest, Fetcher};
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::trust::ToolClass;

/// The most characters of an answer the model gets.
const MAX_CHARS: usize = 32 * 1024;

/// The http_request tool.
pub struct HttpRequest {
    fetcher: Arc<Fetcher>,
}

impl HttpRequest {
    /// Requests through `fetcher`, which must follow no redirect.
    pub fn new(fetcher: Arc<Fetcher>) -> HttpRequest {
        HttpRequest { fetcher }
    }
}

/// The host a call sends to: what secret handles in it are checked against.
pub(crate) fn host_of(input: &Value) -> Option<String> {
    let url = input["url"].as_str()?;
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_string())
}

#[async_trait::async_trait]
impl Tool for HttpRequest {
    fn name(&self) -> &'static str {
        "http_request"
    }

    fn description(&self) -> &'static str {
        "Send one HTTP request (to call an API). Headers and body may use secret handles."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]},
                "url": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"type": "string"},
            },
            "required": ["method", "url"],
        })
    }

    fn has_read_only_calls(&self) -> bool {
        true
    }

    fn class(&self, input: &Value) -> ToolClass {
        ToolClass {
            domain: "web",
            read_only: matches!(input["method"].as_str(), Some("GET" | "HEAD")),
        }
    }

    fn destination(&self, input: &Value) -> Option<String> {
        // No host (an unparsable URL) still counts as sending: no secret may go.
        Some(host_of(input).unwrap_or_default())
    }

    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult {
        let method = field(input, "method")?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        let mut request = FetchRequest::get(field(input, "url")?);
        request.method = method;
        if let Some(headers) = input["headers"].as_object() {
            for (name, value) in headers {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("the header {name:?} must be a string"))?;
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a header name"))?;
                let value = http::HeaderValue::from_str(value)
                    .map_err(|_| format!("the value of {name} is not a valid header value"))?;
                request.headers.insert(name, value);
            }
        }
        if let Some(body) = input["body"].as_str() {
            request.body = bytes::Bytes::from(body.to_string());
        }
        let resp = self
            .fetcher
            .fetch(&ctx.session, request)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        let mut text = String::from_utf8_lossy(&resp.body).into_owned();
        if text.chars().count() > MAX_CHARS {
            text = text.chars().take(MAX_CHARS).collect();
            text.push_str("\n[cut]");
        }
        let mut out = format!("{}\n", resp.status);
        if let Some(location) = resp
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            out.push_str(&format!("location: {location} (not followed)\n"));
        }
        out.push_str(&text);
        if resp.status.is_client_error() || resp.status.is_server_error() {
            Err(out)
        } else {
            Ok(out)
        }
    }
}
