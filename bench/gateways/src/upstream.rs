//! The fake upstream: one server that answers both OpenAI Chat Completions
//! (`POST /v1/chat/completions`) and Anthropic Messages (`POST /v1/messages`), whole or
//! streamed, as fast as the machine allows.
//!
//! What it sends is chosen by the model name, because that is the one field every gateway
//! forwards: `bench-d64-g20-b32-l0` means 64 streamed deltas 20 ms apart, a 32-byte answer
//! when not streaming, and no latency before the response starts. Missing parts take the
//! defaults below; anything else in the name (a provider prefix a gateway kept) is ignored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// The text of one streamed delta; the load generator counts it to check a stream arrived whole.
pub(crate) const DELTA_TEXT: &str = "tok ";

/// The shape of a response, parsed from the model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Deltas in a streamed answer.
    pub deltas: u32,
    /// Pause between two deltas.
    pub gap: Duration,
    /// Bytes of text in a whole (non-streamed) answer.
    pub bytes: usize,
    /// Pause before the response head, as a model's queueing and prefill would.
    pub latency: Duration,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            deltas: 16,
            gap: Duration::ZERO,
            bytes: 32,
            latency: Duration::ZERO,
        }
    }
}

impl Shape {
    pub(crate) fn from_model(model: &str) -> Self {
        let mut shape = Shape::default();
        // A gateway may keep a provider prefix ("openai/bench-...").
        let name = model.rsplit(['/', ',']).next().unwrap_or(model);
        for part in name.split('-').skip(1) {
            let (key, value) = part.split_at(part.len().min(1));
            let Ok(n) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "d" => shape.deltas = n.min(100_000) as u32,
                "g" => shape.gap = Duration::from_millis(n.min(60_000)),
                "b" => shape.bytes = (n as usize).min(64 << 20),
                "l" => shape.latency = Duration::from_millis(n.min(60_000)),
                _ => {}
            }
        }
        shape
    }

    /// The model name that asks for this shape.
    pub(crate) fn model(&self) -> String {
        format!(
            "bench-d{}-g{}-b{}-l{}",
            self.deltas,
            self.gap.as_millis(),
            self.bytes,
            self.latency.as_millis()
        )
    }
}

#[derive(Deserialize)]
struct RequestHead {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves until the process ends. Prints `listening on ADDR` once bound.
pub(crate) async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    serve_on(listener).await
}

pub(crate) async fn serve_on(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|req| async move { Ok::<_, Infallible>(answer(req).await) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body> {
    let api = match (req.method().as_str(), req.uri().path()) {
        ("POST", "/v1/chat/completions") => Api::OpenAi,
        ("POST", "/v1/messages") => Api::Anthropic,
        ("GET", "/v1/models") => {
            return json(200, r#"{"object":"list","data":[{"id":"bench","object":"model","created":1,"owned_by":"bench"}]}"#.into());
        }
        _ => {
            return json(
                404,
                r#"{"error":{"type":"not_found","message":"no such path"}}"#.into(),
            );
        }
    };
    let Ok(body) = req.into_body().collect().await.map(|c| c.to_bytes()) else {
        return json(
            400,
            r#"{"error":{"type":"invalid_request","message":"unreadable body"}}"#.into(),
        );
    };
    let Ok(head) = serde_json::from_slice::<RequestHead>(&body) else {
        return json(
            400,
            r#"{"error":{"type":"invalid_request","message":"not JSON"}}"#.into(),
        );
    };
    let shape = Shape::from_model(&head.model);
    if !shape.latency.is_zero() {
        tokio::time::sleep(shape.latency).await;
    }
    let model = serde_json::to_string(&head.model).unwrap_or_else(|_| "\"bench\"".into());
    if !head.stream {
        let text = serde_json::to_string(&filler(shape.bytes)).unwrap_or_default();
        return json(200, whole(api, &model, &text));
    }
    let usage = head.stream_options.is_some_and(|o| o.include_usage);
    let events = stream_events(api, &model, shape.deltas, usage);
    let gap = shape.gap;
    let frames = futures_util::stream::unfold((events.into_iter(), 0u32), move |(mut it, n)| {
        async move {
            let (is_delta, text) = it.next()?;
            // The first delta goes at once; each later one waits the gap.
            if is_delta && n > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let n = n + u32::from(is_delta);
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), (it, n)))
        }
    });
    hyper::Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap_or_default()
}

fn json(status: u16, body: String) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body))))
        .unwrap_or_default()
}

/// `bytes` of plain prose-like text.
fn filler(bytes: usize) -> String {
    const WORDS: &str = "the quick brown fox jumps over the lazy dog while the gateway measures ";
    WORDS.chars().cycle().take(bytes).collect()
}

fn whole(api: Api, model: &str, text: &str) -> String {
    match api {
        Api::OpenAi => format!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{text}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}}}"#
        ),
        Api::Anthropic => format!(
            r#"{{"id":"msg_bench","type":"message","role":"assistant","model":{model},"content":[{{"type":"text","text":{text}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":12,"output_tokens":8}}}}"#
        ),
    }
}

/// A stream's SSE events in order, each flagged when it is a content delta (paced).
fn stream_events(api: Api, model: &str, deltas: u32, usage: bool) -> Vec<(bool, String)> {
    let mut out = Vec::with_capacity(deltas as usize + 6);
    match api {
        Api::OpenAi => {
            let chunk = |delta: &str, finish: &str| {
                format!(
                    "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
                )
            };
            out.push((false, chunk(r#"{"role":"assistant","content":""}"#, "null")));
            let delta = format!(r#"{{"content":"{DELTA_TEXT}"}}"#);
            for _ in 0..deltas {
                out.push((true, chunk(&delta, "null")));
            }
            out.push((false, chunk("{}", "\"stop\"")));
            if usage {
                out.push((false, format!(
                    "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{deltas},\"total_tokens\":{}}}}}\n\n",
                    deltas + 12
                )));
            }
            out.push((false, "data: [DONE]\n\n".into()));
        }
        Api::Anthropic => {
            out.push((false, format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":12,\"output_tokens\":1}}}}}}\n\n"
            )));
            out.push((false, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into()));
            let delta = format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{DELTA_TEXT}\"}}}}\n\n"
            );
            for _ in 0..deltas {
                out.push((true, delta.clone()));
            }
            out.push((false, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into()));
            out.push((false, format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{deltas}}}}}\n\n"
            )));
            out.push((
                false,
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_round_trips_through_the_model_name() {
        let shape = Shape {
            deltas: 64,
            gap: Duration::from_millis(20),
            bytes: 150_000,
            latency: Duration::from_millis(3),
        };
        assert_eq!(Shape::from_model(&shape.model()), shape);
        assert_eq!(
            Shape::from_model(&format!("openai/{}", shape.model())),
            shape
        );
        assert_eq!(Shape::from_model(&format!("up,{}", shape.model())), shape);
        assert_eq!(Shape::from_model("gpt-4o"), Shape::default());
    }

    #[test]
    fn streams_are_well_formed_in_both_formats() {
        let openai = stream_events(Api::OpenAi, "\"m\"", 3, true);
        assert_eq!(openai.iter().filter(|(d, _)| *d).count(), 3);
        assert!(openai.last().is_some_and(|(_, t)| t == "data: [DONE]\n\n"));
        for (_, event) in &openai[..openai.len() - 1] {
            let data = event
                .strip_prefix("data: ")
                .and_then(|e| e.strip_suffix("\n\n"));
            assert!(
                serde_json::from_str::<serde_json::Value>(data.unwrap()).is_ok(),
                "{event}"
            );
        }
        let anthropic = stream_events(Api::Anthropic, "\"m\"", 3, false);
        assert_eq!(anthropic.iter().filter(|(d, _)| *d).count(), 3);
        for (_, event) in &anthropic {
            let data = event
                .split_once("\ndata: ")
                .unwrap()
                .1
                .strip_suffix("\n\n")
                .unwrap();
            assert!(
                serde_json::from_str::<serde_json::Value>(data).is_ok(),
                "{event}"
            );
        }
        let text = serde_json::to_string(&filler(150_000)).unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&whole(Api::OpenAi, "\"m\"", &text)).unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .len(),
            150_000
        );
    }
}
