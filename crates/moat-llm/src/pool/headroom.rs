//! What an account has left, as its provider says in every response's rate-limit headers.
//!
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
//!   resets as RFC 3339 times.
//! - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go-style
//!   durations (`1s`, `6m0s`, `20ms`).
//! - `retry-after`: seconds, or an HTTP date.
//!
//! A header that is missing or unreadable changes nothing: the last known value stands.

use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;

/// A reset further away than this is taken as this (a hostile or broken header must not
/// park an account for years).
const MAX_RESET: Duration = Duration::from_secs(7 * 86_400);

/// One rate-limited quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim {
    /// The allowance per window.
    pub limit: u64,
    /// What is left of it.
    pub remaining: u64,
    /// When the allowance is whole again.
    pub reset: Option<Instant>,
}

/// The quantities a provider limits, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Requests per window.
    Requests = 0,
    /// Tokens (all kinds) per window.
    Tokens = 1,
    /// Input tokens per window (Anthropic).
    InputTokens = 2,
    /// Output tokens per window (Anthropic).
    OutputTokens = 3,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Requests,
        Kind::Tokens,
        Kind::InputTokens,
        Kind::OutputTokens,
    ];

    /// The name in `/accounts` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::InputTokens => "input_tokens",
            Kind::OutputTokens => "output_tokens",
        }
    }

    /// Anthropic's `(limit, remaining, reset)` headers for this quantity (spelled out:
    /// this runs on every response).
    fn anthropic(self) -> [&'static str; 3] {
        match self {
            Kind::Requests => [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ],
            Kind::Tokens => [
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ],
            Kind::InputTokens => [
                "anthropic-ratelimit-input-tokens-limit",
                "anthropic-ratelimit-input-tokens-remaining",
                "anthropic-ratelimit-input-tokens-reset",
            ],
            Kind::OutputTokens => [
                "anthropic-ratelimit-output-tokens-limit",
                "anthropic-ratelimit-output-tokens-remaining",
                "anthropic-ratelimit-output-tokens-reset",
            ],
        }
    }

    /// OpenAI's `(limit, remaining, reset)` headers, for the quantities it reports.
    fn openai(self) -> Option<[&'static str; 3]> {
        match self {
            Kind::Requests => Some([
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ]),
            Kind::Tokens => Some([
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ]),
            _ => None,
        }
    }
}

/// An account's known limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headroom {
    dims: [Option<Dim>; 4],
}

impl Headroom {
    /// The dimension `kind`, if the provider reported it.
    pub fn get(&self, kind: Kind) -> Option<Dim> {
        self.dims[kind as usize]
    }

    /// Each reported dimension.
    pub fn dims(&self) -> impl Iterator<Item = (Kind, Dim)> + '_ {
        Kind::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|d| (k, d)))
    }

    /// Updates from a response's headers; returns whether any limit header was there.
    pub fn update(&mut self, headers: &HeaderMap, now: Instant) -> bool {
        // One pass over the few headers a response has says which provider's names to
        // look up, if any: a local server (llama.cpp, vLLM, Ollama) sends none, and each
        // lookup by name hashes it.
        let (mut anthropic, mut openai) = (false, false);
        for name in headers.keys() {
            let name = name.as_str();
            anthropic |= name.starts_with("anthropic-ratelimit-");
            openai |= name.starts_with("x-ratelimit-");
        }
        if !anthropic && !openai {
            return false;
        }
        let wall = SystemTime::now();
        let mut any = false;
        for kind in Kind::ALL {
            let from_anthropic = anthropic
                .then(|| read_dim(headers, kind.anthropic(), |v| parse_rfc3339(v, wall, now)))
                .flatten();
            let from_openai = kind.openai().filter(|_| openai).and_then(|names| {
                read_dim(headers, names, |v| {
                    parse_go_duration(v).map(|d| now + d.min(MAX_RESET))
                })
            });
            if let Some(d) = from_anthropic.or(from_openai) {
                self.dims[kind as usize] = Some(d);
                any = true;
            }
        }
        any
    }

    /// The share left, 0 to 1: the tightest reported dimension, a dimension whose reset
    /// has passed counting as whole. An account nothing is known about counts as whole.
    pub fn fraction(&self, now: Instant) -> f64 {
        self.dims()
            .map(|(_, d)| {
                if d.reset.is_some_and(|r| r <= now) || d.limit == 0 {
                    1.0
                } else {
                    d.remaining.min(d.limit) as f64 / d.limit as f64
                }
            })
            .fold(1.0, f64::min)
    }

    /// When a spent dimension comes back, if one is spent now.
    pub fn spent_until(&self, now: Instant) -> Option<Instant> {
        self.dims()
            .filter(|(_, d)| d.remaining == 0 && d.limit > 0)
            .filter_map(|(_, d)| d.reset)
            .filter(|r| *r > now)
            .max()
    }

    /// The earliest future reset of any dimension (where a 429 without `retry-after`
    /// points).
    pub fn next_reset(&self, now: Instant) -> Option<Instant> {
        self.dims()
            .filter_map(|(_, d)| d.reset)
            .filter(|r| *r > now)
            .min()
    }

    /// Tokens left before the tightest token limit bites, if any token limit is known.
    pub fn tokens_left(&self, now: Instant) -> Option<(u64, Option<Instant>)> {
        [Kind::Tokens, Kind::InputTokens, Kind::OutputTokens]
            .into_iter()
            .filter_map(|k| self.get(k))
            .map(|d| {
                if d.reset.is_some_and(|r| r <= now) {
                    (d.limit, None)
                } else {
                    (d.remaining, d.reset)
                }
            })
            .min_by_key(|(left, _)| *left)
    }
}

fn read_dim(
    headers: &HeaderMap,
    [limit, remaining, reset]: [&str; 3],
    parse_reset: impl Fn(&str) -> Option<Instant>,
) -> Option<Dim> {
    let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    let remaining = num(remaining)?;
    Some(Dim {
        limit: num(limit).unwrap_or(remaining).max(remaining),
        remaining,
        reset: headers
            .get(reset)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_reset(v.trim())),
    })
}

fn parse_rfc3339(v: &str, wall: SystemTime, now: Instant) -> Option<Instant> {
    let at = humantime::parse_rfc3339_weak(v).ok()?;
    Some(now + at.duration_since(wall).unwrap_or_default().min(MAX_RESET))
}

/// `retry-after`: delay seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: Instant) -> Option<Instant> {
    // OpenAI's finer `retry-after-ms`, where sent, says the same to the millisecond.
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(now + Duration::from_secs_f64(ms / 1000.0).min(MAX_RESET));
    }
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::from_secs_f64(secs.min(MAX_RESET.as_secs_f64()))
        }
        Ok(_) => return None,
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(now + wait.min(MAX_RESET))
}

/// A Go duration as OpenAI writes them: `1s`, `6m0s`, `1h2m3.5s`, `20ms`, `150us`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    (total.is_finite() && total >= 0.0)
        .then(|| Duration::from_secs_f64(total.min(MAX_RESET.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("1x"), None);
        assert_eq!(parse_go_duration("99999999h"), Some(MAX_RESET));
    }

    #[test]
    fn anthropic_headers() {
        let now = Instant::now();
        let reset = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(60))
            .to_string();
        let mut h = Headroom::default();
        assert!(h.update(
            &headers(&[
                ("anthropic-ratelimit-requests-limit", "100"),
                ("anthropic-ratelimit-requests-remaining", "25"),
                ("anthropic-ratelimit-requests-reset", &reset),
                ("anthropic-ratelimit-tokens-limit", "1000"),
                ("anthropic-ratelimit-tokens-remaining", "900"),
            ]),
            now
        ));
        assert_eq!(h.fraction(now), 0.25);
        let r = h.get(Kind::Requests).unwrap().reset.unwrap();
        assert!(r > now + Duration::from_secs(58) && r <= now + Duration::from_secs(61));
        assert_eq!(h.tokens_left(now), Some((900, None)));
        // Past the reset, the dimension is whole again.
        assert_eq!(h.fraction(now + Duration::from_secs(120)), 0.9);
    }

    #[test]
    fn openai_headers_and_spent_dimensions() {
        let now = Instant::now();
        let mut h = Headroom::default();
        h.update(
            &headers(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "6m0s"),
            ]),
            now,
        );
        assert_eq!(h.fraction(now), 0.0);
        assert_eq!(h.spent_until(now), Some(now + Duration::from_secs(360)));
        // No limit headers: nothing changes.
        assert!(!h.update(&headers(&[("content-type", "x")]), now));
        assert_eq!(h.fraction(now), 0.0);
        // Garbage is ignored.
        let mut g = Headroom::default();
        assert!(!g.update(&headers(&[("x-ratelimit-remaining-requests", "lots")]), now));
        assert_eq!(g.fraction(now), 1.0);
    }

    #[test]
    fn retry_after_forms() {
        let now = Instant::now();
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(now + Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let at = retry_after(&headers(&[("retry-after", &date)]), now).unwrap();
        assert!(at > now + Duration::from_secs(28));
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "1"), ("retry-after-ms", "1500")]),
                now
            ),
            Some(now + Duration::from_millis(1500))
        );
    }
}
