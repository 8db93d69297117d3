//! The load generator: closed-loop (C requests always in flight), constant-rate (open loop,
//! latency counted from each request's scheduled time, so a slow server cannot hide its
//! queueing by slowing the generator down), or one wave of N simultaneous streams.
//!
//! Every response is checked, not only timed: a whole answer must be a 200 carrying the
//! expected text, a stream must deliver every delta and its terminator. A gateway that
//! answers fast with an error counts as failing, not as fast.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::upstream::DELTA_TEXT;

/// The API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientApi {
    Openai,
    Anthropic,
}

/// How requests are sent.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `concurrency` requests always in flight for `duration`.
    Closed {
        concurrency: usize,
        duration: Duration,
    },
    /// `rate` requests per second, whatever the answers do, for `duration`.
    Rate { rate: f64, duration: Duration },
    /// `n` requests started together, each once.
    Wave { n: usize },
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub url: String,
    pub api: ClientApi,
    pub model: String,
    pub stream: bool,
    pub request_bytes: usize,
    pub headers: Vec<(String, String)>,
    /// Deltas a stream must deliver.
    pub expect_deltas: u32,
    /// Bytes of text a whole answer must at least carry.
    pub expect_bytes: usize,
    pub mode: Mode,
    /// A pause between two deltas longer than this makes the stream stalled.
    pub stall: Duration,
    pub timeout: Duration,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Pcts {
    pub n: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Pcts {
    fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            v[((v.len() as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(v.len() - 1)]
        };
        Self {
            n: v.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// What one load run measured; printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub sent: usize,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    /// The first failure's status and the start of its body, to tell a user what went wrong.
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub rps: f64,
    pub latency: Pcts,
    pub ttft: Pcts,
    pub gap: Pcts,
    /// Streams that arrived whole but paused longer than the stall limit somewhere.
    pub stalled: usize,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.errors.values().sum()
    }
}

#[derive(Default)]
struct Sample {
    ok: bool,
    error: Option<(String, String)>,
    latency_us: u64,
    ttft_us: Option<u64>,
    gaps_us: Vec<u64>,
    stalled: bool,
}

pub fn request_body(model: &str, stream: bool, request_bytes: usize) -> Bytes {
    const TURN: usize = 2000;
    let mut messages = Vec::new();
    if request_bytes <= TURN {
        messages
            .push(serde_json::json!({"role": "user", "content": "Say hello to the benchmark."}));
    } else {
        let turns = request_bytes.div_ceil(TURN) | 1; // odd: ends with the user
        let text: String = "Some earlier context of a long conversation with a coding agent. "
            .chars()
            .cycle()
            .take(TURN)
            .collect();
        for i in 0..turns {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            messages.push(serde_json::json!({"role": role, "content": text}));
        }
    }
    // Both APIs take this shape for plain-text turns; only the path and headers differ.
    let body = serde_json::json!({
        "model": model, "stream": stream, "max_tokens": 1024, "messages": messages,
    });
    Bytes::from(body.to_string())
}

pub async fn run(spec: Spec) -> Report {
    let concurrency = match spec.mode {
        Mode::Closed { concurrency, .. } => concurrency,
        Mode::Wave { n } => n,
        Mode::Rate { rate, .. } => (rate as usize).clamp(16, 4096),
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let body = request_body(&spec.model, spec.stream, spec.request_bytes);
    let spec = Arc::new(spec);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut dropped = 0usize;
    match spec.mode {
        Mode::Closed {
            concurrency,
            duration,
        } => {
            let end = start + duration;
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, spec, body) = (client.clone(), spec.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while Instant::now() < end {
                        mine.push(one(&client, &spec, body.clone(), Instant::now()).await);
                    }
                    mine
                }));
            }
            for t in tasks {
                samples.extend(t.await.unwrap_or_default());
            }
        }
        Mode::Wave { n } => {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (client, spec, body) = (client.clone(), spec.clone(), body.clone());
                    tokio::spawn(async move { one(&client, &spec, body, Instant::now()).await })
                })
                .collect();
            for t in tasks {
                samples.extend(t.await.ok());
            }
        }
        Mode::Rate { rate, duration } => {
            // Requests past this many in flight are counted as dropped, not queued: a
            // generator that queued them would stop offering the rate it claims.
            let cap = 8192usize;
            let in_flight = Arc::new(AtomicUsize::new(0));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut i = 0u32;
            loop {
                let at = start + interval * i;
                if at >= start + duration {
                    break;
                }
                i += 1;
                tokio::time::sleep_until(at.into()).await;
                if in_flight.load(Ordering::Relaxed) >= cap {
                    dropped += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (client, spec, body, tx, in_flight) = (
                    client.clone(),
                    spec.clone(),
                    body.clone(),
                    tx.clone(),
                    in_flight.clone(),
                );
                tokio::spawn(async move {
                    let s = one(&client, &spec, body, at).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = tx.send(s);
                });
            }
            drop(tx);
            while let Some(s) = rx.recv().await {
                samples.push(s);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    summarize(samples, dropped, elapsed)
}

fn summarize(samples: Vec<Sample>, dropped: usize, elapsed: f64) -> Report {
    let mut report = Report {
        sent: samples.len() + dropped,
        elapsed_s: elapsed,
        ..Report::default()
    };
    if dropped > 0 {
        report
            .errors
            .insert("dropped (generator over 8192 in flight)".into(), dropped);
    }
    let (mut latency, mut ttft, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    for s in samples {
        if let Some((kind, detail)) = s.error {
            *report.errors.entry(kind).or_default() += 1;
            report.first_error.get_or_insert(detail);
            continue;
        }
        report.ok += 1;
        report.stalled += usize::from(s.stalled);
        latency.push(s.latency_us);
        ttft.extend(s.ttft_us);
        gaps.extend(s.gaps_us);
    }
    report.rps = report.ok as f64 / elapsed.max(1e-9);
    report.latency = Pcts::of(latency);
    report.ttft = Pcts::of(ttft);
    report.gap = Pcts::of(gaps);
    report
}

async fn one(
    client: &Client<HttpConnector, Full<Bytes>>,
    spec: &Spec,
    body: Bytes,
    start: Instant,
) -> Sample {
    match tokio::time::timeout(spec.timeout, exchange(client, spec, body, start)).await {
        Ok(sample) => sample,
        Err(_) => Sample {
            error: Some((
                "timeout".into(),
                format!("no complete answer in {:?}", spec.timeout),
            )),
            ..Sample::default()
        },
    }
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    spec: &Spec,
    body: Bytes,
    start: Instant,
) -> Sample {
    let mut req = hyper::Request::post(&spec.url).header("content-type", "application/json");
    let defaults: &[(&str, &str)] = match spec.api {
        ClientApi::Openai => &[("authorization", "Bearer bench-client-key")],
        ClientApi::Anthropic => &[
            ("x-api-key", "bench-client-key"),
            ("anthropic-version", "2023-06-01"),
        ],
    };
    // A target's own header (a gateway's key) replaces the default of the same name.
    for (k, v) in defaults {
        if !spec
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(k))
        {
            req = req.header(*k, *v);
        }
    }
    for (k, v) in &spec.headers {
        req = req.header(k, v);
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return fail("bad request", "the request could not be built".into());
    };
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => return fail("connect", format!("{e}")),
    };
    let status = resp.status();
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    let mut deltas = 0u32;
    let mut last_delta = None::<Instant>;
    let mut sample = Sample::default();
    let marker = DELTA_TEXT.as_bytes();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return fail(
                "broken body",
                "the response body ended with an error".into(),
            );
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if spec.stream {
            // Count markers in the new bytes plus a tail of the old ones, so a delta split
            // across two reads is still seen once.
            let from = seen.len().saturating_sub(marker.len() - 1);
            seen.extend_from_slice(data);
            let found = count(&seen[from..], marker) as u32;
            if found > 0 {
                let now = Instant::now();
                match last_delta {
                    None => sample.ttft_us = Some(micros(now - start)),
                    Some(prev) => sample.gaps_us.push(micros(now - prev)),
                }
                last_delta = Some(now);
                deltas += found;
            }
        } else {
            seen.extend_from_slice(data);
        }
    }
    sample.latency_us = micros(start.elapsed());
    if !status.is_success() {
        let head = String::from_utf8_lossy(&seen[..seen.len().min(300)]).into_owned();
        return fail(
            &format!("status {}", status.as_u16()),
            format!("{status}: {head}"),
        );
    }
    if spec.stream {
        let terminator: &[u8] = match spec.api {
            ClientApi::Openai => b"[DONE]",
            ClientApi::Anthropic => b"message_stop",
        };
        if deltas != spec.expect_deltas || count(&seen, terminator) == 0 {
            let tail =
                String::from_utf8_lossy(&seen[seen.len().saturating_sub(300)..]).into_owned();
            return fail(
                "incomplete stream",
                format!(
                    "{deltas} of {} deltas; ends with: {tail}",
                    spec.expect_deltas
                ),
            );
        }
        sample.stalled = sample.gaps_us.iter().any(|&g| g > micros(spec.stall));
    } else if seen.len() < spec.expect_bytes {
        let head = String::from_utf8_lossy(&seen[..seen.len().min(300)]).into_owned();
        return fail(
            "short answer",
            format!(
                "{} bytes, expected {}: {head}",
                seen.len(),
                spec.expect_bytes
            ),
        );
    }
    sample.ok = true;
    sample
}

fn fail(kind: &str, detail: String) -> Sample {
    Sample {
        error: Some((kind.into(), detail)),
        ..Sample::default()
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Pcts::of((1..=100).collect());
        assert_eq!((p.n, p.p50, p.p90, p.p99, p.max), (100, 50, 90, 99, 100));
        assert_eq!(Pcts::of(vec![]).n, 0);
    }

    #[test]
    fn a_long_request_is_a_conversation_ending_with_the_user() {
        let body = request_body("m", true, 150_000);
        assert!((150_000..160_000).contains(&body.len()), "{}", body.len());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let messages = v["messages"].as_array().unwrap();
        assert_eq!(messages.last().unwrap()["role"], "user");
    }

    async fn upstream() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::upstream::serve_on(listener));
        format!("http://{addr}")
    }

    fn spec(url: String, api: ClientApi, stream: bool, expect_deltas: u32) -> Spec {
        let shape = crate::upstream::Shape {
            deltas: 8,
            bytes: 5000,
            ..Default::default()
        };
        Spec {
            url,
            api,
            model: shape.model(),
            stream,
            request_bytes: 10_000,
            headers: Vec::new(),
            expect_deltas,
            expect_bytes: if stream { 0 } else { 5000 },
            mode: Mode::Closed {
                concurrency: 2,
                duration: Duration::from_millis(200),
            },
            stall: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn whole_answers_and_streams_in_both_formats_are_counted_and_checked() {
        let base = upstream().await;
        for (api, path) in [
            (ClientApi::Openai, "/v1/chat/completions"),
            (ClientApi::Anthropic, "/v1/messages"),
        ] {
            let url = format!("{base}{path}");
            let whole = run(spec(url.clone(), api, false, 0)).await;
            assert!(whole.ok > 0 && whole.failed() == 0, "{whole:?}");
            let stream = run(spec(url.clone(), api, true, 8)).await;
            assert!(stream.ok > 0 && stream.failed() == 0, "{stream:?}");
            assert_eq!(stream.ttft.n, stream.ok);
            assert_eq!(stream.gap.n, stream.ok * 7);
            // A stream missing deltas is a failure, not a fast success.
            let short = run(spec(url, api, true, 9)).await;
            assert_eq!(short.ok, 0);
            assert!(short.errors.contains_key("incomplete stream"), "{short:?}");
        }
        let missing = run(spec(
            format!("{base}/v1/nothing"),
            ClientApi::Openai,
            false,
            0,
        ))
        .await;
        assert_eq!(missing.ok, 0);
        assert!(missing.first_error.unwrap().starts_with("404"));
        let mut rate = spec(
            format!("{base}/v1/chat/completions"),
            ClientApi::Openai,
            false,
            0,
        );
        rate.mode = Mode::Rate {
            rate: 200.0,
            duration: Duration::from_millis(250),
        };
        let rate = run(rate).await;
        assert!((45..=55).contains(&rate.sent), "{rate:?}");
        assert_eq!(rate.failed(), 0);
    }
}
