//! Tools for `bench/llm`, one binary with three jobs:
//!
//! - `upstream ADDR CHUNKS GAP_MS`: a fast fake OpenAI-compatible server. Non-streaming
//!   requests get a small completion at once; streaming ones get CHUNKS content chunks
//!   GAP_MS apart, then the finish chunk and `[DONE]`.
//! - `load URL MODEL CONCURRENCY SECONDS stream|whole`: keeps CONCURRENCY requests in flight for
//!   SECONDS and prints one line: requests/s, latency p50 and p99 (µs) and, for streams,
//!   time to first chunk p50/p99 and inter-chunk gap p50/p99 (µs).
//! - `hold URL MODEL N`: opens N streaming requests, prints `open N` once each has its first
//!   chunk, then holds them until killed.
//!
//! Direct and through-moat runs use the same client code, so their difference is moat's.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const WHOLE: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#;
const CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n";
const LAST: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream(addr: String, chunks: usize, gap: Duration) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
                    let streaming = has(b"\"stream\":true") || has(b"\"stream\": true");
                    let resp: hyper::Response<Body> = if streaming {
                        let s = futures_util::stream::iter(0..=chunks).then(move |i| async move {
                            if i > 0 && !gap.is_zero() {
                                tokio::time::sleep(gap).await;
                            }
                            let text = if i == chunks { LAST } else { CHUNK };
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(text.as_bytes())))
                        });
                        hyper::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(BodyExt::boxed(StreamBody::new(s)))
                            .unwrap_or_default()
                    } else {
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(BodyExt::boxed(Full::new(Bytes::from_static(
                                WHOLE.as_bytes(),
                            ))))
                            .unwrap_or_default()
                    };
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn request(url: &str, model: &str, stream: bool) -> hyper::Request<Full<Bytes>> {
    // The Responses API (`.../responses`) takes `input`; Chat Completions `messages`.
    let body = if url.ends_with("/responses") {
        format!(r#"{{"model":"{model}","stream":{stream},"input":"hi","store":false}}"#)
    } else {
        format!(
            r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

#[derive(Default)]
struct Samples {
    latency: Vec<u64>,
    first: Vec<u64>,
    gaps: Vec<u64>,
    errors: u64,
}

async fn load(url: String, model: String, concurrency: usize, secs: u64, stream: bool) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, model) = (client.clone(), url.clone(), model.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            while Instant::now() < end {
                let start = Instant::now();
                let Ok(resp) = client.request(request(&url, &model, stream)).await else {
                    s.errors += 1;
                    continue;
                };
                if !resp.status().is_success() {
                    s.errors += 1;
                }
                let mut body = resp.into_body();
                let mut last = None::<Instant>;
                while let Some(Ok(frame)) = body.frame().await {
                    if frame.is_data() {
                        let now = Instant::now();
                        match last {
                            None => s.first.push((now - start).as_micros() as u64),
                            Some(prev) => s.gaps.push((now - prev).as_micros() as u64),
                        }
                        last = Some(now);
                    }
                }
                s.latency.push(start.elapsed().as_micros() as u64);
            }
            s
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.latency.extend(s.latency);
            all.first.extend(s.first);
            all.gaps.extend(s.gaps);
            all.errors += s.errors;
        }
    }
    let rps = all.latency.len() as f64 / secs as f64;
    let (p50, p99) = pct(&mut all.latency);
    let (f50, f99) = pct(&mut all.first);
    let (g50, g99) = pct(&mut all.gaps);
    println!(
        "{rps:.0} {p50} {p99} {f50} {f99} {g50} {g99} {}",
        all.errors
    );
}

fn pct(v: &mut [u64]) -> (u64, u64) {
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

async fn hold(url: String, model: String, n: usize) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bool>(n);
    for _ in 0..n {
        let (client, url, tx, model) = (client.clone(), url.clone(), tx.clone(), model.clone());
        tokio::spawn(async move {
            let Ok(resp) = client.request(request(&url, &model, true)).await else {
                let _ = tx.send(false).await;
                return;
            };
            let ok = resp.status().is_success();
            let mut body = resp.into_body();
            let first = matches!(body.frame().await, Some(Ok(_)));
            let _ = tx.send(ok && first).await;
            while let Some(Ok(_)) = body.frame().await {}
        });
    }
    let mut open = 0;
    for _ in 0..n {
        if rx.recv().await == Some(true) {
            open += 1;
        }
    }
    println!("open {open}");
    std::future::pending::<()>().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    match arg(1).as_str() {
        "upstream" => {
            if let Err(e) = upstream(arg(2), num(3) as usize, Duration::from_millis(num(4))).await {
                eprintln!("upstream: {e}");
                std::process::exit(1);
            }
        }
        "load" => load(arg(2), arg(3), num(4) as usize, num(5), arg(6) == "stream").await,
        "hold" => hold(arg(2), arg(3), num(4) as usize).await,
        _ => {
            eprintln!(
                "usage: upstream ADDR CHUNKS GAP_MS | load URL MODEL CONCURRENCY SECONDS stream|whole | hold URL MODEL N"
            );
            std::process::exit(2);
        }
    }
}
