//! Telegram, through the Bot API (`https://api.telegram.org` or any base URL that
//! speaks it): long polling with `getUpdates`, replies with `sendMessage`, a typing
//! indicator with `sendChatAction`, 429s waited out as `retry_after` says.
//!
//! A sender is their numeric user id, which Telegram assigns and nobody can take over
//! (unlike a username); the display name is their @username or first name. In groups
//! the assistant hears a message only when it is mentioned (`@botname`) or replied to.
//!
//! In webhook mode (`webhook_url`), Telegram posts each update to moat's `/hooks/NAME`
//! instead: moat registers the URL with a secret of its own (fresh at each start) as
//! Telegram's `secret_token` header and in the URL's query (`moat_secret`), and takes an
//! update only with one of them matching, compared in constant time. Without it, polling:
//! moat first removes any webhook, which Telegram would otherwise prefer.
//!
//! The bot token is part of every request's path (`/bot<token>/method`): no error,
//! status or log line here is built from a URL, only from the method's name.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use moat_core::secret::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::adapter::{Adapter, ChannelError, Incoming, Target};
use crate::webhook::HookError;

/// Telegram's limit is 4096 characters a message; bytes are a safe stand-in.
pub const MAX_PIECE: usize = 4000;
/// How long one `getUpdates` waits for something to happen.
const LONG_POLL: Duration = Duration::from_secs(25);
/// The largest answer read from the API.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// A server that answers polls at once (some test servers ignore `timeout`) is asked
/// again after this, not in a busy loop.
const MIN_POLL: Duration = Duration::from_millis(300);

/// How to reach one bot.
#[derive(Clone)]
pub struct TelegramSettings {
    /// The Bot API's base URL (`https://api.telegram.org`).
    pub api_base: url::Url,
    /// The bot's token.
    pub token: SecretString,
    /// The most text one message carries.
    pub max_piece: usize,
    /// The public URL of moat's `/hooks/NAME` for this channel: webhook mode.
    pub webhook_url: Option<url::Url>,
}

/// A Telegram bot, polled by the hub (or posted to, in webhook mode).
pub struct Telegram {
    settings: TelegramSettings,
    client: moat_net::egress::Egress,
    /// The bot's own id and username, from `getMe`.
    me: Mutex<Option<(i64, String)>>,
    /// Webhook mode: the secret Telegram must present, and the updates it posted.
    secret: String,
    updates: mpsc::Sender<Value>,
    posted: tokio::sync::Mutex<mpsc::Receiver<Value>>,
}

/// What a failed API call says.
enum CallError {
    /// Telegram asks us to wait this long.
    Wait(Duration),
    /// The token was refused.
    Unauthorized,
    /// Anything else, as it should be reported.
    Other(String),
}

impl Telegram {
    /// An adapter for `settings`.
    pub fn new(settings: TelegramSettings) -> Telegram {
        let client =
            moat_net::egress::Egress::for_upstream(&settings.api_base, Duration::from_secs(10));
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).expect("the operating system's random source works");
        let (updates, posted) = mpsc::channel(64);
        Telegram {
            settings,
            client,
            me: Mutex::new(None),
            secret: hex::encode(raw),
            updates,
            posted: tokio::sync::Mutex::new(posted),
        }
    }

    async fn call(&self, method: &str, body: &Value, wait: Duration) -> Result<Value, CallError> {
        let base = self.settings.api_base.as_str().trim_end_matches('/');
        let uri = format!("{base}/bot{}/{method}", self.settings.token.expose());
        let req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| CallError::Other(format!("{method}: the API base URL is not usable")))?;
        let exchange = async {
            let resp = self
                .client
                .send(req)
                .await
                .map_err(|e| CallError::Other(format!("{method}: {e}")))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| CallError::Other(format!("{method}: the answer broke off")))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(wait, exchange).await.map_err(|_| {
            CallError::Other(format!("{method}: no answer in {}s", wait.as_secs()))
        })??;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            CallError::Other(format!("{method}: the answer ({status}) is not JSON"))
        })?;
        if answer["ok"] == true {
            return Ok(answer["result"].clone());
        }
        let code = answer["error_code"]
            .as_u64()
            .unwrap_or(u64::from(status.as_u16()));
        if code == 401 || (code == 404 && method == "getMe") {
            return Err(CallError::Unauthorized);
        }
        if let Some(after) = answer["parameters"]["retry_after"].as_u64() {
            return Err(CallError::Wait(Duration::from_secs(after.clamp(1, 300))));
        }
        let why: String = answer["description"]
            .as_str()
            .unwrap_or("no description")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        Err(CallError::Other(format!("{method}: {code} {why}")))
    }

    /// Webhook mode: registers moat's URL with the secret, then hands on what Telegram
    /// posts there.
    async fn run_webhook(
        &self,
        url: &url::Url,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        let mut with_secret = url.clone();
        with_secret
            .query_pairs_mut()
            .append_pair("moat_secret", &self.secret);
        let body = json!({
            "url": with_secret.as_str(),
            "secret_token": self.secret,
            "allowed_updates": ["message"],
        });
        match self
            .call("setWebhook", &body, Duration::from_secs(30))
            .await
        {
            Ok(_) => {}
            Err(CallError::Unauthorized) => return Err(refused()),
            Err(CallError::Wait(d)) => {
                tokio::time::sleep(d).await;
                return Err(ChannelError::Connection("Telegram asked to wait".into()));
            }
            Err(CallError::Other(e)) => return Err(ChannelError::Connection(e)),
        }
        connected();
        let mut posted = self.posted.lock().await;
        while let Some(update) = posted.recv().await {
            if let Some(incoming) = self.incoming(&update)
                && inbox.send(incoming).await.is_err()
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A call that waits out 429s (three times at most).
    async fn call_retrying(&self, method: &str, body: &Value) -> Result<Value, ChannelError> {
        for _ in 0..4 {
            match self.call(method, body, Duration::from_secs(30)).await {
                Ok(v) => return Ok(v),
                Err(CallError::Wait(d)) => tokio::time::sleep(d).await,
                Err(CallError::Unauthorized) => return Err(refused()),
                Err(CallError::Other(e)) => return Err(ChannelError::Send(e)),
            }
        }
        Err(ChannelError::Send(format!(
            "{method}: Telegram kept asking to wait"
        )))
    }

    fn incoming(&self, update: &Value) -> Option<Incoming> {
        let m = &update["message"];
        let from = &m["from"];
        let text = m["text"].as_str()?;
        if from["is_bot"] == true {
            return None;
        }
        let sender = id_of(&from["id"])?;
        let display = from["username"]
            .as_str()
            .map(|u| format!("@{u}"))
            .or_else(|| from["first_name"].as_str().map(str::to_string))
            .unwrap_or_else(|| sender.clone());
        let chat = id_of(&m["chat"]["id"])?;
        if m["chat"]["type"] == "private" {
            return Some(Incoming {
                sender,
                display,
                place: Target::Direct(chat),
                mentioned: true,
                text: text.to_string(),
            });
        }
        let (me_id, me_name) = self
            .me
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        let replied = m["reply_to_message"]["from"]["id"].as_i64() == Some(me_id);
        let (mentioned, text) = mention(text, &me_name);
        Some(Incoming {
            sender,
            display,
            place: Target::Room(chat),
            mentioned: mentioned || replied,
            text,
        })
    }
}

/// A Telegram id (a number, or a string of one) as text.
fn id_of(v: &Value) -> Option<String> {
    v.as_i64().map(|n| n.to_string()).or_else(|| {
        v.as_str()
            .filter(|s| s.parse::<i64>().is_ok())
            .map(str::to_string)
    })
}

/// Whether `text` mentions `@name`, and the text without the mention.
fn mention(text: &str, name: &str) -> (bool, String) {
    let at = format!("@{}", name.to_lowercase());
    let lower = text.to_lowercase();
    match lower.find(&at) {
        // Lowercasing an ASCII username keeps byte offsets; a non-ASCII text before it
        // could shift them, so the cut is made only where it is a char boundary.
        Some(i) if text.is_char_boundary(i) && text.is_char_boundary(i + at.len()) => {
            let rest = format!("{}{}", &text[..i], &text[i + at.len()..]);
            (true, rest.trim().to_string())
        }
        Some(_) => (true, text.to_string()),
        None => (false, text.to_string()),
    }
}

fn refused() -> ChannelError {
    ChannelError::Refused(
        "Telegram refused the bot token (401); check the vault secret named by token_secret".into(),
    )
}

impl crate::webhook::Hook for Telegram {
    fn receive(&self, request: &crate::webhook::HookRequest<'_>) -> Result<(), HookError> {
        use subtle::ConstantTimeEq;
        let given = request
            .header("x-telegram-bot-api-secret-token")
            .map(str::to_string)
            .or_else(|| {
                request.query.and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "moat_secret")
                        .map(|(_, v)| v.into_owned())
                })
            })
            .ok_or(HookError::Unsigned)?;
        if !bool::from(given.as_bytes().ct_eq(self.secret.as_bytes())) {
            return Err(HookError::BadSignature);
        }
        let update: Value =
            serde_json::from_slice(request.body).map_err(|_| HookError::BadBody("not JSON"))?;
        self.updates.try_send(update).map_err(|_| HookError::Busy)
    }
}

#[async_trait::async_trait]
impl Adapter for Telegram {
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        let me = match self
            .call("getMe", &json!({}), Duration::from_secs(30))
            .await
        {
            Ok(me) => me,
            Err(CallError::Unauthorized) => return Err(refused()),
            Err(CallError::Wait(d)) => {
                tokio::time::sleep(d).await;
                return Err(ChannelError::Connection("Telegram asked to wait".into()));
            }
            Err(CallError::Other(e)) => return Err(ChannelError::Connection(e)),
        };
        let id = me["id"].as_i64().unwrap_or_default();
        let name = me["username"].as_str().unwrap_or_default().to_string();
        *self
            .me
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((id, name));
        if let Some(url) = &self.settings.webhook_url {
            return self.run_webhook(url, inbox, connected).await;
        }
        // Telegram refuses getUpdates while a webhook is set (from an earlier setup).
        if let Err(CallError::Other(e)) = self
            .call("deleteWebhook", &json!({}), Duration::from_secs(30))
            .await
        {
            tracing::debug!("deleteWebhook: {e}");
        }
        connected();
        let mut offset: i64 = 0;
        loop {
            let asked = Instant::now();
            let body = json!({
                "offset": offset,
                "timeout": LONG_POLL.as_secs(),
                "allowed_updates": ["message"],
            });
            let updates = match self
                .call("getUpdates", &body, LONG_POLL + Duration::from_secs(15))
                .await
            {
                Ok(u) => u,
                Err(CallError::Wait(d)) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
                Err(CallError::Unauthorized) => return Err(refused()),
                Err(CallError::Other(e)) => return Err(ChannelError::Connection(e)),
            };
            let updates = updates.as_array().cloned().unwrap_or_default();
            for u in &updates {
                let Some(n) = u["update_id"].as_i64() else {
                    continue;
                };
                // An update seen already (a server that ignores the offset) is skipped.
                if n < offset {
                    continue;
                }
                offset = n + 1;
                if let Some(incoming) = self.incoming(u)
                    && inbox.send(incoming).await.is_err()
                {
                    return Ok(());
                }
            }
            if updates.is_empty() && asked.elapsed() < MIN_POLL {
                tokio::time::sleep(MIN_POLL).await;
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
        let (Target::Direct(chat) | Target::Room(chat)) = to;
        let sent = self
            .call_retrying("sendMessage", &json!({"chat_id": chat, "text": text}))
            .await?;
        Ok(sent["message_id"]
            .as_i64()
            .map(|id| id.to_string())
            .unwrap_or_default())
    }

    async fn edit(&self, to: &Target, id: &str, text: &str) -> Result<(), ChannelError> {
        let (Target::Direct(chat) | Target::Room(chat)) = to;
        let message_id: i64 = id
            .parse()
            .map_err(|_| ChannelError::Send("not a Telegram message id".into()))?;
        let body = json!({"chat_id": chat, "message_id": message_id, "text": text});
        match self.call_retrying("editMessageText", &body).await {
            // Telegram refuses an edit that changes nothing; that is not a failure.
            Err(ChannelError::Send(e)) if e.contains("not modified") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn typing(&self, to: &Target) {
        let (Target::Direct(chat) | Target::Room(chat)) = to;
        let body = json!({"chat_id": chat, "action": "typing"});
        if let Err(CallError::Other(e)) = self
            .call("sendChatAction", &body, Duration::from_secs(10))
            .await
        {
            tracing::debug!("no typing indicator: {e}");
        }
    }

    fn max_piece(&self) -> usize {
        self.settings.max_piece.min(MAX_PIECE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_and_removed() {
        assert_eq!(
            mention("@MoatBot what now", "moatbot"),
            (true, "what now".into())
        );
        assert_eq!(mention("hey @moatbot!", "MoatBot"), (true, "hey !".into()));
        assert!(!mention("hello", "moatbot").0);
        assert_eq!(id_of(&json!(-100123)), Some("-100123".into()));
        assert_eq!(id_of(&json!("42")), Some("42".into()));
        assert_eq!(id_of(&json!("x")), None);
    }
}
