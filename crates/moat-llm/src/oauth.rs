//! OAuth 2.0 authorization code with PKCE (RFC 7636, S256) for providers that let
//! third-party clients log in, and the token lifecycle after it.
//!
//! Login ([`Login`]): a random verifier and `state`; the authorize URL carries the S256
//! challenge; a one-shot loopback server ([`callback`]) on a random port receives the
//! code and checks `state`; the code is exchanged with the verifier, which never leaves
//! the process except in that one request to the token endpoint.
//!
//! Use ([`TokenSource`]): the access token is refreshed ahead of expiry
//! (`refresh_before`), one refresh at a time per account (concurrent requests wait for
//! it and share its result), and the new tokens are handed to a [`TokenStore`] (the vault).
//! Token values are never logged; a failure is kept as a short class for `/accounts`.

pub mod callback;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, header};
use http_body_util::{BodyExt, Full, Limited};
use moat_core::config::llm::OAuthConfig;
use moat_core::secret::SecretString;
use moat_net::egress::Egress;
use serde_json::{Value, json};
use sha2::Digest;

/// Largest token endpoint response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Longest wait for the token endpoint.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a login or a refresh failed. Messages never carry a token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The token endpoint could not be reached.
    #[error("cannot reach the token endpoint: {0}")]
    Network(String),
    /// The token endpoint refused (RFC 6749 §5.2 error code, e.g. `invalid_grant`).
    #[error("the token endpoint answered {status}: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// The `error` code, or `unknown`.
        code: String,
        /// `error_description`, redacted and shortened.
        description: Option<String>,
    },
    /// The token endpoint's answer is not a token response.
    #[error("the token endpoint's answer has no access_token")]
    BadResponse,
    /// The authorization server redirected back with an error (the user declined...).
    #[error("authorization failed: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        /// The `error` parameter.
        code: String,
        /// `error_description`, redacted and shortened.
        description: Option<String>,
    },
    /// The callback's `state` is not the one sent: possibly a forged redirect.
    #[error(
        "the callback's state does not match this login (a stale or forged redirect); start the login again"
    )]
    StateMismatch,
    /// No callback in time.
    #[error("no authorization arrived within {0:?}; start the login again")]
    TimedOut(Duration),
    /// A refresh was needed but the provider gave no refresh token.
    #[error("the access token expired and the provider gave no refresh token; log in again")]
    NoRefreshToken,
    /// The local callback server failed.
    #[error("the local callback server failed: {0}")]
    Callback(String),
}

impl OAuthError {
    /// A short class for `/accounts` and metrics.
    pub fn class(&self) -> String {
        match self {
            OAuthError::Network(_) => "network".into(),
            OAuthError::Refused { code, .. } => code.clone(),
            OAuthError::BadResponse => "bad_response".into(),
            OAuthError::Denied { code, .. } => code.clone(),
            OAuthError::StateMismatch => "state_mismatch".into(),
            OAuthError::TimedOut(_) => "timed_out".into(),
            OAuthError::NoRefreshToken => "no_refresh_token".into(),
            OAuthError::Callback(_) => "callback".into(),
        }
    }
}

/// A token pair and when the access token expires.
#[derive(Clone)]
pub struct Tokens {
    /// The access token.
    pub access: SecretString,
    /// The refresh token, if the provider gave one.
    pub refresh: Option<SecretString>,
    /// When the access token expires, unix seconds; `None`: not said.
    pub expires_at: Option<u64>,
    /// How long the access token lasted when issued, seconds (`expires_in`), if said.
    pub lifetime: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// The JSON kept in the vault.
    pub fn to_vault_json(&self) -> String {
        json!({
            "access_token": self.access.expose(),
            "refresh_token": self.refresh.as_ref().map(SecretString::expose),
            "expires_at": self.expires_at,
            "lifetime": self.lifetime,
        })
        .to_string()
    }

    /// Reads the vault's JSON; `None` if it is not a token pair.
    pub fn from_vault_json(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        Some(Self {
            access: SecretString::new(v["access_token"].as_str()?.to_string()),
            refresh: v["refresh_token"]
                .as_str()
                .map(|s| SecretString::new(s.to_string())),
            expires_at: v["expires_at"].as_u64(),
            lifetime: v["lifetime"].as_u64(),
        })
    }

    /// Seconds until the access token expires (negative: expired).
    pub fn expires_in(&self) -> Option<i64> {
        self.expires_at.map(|t| t as i64 - unix_now() as i64)
    }

    /// Whether the token has more than `margin` left. The margin is at most half the
    /// token's lifetime: a provider whose tokens last 5 minutes would otherwise have every
    /// request refresh under the default 5-minute margin.
    fn fresh(&self, margin: Duration) -> bool {
        let margin = self
            .lifetime
            .map_or(margin.as_secs(), |l| margin.as_secs().min(l / 2));
        self.expires_in()
            .is_none_or(|left| left > i64::try_from(margin).unwrap_or(i64::MAX))
    }

    /// Whether the access token still works (it has not expired).
    fn unexpired(&self) -> bool {
        self.expires_in().is_none_or(|left| left > 0)
    }
}

/// Where refreshed tokens are kept (the vault, in the server).
pub trait TokenStore: Send + Sync {
    /// Replaces the tokens kept under `entry`. The error is a message without values.
    fn save(&self, entry: &str, tokens: &Tokens) -> Result<(), String>;

    /// The tokens kept under `entry` now (another process, such as `moat account check`,
    /// may have refreshed them), if readable.
    fn load(&self, entry: &str) -> Option<Tokens>;
}

/// A provider's token endpoint.
pub struct OAuthClient {
    config: OAuthConfig,
    token_uri: http::Uri,
    egress: Egress,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.config.token_url)
            .finish_non_exhaustive()
    }
}

/// The secrets of one login in progress. The verifier stays here.
pub struct Login {
    verifier: SecretString,
    /// The `state` the callback must carry back.
    pub state: String,
    /// Where the provider sends the browser back.
    pub redirect_uri: String,
    /// The URL the user opens.
    pub authorize_url: String,
}

fn random_token(bytes: usize) -> Result<String, OAuthError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| OAuthError::Callback(format!("no random bytes for PKCE: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The S256 challenge of `verifier`: base64url(SHA-256(verifier)), unpadded.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

impl OAuthClient {
    /// A client for the provider in `config` (validated).
    pub fn new(config: &OAuthConfig) -> Result<Self, OAuthError> {
        let url = url::Url::parse(&config.token_url)
            .map_err(|e| OAuthError::Network(format!("token_url: {e}")))?;
        let token_uri = url
            .as_str()
            .parse::<http::Uri>()
            .map_err(|e| OAuthError::Network(format!("token_url: {e}")))?;
        Ok(Self {
            config: config.clone(),
            token_uri,
            egress: Egress::for_upstream(&url, Duration::from_secs(10)),
        })
    }

    /// Starts a login that returns to `redirect_uri`: fresh verifier (64 random bytes,
    /// 86 characters) and state, and the authorize URL with the S256 challenge.
    pub fn login(&self, redirect_uri: &str) -> Result<Login, OAuthError> {
        let verifier = SecretString::new(random_token(64)?);
        let state = random_token(32)?;
        let mut url = url::Url::parse(&self.config.authorize_url)
            .map_err(|e| OAuthError::Callback(format!("authorize_url: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("code_challenge", &s256_challenge(verifier.expose()))
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", &state);
            if !self.config.scopes.is_empty() {
                q.append_pair("scope", &self.config.scopes.join(" "));
            }
        }
        Ok(Login {
            verifier,
            state,
            redirect_uri: redirect_uri.to_string(),
            authorize_url: url.into(),
        })
    }

    /// Exchanges the code from the callback for tokens, with the login's verifier.
    pub async fn exchange(&self, login: &Login, code: &str) -> Result<Tokens, OAuthError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &login.redirect_uri),
            ("client_id", &self.config.client_id),
            ("code_verifier", login.verifier.expose()),
        ])
        .await
    }

    /// Trades a refresh token for new tokens (the old refresh token is kept when the
    /// provider sends none).
    pub async fn refresh(&self, refresh: &SecretString) -> Result<Tokens, OAuthError> {
        let mut t = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
                ("client_id", &self.config.client_id),
            ])
            .await?;
        if t.refresh.is_none() {
            t.refresh = Some(refresh.clone());
        }
        Ok(t)
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens, OAuthError> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.token_uri.clone();
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("moat/", env!("CARGO_PKG_VERSION"))),
        );
        let exchange = async {
            let resp = self
                .egress
                .send(req)
                .await
                .map_err(|e| OAuthError::Network(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
                .collect()
                .await
                .map_err(|_| OAuthError::Network("the response broke off".into()))?
                .to_bytes();
            Ok::<_, OAuthError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TOKEN_TIMEOUT, exchange)
            .await
            .map_err(|_| OAuthError::Network(format!("no answer within {TOKEN_TIMEOUT:?}")))??;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(OAuthError::Refused {
                status: status.as_u16(),
                code: short(v["error"].as_str().unwrap_or("unknown"), 64),
                description: v["error_description"].as_str().map(|d| short(d, 200)),
            });
        }
        let access = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or(OAuthError::BadResponse)?;
        let expires_in = match &v["expires_in"] {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        Ok(Tokens {
            access: SecretString::new(access.to_string()),
            refresh: v["refresh_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(|s| SecretString::new(s.to_string())),
            expires_at: expires_in.map(|s| unix_now().saturating_add(s)),
            lifetime: expires_in,
        })
    }
}

/// Provider text shown to a person: redacted, one line, bounded.
fn short(text: &str, max: usize) -> String {
    let redacted = moat_core::redact::global().redact(text);
    redacted
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// An OAuth account's live tokens.
pub struct TokenSource {
    client: std::sync::Arc<OAuthClient>,
    entry: String,
    tokens: Mutex<Tokens>,
    refreshing: tokio::sync::Mutex<()>,
    store: std::sync::Arc<dyn TokenStore>,
    refreshes: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// When the last refresh failed: requests queued behind it do not each try again.
    failed_at: Mutex<Option<std::time::Instant>>,
}

/// How long after a failed refresh the next one may be tried.
const RETRY_REFRESH_AFTER: Duration = Duration::from_secs(10);

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Tokens kept under the vault `entry`, refreshed through `client`, saved to `store`.
    pub fn new(
        client: std::sync::Arc<OAuthClient>,
        entry: String,
        tokens: Tokens,
        store: std::sync::Arc<dyn TokenStore>,
    ) -> Self {
        Self {
            client,
            entry,
            tokens: Mutex::new(tokens),
            refreshing: tokio::sync::Mutex::new(()),
            store,
            refreshes: AtomicU64::new(0),
            last_error: Mutex::new(None),
            failed_at: Mutex::new(None),
        }
    }

    fn tokens(&self) -> Tokens {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A usable access token: the current one while it has more than `refresh_before`
    /// left, else a refreshed one. Callers that arrive during a refresh wait for it, unless
    /// the current token still works; after a failed refresh, the next waits a few seconds.
    pub async fn access_token(&self) -> Result<SecretString, OAuthError> {
        let margin = self.client.config.refresh_before;
        let current = self.tokens();
        if current.fresh(margin) {
            return Ok(current.access);
        }
        let _one_at_a_time = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            // Someone is refreshing: an unexpired token serves meanwhile.
            Err(_) if current.unexpired() => return Ok(current.access),
            Err(_) => self.refreshing.lock().await,
        };
        // Whoever held the lock before may have refreshed already, in this process or
        // another one sharing the vault (a provider that rotates refresh tokens would
        // refuse the old one).
        let current = self.tokens();
        if current.fresh(margin) {
            return Ok(current.access);
        }
        let failed_recently = self
            .failed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < RETRY_REFRESH_AFTER);
        if failed_recently {
            return if current.unexpired() {
                Ok(current.access)
            } else {
                Err(OAuthError::Network(format!(
                    "the last refresh failed moments ago; the next is tried after {RETRY_REFRESH_AFTER:?}"
                )))
            };
        }
        let current = match self.store.load(&self.entry) {
            // A different token: not the one just refused (see `invalidate`).
            Some(stored)
                if stored.fresh(margin) && stored.access.expose() != current.access.expose() =>
            {
                *self
                    .tokens
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = stored.clone();
                return Ok(stored.access);
            }
            Some(stored) if stored.refresh.is_some() => stored,
            _ => current,
        };
        match self.refresh_now(&current).await {
            Ok(t) => Ok(t.access),
            // An unexpired token still works; the next request tries again.
            Err(e) if current.expires_in().is_some_and(|left| left > 0) => {
                tracing::warn!(entry = %self.entry, class = %e.class(), "OAuth refresh failed; using the current token until it expires");
                Ok(current.access)
            }
            Err(e) => Err(e),
        }
    }

    async fn refresh_now(&self, current: &Tokens) -> Result<Tokens, OAuthError> {
        let refresh = current.refresh.as_ref().ok_or(OAuthError::NoRefreshToken);
        let result = match refresh {
            Ok(r) => self.client.refresh(r).await,
            Err(e) => Err(e),
        };
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(t) => {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                *last = None;
                drop(last);
                *self
                    .failed_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                if let Err(e) = self.store.save(&self.entry, &t) {
                    tracing::warn!(entry = %self.entry, error = %e, "the refreshed OAuth tokens could not be saved; they last until moat stops");
                }
                *self
                    .tokens
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = t.clone();
                Ok(t)
            }
            Err(e) => {
                *last = Some(e.class());
                *self
                    .failed_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now());
                Err(e)
            }
        }
    }

    /// Forces the next use to refresh (the provider refused the token).
    pub fn invalidate(&self) {
        let mut t = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.expires_at = Some(0);
    }

    /// For `/accounts`: expiry, refresh count and the last failure's class.
    pub fn status(&self) -> Value {
        json!({
            "expires_in_secs": self.tokens().expires_in(),
            "refreshes": self.refreshes.load(Ordering::Relaxed),
            "last_refresh_error": *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        })
    }

    /// The current tokens' expiry, for `moat account check`.
    pub fn expires_in(&self) -> Option<i64> {
        self.tokens().expires_in()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    struct NoStore;
    impl TokenStore for NoStore {
        fn save(&self, _: &str, _: &Tokens) -> Result<(), String> {
            Ok(())
        }
        fn load(&self, _: &str) -> Option<Tokens> {
            None
        }
    }

    /// A token endpoint that counts connections and closes each at once.
    fn closing_endpoint() -> (String, std::sync::Arc<AtomicU64>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(AtomicU64::new(0));
        let counted = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        (url, seen)
    }

    fn source(token_url: &str, expires_at: u64) -> TokenSource {
        let config = OAuthConfig {
            client_id: "c".into(),
            authorize_url: "http://127.0.0.1:1/authorize".into(),
            token_url: token_url.into(),
            scopes: Vec::new(),
            refresh_before: Duration::from_secs(300),
        };
        let tokens = Tokens {
            access: SecretString::new("at-old".into()),
            refresh: Some(SecretString::new("rt-old".into())),
            expires_at: Some(expires_at),
            lifetime: None,
        };
        TokenSource::new(
            std::sync::Arc::new(OAuthClient::new(&config).unwrap()),
            "e".into(),
            tokens,
            std::sync::Arc::new(NoStore),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_refresh_is_not_repeated_by_every_waiting_request() {
        let (url, seen) = closing_endpoint();
        let source = std::sync::Arc::new(source(&url, 1));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let s = source.clone();
                tokio::spawn(async move { s.access_token().await })
            })
            .collect();
        for call in calls {
            assert!(
                call.await.unwrap().is_err(),
                "an expired token and no refresh"
            );
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "one refresh attempt, not eight"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_that_still_works_serves_while_its_refresh_fails() {
        let (url, seen) = closing_endpoint();
        // 60 s left: inside the 300 s margin, so a refresh is due, but not expired.
        let source = source(&url, unix_now() + 60);
        for _ in 0..3 {
            assert_eq!(source.access_token().await.unwrap().expose(), "at-old");
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1, "retried only after a pause");
    }

    #[test]
    fn vault_json_round_trip_and_debug_hides_tokens() {
        let t = Tokens {
            access: SecretString::new("at-canary-1".into()),
            refresh: Some(SecretString::new("rt-canary-1".into())),
            expires_at: Some(12),
            lifetime: Some(3600),
        };
        let back = Tokens::from_vault_json(&t.to_vault_json()).unwrap();
        assert_eq!(back.lifetime, Some(3600));
        assert_eq!(back.access.expose(), "at-canary-1");
        assert_eq!(back.refresh.unwrap().expose(), "rt-canary-1");
        assert_eq!(back.expires_at, Some(12));
        assert!(!format!("{t:?}").contains("canary"));
        assert!(Tokens::from_vault_json("{}").is_none());
    }

    #[test]
    fn login_urls_carry_pkce_and_state() {
        let c = OAuthClient::new(&OAuthConfig {
            client_id: "moat-test".into(),
            authorize_url: "https://auth.example/authorize?prompt=login".into(),
            token_url: "https://auth.example/token".into(),
            scopes: vec!["a".into(), "b".into()],
            refresh_before: Duration::from_secs(60),
        })
        .unwrap();
        let login = c.login("http://127.0.0.1:5555/callback").unwrap();
        let url = url::Url::parse(&login.authorize_url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["prompt"], "login");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], s256_challenge(login.verifier.expose()));
        assert_eq!(q["state"], login.state);
        assert_eq!(q["scope"], "a b");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:5555/callback");
        assert!(!login.authorize_url.contains(login.verifier.expose()));
        assert_eq!(login.verifier.expose().len(), 86);
        let again = c.login("http://127.0.0.1:5555/callback").unwrap();
        assert_ne!(again.state, login.state);
    }
}
