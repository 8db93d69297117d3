//! Per-request usage, recorded off the request path.
//!
//! A request hands its [`UsageRecord`] to the [`Recorder`] (a bounded channel; never a
//! wait), and one writer thread batches the records into `state.db`'s `usage` table,
//! deletes rows older than `llm.usage_retention`, and keeps the since-start counters that
//! `/metrics` serves. If the channel is full the record is counted as dropped, never
//! waited for.
//!
//! Token counts are what the upstream reported, in one convention for both APIs: input
//! counts every prompt token (Anthropic's cache reads and writes included, as OpenAI's
//! `prompt_tokens` does), cached counts the prompt tokens read from the cache.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moat_core::config::llm::BackendKind;
use moat_state::StateStore;
use moat_state::rusqlite;
use moat_state::rusqlite::params;
use serde_json::Value;

use crate::sse::SseEvent;

/// Records waiting for the writer at most: [`LINGER`] of records at 160,000 a second.
const QUEUE: usize = 8192;
/// Most records written in one transaction; a full batch is written without waiting.
const BATCH: usize = 2048;
/// How long the writer sleeps between batches while records keep coming (a flush wakes
/// it at once). It sleeps rather than waits on the channel: a waiting receiver is woken
/// by every send, a thread switch per request.
const LINGER: Duration = Duration::from_millis(50);
/// Most distinct metric series; past it, new models are counted as `other`.
const MAX_SERIES: usize = 10_000;
/// Latency histogram bounds, seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// TokenCounts one exchange used, as far as the upstream said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Prompt tokens, cached ones included.
    pub input: Option<u64>,
    /// Generated tokens.
    pub output: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    pub cached: Option<u64>,
}

impl TokenCounts {
    /// From a `usage` object of either API (Anthropic's, Chat Completions' or Responses').
    pub fn from_usage(u: &Value) -> Self {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
            return Self {
                input: n("prompt_tokens"),
                output: n("completion_tokens"),
                cached: u
                    .pointer("/prompt_tokens_details/cached_tokens")
                    .and_then(Value::as_u64),
            };
        }
        let cache_read = n("cache_read_input_tokens");
        let cache_write = n("cache_creation_input_tokens");
        let input = n("input_tokens").map(|i| {
            // Upstream numbers: summed without overflowing, however large.
            i.saturating_add(cache_read.unwrap_or(0))
                .saturating_add(cache_write.unwrap_or(0))
        });
        Self {
            input,
            output: n("output_tokens"),
            cached: cache_read.or_else(|| {
                u.pointer("/input_tokens_details/cached_tokens")
                    .and_then(Value::as_u64)
            }),
        }
    }

    /// Later, more complete counts win field by field (a stream's `message_delta` after
    /// its `message_start`).
    fn merge(&mut self, other: TokenCounts) {
        self.input = other.input.or(self.input);
        self.output = other.output.or(self.output);
        self.cached = other.cached.or(self.cached);
    }

    /// From a whole (non-streaming) upstream body.
    pub fn from_body(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Probe {
            usage: Option<Value>,
        }
        serde_json::from_slice::<Probe>(body)
            .ok()
            .and_then(|p| p.usage)
            .map(|u| Self::from_usage(&u))
            .unwrap_or_default()
    }
}

/// Reads the usage out of an upstream event stream as it passes.
#[derive(Debug)]
pub(crate) struct StreamMeter {
    wire: Wire,
    /// What has been seen so far.
    pub tokens: TokenCounts,
}

/// The stream format a meter reads.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Messages,
    ChatCompletions,
    Responses,
}

impl StreamMeter {
    /// A meter for a stream in `kind`'s generation format.
    pub(crate) fn new(kind: BackendKind) -> Self {
        let wire = match kind {
            BackendKind::Anthropic => Wire::Messages,
            BackendKind::Openai => Wire::ChatCompletions,
        };
        Self {
            wire,
            tokens: TokenCounts::default(),
        }
    }

    /// A meter for a Responses API event stream (a native backend's).
    pub(crate) fn responses() -> Self {
        Self {
            wire: Wire::Responses,
            tokens: TokenCounts::default(),
        }
    }

    /// Looks at one upstream event; only the few that carry usage are parsed.
    pub(crate) fn observe(&mut self, ev: &SseEvent) {
        let usage = match self.wire {
            Wire::Messages => match ev.event.as_deref() {
                Some("message_start") => serde_json::from_str::<Value>(&ev.data)
                    .ok()
                    .and_then(|v| v.pointer("/message/usage").cloned()),
                Some("message_delta") => serde_json::from_str::<Value>(&ev.data)
                    .ok()
                    .and_then(|v| v.get("usage").cloned()),
                _ => None,
            },
            Wire::ChatCompletions | Wire::Responses => {
                if !ev.data.contains("\"usage\"") {
                    return;
                }
                let at = match self.wire {
                    Wire::Responses => "/response/usage",
                    _ => "/usage",
                };
                serde_json::from_str::<Value>(&ev.data)
                    .ok()
                    .and_then(|v| v.pointer(at).cloned())
                    .filter(Value::is_object)
            }
        };
        if let Some(u) = usage {
            self.tokens.merge(TokenCounts::from_usage(&u));
        }
    }
}

/// One gateway request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRecord {
    /// When it arrived, unix milliseconds.
    pub at_ms: i64,
    /// The backend that served it (or last failed it); empty if none was reached.
    pub backend: String,
    /// The account used; empty if none.
    pub account: String,
    /// The upstream model name (or the requested one, when routing failed).
    pub model: String,
    /// The status the client got.
    pub status: u16,
    /// TokenCounts.
    pub tokens: TokenCounts,
    /// Time to the upstream's response head.
    pub ttfb: Option<Duration>,
    /// Time to the end of the response.
    pub total: Duration,
    /// Response bytes sent to the client.
    pub bytes: u64,
    /// A stable class for failures (`rate_limited`, `upstream_5xx`, `connect`...).
    pub error_class: Option<&'static str>,
}

enum Msg {
    Record(Box<UsageRecord>),
    Flush(SyncSender<()>),
}

/// Since-start counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
    dropped: AtomicU64,
}

/// (backend, account, model).
type SeriesKey = (String, String, String);

/// The counters behind `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Requests by series and status.
    pub requests: BTreeMap<(SeriesKey, u16), u64>,
    /// TokenCounts by series: input, output, cached.
    pub tokens: BTreeMap<SeriesKey, [u64; 3]>,
    /// Request duration per backend: bucket counts, sum, count.
    pub duration: BTreeMap<String, Histogram>,
    /// Time to first byte per backend.
    pub ttfb: BTreeMap<String, Histogram>,
}

/// A Prometheus histogram over [`BUCKETS`].
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Cumulative counts are computed when printed; these are per bucket (+Inf last).
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }
}

impl Metrics {
    fn add(&self, r: &UsageRecord) {
        let mut c = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = (r.backend.clone(), r.account.clone(), r.model.clone());
        if !c.tokens.contains_key(&key) && c.tokens.len() >= MAX_SERIES {
            key.2 = "other".into();
        }
        *c.requests.entry((key.clone(), r.status)).or_default() += 1;
        let t = c.tokens.entry(key).or_default();
        t[0] += r.tokens.input.unwrap_or(0);
        t[1] += r.tokens.output.unwrap_or(0);
        t[2] += r.tokens.cached.unwrap_or(0);
        c.duration
            .entry(r.backend.clone())
            .or_default()
            .observe(r.total.as_secs_f64());
        if let Some(t) = r.ttfb {
            c.ttfb
                .entry(r.backend.clone())
                .or_default()
                .observe(t.as_secs_f64());
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> Counters {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The sending side: cheap to call from any request.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
    /// The writer thread, woken by a flush.
    writer: Option<std::thread::Thread>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Recorder {
    /// Starts the writer thread; rows go to `db` (none: counters only) and are kept for
    /// `retention`.
    pub fn start(db: Option<StateStore>, retention: Duration) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let metrics = Arc::new(Metrics::default());
        let m = metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("moat-usage".into())
            .spawn(move || writer(rx, db, retention, &m));
        let writer = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the usage writer; usage is not recorded");
                None
            }
        };
        Self {
            tx,
            metrics,
            writer,
        }
    }

    /// Hands a record to the writer; never waits.
    pub fn record(&self, r: UsageRecord) {
        match self.tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        "the usage writer is behind; usage records were dropped"
                    );
                }
            }
        }
    }

    /// Waits (blocking) until everything recorded before this call is written.
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            if let Some(writer) = &self.writer {
                writer.unpark();
            }
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }

    /// The since-start counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

fn writer(rx: Receiver<Msg>, db: Option<StateStore>, retention: Duration, metrics: &Metrics) {
    let mut last_prune: Option<Instant> = None;
    // Blocks on the channel only when idle: the first record of a batch wakes the writer.
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let take = |msg, batch: &mut Vec<_>, flushes: &mut Vec<_>| match msg {
            Msg::Record(r) => {
                metrics.add(&r);
                batch.push(r);
            }
            Msg::Flush(done) => flushes.push(done),
        };
        take(first, &mut batch, &mut flushes);
        let deadline = Instant::now() + LINGER;
        loop {
            // A full batch is committed at once: under a flood the queue keeps draining.
            while batch.len() < BATCH
                && let Ok(msg) = rx.try_recv()
            {
                take(msg, &mut batch, &mut flushes);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !flushes.is_empty() || left.is_zero() || batch.len() >= BATCH {
                break;
            }
            std::thread::park_timeout(left);
        }
        if let Some(db) = &db {
            if let Err(e) = insert(db, &batch) {
                tracing::error!(error = %e, records = batch.len(), "cannot write usage records to state.db");
            }
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                last_prune = Some(Instant::now());
                let kept = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                let cutoff = now_ms().saturating_sub(kept);
                if let Err(e) = db
                    .connection()
                    .execute("DELETE FROM usage WHERE at < ?1", params![cutoff])
                {
                    tracing::error!(error = %e, "cannot prune old usage records");
                }
            }
        }
        for done in flushes {
            let _ = done.try_send(());
        }
    }
}

fn insert(db: &StateStore, batch: &[Box<UsageRecord>]) -> rusqlite::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let conn = db.connection();
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO usage (at, backend, account, model, status, input_tokens, output_tokens,
                                cached_tokens, ttfb_ms, total_ms, bytes, error_class)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for r in batch {
            let ms = |d: Duration| d.as_millis() as i64;
            stmt.execute(params![
                r.at_ms,
                r.backend,
                r.account,
                r.model,
                r.status,
                r.tokens.input.map(|n| n as i64),
                r.tokens.output.map(|n| n as i64),
                r.tokens.cached.map(|n| n as i64),
                r.ttfb.map(ms),
                ms(r.total),
                r.bytes as i64,
                r.error_class,
            ])?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_usage_shapes_in_one_convention() {
        let a = TokenCounts::from_usage(&json!({
            "input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 30, "cache_creation_input_tokens": 2}));
        assert_eq!(
            a,
            TokenCounts {
                input: Some(42),
                output: Some(5),
                cached: Some(30)
            }
        );
        let o = TokenCounts::from_usage(&json!({
            "prompt_tokens": 42, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 30}}));
        assert_eq!(o, a);
        assert_eq!(
            TokenCounts::from_body(b"{\"id\":1}"),
            TokenCounts::default()
        );
        assert_eq!(TokenCounts::from_body(b"not json"), TokenCounts::default());
    }

    #[test]
    fn stream_meters_read_both_formats() {
        let ev = |event: Option<&str>, data: Value| SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        };
        let mut a = StreamMeter::new(BackendKind::Anthropic);
        a.observe(&ev(
            Some("message_start"),
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}),
        ));
        a.observe(&ev(
            Some("content_block_delta"),
            json!({"usage": {"output_tokens": 999}}),
        ));
        a.observe(&ev(
            Some("message_delta"),
            json!({"type": "message_delta", "usage": {"output_tokens": 12}}),
        ));
        assert_eq!(a.tokens.input, Some(7));
        assert_eq!(a.tokens.output, Some(12));
        let mut o = StreamMeter::new(BackendKind::Openai);
        o.observe(&ev(None, json!({"choices": [], "usage": null})));
        o.observe(&ev(
            None,
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        ));
        assert_eq!(o.tokens.output, Some(4));
        let mut r = StreamMeter::responses();
        r.observe(&ev(
            Some("response.created"),
            json!({"type": "response.created", "response": {"usage": null}}),
        ));
        r.observe(&ev(
            Some("response.completed"),
            json!({"type": "response.completed", "response": {"usage": {
                "input_tokens": 9, "output_tokens": 2,
                "input_tokens_details": {"cached_tokens": 5}
            }}}),
        ));
        assert_eq!(r.tokens.input, Some(9));
        assert_eq!(r.tokens.output, Some(2));
        assert_eq!(r.tokens.cached, Some(5));
    }

    #[test]
    fn records_reach_the_table_and_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let rec = Recorder::start(
            Some(StateStore::open(&path).unwrap()),
            Duration::from_secs(3600),
        );
        for status in [200, 200, 429] {
            rec.record(UsageRecord {
                at_ms: now_ms(),
                backend: "b".into(),
                account: "a".into(),
                model: "m".into(),
                status,
                tokens: TokenCounts {
                    input: Some(10),
                    output: Some(2),
                    cached: None,
                },
                ttfb: Some(Duration::from_millis(5)),
                total: Duration::from_millis(20),
                bytes: 100,
                error_class: (status != 200).then_some("rate_limited"),
            });
        }
        rec.flush();
        let db = StateStore::open(&path).unwrap();
        let n: i64 = db
            .connection()
            .query_row("SELECT count(*) FROM usage", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        let c = rec.metrics().snapshot();
        let key = ("b".to_string(), "a".to_string(), "m".to_string());
        assert_eq!(c.requests[&(key.clone(), 200)], 2);
        assert_eq!(c.tokens[&key], [30, 6, 0]);
        assert_eq!(c.duration["b"].counts.iter().sum::<u64>(), 3);
    }
}
