//! A scripted fake LLM upstream for exact translation cases and fault injection: each
//! request it receives takes the next scripted reply, and is recorded for assertions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;

/// One scripted reply.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// Body pieces, each sent after its delay.
    pub chunks: Vec<(Duration, String)>,
    /// Keep the response open after the last chunk (until the peer goes away).
    pub hold_open: bool,
    /// Close the connection abruptly after the chunks (no clean end of body).
    pub break_after: bool,
}

impl Reply {
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            chunks: vec![(Duration::ZERO, body.to_string())],
            hold_open: false,
            break_after: false,
        }
    }

    /// Server-sent events, each given as its full text (`event: x\ndata: {...}\n\n`).
    pub(crate) fn sse(events: &[String]) -> Self {
        Self {
            status: 200,
            content_type: "text/event-stream",
            headers: Vec::new(),
            chunks: events.iter().map(|e| (Duration::ZERO, e.clone())).collect(),
            hold_open: false,
            break_after: false,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// What the upstream received.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// When each response body was dropped before it ended (the peer closed).
    closed: Mutex<Vec<Instant>>,
}

pub(crate) struct FakeUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeUpstream {
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            shared,
            _runtime: runtime,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn push(&self, reply: Reply) {
        self.shared.script.lock().unwrap().push_back(reply);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub(crate) fn closed(&self) -> Vec<Instant> {
        self.shared.closed.lock().unwrap().clone()
    }
}

struct CloseGuard {
    shared: Arc<Shared>,
    finished: std::cell::Cell<bool>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if !self.finished.get() {
            self.shared.closed.lock().unwrap().push(Instant::now());
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    });
    let reply = shared.script.lock().unwrap().pop_front();
    let Some(reply) = reply else {
        return Response::builder()
            .status(500)
            .body(Body::from(r#"{"error":{"message":"no scripted reply"}}"#))
            .unwrap();
    };
    let guard = CloseGuard {
        shared: shared.clone(),
        finished: std::cell::Cell::new(false),
    };
    let chunks = reply.chunks.clone();
    let (hold, broken) = (reply.hold_open, reply.break_after);
    let stream = futures_util::stream::unfold(
        (chunks.into_iter(), guard),
        move |(mut it, guard)| async move {
            match it.next() {
                Some((delay, text)) => {
                    tokio::time::sleep(delay).await;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(text)),
                        (it, guard),
                    ))
                }
                None if hold => {
                    std::future::pending::<()>().await;
                    None
                }
                None if broken => {
                    guard.finished.set(true);
                    Some((Err(std::io::Error::other("scripted break")), (it, guard)))
                }
                None => {
                    guard.finished.set(true);
                    None
                }
            }
        },
    )
    .fuse();
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type);
    for (k, v) in &reply.headers {
        builder = builder.header(*k, v);
    }
    builder.body(Body::from_stream(stream)).unwrap()
}

/// An Anthropic SSE event.
pub(crate) fn a_event(name: &str, data: serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An OpenAI SSE chunk.
pub(crate) fn o_event(data: serde_json::Value) -> String {
    format!("data: {data}\n\n")
}

/// The model's answer as the Messages API streams it (`moat chat` streams): each text
/// and each tool input split across two deltas, as a real stream splits them.
pub(crate) fn a_message(content: &serde_json::Value, stop: &str) -> Reply {
    let mut events = vec![a_event(
        "message_start",
        serde_json::json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
               "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null,
               "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    )];
    for (index, block) in content.as_array().unwrap().iter().enumerate() {
        let halves = |text: &str| {
            let cut = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |c| c.0);
            [text[..cut].to_string(), text[cut..].to_string()]
        };
        let (start, deltas) = match block["type"].as_str().unwrap() {
            "text" => (
                serde_json::json!({"type": "text", "text": ""}),
                halves(block["text"].as_str().unwrap())
                    .map(|t| serde_json::json!({"type": "text_delta", "text": t})),
            ),
            _ => (
                serde_json::json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                halves(&block["input"].to_string())
                    .map(|t| serde_json::json!({"type": "input_json_delta", "partial_json": t})),
            ),
        };
        events.push(a_event(
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push(a_event(
                "content_block_delta",
                serde_json::json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(a_event(
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(a_event(
        "message_delta",
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    ));
    events.push(a_event(
        "message_stop",
        serde_json::json!({"type": "message_stop"}),
    ));
    Reply::sse(&events)
}
