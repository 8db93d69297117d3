//! Signed webhooks: any system that can POST JSON becomes a channel. A message comes in
//! as `POST /hooks/NAME` on moat's main listener; replies (and pairing codes) go out as a
//! POST to the configured URL. Both directions carry the same signature:
//!
//! ```text
//! X-Moat-Timestamp: 1733580000                 (unix seconds)
//! X-Moat-Signature: sha256=HEX(HMAC-SHA256(key, "1733580000." + body))
//! ```
//!
//! A request is refused unless its signature matches, in constant time; its timestamp is
//! within the replay window of now; and the same signature was not seen inside that
//! window. The body is `{"sender": "...", "text": "...", "display": "..."}` in,
//! `{"channel": "...", "to": "...", "text": "..."}` out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use moat_core::secret::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::adapter::{Adapter, ChannelError, Incoming, Target};

/// Replies are split at this size; the receiving system can take more, people cannot read
/// more at once.
pub const MAX_PIECE: usize = 16 * 1024;
/// The longest sender id accepted.
const MAX_SENDER: usize = 256;
/// Messages waiting between the HTTP handler and the hub.
const QUEUE: usize = 64;

/// How one webhook channel is set up.
#[derive(Clone)]
pub struct WebhookSettings {
    /// `[channels.NAME]`.
    pub name: String,
    /// The shared HMAC key.
    pub key: SecretString,
    /// Where replies are POSTed; None: the channel only receives (replies are dropped).
    pub url: Option<url::Url>,
    /// How far a timestamp may be from now, either way.
    pub replay_window: Duration,
    /// The most text one reply carries.
    pub max_piece: usize,
}

/// Why an inbound request was refused: each says what to fix, none says more.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    /// No or a malformed signature or timestamp header.
    #[error(
        "sign the request: X-Moat-Timestamp (unix seconds) and X-Moat-Signature: sha256=HEX(HMAC-SHA256(key, \"TIMESTAMP.\" + body))"
    )]
    Unsigned,
    /// The signature does not match.
    #[error("the signature does not match this channel's key")]
    BadSignature,
    /// The timestamp is outside the replay window.
    #[error(
        "the timestamp is too far from now (the replay window is {0} s); check the sender's clock"
    )]
    Stale(u64),
    /// The same signed request came twice.
    #[error("this signed request was already received")]
    Replayed,
    /// The body is not the expected JSON.
    #[error("the body must be JSON: {{\"sender\": \"...\", \"text\": \"...\"}} ({0})")]
    BadBody(&'static str),
    /// The hub is not taking messages (shutting down, or overloaded).
    #[error("the channel is not taking messages now; retry later")]
    Busy,
}

/// What a `POST /hooks/NAME` carried, as the server hands it to the channel.
pub struct HookRequest<'a> {
    /// Its headers.
    pub headers: &'a http::HeaderMap,
    /// Its query string, if any.
    pub query: Option<&'a str>,
    /// Its body (read within the server's body limits).
    pub body: &'a [u8],
}

impl HookRequest<'_> {
    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A channel that takes requests on `/hooks/NAME`: it decides who may, and what they say.
pub trait Hook: Send + Sync {
    /// Checks the request and queues its message for the hub.
    fn receive(&self, request: &HookRequest<'_>) -> Result<(), HookError>;
}

impl Hook for Webhook {
    fn receive(&self, request: &HookRequest<'_>) -> Result<(), HookError> {
        self.receive_signed(
            request.header("x-moat-timestamp"),
            request.header("x-moat-signature"),
            request.body,
        )
    }
}

/// A webhook channel: the HTTP handler hands requests to it as a [`Hook`].
pub struct Webhook {
    settings: WebhookSettings,
    client: Option<moat_net::egress::Egress>,
    /// Signatures seen inside the replay window, with when they expire.
    seen: Mutex<HashMap<String, u64>>,
    tx: mpsc::Sender<Incoming>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
}

impl Webhook {
    /// A webhook channel for `settings`.
    pub fn new(settings: WebhookSettings) -> Webhook {
        let client = settings
            .url
            .as_ref()
            .map(|u| moat_net::egress::Egress::for_upstream(u, Duration::from_secs(10)));
        let (tx, rx) = mpsc::channel(QUEUE);
        Webhook {
            settings,
            client,
            seen: Mutex::new(HashMap::new()),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Checks a request's signature, timestamp and freshness, and queues its message.
    pub fn receive_signed(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), HookError> {
        let (Some(ts), Some(sig)) = (timestamp, signature) else {
            return Err(HookError::Unsigned);
        };
        let ts_n: u64 = ts.trim().parse().map_err(|_| HookError::Unsigned)?;
        let given = sig
            .trim()
            .strip_prefix("sha256=")
            .and_then(hex_decode)
            .ok_or(HookError::Unsigned)?;
        // The signature is checked before anything else is read from the request.
        let mut mac = self.mac();
        mac.update(ts.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| HookError::BadSignature)?;
        let now = unix_now();
        let window = self.settings.replay_window.as_secs();
        if now.abs_diff(ts_n) > window {
            return Err(HookError::Stale(window));
        }
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.retain(|_, until| *until >= now);
            let key = sig.trim().to_ascii_lowercase();
            if seen.contains_key(&key) {
                return Err(HookError::Replayed);
            }
            seen.insert(key, ts_n + window);
        }
        let v: Value = serde_json::from_slice(body).map_err(|_| HookError::BadBody("not JSON"))?;
        let sender = v["sender"]
            .as_str()
            .filter(|s| !s.trim().is_empty() && s.len() <= MAX_SENDER)
            .ok_or(HookError::BadBody("no sender"))?;
        if sender.chars().any(char::is_control) {
            return Err(HookError::BadBody("a control character in sender"));
        }
        let text = v["text"].as_str().ok_or(HookError::BadBody("no text"))?;
        let display = v["display"]
            .as_str()
            .filter(|d| d.len() <= MAX_SENDER && !d.chars().any(char::is_control))
            .unwrap_or(sender);
        self.tx
            .try_send(Incoming {
                sender: sender.to_string(),
                display: display.to_string(),
                place: Target::Direct(sender.to_string()),
                mentioned: true,
                text: text.to_string(),
            })
            .map_err(|_| HookError::Busy)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.settings.key.expose().as_bytes())
            .expect("HMAC takes a key of any length")
    }

    /// The headers that sign `body` now: (timestamp, signature).
    pub fn sign(&self, body: &[u8]) -> (String, String) {
        sign(self.settings.key.expose().as_bytes(), unix_now(), body)
    }
}

/// The `X-Moat-Timestamp` and `X-Moat-Signature` values for `body` at `ts`.
pub fn sign(key: &[u8], ts: u64, body: &[u8]) -> (String, String) {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    let ts = ts.to_string();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    (
        ts,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
    )
}

/// A SHA-256 MAC's 64 hex digits as bytes; anything else is no signature at all.
fn hex_decode(h: &str) -> Option<Vec<u8>> {
    (h.len() == 64).then(|| hex::decode(h).ok()).flatten()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait::async_trait]
impl Adapter for Webhook {
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        // Nothing to connect to: the server's route is the connection.
        let mut rx = self.rx.lock().await;
        connected();
        while let Some(m) = rx.recv().await {
            if inbox.send(m).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn send(&self, to: &Target, text: &str) -> Result<(), ChannelError> {
        let (Some(url), Some(client)) = (&self.settings.url, &self.client) else {
            tracing::debug!(channel = %self.settings.name, "no url: a reply was dropped");
            return Ok(());
        };
        let (Target::Direct(who) | Target::Room(who)) = to;
        let body = json!({"channel": self.settings.name, "to": who, "text": text}).to_string();
        let (ts, sig) = self.sign(body.as_bytes());
        let req = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-moat-timestamp", ts)
            .header("x-moat-signature", sig)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ChannelError::Send("the webhook url is not usable".into()))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), client.send(req))
            .await
            .map_err(|_| ChannelError::Send("the webhook url did not answer in 30s".into()))?
            .map_err(|e| ChannelError::Send(format!("posting the reply: {e}")))?;
        let status = resp.status();
        // Drain a little of the answer so the connection can be reused.
        let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(ChannelError::Send(format!(
                "the webhook url answered {status}"
            )))
        }
    }

    fn max_piece(&self) -> usize {
        self.settings.max_piece.min(MAX_PIECE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Webhook {
        Webhook::new(WebhookSettings {
            name: "ci".into(),
            key: SecretString::new("k3y".into()),
            url: None,
            replay_window: Duration::from_secs(300),
            max_piece: MAX_PIECE,
        })
    }

    #[test]
    fn only_fresh_correctly_signed_requests_pass_once() {
        let h = hook();
        let body = br#"{"sender": "build-bot", "text": "deploy done"}"#;
        let (ts, sig) = sign(b"k3y", unix_now(), body);
        assert_eq!(h.receive_signed(Some(&ts), Some(&sig), body), Ok(()));
        assert_eq!(
            h.receive_signed(Some(&ts), Some(&sig), body),
            Err(HookError::Replayed)
        );
        let (ts2, bad) = sign(b"other", unix_now(), body);
        assert_eq!(
            h.receive_signed(Some(&ts2), Some(&bad), body),
            Err(HookError::BadSignature)
        );
        let (old, sig_old) = sign(b"k3y", unix_now() - 301, body);
        assert_eq!(
            h.receive_signed(Some(&old), Some(&sig_old), body),
            Err(HookError::Stale(300))
        );
        assert_eq!(
            h.receive_signed(None, Some(&sig), body),
            Err(HookError::Unsigned)
        );
        assert_eq!(
            h.receive_signed(Some(&ts), Some("sha256=zz"), body),
            Err(HookError::Unsigned)
        );
        // A body changed after signing fails.
        let (ts3, sig3) = sign(b"k3y", unix_now(), body);
        assert_eq!(
            h.receive_signed(
                Some(&ts3),
                Some(&sig3),
                br#"{"sender": "x", "text": "rm -rf"}"#
            ),
            Err(HookError::BadSignature)
        );
        let nojson = b"hello";
        let (ts4, sig4) = sign(b"k3y", unix_now(), nojson);
        assert_eq!(
            h.receive_signed(Some(&ts4), Some(&sig4), nojson),
            Err(HookError::BadBody("not JSON"))
        );
    }
}
