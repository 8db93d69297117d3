//! Discord: the gateway WebSocket for messages in (hello, identify, heartbeats with
//! their acks, resume after a drop, reconnect and invalid-session handled), the REST API
//! for replies (create message, a DM channel opened when needed, typing), with the
//! rate-limit headers and 429s respected.
//!
//! A sender is their user id (a snowflake Discord assigns); the display name is their
//! username. In a server (guild) channel the bot answers only when mentioned.
//!
//! The token goes only in the `Authorization` header and the identify payload; errors
//! are built from what failed, never from a request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use moat_core::secret::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::adapter::{Adapter, ChannelError, Incoming, Target};

/// Discord's limit is 2000 characters a message; bytes are a safe stand-in.
pub const MAX_PIECE: usize = 2000;
/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);
/// The largest REST answer read.
const MAX_ANSWER: usize = 1024 * 1024;
/// The largest gateway frame accepted.
const MAX_FRAME: usize = 4 * 1024 * 1024;

/// How to reach one bot.
#[derive(Clone)]
pub struct DiscordSettings {
    /// The REST API's base (`https://discord.com/api/v10`).
    pub api_base: url::Url,
    /// The bot's token.
    pub token: SecretString,
    /// The most text one message carries.
    pub max_piece: usize,
}

/// What a gateway session needs to be resumed.
#[derive(Clone, Default)]
struct Resume {
    session_id: String,
    url: String,
    seq: Option<u64>,
}

/// A Discord bot, connected by the hub.
pub struct Discord {
    settings: DiscordSettings,
    client: moat_net::egress::Egress,
    /// The bot's own user id, from READY.
    me: Mutex<Option<String>>,
    /// The session to resume after a drop.
    resume: Mutex<Option<Resume>>,
    /// Each user's DM channel, as learned from their messages or opened.
    dms: Mutex<HashMap<String, String>>,
    /// When the REST bucket next has room (rate-limit headers).
    rest_free_at: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Discord {
    /// An adapter for `settings`.
    pub fn new(settings: DiscordSettings) -> Discord {
        let client =
            moat_net::egress::Egress::for_upstream(&settings.api_base, Duration::from_secs(10));
        Discord {
            settings,
            client,
            me: Mutex::new(None),
            resume: Mutex::new(None),
            dms: Mutex::new(HashMap::new()),
            rest_free_at: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// One REST call: waits while the bucket is empty, retries a 429 after its
    /// `retry_after` (three times at most).
    async fn rest(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ChannelError> {
        let what = path
            .split('/')
            .filter(|p| !p.chars().all(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join("/");
        for _ in 0..4 {
            {
                let free_at = *self.rest_free_at.lock().await;
                tokio::time::sleep_until(free_at).await;
            }
            let base = self.settings.api_base.as_str().trim_end_matches('/');
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(format!("{base}{path}"))
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bot {}", self.settings.token.expose()),
                )
                .header(
                    http::header::USER_AGENT,
                    "DiscordBot (https://github.com/moat-gateway/moat, 0.1)",
                );
            let payload = match body {
                Some(b) => {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                    Bytes::from(b.to_string())
                }
                None => Bytes::new(),
            };
            let req = req.body(Full::new(payload)).map_err(|_| {
                ChannelError::Send(format!("{what}: the API base URL is not usable"))
            })?;
            let resp = tokio::time::timeout(Duration::from_secs(30), self.client.send(req))
                .await
                .map_err(|_| ChannelError::Send(format!("{what}: no answer in 30s")))?
                .map_err(|e| ChannelError::Send(format!("{what}: {e}")))?;
            let status = resp.status();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
            };
            if header("x-ratelimit-remaining") == Some(0.0)
                && let Some(after) = header("x-ratelimit-reset-after")
            {
                *self.rest_free_at.lock().await =
                    tokio::time::Instant::now() + Duration::from_secs_f64(after.clamp(0.0, 300.0));
            }
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| ChannelError::Send(format!("{what}: the answer broke off")))?
                .to_bytes();
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            match status.as_u16() {
                200..=299 => return Ok(answer),
                429 => {
                    let after = answer["retry_after"]
                        .as_f64()
                        .unwrap_or(1.0)
                        .clamp(0.05, 300.0);
                    tracing::debug!("discord {what}: rate limited for {after}s");
                    tokio::time::sleep(Duration::from_secs_f64(after)).await;
                }
                401 => {
                    return Err(ChannelError::Refused(
                        "Discord refused the bot token (401); check the vault secret named by token_secret".into(),
                    ));
                }
                code => {
                    let why: String = answer["message"]
                        .as_str()
                        .unwrap_or("no message")
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(200)
                        .collect();
                    return Err(ChannelError::Send(format!("{what}: {code} {why}")));
                }
            }
        }
        Err(ChannelError::Send(format!(
            "{what}: Discord kept rate-limiting"
        )))
    }

    /// The channel to write to for `to`: a room is a channel; a user needs their DM
    /// channel, opened once if no message of theirs named it.
    async fn channel_of(&self, to: &Target) -> Result<String, ChannelError> {
        let user = match to {
            Target::Room(channel) => return Ok(channel.clone()),
            Target::Direct(user) => user,
        };
        if let Some(c) = lock(&self.dms).get(user) {
            return Ok(c.clone());
        }
        let dm = self
            .rest(
                http::Method::POST,
                "/users/@me/channels",
                Some(&json!({"recipient_id": user})),
            )
            .await?;
        let id = dm["id"]
            .as_str()
            .ok_or_else(|| ChannelError::Send("opening a DM: no channel id in the answer".into()))?
            .to_string();
        lock(&self.dms).insert(user.clone(), id.clone());
        Ok(id)
    }

    /// Where the gateway is: the resume URL of a session to resume, else `/gateway/bot`.
    async fn gateway_url(&self) -> Result<String, ChannelError> {
        if let Some(r) = lock(&self.resume).clone() {
            return Ok(r.url);
        }
        let answer = self
            .rest(http::Method::GET, "/gateway/bot", None)
            .await
            .map_err(|e| match e {
                ChannelError::Send(m) => ChannelError::Connection(m),
                other => other,
            })?;
        answer["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChannelError::Connection("gateway/bot: no url in the answer".into()))
    }

    async fn connect(&self, url: &str) -> Result<Ws, ChannelError> {
        let full = format!("{}/?v=10&encoding=json", url.trim_end_matches('/'));
        let parsed = url::Url::parse(&full).map_err(|_| {
            ChannelError::Connection(format!("the gateway URL {url:?} is not a URL"))
        })?;
        // An https API gives a wss gateway; plain ws only next to a plain http API.
        let plain_ok = self.settings.api_base.scheme() == "http";
        let tls = match parsed.scheme() {
            "wss" => true,
            "ws" if plain_ok => false,
            other => {
                return Err(ChannelError::Connection(format!(
                    "the gateway URL has scheme {other:?}; wss expected"
                )));
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| ChannelError::Connection("the gateway URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let tcp = tokio::time::timeout(
            Duration::from_secs(15),
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| ChannelError::Connection("connecting to the gateway timed out".into()))?
        .map_err(|e| ChannelError::Connection(format!("cannot connect to the gateway: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| ChannelError::Connection(format!("{host:?} is not a TLS name")))?;
            let config = crate::irc::client_tls(None);
            Box::new(
                tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        ChannelError::Connection(format!("TLS with the gateway failed: {e}"))
                    })?,
            )
        } else {
            Box::new(tcp)
        };
        let request = full
            .into_client_request()
            .map_err(|e| ChannelError::Connection(format!("the gateway request: {e}")))?;
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| ChannelError::Connection(format!("the gateway handshake failed: {e}")))?;
        Ok(ws)
    }

    fn incoming(&self, d: &Value) -> Option<Incoming> {
        let author = &d["author"];
        if author["bot"] == true {
            return None;
        }
        let sender = author["id"].as_str()?.to_string();
        let channel = d["channel_id"].as_str()?.to_string();
        let text = d["content"].as_str()?;
        let display = author["username"].as_str().unwrap_or(&sender).to_string();
        if d["guild_id"].is_null() {
            lock(&self.dms).insert(sender.clone(), channel);
            return Some(Incoming {
                place: Target::Direct(sender.clone()),
                sender,
                display,
                mentioned: true,
                text: text.to_string(),
            });
        }
        let me = lock(&self.me).clone()?;
        let mentioned = d["mentions"]
            .as_array()
            .is_some_and(|m| m.iter().any(|u| u["id"].as_str() == Some(me.as_str())));
        let text = text
            .replace(&format!("<@{me}>"), "")
            .replace(&format!("<@!{me}>"), "")
            .trim()
            .to_string();
        Some(Incoming {
            sender,
            display,
            place: Target::Room(channel),
            mentioned,
            text,
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Stream>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a gateway connection ended.
enum End {
    /// Reconnect and resume the session.
    Resume(String),
    /// Reconnect and identify afresh.
    Fresh(String),
}

#[async_trait::async_trait]
impl Adapter for Discord {
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        let url = self.gateway_url().await?;
        let mut ws = self.connect(&url).await?;
        let hello = next_payload(&mut ws, Duration::from_secs(20)).await?;
        if hello["op"] != 10 {
            return Err(ChannelError::Connection(
                "the gateway did not say hello".into(),
            ));
        }
        let interval = Duration::from_millis(
            hello["d"]["heartbeat_interval"]
                .as_u64()
                .unwrap_or(41_250)
                .clamp(100, 600_000),
        );
        let resume = lock(&self.resume).clone();
        let token = self.settings.token.expose().to_string();
        let opening = match &resume {
            Some(r) => {
                json!({"op": 6, "d": {"token": token, "session_id": r.session_id, "seq": r.seq}})
            }
            None => json!({"op": 2, "d": {
                "token": token, "intents": INTENTS,
                "properties": {"os": std::env::consts::OS, "browser": "moat", "device": "moat"},
            }}),
        };
        send(&mut ws, &opening).await?;
        if resume.is_some() {
            // A resumed session has been accepted before; the replayed events follow.
            connected();
        }
        // The first beat comes after a random part of the interval, as Discord asks.
        let mut jitter = [0u8; 1];
        let _ = getrandom::fill(&mut jitter);
        let mut beat = tokio::time::interval_at(
            tokio::time::Instant::now() + interval.mul_f64(f64::from(jitter[0]) / 255.0),
            interval,
        );
        let mut acked = true;
        let end = loop {
            tokio::select! {
                _ = beat.tick() => {
                    if !acked {
                        break End::Resume("the gateway stopped acknowledging heartbeats".into());
                    }
                    acked = false;
                    let seq = lock(&self.resume).as_ref().and_then(|r| r.seq);
                    send(&mut ws, &json!({"op": 1, "d": seq})).await?;
                }
                frame = next_payload(&mut ws, interval * 3) => {
                    let p = match frame {
                        Ok(p) => p,
                        Err(e) => break End::Resume(e.to_string()),
                    };
                    if let Some(s) = p["s"].as_u64()
                        && let Some(r) = lock(&self.resume).as_mut()
                    {
                        r.seq = Some(s);
                    }
                    match p["op"].as_u64() {
                        Some(11) => acked = true,
                        // The gateway asks for a beat now.
                        Some(1) => {
                            let seq = lock(&self.resume).as_ref().and_then(|r| r.seq);
                            send(&mut ws, &json!({"op": 1, "d": seq})).await?;
                        }
                        Some(7) => break End::Resume("the gateway asked to reconnect".into()),
                        Some(9) if p["d"] == true => break End::Resume("the session was invalidated (resumable)".into()),
                        Some(9) => break End::Fresh("the session was invalidated".into()),
                        Some(0) => match p["t"].as_str() {
                            Some("READY") => {
                                let d = &p["d"];
                                *lock(&self.me) = d["user"]["id"].as_str().map(str::to_string);
                                *lock(&self.resume) = Some(Resume {
                                    session_id: d["session_id"].as_str().unwrap_or_default().to_string(),
                                    url: d["resume_gateway_url"].as_str().unwrap_or(&url).to_string(),
                                    seq: p["s"].as_u64(),
                                });
                                connected();
                            }
                            Some("MESSAGE_CREATE") => {
                                if let Some(incoming) = self.incoming(&p["d"])
                                    && inbox.send(incoming).await.is_err()
                                {
                                    return Ok(());
                                }
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
        };
        let _ = ws.close(None).await;
        match end {
            End::Resume(why) => Err(ChannelError::Connection(why)),
            End::Fresh(why) => {
                *lock(&self.resume) = None;
                Err(ChannelError::Connection(why))
            }
        }
    }

    async fn send(&self, to: &Target, text: &str) -> Result<(), ChannelError> {
        self.send_editable(to, text).await.map(|_| ())
    }

    fn edits(&self) -> bool {
        true
    }

    async fn send_editable(&self, to: &Target, text: &str) -> Result<String, ChannelError> {
        let channel = self.channel_of(to).await?;
        let sent = self
            .rest(
                http::Method::POST,
                &format!("/channels/{channel}/messages"),
                Some(&json!({"content": text, "allowed_mentions": {"parse": []}})),
            )
            .await?;
        Ok(sent["id"].as_str().unwrap_or_default().to_string())
    }

    async fn edit(&self, to: &Target, id: &str, text: &str) -> Result<(), ChannelError> {
        let channel = self.channel_of(to).await?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ChannelError::Send("not a Discord message id".into()));
        }
        self.rest(
            http::Method::PATCH,
            &format!("/channels/{channel}/messages/{id}"),
            Some(&json!({"content": text, "allowed_mentions": {"parse": []}})),
        )
        .await
        .map(|_| ())
    }

    async fn typing(&self, to: &Target) {
        let Ok(channel) = self.channel_of(to).await else {
            return;
        };
        if let Err(e) = self
            .rest(
                http::Method::POST,
                &format!("/channels/{channel}/typing"),
                None,
            )
            .await
        {
            tracing::debug!("no typing indicator: {e}");
        }
    }

    fn max_piece(&self) -> usize {
        self.settings.max_piece.min(MAX_PIECE)
    }
}

async fn send(ws: &mut Ws, payload: &Value) -> Result<(), ChannelError> {
    ws.send(Message::text(payload.to_string()))
        .await
        .map_err(|e| ChannelError::Connection(format!("writing to the gateway: {e}")))
}

/// The next JSON payload from the gateway (pings answered, other frames skipped).
async fn next_payload(ws: &mut Ws, wait: Duration) -> Result<Value, ChannelError> {
    loop {
        let frame = tokio::time::timeout(wait, ws.next())
            .await
            .map_err(|_| ChannelError::Connection("the gateway went silent".into()))?;
        match frame {
            None => return Err(ChannelError::Connection("the gateway closed".into())),
            Some(Err(e)) => return Err(ChannelError::Connection(format!("the gateway: {e}"))),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).map_err(|_| {
                    ChannelError::Connection("the gateway sent something not JSON".into())
                });
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default();
                if why.starts_with("4004") {
                    return Err(ChannelError::Refused(
                        "Discord refused the bot token (4004); check the vault secret named by token_secret".into(),
                    ));
                }
                return Err(ChannelError::Connection(format!(
                    "the gateway closed ({why})"
                )));
            }
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> Discord {
        let d = Discord::new(DiscordSettings {
            api_base: url::Url::parse("http://127.0.0.1:1/api/v10").unwrap(),
            token: SecretString::new("t".into()),
            max_piece: MAX_PIECE,
        });
        *lock(&d.me) = Some("999".into());
        d
    }

    #[test]
    fn dms_and_mentions() {
        let d = bot();
        let dm = d
            .incoming(&json!({"author": {"id": "1", "username": "alice"}, "channel_id": "50", "content": "hi"}))
            .unwrap();
        assert_eq!(dm.place, Target::Direct("1".into()));
        assert_eq!(lock(&d.dms).get("1").map(String::as_str), Some("50"));
        let room = d
            .incoming(&json!({"author": {"id": "1", "username": "alice"}, "channel_id": "60", "guild_id": "7",
                             "content": "<@999> hello", "mentions": [{"id": "999"}]}))
            .unwrap();
        assert!(room.mentioned);
        assert_eq!(room.text, "hello");
        assert!(
            d.incoming(
                &json!({"author": {"id": "2", "bot": true}, "channel_id": "50", "content": "x"})
            )
            .is_none()
        );
    }
}
