//! `moat usage`: the gateway's usage totals from `state.db`, as a table or JSON. Reads
//! only; works whether or not the server runs (SQLite's WAL lets both in).

use std::time::Duration;

use anyhow::anyhow;
use moat_core::home::Home;
use moat_llm::Group;
use moat_state::StateStore;

use crate::Failure;

pub(crate) fn run(home: &Home, since: &str, json: bool) -> Result<(), Failure> {
    let window = parse_since(since)?;
    let loaded = crate::load_config(home, &[])?;
    if !home.state_db().exists() {
        return Err(Failure::runtime(anyhow!(
            "no usage yet: {} does not exist (start the gateway with `moat serve`)",
            home.state_db().display()
        )));
    }
    let db = StateStore::open(&home.state_db()).map_err(Failure::runtime)?;
    let since_ms = window.map(|w| moat_llm::now_ms() - w.as_millis() as i64);
    let groups = moat_llm::summarize_usage(db.connection(), since_ms).map_err(Failure::runtime)?;
    let total = moat_llm::usage_total(&groups);
    if json {
        let v = serde_json::json!({
            "since": since,
            "total": total,
            "groups": groups,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(Failure::runtime)?
        );
        return Ok(());
    }
    let retention = loaded.config.llm.usage_retention;
    if groups.is_empty() {
        println!(
            "no requests {} (usage is kept for {})",
            match window {
                Some(w) => format!("in the last {}", humantime::format_duration(w)),
                None => "recorded".into(),
            },
            humantime::format_duration(retention)
        );
        return Ok(());
    }
    print_table(&groups, &total);
    Ok(())
}

fn parse_since(since: &str) -> Result<Option<Duration>, Failure> {
    if since == "all" {
        return Ok(None);
    }
    humantime::parse_duration(since).map(Some).map_err(|e| {
        Failure::usage(anyhow!(
            "--since {since:?}: {e}; use a duration like 1h, 24h or 7d, or `all`"
        ))
    })
}

fn print_table(groups: &[Group], total: &Group) {
    println!(
        "{:<14} {:<12} {:<28} {:>8} {:>7} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "BACKEND",
        "ACCOUNT",
        "MODEL",
        "REQUESTS",
        "ERRORS",
        "INPUT",
        "OUTPUT",
        "CACHED",
        "P50 MS",
        "P95 MS"
    );
    for g in groups.iter().chain(std::iter::once(total)) {
        let latency = |ms: u64| {
            if g.backend == "all" {
                "-".to_string()
            } else {
                ms.to_string()
            }
        };
        println!(
            "{:<14} {:<12} {:<28} {:>8} {:>6.1}% {:>10} {:>10} {:>10} {:>8} {:>8}",
            clip(&g.backend, 14),
            clip(&g.account, 12),
            clip(&g.model, 28),
            g.requests,
            g.error_rate * 100.0,
            g.input_tokens,
            g.output_tokens,
            g.cached_tokens,
            latency(g.latency_p50_ms),
            latency(g.latency_p95_ms),
        );
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}
