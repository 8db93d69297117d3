//! A protocol-faithful Discord for the channel tests (no offline Discord server exists):
//! the gateway WebSocket (hello, identify with the token and intents checked, READY,
//! heartbeats acknowledged, resume replaying the events after the client's sequence,
//! RESUMED, close 4004 for a wrong token) and the REST calls a bot makes (gateway/bot,
//! create message with rate-limit headers and a 429 on demand, open a DM, typing).
//! Tests inject MESSAGE_CREATE events and read what the bot posted.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// The bot's own user id in the fake.
pub(crate) const BOT_ID: &str = "999";
const SESSION: &str = "sess-1";

#[derive(Default)]
struct Shared {
    token: String,
    addr: Mutex<Option<SocketAddr>>,
    /// Every dispatched event, for resumes.
    history: Mutex<Vec<Value>>,
    seq: AtomicU64,
    /// The connected session's outbox.
    live: Mutex<Option<mpsc::UnboundedSender<Value>>>,
    /// (channel, content) of each message the bot created.
    sent: Mutex<Vec<(String, String)>>,
    identifies: AtomicUsize,
    resumes: AtomicUsize,
    heartbeats: AtomicUsize,
    limit_next: AtomicBool,
    edits: AtomicUsize,
    limited: AtomicUsize,
    drop_now: Notify,
}

/// A running fake Discord.
pub(crate) struct FakeDiscord {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeDiscord {
    /// A fake that accepts the bot token `token`.
    pub(crate) fn start(token: &str) -> FakeDiscord {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared {
            token: token.to_string(),
            ..Default::default()
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        *shared.addr.lock().unwrap() = Some(addr);
        let app = axum::Router::new()
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/gateway", get(gateway))
            .route("/gateway/", get(gateway))
            .route("/api/v10/channels/{id}/messages", post(create_message))
            .route(
                "/api/v10/channels/{id}/messages/{message}",
                axum::routing::patch(edit_message),
            )
            .route("/api/v10/channels/{id}/typing", post(typing))
            .route("/api/v10/users/@me/channels", post(open_dm))
            .with_state(shared.clone());
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDiscord {
            addr,
            shared,
            _runtime: runtime,
        }
    }

    /// The REST base a bot is configured with.
    pub(crate) fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// A message from `author` in `channel` (a DM when `guild` is None).
    pub(crate) fn message(
        &self,
        author: (&str, &str),
        channel: &str,
        guild: Option<&str>,
        content: &str,
        mentions_bot: bool,
    ) {
        let mentions = if mentions_bot {
            json!([{"id": BOT_ID, "username": "moatbot", "bot": true}])
        } else {
            json!([])
        };
        let mut d = json!({
            "id": format!("{}", 100_000 + self.shared.seq.load(Ordering::SeqCst)),
            "channel_id": channel,
            "author": {"id": author.0, "username": author.1},
            "content": content,
            "mentions": mentions,
            "type": 0,
        });
        if let Some(g) = guild {
            d["guild_id"] = json!(g);
        }
        dispatch(&self.shared, "MESSAGE_CREATE", d);
    }

    /// What the bot posted: (channel, content).
    pub(crate) fn sent(&self) -> Vec<(String, String)> {
        self.shared.sent.lock().unwrap().clone()
    }

    /// The first post to `channel` containing `needle`, within `wait`.
    pub(crate) fn posted(
        &self,
        channel: &str,
        needle: &str,
        wait: std::time::Duration,
    ) -> Option<String> {
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Some((_, text)) = self
                .sent()
                .into_iter()
                .find(|(c, t)| c == channel && t.contains(needle))
            {
                return Some(text);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    /// Drops the gateway connection without a close frame, as a network failure would.
    pub(crate) fn drop_connection(&self) {
        *self.shared.live.lock().unwrap() = None;
        self.shared.drop_now.notify_waiters();
    }

    /// Whether a session is connected.
    pub(crate) fn connected(&self) -> bool {
        self.shared.live.lock().unwrap().is_some()
    }

    /// The next create-message answers 429 once.
    pub(crate) fn rate_limit_next(&self) {
        self.shared.limit_next.store(true, Ordering::SeqCst);
    }

    pub(crate) fn limited(&self) -> usize {
        self.shared.limited.load(Ordering::SeqCst)
    }

    pub(crate) fn identifies(&self) -> usize {
        self.shared.identifies.load(Ordering::SeqCst)
    }

    pub(crate) fn resumes(&self) -> usize {
        self.shared.resumes.load(Ordering::SeqCst)
    }

    pub(crate) fn edits(&self) -> usize {
        self.shared.edits.load(Ordering::SeqCst)
    }

    pub(crate) fn heartbeats(&self) -> usize {
        self.shared.heartbeats.load(Ordering::SeqCst)
    }
}

fn dispatch(shared: &Shared, t: &str, d: Value) {
    let s = shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let event = json!({"op": 0, "t": t, "s": s, "d": d});
    // Under the history lock: a session starting now either replays it or gets it live.
    let mut history = shared.history.lock().unwrap();
    history.push(event.clone());
    if let Some(live) = shared.live.lock().unwrap().as_ref() {
        let _ = live.send(event);
    }
    drop(history);
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {}", shared.token))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "401: Unauthorized", "code": 0})),
    )
        .into_response()
}

async fn gateway_bot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let addr = shared.addr.lock().unwrap().unwrap();
    Json(json!({
        "url": format!("ws://{addr}/gateway"),
        "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
    }))
    .into_response()
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if shared.limit_next.swap(false, Ordering::SeqCst) {
        shared.limited.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("x-ratelimit-limit", "5"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset-after", "0.300"),
                ("x-ratelimit-scope", "user"),
            ],
            Json(json!({"message": "You are being rate limited.", "retry_after": 0.3, "global": false})),
        )
            .into_response();
    }
    let content = body["content"].as_str().unwrap_or_default().to_string();
    if content.chars().count() > 2000 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "Invalid Form Body", "code": 50035})),
        )
            .into_response();
    }
    // Message ids are 1000 + the index in `sent`, so an edit finds its message.
    let id = {
        let mut sent = shared.sent.lock().unwrap();
        sent.push((channel.clone(), content.clone()));
        1000 + sent.len() - 1
    };
    (
        [
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "4"),
            ("x-ratelimit-reset-after", "1.000"),
        ],
        Json(
            json!({"id": id.to_string(), "channel_id": channel, "content": content,
                    "author": {"id": BOT_ID, "username": "moatbot", "bot": true}}),
        ),
    )
        .into_response()
}

/// Edits a message the bot created: its content in `sent` is replaced.
async fn edit_message(
    State(shared): State<Arc<Shared>>,
    Path((channel, message)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let index = message
        .parse::<usize>()
        .ok()
        .and_then(|m| m.checked_sub(1000));
    let mut sent = shared.sent.lock().unwrap();
    match index.and_then(|i| sent.get_mut(i)) {
        Some((c, content)) if *c == channel => {
            *content = body["content"].as_str().unwrap_or_default().to_string();
            shared.edits.fetch_add(1, Ordering::SeqCst);
            Json(json!({"id": message, "channel_id": channel, "content": content})).into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Unknown Message", "code": 10008})),
        )
            .into_response(),
    }
}

async fn typing(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn open_dm(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let rid = body["recipient_id"].as_str().unwrap_or_default();
    Json(json!({"id": format!("8{rid}"), "type": 1, "recipients": [{"id": rid}]})).into_response()
}

async fn gateway(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| session(shared, socket))
}

async fn session(shared: Arc<Shared>, mut ws: WebSocket) {
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 500}});
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    // The first payload must identify or resume.
    let Some(Ok(Message::Text(first))) = ws.recv().await else {
        return;
    };
    let first: Value = serde_json::from_str(first.as_str()).unwrap_or_default();
    let token_ok = first["d"]["token"].as_str() == Some(shared.token.as_str());
    if !token_ok {
        let _ = ws
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 4004,
                reason: "Authentication failed.".into(),
            })))
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let mut opening = Vec::new();
    {
        let history = shared.history.lock().unwrap();
        match first["op"].as_u64() {
            Some(2) => {
                let intents = first["d"]["intents"].as_u64().unwrap_or(0);
                // Without MESSAGE_CONTENT the content of messages would be empty.
                assert!(
                    intents & (1 << 15) != 0 && intents & (1 << 12) != 0,
                    "identify without the message intents"
                );
                shared.identifies.fetch_add(1, Ordering::SeqCst);
                let addr = shared.addr.lock().unwrap().unwrap();
                let s = shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
                opening.push(json!({"op": 0, "t": "READY", "s": s, "d": {
                    "v": 10, "user": {"id": BOT_ID, "username": "moatbot", "bot": true},
                    "session_id": SESSION, "resume_gateway_url": format!("ws://{addr}/gateway"),
                    "guilds": [], "application": {"id": BOT_ID},
                }}));
            }
            Some(6) => {
                if first["d"]["session_id"] != SESSION {
                    opening.push(json!({"op": 9, "d": false}));
                } else {
                    shared.resumes.fetch_add(1, Ordering::SeqCst);
                    let after = first["d"]["seq"].as_u64().unwrap_or(0);
                    for e in history.iter() {
                        if e["s"].as_u64().unwrap_or(0) > after {
                            opening.push(e.clone());
                        }
                    }
                    let s = shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
                    opening.push(json!({"op": 0, "t": "RESUMED", "s": s, "d": {}}));
                }
            }
            _ => return,
        }
        *shared.live.lock().unwrap() = Some(tx);
    }
    for p in opening {
        if ws.send(Message::text(p.to_string())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            () = shared.drop_now.notified() => return,
            out = rx.recv() => {
                let Some(p) = out else { return };
                if ws.send(Message::text(p.to_string())).await.is_err() {
                    return;
                }
            }
            frame = ws.recv() => {
                let Some(Ok(Message::Text(t))) = frame else { return };
                let p: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if p["op"] == 1 {
                    shared.heartbeats.fetch_add(1, Ordering::SeqCst);
                    let ack = json!({"op": 11});
                    if ws.send(Message::text(ack.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
