//! Headers on every response, errors included, and CORS for the one configured origin.

use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The security headers and their values.
pub const SECURITY_HEADERS: [(HeaderName, &str); 3] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-store"),
];

/// Sets [`SECURITY_HEADERS`] on a response, replacing any a handler set.
pub fn set_security_headers(headers: &mut http::HeaderMap) {
    headers.reserve(SECURITY_HEADERS.len());
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// CORS that admits exactly `origin` (validated at config load to be a local origin).
pub fn cors_for(origin: &str) -> Option<CorsLayer> {
    let allowed = HeaderValue::from_str(origin).ok()?;
    Some(
        CorsLayer::new()
            // Answer only the configured origin; anyone else gets no CORS headers at all.
            .allow_origin(AllowOrigin::predicate(move |o: &HeaderValue, _| {
                *o == allowed
            }))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-moat-control-token"),
                HeaderName::from_static("anthropic-version"),
                HeaderName::from_static("anthropic-beta"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
