//! bench/agent: what the assistant's loop itself costs, apart from the model and the
//! tools, on a scripted fake Anthropic upstream that answers at once (each turn: one
//! `files` call, then a text answer, so two steps).
//!
//! Prints, in one run:
//! - the loop's own time per step (turn time minus model and tool time, per model call),
//!   p50/p99 over sequential turns, next to the model call's own p50 through the router
//!   (the reference: the loop should be a small fraction of even an instant model);
//! - memory per idle session: RSS growth over 1,000 finished conversations, per session;
//! - 1,000 conversations at once: all finished?, wall time, turns/s, the loop's own p99.
//!
//! Usage: moat-bench-agent-loop [SEQUENTIAL_TURNS]   (default 500)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run stops

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use moat_agent::{Agent, AgentStore, Approver, Pending, TurnEvents};
use serde_json::{Value, json};

const TOOL_USE: &str = r#"{"id":"msg_b","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"tool_use","id":"toolu_b","name":"files","input":{"op":"list","path":"."}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":10}}"#;
const TEXT: &str = r#"{"id":"msg_b","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"The workspace is empty."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":60,"output_tokens":8}}"#;

/// The fake upstream: a tool call first, then text once the tool's result is in.
async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let answered = body.windows(11).any(|w| w == b"tool_result");
                    let reply = if answered { TEXT } else { TOOL_USE };
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(reply.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

struct Quiet;

impl TurnEvents for Quiet {
    fn text(&mut self, _: &str) {}
    fn tool_call(&mut self, _: &str, _: &Value) {}
    fn tool_result(&mut self, _: &str, _: bool, _: &str) {}
    fn notice(&mut self, _: &str) {}
}

struct Never;

#[async_trait::async_trait]
impl Approver for Never {
    async fn ask(&self, _: &Pending) -> bool {
        false
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let turns: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let url = upstream().await;
    let llm: moat_core::config::llm::LlmConfig = toml::from_str(&format!(
        "[backends.up]\nkind = \"anthropic\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\nmax_concurrency = 2000\nmax_queue = 2000\n"
    ))
    .unwrap();
    let gateway = Arc::new(moat_llm::Gateway::new(&llm, Default::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store =
        AgentStore::new(moat_state::StateStore::open(&dir.path().join("state.db")).unwrap());
    let mut config = moat_core::config::agent::AgentConfig {
        model: "claude-bench".into(),
        messages_per_minute: u32::MAX,
        max_concurrent_turns: 5000,
        ..Default::default()
    };
    config.trust.insert("files".into(), 4);
    config.ceilings.insert("files".into(), 4);
    let agent = Arc::new(
        Agent::new(
            gateway.clone(),
            &Default::default(),
            config,
            store,
            dir.path().join("workspaces"),
            vec![],
        )
        .unwrap(),
    );

    // The reference: one model call through the router, as the loop makes it.
    let body = json!({"model": "claude-bench", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let mut model = Vec::new();
    for _ in 0..turns {
        let t = Instant::now();
        gateway.messages(&body).await.unwrap();
        model.push(t.elapsed().as_micros() as u64);
    }

    let rss_before = rss_kib();
    let mut own = Vec::new();
    for i in 0..turns {
        let (_, stats) = agent
            .turn_measured(
                "bench",
                &format!("seq-{i}"),
                "owner",
                "what is in the workspace?",
                &mut Quiet,
                &Never,
            )
            .await
            .unwrap();
        assert_eq!(stats.steps, 2);
        own.push((stats.overhead() / stats.steps).as_micros() as u64);
    }
    let rss_after = rss_kib();

    println!("sequential turns: {turns} (2 steps each: a files call, then the answer)");
    println!(
        "  the loop's own time per step: p50 {} µs, p99 {} µs   (target: p99 <= 1000 µs)",
        percentile(&mut own, 0.5),
        percentile(&mut own, 0.99)
    );
    println!(
        "  reference, one model call through the router to an instant upstream: p50 {} µs, p99 {} µs",
        percentile(&mut model, 0.5),
        percentile(&mut model, 0.99)
    );
    println!(
        "memory per idle session: {:.1} KiB   (RSS {} KiB → {} KiB over {turns} finished conversations; target <= 64 KiB)",
        rss_after.saturating_sub(rss_before) as f64 / turns as f64,
        rss_before,
        rss_after
    );

    let concurrent = 1000;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrent)
        .map(|i| {
            let agent = agent.clone();
            tokio::spawn(async move {
                agent
                    .turn_measured(
                        "bench",
                        &format!("par-{i}"),
                        "owner",
                        "what is in the workspace?",
                        &mut Quiet,
                        &Never,
                    )
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut own = Vec::new();
    for t in futures_util::future::join_all(tasks).await {
        if let Ok(Ok((_, stats))) = t {
            ok += 1;
            own.push((stats.overhead() / stats.steps.max(1)).as_micros() as u64);
        }
    }
    let wall = started.elapsed();
    println!(
        "{concurrent} conversations at once: {ok} finished in {:.2} s ({:.0} turns/s); the loop's own time per step p50 {} µs, p99 {} µs (queueing for the store and the 2 cores included)",
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64().max(f64::EPSILON),
        percentile(&mut own, 0.5),
        percentile(&mut own, 0.99)
    );
}
