//! The static files of moat's own pages (the web chat, the radio's player): served with
//! their content type, a content security policy of the page's own, and no referrer.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

/// `body` as `content_type`, under `csp`.
pub(crate) fn asset(body: &'static str, content_type: &'static str, csp: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
