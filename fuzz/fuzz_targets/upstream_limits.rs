//! Arbitrary bytes as an upstream's rate-limit headers, `retry-after` and usage: what the
//! account pool reads from every response. Properties: never panics; headroom stays in
//! 0..=1; nothing parsed points further ahead than the 7-day cap; a spent dimension's
//! return is in the future.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use moat_llm::pool::headroom::{Headroom, parse_go_duration, retry_after};

const CAP: Duration = Duration::from_secs(7 * 86_400 + 1);

const NAMES: &[&str] = &[
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
];

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut headers = http::HeaderMap::new();
    // Each line: one byte picks the header, the rest is its value.
    for line in data.split(|b| *b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.append(NAMES[pick as usize % NAMES.len()], v);
        }
        if let Ok(text) = std::str::from_utf8(value)
            && let Some(d) = parse_go_duration(text)
        {
            assert!(d <= CAP, "{text:?} parsed past the cap");
        }
    }
    let mut h = Headroom::default();
    h.update(&headers, now);
    let f = h.fraction(now);
    assert!((0.0..=1.0).contains(&f), "headroom {f}");
    if let Some(until) = h.spent_until(now) {
        assert!(until > now && until <= now + CAP);
    }
    for (_, d) in h.dims() {
        assert!(d.remaining <= d.limit);
        if let Some(r) = d.reset {
            assert!(r <= now + CAP);
        }
    }
    if let Some(at) = retry_after(&headers, now) {
        assert!(at >= now && at <= now + CAP);
    }
    let _ = moat_llm::usage::TokenCounts::from_body(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = moat_llm::pool::sticky::conversation_key(&v);
    }
});
