//! Reading usage back: totals per backend, account and model over a window (for
//! `/analytics` and `moat usage`), token burn per account, and the Prometheus text of
//! `/metrics`. Everything here is counts, names and durations: no request content and
//! no credential can reach it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use moat_state::rusqlite;
use moat_state::rusqlite::{Connection, params};
use serde::Serialize;

use crate::usage::{BUCKETS, Counters, Histogram};

/// Totals of one (backend, account, model) over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Group {
    /// Backend name (`-` for requests that reached none).
    pub backend: String,
    /// Account name.
    pub account: String,
    /// Upstream model name.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Requests that ended in an error status or an error class.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from cache.
    pub cached_tokens: u64,
    /// Median total time, ms.
    pub latency_p50_ms: u64,
    /// 95th percentile total time, ms.
    pub latency_p95_ms: u64,
    /// Median time to first byte, ms (requests that got one).
    pub ttfb_p50_ms: Option<u64>,
}

/// Totals per group since `since_ms` (unix ms; `None`: all kept), ordered by backend,
/// account, model.
pub fn summarize(conn: &Connection, since_ms: Option<i64>) -> rusqlite::Result<Vec<Group>> {
    let mut stmt = conn.prepare_cached(
        "SELECT backend, account, model, status, error_class, input_tokens, output_tokens,
                cached_tokens, ttfb_ms, total_ms
         FROM usage WHERE at >= ?1",
    )?;
    #[derive(Default)]
    struct Acc {
        g: Group,
        latencies: Vec<u64>,
        ttfbs: Vec<u64>,
    }
    let mut groups: BTreeMap<(String, String, String), Acc> = BTreeMap::new();
    let mut rows = stmt.query(params![since_ms.unwrap_or(i64::MIN)])?;
    while let Some(r) = rows.next()? {
        let key: (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let status: i64 = r.get(3)?;
        let class: Option<String> = r.get(4)?;
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        let acc = groups.entry(key).or_default();
        acc.g.requests += 1;
        if status >= 400 || class.is_some() {
            acc.g.errors += 1;
        }
        acc.g.input_tokens += n(r.get(5)?);
        acc.g.output_tokens += n(r.get(6)?);
        acc.g.cached_tokens += n(r.get(7)?);
        if let Some(t) = r.get::<_, Option<i64>>(8)? {
            acc.ttfbs.push(t.max(0) as u64);
        }
        acc.latencies.push(r.get::<_, i64>(9)?.max(0) as u64);
    }
    Ok(groups
        .into_iter()
        .map(|((backend, account, model), mut acc)| {
            let show = |s: String| if s.is_empty() { "-".to_string() } else { s };
            acc.g.backend = show(backend);
            acc.g.account = show(account);
            acc.g.model = show(model);
            acc.g.error_rate = acc.g.errors as f64 / acc.g.requests.max(1) as f64;
            acc.latencies.sort_unstable();
            acc.ttfbs.sort_unstable();
            acc.g.latency_p50_ms = percentile(&acc.latencies, 50).unwrap_or(0);
            acc.g.latency_p95_ms = percentile(&acc.latencies, 95).unwrap_or(0);
            acc.g.ttfb_p50_ms = percentile(&acc.ttfbs, 50);
            acc.g
        })
        .collect())
}

/// The nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// The sum of groups, as one line.
pub fn total(groups: &[Group]) -> Group {
    let mut t = Group {
        backend: "all".into(),
        account: "all".into(),
        model: "all".into(),
        ..Group::default()
    };
    for g in groups {
        t.requests += g.requests;
        t.errors += g.errors;
        t.input_tokens += g.input_tokens;
        t.output_tokens += g.output_tokens;
        t.cached_tokens += g.cached_tokens;
    }
    t.error_rate = t.errors as f64 / t.requests.max(1) as f64;
    t
}

/// Tokens (input + output) per account since `since_ms`: the burn.
pub(crate) fn tokens_by_account(
    conn: &Connection,
    since_ms: i64,
) -> rusqlite::Result<BTreeMap<(String, String), u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT backend, account, SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0))
         FROM usage WHERE at >= ?1 GROUP BY backend, account",
    )?;
    let rows = stmt.query_map(params![since_ms], |r| {
        Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?.max(0) as u64))
    })?;
    rows.collect()
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The tools translations left out, as a `/metrics` counter.
pub(crate) fn dropped_tools(out: &mut String, dropped: &BTreeMap<(String, String), u64>) {
    out.push_str("# HELP moat_llm_dropped_tools_total Tools left out of translated requests (the backend cannot run them), by backend and tool type.\n# TYPE moat_llm_dropped_tools_total counter\n");
    for ((backend, tool), n) in dropped {
        let _ = writeln!(
            out,
            "moat_llm_dropped_tools_total{{backend=\"{}\",tool=\"{}\"}} {n}",
            label(backend),
            label(tool)
        );
    }
}

/// One account's live gauges for `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct AccountGauges {
    /// Backend.
    pub backend: String,
    /// Account.
    pub account: String,
    /// Headroom share, 0 to 1.
    pub headroom: f64,
    /// Seconds of cooldown left.
    pub cooldown_secs: f64,
    /// Remaining of each reported limit.
    pub remaining: Vec<(&'static str, u64)>,
    /// Requests in flight.
    pub in_flight: u32,
}

/// The Prometheus text exposition (version 0.0.4) of the counters and gauges.
pub(crate) fn prometheus(c: &Counters, accounts: &[AccountGauges], dropped: u64) -> String {
    let mut out = String::new();
    let series = |b: &str, a: &str, m: &str| {
        format!(
            "backend=\"{}\",account=\"{}\",model=\"{}\"",
            label(b),
            label(a),
            label(m)
        )
    };
    out.push_str("# HELP moat_llm_requests_total Gateway requests by backend, account, model and status.\n# TYPE moat_llm_requests_total counter\n");
    for (((b, a, m), status), n) in &c.requests {
        let _ = writeln!(
            out,
            "moat_llm_requests_total{{{},status=\"{status}\"}} {n}",
            series(b, a, m)
        );
    }
    out.push_str("# HELP moat_llm_tokens_total Tokens by backend, account, model and type.\n# TYPE moat_llm_tokens_total counter\n");
    for ((b, a, m), t) in &c.tokens {
        for (kind, n) in ["input", "output", "cached"].iter().zip(t) {
            let _ = writeln!(
                out,
                "moat_llm_tokens_total{{{},type=\"{kind}\"}} {n}",
                series(b, a, m)
            );
        }
    }
    let histogram = |out: &mut String, name: &str, help: &str, h: &BTreeMap<String, Histogram>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (backend, hist) in h {
            let b = label(backend);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += hist.counts[i];
                let _ = writeln!(
                    out,
                    "{name}_bucket{{backend=\"{b}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += hist.counts[BUCKETS.len()];
            let _ = writeln!(
                out,
                "{name}_bucket{{backend=\"{b}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(out, "{name}_sum{{backend=\"{b}\"}} {}", hist.sum);
            let _ = writeln!(out, "{name}_count{{backend=\"{b}\"}} {cumulative}");
        }
    };
    histogram(
        &mut out,
        "moat_llm_request_duration_seconds",
        "Time from request to the end of the response.",
        &c.duration,
    );
    histogram(
        &mut out,
        "moat_llm_time_to_first_byte_seconds",
        "Time from request to the upstream's response head.",
        &c.ttfb,
    );
    let gauge =
        |out: &mut String, name: &str, help: &str, value: &dyn Fn(&AccountGauges) -> f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for g in accounts {
                let _ = writeln!(
                    out,
                    "{name}{{backend=\"{}\",account=\"{}\"}} {}",
                    label(&g.backend),
                    label(&g.account),
                    value(g)
                );
            }
        };
    gauge(
        &mut out,
        "moat_llm_account_headroom_ratio",
        "Share of the tightest rate limit left (1 when unknown).",
        &|g| g.headroom,
    );
    gauge(
        &mut out,
        "moat_llm_account_cooldown_seconds",
        "Cooldown left after a 429 or an auth failure.",
        &|g| g.cooldown_secs,
    );
    gauge(
        &mut out,
        "moat_llm_account_in_flight",
        "Requests in flight per account.",
        &|g| f64::from(g.in_flight),
    );
    out.push_str("# HELP moat_llm_account_remaining What the provider says is left of each limit.\n# TYPE moat_llm_account_remaining gauge\n");
    for g in accounts {
        for (limit, n) in &g.remaining {
            let _ = writeln!(
                out,
                "moat_llm_account_remaining{{backend=\"{}\",account=\"{}\",limit=\"{limit}\"}} {n}",
                label(&g.backend),
                label(&g.account)
            );
        }
    }
    out.push_str("# HELP moat_llm_usage_records_dropped_total Usage records lost because the writer fell behind.\n# TYPE moat_llm_usage_records_dropped_total counter\n");
    let _ = writeln!(out, "moat_llm_usage_records_dropped_total {dropped}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn prometheus_labels_are_escaped() {
        let mut c = Counters::default();
        let key = ("b".to_string(), "a\"x".to_string(), "m\\\n".to_string());
        c.requests.insert((key.clone(), 200), 3);
        let text = prometheus(&c, &[], 0);
        assert!(
            text.contains(r#"moat_llm_requests_total{backend="b",account="a\"x",model="m\\\n",status="200"} 3"#),
            "{text}"
        );
        assert!(text.contains("moat_llm_usage_records_dropped_total 0"));
    }
}
