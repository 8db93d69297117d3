//! The streamable HTTP transport of the MCP SDK, spoken through moat's egress client: every
//! request passes the address policy, follows no redirect (a bearer token would follow
//! it) and reads a bounded answer. An answer streamed as server-sent events is read whole
//! (the server ends that stream once it has answered the request) and then parsed.
//! The standalone GET stream for messages the server starts on its own is not opened:
//! moat asks, the server answers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use moat_net::egress::{FetchError, FetchRequest, FetchResponse, Fetcher};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};

const SESSION_HEADER: &str = "mcp-session-id";

/// The MCP client's HTTP side on an egress [`Fetcher`].
#[derive(Clone)]
pub(crate) struct EgressHttp {
    pub(crate) fetcher: Arc<Fetcher>,
    /// Who the egress log names (`mcp:NAME`).
    pub(crate) session: Arc<str>,
}

impl EgressHttp {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
        session_id: Option<&str>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<FetchResponse, StreamableHttpError<FetchError>> {
        let mut request = FetchRequest::get(uri);
        request.method = method;
        for (name, value) in custom_headers {
            request.headers.insert(name, value);
        }
        request.headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(body) = body {
            request.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            request.body = body.into();
        }
        if let Some(id) = session_id {
            let value = HeaderValue::from_str(id).map_err(|_| {
                StreamableHttpError::UnexpectedServerResponse(Cow::from(
                    "the server's session id is not a valid header value",
                ))
            })?;
            request.headers.insert(SESSION_HEADER, value);
        }
        if let Some(token) = auth_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                StreamableHttpError::UnexpectedServerResponse(Cow::from(
                    "the bearer secret is not a valid header value",
                ))
            })?;
            value.set_sensitive(true);
            request.headers.insert(header::AUTHORIZATION, value);
        }
        self.fetcher
            .fetch(&self.session, request)
            .await
            .map_err(StreamableHttpError::Client)
    }
}

fn content_type(resp: &FetchResponse) -> Option<String> {
    resp.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
}

/// The server's events in a body read whole.
fn events(body: bytes::Bytes) -> BoxStream<'static, Result<Sse, sse_stream::Error>> {
    let once = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    Box::pin(SseStream::from_bytes_stream(once))
}

/// A status that is not an answer, as the SDK's error (never the body: it could echo the
/// request).
fn status_error(status: StatusCode) -> StreamableHttpError<FetchError> {
    StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!(
        "the MCP server answered {status}"
    )))
}

impl StreamableHttpClient for EgressHttp {
    type Error = FetchError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let body = serde_json::to_vec(&message)?;
        let awaits_answer = matches!(message, ClientJsonRpcMessage::Request(_));
        let resp = self
            .send(
                Method::POST,
                &uri,
                Some(body),
                session_id.as_deref(),
                auth_token,
                custom_headers,
            )
            .await?;
        let status = resp.status;
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        let kind = content_type(&resp);
        let json = kind
            .as_deref()
            .is_some_and(|t| t.starts_with("application/json"));
        let sse = kind
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !status.is_success() && !json {
            return Err(status_error(status));
        }
        let new_session = resp
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status.is_success() && resp.body.is_empty() {
            // Some servers answer a notification with an empty 200; a request must get
            // its answer, or the call would wait for one that never comes.
            return if awaits_answer {
                Err(StreamableHttpError::UnexpectedServerResponse(Cow::from(
                    "the MCP server answered a request with an empty body",
                )))
            } else {
                Ok(StreamableHttpPostResponse::Accepted)
            };
        }
        if sse {
            return Ok(StreamableHttpPostResponse::Sse(
                events(resp.body),
                new_session,
            ));
        }
        if json {
            // A failure may still carry a JSON-RPC error for the request: the SDK reports it.
            return match serde_json::from_slice::<ServerJsonRpcMessage>(&resp.body) {
                Ok(message) => Ok(StreamableHttpPostResponse::Json(message, new_session)),
                Err(_) if !status.is_success() => Err(status_error(status)),
                Err(e) => Err(e.into()),
            };
        }
        Err(StreamableHttpError::UnexpectedContentType(kind))
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        let resp = self
            .send(
                Method::DELETE,
                &uri,
                None,
                Some(&session_id),
                auth_token,
                custom_headers,
            )
            .await?;
        if resp.status.is_success() || resp.status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(status_error(resp.status))
        }
    }

    async fn get_stream(
        &self,
        _uri: Arc<str>,
        _session_id: Option<Arc<str>>,
        _last_event_id: Option<String>,
        _auth_token: Option<String>,
        _custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, sse_stream::Error>>, StreamableHttpError<Self::Error>>
    {
        // A stream that never ends cannot be read whole: moat does not listen for
        // messages the server starts on its own.
        Err(StreamableHttpError::ServerDoesNotSupportSse)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_body_of_events_is_read_back_as_events() {
        let body = bytes::Bytes::from_static(
            b"event: message\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: two\ndata: lines\n\n",
        );
        let got: Vec<Sse> = events(body).map(|e| e.unwrap()).collect().await;
        let data: Vec<_> = got.iter().filter_map(|e| e.data.clone()).collect();
        assert_eq!(data, ["{\"a\":1}", "two\nlines"]);
    }
}
