//! The web chat: the assistant in a browser tab, for its owner.
//!
//! `/chat` (with its script and style) is a `Page` route: no secret in it, so a browser's
//! navigation, which cannot send the control token, may load it. The page takes the token
//! from its URL's fragment (`moat chat --web` prints the URL; a fragment never reaches a
//! server or a log), keeps it in the tab's session storage, and offers it when it opens
//! `/chat/ws`, a `Control` route, as the WebSocket subprotocol `moat.token.TOKEN` (the one
//! header a page may set on a WebSocket). The exposure checks then apply as to any control
//! route: loopback, this server's Host, and an Origin that is this server's own, which
//! refuses a WebSocket opened by any other site.
//!
//! Each WebSocket is the owner's conversation on the channel `web`: JSON messages in
//! (`message`, `approve`, `stop`) and out (`delta`, `text`, `tool_call`, `tool_result`,
//! `notice`, `approval`, `done`, `error`), through [`moat_agent::channel::serve`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use moat_agent::{Agent, Approver, Channel, Inbound, Pending, TurnEvents};
use moat_net::{Exposure, RouteTable};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use crate::app::agent::OWNER;

/// The subprotocol the page speaks, which the server selects.
const PROTOCOL: &str = "moat.chat.v1";
/// The largest message a page may send.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

const PAGE: &str = include_str!("webchat/index.html");
const SCRIPT: &str = include_str!("webchat/app.js");
const STYLE: &str = include_str!("webchat/app.css");
/// Only this server's own script, style and WebSocket; no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The web chat's routes; without an assistant (`None`), the WebSocket answers 503 with
/// the reason.
/// What the web chat's socket needs: the assistant, and the pairing store the owner's
/// `/pair` commands act on.
struct Chat {
    agent: Result<Arc<Agent>, String>,
    desk: Arc<moat_channels::owner::Desk>,
}

pub(crate) fn routes(
    table: RouteTable,
    agent: Result<Arc<Agent>, String>,
    desk: Arc<moat_channels::owner::Desk>,
) -> RouteTable {
    table
        .route(
            "/chat",
            Exposure::Page,
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/chat/app.js",
            Exposure::Page,
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/chat/app.css",
            Exposure::Page,
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/chat/ws",
            Exposure::Control,
            get(upgrade).with_state(Arc::new(Chat { agent, desk })),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    crate::app::page::asset(body, content_type, CSP)
}

async fn upgrade(State(chat): State<Arc<Chat>>, ws: WebSocketUpgrade) -> Response {
    let desk = chat.desk.clone();
    let agent = match &chat.agent {
        Ok(agent) => agent.clone(),
        Err(why) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the assistant is not available: {why}"),
            )
                .into_response();
        }
    };
    ws.protocols([PROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| conversation(socket, agent, desk))
}

/// One page's conversation, until it closes.
async fn conversation(socket: WebSocket, agent: Arc<Agent>, desk: Arc<moat_channels::owner::Desk>) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let (inbound, messages) = mpsc::channel(8);
    let page = Arc::new(Page {
        out: out.clone(),
        messages: Mutex::new(messages),
        waiting: std::sync::Mutex::new(HashMap::new()),
        stop: Notify::new(),
    });
    let reader = {
        let page = page.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    page.send(json!({"type": "error", "text": "that was not JSON"}));
                    continue;
                };
                match value["type"].as_str() {
                    Some("message") => {
                        let text = value["text"].as_str().unwrap_or_default().trim();
                        if text.is_empty() {
                            continue;
                        }
                        // The owner answers pairing requests here too.
                        let now = moat_channels::hub::now_ms();
                        if let Some(outcome) = desk.owner_command("web:owner", text, now) {
                            page.send(json!({"type": "notice", "text": outcome.reply}));
                            page.send(json!({"type": "done"}));
                            continue;
                        }
                        if inbound.send(text.to_string()).await.is_err() {
                            break;
                        }
                    }
                    Some("approve") => {
                        let id = value["id"].as_str().unwrap_or_default();
                        let yes = value["approve"].as_bool() == Some(true);
                        page.answer(id, yes);
                    }
                    Some("stop") => page.stop.notify_waiters(),
                    _ => page.send(json!({
                        "type": "error",
                        "text": "unknown message; send {\"type\": \"message\" | \"approve\" | \"stop\", ...}"
                    })),
                }
            }
            // The page is gone: a turn still running stops, and its waits are denied.
            page.stop.notify_waiters();
            page.waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        })
    };
    moat_agent::channel::serve(&agent, page.as_ref()).await;
    reader.abort();
    drop(out);
    drop(page);
    let _ = writer.await;
}

/// One open page, as a channel.
struct Page {
    out: mpsc::UnboundedSender<Value>,
    messages: Mutex<mpsc::Receiver<String>>,
    /// Calls waiting for the owner's answer, by approval id.
    waiting: std::sync::Mutex<HashMap<String, oneshot::Sender<bool>>>,
    stop: Notify,
}

impl Page {
    fn send(&self, frame: Value) {
        let _ = self.out.send(frame);
    }

    fn answer(&self, id: &str, yes: bool) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        match waiting {
            Some(tx) => {
                let _ = tx.send(yes);
            }
            None => {
                self.send(json!({"type": "error", "text": format!("nothing is waiting as {id:?}")}))
            }
        }
    }
}

#[async_trait::async_trait]
impl Channel for Page {
    fn name(&self) -> &str {
        "web"
    }

    async fn next(&self) -> Option<Inbound> {
        let text = self.messages.lock().await.recv().await?;
        Some(Inbound {
            sender: OWNER.to_string(),
            text,
        })
    }

    fn admits(&self, sender: &str) -> bool {
        sender == OWNER
    }

    fn standing(&self, _sender: &str) -> &str {
        "owner"
    }

    fn events(&self, _sender: &str) -> Box<dyn TurnEvents + '_> {
        Box::new(Shown { page: self })
    }

    fn approver(&self, _sender: &str) -> Box<dyn Approver + '_> {
        Box::new(Asked { page: self })
    }

    async fn say(&self, _sender: &str, text: &str) {
        // Said within a turn (its error, or that it was stopped): the turn's `done`
        // follows when its events are dropped.
        self.send(json!({"type": "error", "text": text}));
    }

    async fn stop(&self, _sender: &str) {
        self.stop.notified().await;
    }
}

/// A turn as the page shows it; `done` when the turn is over.
struct Shown<'a> {
    page: &'a Page,
}

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        self.page.send(json!({"type": "done"}));
    }
}

impl TurnEvents for Shown<'_> {
    fn streams(&self) -> bool {
        true
    }

    fn text_delta(&mut self, delta: &str) {
        self.page.send(json!({"type": "delta", "text": delta}));
    }

    fn text(&mut self, text: &str) {
        self.page.send(json!({"type": "text", "text": text}));
    }

    fn tool_call(&mut self, tool: &str, arguments: &Value) {
        self.page
            .send(json!({"type": "tool_call", "tool": tool, "arguments": arguments}));
    }

    fn tool_result(&mut self, tool: &str, ok: bool, output: &str) {
        self.page
            .send(json!({"type": "tool_result", "tool": tool, "ok": ok, "output": output}));
    }

    fn notice(&mut self, text: &str) {
        self.page.send(json!({"type": "notice", "text": text}));
    }
}

/// Asks the page about a waiting call; its answer (or the page closing: no) decides.
struct Asked<'a> {
    page: &'a Page,
}

#[async_trait::async_trait]
impl Approver for Asked<'_> {
    async fn ask(&self, p: &Pending) -> bool {
        let (tx, rx) = oneshot::channel();
        self.page
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(p.id.clone(), tx);
        self.page.send(json!({
            "type": "approval",
            "id": p.id,
            "tool": p.tool,
            "arguments": p.arguments,
            "reason": p.reason,
            "risk": p.risk,
        }));
        rx.await.unwrap_or(false)
    }
}
