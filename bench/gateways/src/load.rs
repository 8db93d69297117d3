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
pub(crate) enum ClientApi {
    /// Chat Completions.
    Openai,
    /// Messages.
    Anthropic,
    /// OpenAI's Responses API (a client format only: no upstream speaks it here).
    Responses,
}

/// How requests are sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
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
pub(crate) struct Spec {
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
    /// Closed loop only: load sent first, with the same connections, and not counted.
    pub warmup: Duration,
    /// A pause between two deltas longer than this makes the stream stalled.
    pub stall: Duration,
    pub timeout: Duration,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Pcts {
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
pub(crate) struct Report {
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
    /// Successful answers including warm-up ones: what the gateway's CPU time was spent on.
    #[serde(default)]
    pub handled: usize,
    /// Streams that arrived whole but paused longer than the stall limit somewhere.
    pub stalled: usize,
}

impl Report {
    pub(crate) fn failed(&self) -> usize {
        self.errors.values().sum()
    }
}

#[derive(Default)]
struct Sample {
    /// When it was sent (or scheduled) and when its answer ended.
    started: Option<Instant>,
    done: Option<Instant>,
    ok: bool,
    error: Option<(String, String)>,
    latency_us: u64,
    ttft_us: Option<u64>,
    gaps_us: Vec<u64>,
    stalled: bool,
}

pub(crate) fn request_body(
    api: ClientApi,
    model: &str,
    stream: bool,
    request_bytes: usize,
) -> Bytes {
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
    // Chat Completions and Messages take the same shape for plain-text turns.
    let body = match api {
        ClientApi::Openai | ClientApi::Anthropic => serde_json::json!({
            "model": model, "stream": stream, "max_tokens": 1024, "messages": messages,
        }),
        ClientApi::Responses => serde_json::json!({
            "model": model, "stream": stream, "max_output_tokens": 1024, "input": messages,
            "store": false,
        }),
    };
    Bytes::from(body.to_string())
}

pub(crate) async fn run(spec: Spec) -> Report {
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
    let body = request_body(spec.api, &spec.model, spec.stream, spec.request_bytes);
    let spec = Arc::new(spec);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut dropped = 0usize;
    let mut window = None;
    match spec.mode {
        Mode::Closed {
            concurrency,
            duration,
        } => {
            let counted_from = start + spec.warmup;
            let end = counted_from + duration;
            window = Some((counted_from, end));
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, spec, body) = (client.clone(), spec.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    // Past the window only for a target so slow that no request of this
                    // worker started after the warm-up: one is sent, so it has a latency.
                    let mut counted = false;
                    while Instant::now() < end || (!counted && Instant::now() < end + spec.timeout)
                    {
                        let sent = Instant::now();
                        counted |= sent >= counted_from;
                        mine.push(one(&client, &spec, body.clone(), sent).await);
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
    summarize(samples, dropped, elapsed, window)
}

/// `window`: for a closed loop, throughput is the answers that ended inside it over its
/// length (requests still running at its end would otherwise stretch the divisor).
fn summarize(
    samples: Vec<Sample>,
    dropped: usize,
    elapsed: f64,
    window: Option<(Instant, Instant)>,
) -> Report {
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
    let mut in_window = 0usize;
    for s in samples {
        let ended_in_window =
            |(from, to): (Instant, Instant)| s.ok && s.done.is_some_and(|d| d >= from && d <= to);
        in_window += usize::from(window.is_some_and(ended_in_window));
        report.handled += usize::from(s.ok);
        // Warm-up requests only open connections and wake the gateway: throughput counts
        // what ended in the window, the other figures what started in it.
        if window.is_some_and(|(from, _)| s.started.is_some_and(|t| t < from)) {
            report.sent = report.sent.saturating_sub(1);
            continue;
        }
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
    report.rps = match window {
        Some((from, to)) => in_window as f64 / (to - from).as_secs_f64().max(1e-9),
        None => report.ok as f64 / elapsed.max(1e-9),
    };
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
    let mut sample =
        match tokio::time::timeout(spec.timeout, exchange(client, spec, body, start)).await {
            Ok(sample) => sample,
            Err(_) => fail(
                "timeout",
                format!("no complete answer in {:?}", spec.timeout),
            ),
        };
    sample.started = Some(start);
    sample.done = Some(Instant::now());
    sample
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    spec: &Spec,
    body: Bytes,
    start: Instant,
) -> Sample {
    let mut req = hyper::Request::post(&spec.url).header("content-type", "application/json");
    let defaults: &[(&str, &str)] = match spec.api {
        ClientApi::Openai | ClientApi::Responses => &[("authorization", "Bearer bench-client-key")],
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
    let mut events = SseEvents::default();
    let mut deltas = 0u32;
    let mut ended = false;
    let mut last_delta = None::<Instant>;
    let mut sample = Sample::default();
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
        seen.extend_from_slice(data);
        if !spec.stream || !status.is_success() {
            continue;
        }
        let now = Instant::now();
        let mut found = 0u32;
        for event in events.push(data) {
            match read_event(spec.api, &event) {
                Event::Delta(n) if !ended => found += n,
                Event::End => ended = true,
                Event::Failed => return fail("error event", one_line(&event, 300)),
                // Anything after the terminator, or a delta after it, breaks the stream.
                Event::Delta(_) => {
                    return fail(
                        "incomplete stream",
                        "data after the end of the stream".into(),
                    );
                }
                Event::Other => {}
            }
        }
        if found > 0 {
            match last_delta {
                None => sample.ttft_us = Some(micros(now - start)),
                Some(prev) => sample.gaps_us.push(micros(now - prev)),
            }
            // Deltas that arrived together were held back: each after the first had no gap.
            sample.gaps_us.extend((1..found).map(|_| 0));
            last_delta = Some(now);
            deltas += found;
        }
    }
    sample.latency_us = micros(start.elapsed());
    if !status.is_success() {
        return fail(
            &format!("status {}", status.as_u16()),
            format!("{status}: {}", one_line(&seen, 300)),
        );
    }
    if spec.stream {
        if deltas != spec.expect_deltas || !ended {
            let tail = &seen[seen.len().saturating_sub(300)..];
            return fail(
                "incomplete stream",
                format!(
                    "{deltas} of {} deltas, {}; ends with: {}",
                    spec.expect_deltas,
                    if ended { "ended" } else { "no end event" },
                    one_line(tail, 300)
                ),
            );
        }
        sample.stalled = sample.gaps_us.iter().any(|&g| g > micros(spec.stall));
    } else {
        let text = answer_text(spec.api, &seen);
        if text.as_ref().is_none_or(|t| t.len() != spec.expect_bytes) {
            return fail(
                "wrong answer",
                format!(
                    "expected {} bytes of text; got: {}",
                    spec.expect_bytes,
                    one_line(&seen, 300)
                ),
            );
        }
    }
    sample.ok = true;
    sample
}

/// Splits a byte stream into SSE events (the text between blank lines), whatever the reads.
#[derive(Default)]
struct SseEvents {
    buf: Vec<u8>,
}

impl SseEvents {
    fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf
            .extend(data.iter().copied().filter(|&b| b != b'\r'));
        let mut out = Vec::new();
        while let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
            out.push(self.buf.drain(..at + 2).collect());
        }
        out
    }
}

enum Event {
    /// A content delta carrying this many marker words.
    Delta(u32),
    /// The stream's terminator.
    End,
    /// An error event.
    Failed,
    Other,
}

/// What one SSE event is, in the client's API.
fn read_event(api: ClientApi, event: &[u8]) -> Event {
    let text = String::from_utf8_lossy(event);
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n");
    if api == ClientApi::Openai && data.trim() == "[DONE]" {
        return Event::End;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
        return Event::Other;
    };
    let markers = |t: Option<&str>| t.map_or(0, |t| t.matches(DELTA_TEXT).count() as u32);
    let kind = v["type"].as_str().unwrap_or("");
    match api {
        ClientApi::Openai if v.get("error").is_some() => Event::Failed,
        ClientApi::Openai => match markers(v["choices"][0]["delta"]["content"].as_str()) {
            0 => Event::Other,
            n => Event::Delta(n),
        },
        ClientApi::Anthropic => match kind {
            "content_block_delta" if v["delta"]["type"] == "text_delta" => {
                Event::Delta(markers(v["delta"]["text"].as_str()))
            }
            "message_stop" => Event::End,
            "error" => Event::Failed,
            _ => Event::Other,
        },
        ClientApi::Responses => match kind {
            "response.output_text.delta" => Event::Delta(markers(v["delta"].as_str())),
            "response.completed" => Event::End,
            "error" | "response.failed" | "response.incomplete" => Event::Failed,
            _ => Event::Other,
        },
    }
}

/// The text of a whole answer in the client's API, if the body is one.
fn answer_text(api: ClientApi, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = match api {
        ClientApi::Openai => v["choices"][0]["message"]["content"].as_str()?.to_string(),
        ClientApi::Anthropic => v["content"]
            .as_array()?
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect(),
        ClientApi::Responses => v["output"]
            .as_array()?
            .iter()
            .filter_map(|item| item["content"].as_array())
            .flatten()
            .filter(|part| part["type"] == "output_text")
            .filter_map(|part| part["text"].as_str())
            .collect(),
    };
    Some(text)
}

fn one_line(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(max).collect()
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
        let body = request_body(ClientApi::Anthropic, "m", true, 150_000);
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
            warmup: Duration::from_millis(50),
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

    #[test]
    fn events_are_found_whatever_the_reads_and_only_deltas_count() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"tok tok \"}}]}\r\n\r\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"},{\"x\":\"tok \"}]}\n\ndata: [DONE]\n\n";
        let mut events = SseEvents::default();
        let mut found = Vec::new();
        for b in stream.as_bytes() {
            found.extend(events.push(std::slice::from_ref(b)));
        }
        let kinds: Vec<String> = found
            .iter()
            .map(|e| match read_event(ClientApi::Openai, e) {
                Event::Delta(n) => format!("delta {n}"),
                Event::End => "end".into(),
                Event::Failed => "failed".into(),
                Event::Other => "other".into(),
            })
            .collect();
        assert_eq!(kinds, ["delta 2", "other", "end"]);
        // Responses repeats the whole text in its `.done` events: only deltas count.
        let done = br#"data: {"type":"response.output_text.done","text":"tok tok "}"#;
        assert!(matches!(
            read_event(ClientApi::Responses, done),
            Event::Other
        ));
        let err = b"event: error\ndata: {\"type\":\"error\",\"error\":{}}";
        assert!(matches!(
            read_event(ClientApi::Anthropic, err),
            Event::Failed
        ));
        let whole =
            br#"{"output":[{"type":"message","content":[{"type":"output_text","text":"abc"}]}]}"#;
        assert_eq!(
            answer_text(ClientApi::Responses, whole).as_deref(),
            Some("abc")
        );
    }
}
