//! `[llm]`: the gateway's backends, routes and aliases (data only; `moat-llm` acts on it).
//!
//! ```toml
//! [llm.backends.anthropic]
//! kind = "anthropic"
//! base_url = "https://api.anthropic.com"
//! key = "secret:anthropic-key"
//! models = ["claude-*"]
//!
//! [llm.backends.local]
//! kind = "openai"
//! base_url = "http://127.0.0.1:8080/v1"
//!
//! [[llm.routes]]
//! model = "fast"
//! targets = ["local:smollm2", "anthropic:claude-haiku-4-5"]
//!
//! [llm.aliases]
//! sonnet = "claude-sonnet-4-5"
//!
//! # A pool: more than one account behind one backend.
//! [[llm.backends.anthropic.accounts]]
//! name = "work"
//! key = "secret:anthropic-work"
//!
//! [[llm.backends.anthropic.accounts]]
//! name = "personal"
//! oauth = true          # tokens from `moat account add anthropic personal --oauth`
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

use crate::secret::SecretRef;

/// The longest model name accepted anywhere (request, route, alias).
pub const MAX_MODEL_NAME_LEN: usize = 256;

/// `[llm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Upstream servers by name.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Model-name routes, tried in order (exact names before globs).
    pub routes: Vec<RouteConfig>,
    /// Model names that stand for other model names.
    pub aliases: BTreeMap<String, String>,
    /// Longest an upstream may take to answer (a whole answer, or a stream's head), and
    /// the longest a stream may then stay silent: a long stream that keeps coming is
    /// never cut.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// `max_tokens` sent to Anthropic backends when an OpenAI client sets none.
    pub default_max_tokens: u32,
    /// How long `/v1/responses` keeps a stored response (`store`, on by default as in
    /// OpenAI's API) for `previous_response_id` and `GET /v1/responses/{id}`; `0s`
    /// keeps nothing.
    #[serde(with = "humantime_serde")]
    pub responses_retention: Duration,
    /// How long per-request usage records (tokens, latency, status) are kept in
    /// `state.db` for `/analytics` and `moat usage`; `0s` records nothing.
    #[serde(with = "humantime_serde")]
    pub usage_retention: Duration,
    /// How accounts in a pool are shared.
    pub pools: PoolConfig,
}

/// `[llm.pools]`: conversation stickiness and what happens when every account is spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Most conversations remembered for stickiness (one account per conversation, so
    /// the provider's prompt cache keeps working).
    pub sticky_max: usize,
    /// A conversation not seen for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub sticky_idle: Duration,
    /// When every account of the last target is cooling down, a request waits this long
    /// for one to come back before it gets 429 with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub exhausted_wait: Duration,
    /// Most requests waiting that way at once; past it, 429 at once.
    pub exhausted_queue: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            sticky_max: 10_000,
            sticky_idle: Duration::from_secs(3600),
            exhausted_wait: Duration::from_secs(10),
            exhausted_queue: 64,
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            backends: BTreeMap::new(),
            routes: Vec::new(),
            aliases: BTreeMap::new(),
            upstream_timeout: Duration::from_secs(300),
            default_max_tokens: 4096,
            responses_retention: Duration::from_secs(30 * 86_400),
            usage_retention: Duration::from_secs(90 * 86_400),
            pools: PoolConfig::default(),
        }
    }
}

/// The wire format a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Anthropic Messages API (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions API (`/chat/completions`).
    Openai,
}

impl BackendKind {
    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
        }
    }
}

/// How an Anthropic backend presents its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `x-api-key: KEY` (Anthropic API keys).
    #[default]
    XApiKey,
    /// `Authorization: Bearer TOKEN` (OAuth tokens; every OpenAI-compatible server).
    Bearer,
}

/// `[llm.backends.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The wire format.
    pub kind: BackendKind,
    /// Where the API lives: `https://api.anthropic.com` for Anthropic (moat appends
    /// `/v1/messages`), `https://api.openai.com/v1` for OpenAI-compatible servers (moat
    /// appends `/chat/completions`).
    pub base_url: String,
    /// The credential, by reference (`secret:NAME` or `env:VAR`); none for local servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
    /// How the key is sent to an Anthropic backend (OpenAI-compatible ones always use Bearer).
    #[serde(default, skip_serializing_if = "is_default")]
    pub auth: AuthScheme,
    /// Model names (exact or glob) this backend serves under their own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Most requests in flight to this backend at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Most requests waiting for a slot; past it, clients get 503 with `Retry-After`.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
    /// Longest wait for a TCP (and TLS) connection to the backend.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// More accounts (credentials) for the same API, pooled with `key`'s (which is the
    /// account named `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountConfig>,
    /// How a request picks among the accounts.
    #[serde(default, skip_serializing_if = "is_default")]
    pub strategy: Strategy,
    /// The provider's OAuth 2.0 settings, for accounts with `oauth = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthConfig>,
    /// How `/v1/responses` reaches this backend (OpenAI-kind only can be `native`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub responses: ResponsesMode,
    /// What a translated request does with a tool this backend cannot run (a hosted
    /// tool: web search, file search, code execution...).
    #[serde(default, skip_serializing_if = "is_default")]
    pub unsupported_tools: UnsupportedTools,
    /// Where an Anthropic client's `system` messages in the middle of a conversation go
    /// on this (OpenAI-kind) backend.
    #[serde(default, skip_serializing_if = "is_default")]
    pub system_messages: SystemMessages,
    /// The most output tokens a translated request asks this backend for: a client's
    /// larger `max_tokens` (Claude Code sends 64,000) is lowered to it, for servers that
    /// refuse a prompt plus `max_tokens` past their context (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

/// What a translated request does with a tool its backend cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnsupportedTools {
    /// Left out of the request; the answer names it in the `moat-dropped-tools` header,
    /// and the log and `/metrics` count it. A drop-in must work out of the box: clients
    /// such as Codex CLI send a hosted web search tool by default.
    #[default]
    Drop,
    /// The request is refused with a 400 naming the tool and the backend.
    Refuse,
}

/// Where mid-conversation `system` messages go on an OpenAI-kind backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SystemMessages {
    /// As `system` messages at their position (what OpenAI and most servers accept).
    #[default]
    InPlace,
    /// Into the next user turn, marked as system text: for chat templates that accept
    /// a system message only at the start.
    Merge,
}

/// How a Responses API request reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesMode {
    /// Translated to the backend's Chat Completions or Messages API.
    #[default]
    Translate,
    /// Passed untouched to the backend's own `/responses` (OpenAI itself, or any server
    /// that implements the Responses API).
    Native,
}

/// `[[llm.backends.NAME.accounts]]`: one credential in a backend's pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account's name (letters, digits, `-`, `_`), unique in its backend.
    pub name: String,
    /// Its API key, by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
    /// Its credential is an OAuth token pair kept in the vault by
    /// `moat account add BACKEND NAME --oauth`, refreshed by moat.
    #[serde(default, skip_serializing_if = "is_default")]
    pub oauth: bool,
}

/// How a request picks an account from a backend's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The account with the largest share of its rate limits left.
    #[default]
    MostHeadroom,
    /// Each account in turn.
    RoundRobin,
    /// The first account (in config order) until it runs out, then the next.
    FillFirst,
}

impl Strategy {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MostHeadroom => "most-headroom",
            Self::RoundRobin => "round-robin",
            Self::FillFirst => "fill-first",
        }
    }
}

/// `[llm.backends.NAME.oauth]`: an OAuth 2.0 provider that lets third-party clients log
/// in (authorization code with PKCE, public client). These are the operator's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The client id registered with the provider.
    pub client_id: String,
    /// Where the user logs in and approves (moat adds the PKCE parameters).
    pub authorize_url: String,
    /// Where codes and refresh tokens are exchanged for access tokens.
    pub token_url: String,
    /// The scopes asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// An access token is refreshed when it has less than this left.
    #[serde(default = "default_refresh_before", with = "humantime_serde")]
    pub refresh_before: Duration,
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(300)
}

/// The account name a backend's own `key` has in its pool.
pub const DEFAULT_ACCOUNT: &str = "default";

impl BackendConfig {
    /// The pool: `key` as the account `default` (or, with no accounts at all, one
    /// account without a credential, for local servers), then `accounts` in order.
    pub fn pool(&self) -> Vec<AccountConfig> {
        let mut pool = Vec::with_capacity(self.accounts.len() + 1);
        if self.key.is_some() || self.accounts.is_empty() {
            pool.push(AccountConfig {
                name: DEFAULT_ACCOUNT.into(),
                key: self.key.clone(),
                oauth: false,
            });
        }
        pool.extend(self.accounts.iter().cloned());
        pool
    }
}

/// The vault entry holding an OAuth account's tokens (moat's own namespace).
pub fn oauth_vault_entry(backend: &str, account: &str) -> String {
    format!("moat.oauth.{backend}.{account}")
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn default_max_concurrency() -> u32 {
    64
}
fn default_max_queue() -> u32 {
    256
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl BackendConfig {
    /// A backend with default limits.
    pub fn new(kind: BackendKind, base_url: impl Into<String>) -> Self {
        Self {
            kind,
            base_url: base_url.into(),
            key: None,
            auth: AuthScheme::default(),
            models: Vec::new(),
            max_concurrency: default_max_concurrency(),
            max_queue: default_max_queue(),
            connect_timeout: default_connect_timeout(),
            accounts: Vec::new(),
            strategy: Strategy::default(),
            oauth: None,
            responses: ResponsesMode::default(),
            unsupported_tools: UnsupportedTools::default(),
            system_messages: SystemMessages::default(),
            max_output_tokens: None,
        }
    }
}

/// `[[llm.routes]]`: a model name (exact or glob) and the targets tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The name clients ask for; `*` and `?` match any text / one character.
    pub model: String,
    /// `BACKEND:UPSTREAM_MODEL`, or `BACKEND` to keep the requested name; on connect
    /// failure, 5xx or 429 before anything reached the client, the next one is tried.
    pub targets: Vec<String>,
}

/// Whether `name` is a valid model name: letters, digits and `. - _ : /`, 1 to
/// [`MAX_MODEL_NAME_LEN`] bytes. Globs may also use `*`, `?`, `[` and `]`.
pub fn valid_model_name(name: &str, glob: bool) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'@')
                || (glob && matches!(b, b'*' | b'?' | b'[' | b']'))
        })
}

/// Whether `name` is a valid backend name: letters, digits, `-` and `_`, at most 64.
pub fn valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks `[llm]`; the error names the key.
pub fn validate(llm: &LlmConfig) -> Result<(), InvalidValue> {
    rules(llm).map_err(InvalidValue::from)
}

fn rules(llm: &LlmConfig) -> Result<(), (String, String)> {
    for (name, b) in &llm.backends {
        let key = |field: &str| format!("llm.backends.{name}.{field}");
        if !valid_backend_name(name) {
            return Err((
                format!("llm.backends.{name}"),
                "backend names use letters, digits, '-' and '_' (at most 64)".into(),
            ));
        }
        if let Err(message) = check_base_url(&b.base_url) {
            return Err((key("base_url"), message));
        }
        for m in &b.models {
            if !valid_model_name(m, true) {
                return Err((key("models"), bad_model(m)));
            }
        }
        if b.max_concurrency == 0 {
            return Err((key("max_concurrency"), "must be at least 1".into()));
        }
        if b.connect_timeout.is_zero() || b.connect_timeout > Duration::from_secs(300) {
            return Err((
                key("connect_timeout"),
                "must be between 1ms and 5m, like \"10s\"".into(),
            ));
        }
        if b.responses == ResponsesMode::Native && b.kind != BackendKind::Openai {
            return Err((
                key("responses"),
                "\"native\" needs kind = \"openai\" (the Anthropic API has no /v1/responses); remove it to translate".into(),
            ));
        }
        validate_accounts(name, b)?;
    }
    for (i, r) in llm.routes.iter().enumerate() {
        let key = |field: &str| format!("llm.routes[{i}].{field}");
        if !valid_model_name(&r.model, true) {
            return Err((key("model"), bad_model(&r.model)));
        }
        if r.targets.is_empty() {
            return Err((key("targets"), "needs at least one BACKEND[:MODEL]".into()));
        }
        for t in &r.targets {
            let (backend, model) = t.split_once(':').unwrap_or((t, ""));
            if !llm.backends.contains_key(backend) {
                return Err((
                    key("targets"),
                    format!("{t:?} names no backend under [llm.backends]"),
                ));
            }
            if !model.is_empty() && !valid_model_name(model, false) {
                return Err((key("targets"), bad_model(model)));
            }
        }
    }
    for (alias, target) in &llm.aliases {
        if !valid_model_name(alias, false) || !valid_model_name(target, false) {
            return Err((
                format!("llm.aliases.{alias}"),
                bad_model(&format!("{alias} = {target}")),
            ));
        }
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&llm.upstream_timeout) {
        return Err((
            "llm.upstream_timeout".into(),
            "must be between 1s and 24h, like \"5m\"".into(),
        ));
    }
    if llm.default_max_tokens == 0 {
        return Err(("llm.default_max_tokens".into(), "must be at least 1".into()));
    }
    let p = &llm.pools;
    if p.sticky_max > 10_000_000 {
        return Err((
            "llm.pools.sticky_max".into(),
            "must be at most 10000000".into(),
        ));
    }
    if p.exhausted_wait > Duration::from_secs(600) {
        return Err((
            "llm.pools.exhausted_wait".into(),
            "must be at most 10m, like \"10s\" (0s answers 429 at once)".into(),
        ));
    }
    Ok(())
}

fn validate_accounts(backend: &str, b: &BackendConfig) -> Result<(), (String, String)> {
    let key = |field: &str| format!("llm.backends.{backend}.{field}");
    let mut seen = std::collections::BTreeSet::new();
    for (i, a) in b.accounts.iter().enumerate() {
        let at = key(&format!("accounts[{i}]"));
        if !valid_backend_name(&a.name) {
            return Err((
                format!("{at}.name"),
                "account names use letters, digits, '-' and '_' (at most 64)".into(),
            ));
        }
        if a.name == DEFAULT_ACCOUNT && b.key.is_some() {
            return Err((
                format!("{at}.name"),
                "\"default\" is the account of the backend's own `key`; choose another name".into(),
            ));
        }
        if !seen.insert(a.name.as_str()) {
            return Err((
                format!("{at}.name"),
                format!("{:?} is used twice in this backend", a.name),
            ));
        }
        match (&a.key, a.oauth) {
            (Some(_), true) => {
                return Err((at, "set either `key` or `oauth = true`, not both".into()));
            }
            (None, false) => {
                return Err((
                    at,
                    "needs a credential: `key = \"secret:NAME\"` or `oauth = true`".into(),
                ));
            }
            (None, true) if b.oauth.is_none() => {
                return Err((
                    format!("{at}.oauth"),
                    format!(
                        "needs the provider's settings in [llm.backends.{backend}.oauth] (client_id, authorize_url, token_url)"
                    ),
                ));
            }
            _ => {}
        }
    }
    if let Some(o) = &b.oauth {
        if o.client_id.is_empty() || o.client_id.len() > 512 {
            return Err((key("oauth.client_id"), "must be 1 to 512 characters".into()));
        }
        for (field, url) in [
            ("authorize_url", &o.authorize_url),
            ("token_url", &o.token_url),
        ] {
            check_oauth_url(url).map_err(|m| (key(&format!("oauth.{field}")), m))?;
        }
        if o.refresh_before > Duration::from_secs(86_400) {
            return Err((key("oauth.refresh_before"), "must be at most 24h".into()));
        }
    }
    Ok(())
}

/// An OAuth endpoint: `https://`, or `http://` to a loopback address (a provider run
/// locally); no credentials or fragment. A query is allowed (some authorize URLs carry one).
fn check_oauth_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("{url:?} has no host")),
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "{url:?} must be https:// (http:// only to a loopback address)"
            ));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} must not carry credentials or a fragment"));
    }
    Ok(())
}

fn bad_model(name: &str) -> String {
    format!(
        "{name:?} is not a model name: use letters, digits and . - _ : / @ (at most {MAX_MODEL_NAME_LEN})"
    )
}

/// An `http://` or `https://` URL with a host, and no credentials, query or fragment:
/// moat appends fixed API paths to it and nothing else.
fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must start with https:// or http://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if host.contains('@') {
        return Err(
            "must not carry credentials; put the key in the vault and set `key = \"secret:NAME\"`"
                .into(),
        );
    }
    let uri_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/[]%!$&'()*+,;=".contains(c);
    if rest.contains(['?', '#']) || !url.chars().all(uri_char) {
        return Err(format!(
            "{url:?} must be a plain base URL: ASCII, without query, fragment or spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert!(valid_model_name("claude-sonnet-4-5-20250929", false));
        assert!(valid_model_name("meta-llama/Llama-3.1-8B:free", false));
        assert!(!valid_model_name("", false));
        assert!(!valid_model_name("a b", false));
        assert!(!valid_model_name("claude-*", false));
        assert!(valid_model_name("claude-*", true));
        assert!(!valid_model_name(
            &"x".repeat(MAX_MODEL_NAME_LEN + 1),
            false
        ));
        assert!(!valid_model_name("../etc/passwd\n", false));
    }

    #[test]
    fn base_urls() {
        assert!(check_base_url("https://api.anthropic.com").is_ok());
        assert!(check_base_url("http://127.0.0.1:8080/v1").is_ok());
        assert!(check_base_url("ftp://x").is_err());
        assert!(check_base_url("https://user:pw@host").is_err());
        assert!(check_base_url("https://host/v1?x=1").is_err());
        assert!(check_base_url("https:///v1").is_err());
        assert!(check_base_url("https://host/v1 x").is_err());
        assert!(check_base_url("https://hôst/v1").is_err());
        assert!(check_base_url("https://host/{v1}").is_err());
    }

    #[test]
    fn routes_must_name_backends() {
        let mut llm = LlmConfig::default();
        llm.routes.push(RouteConfig {
            model: "x".into(),
            targets: vec!["nope:y".into()],
        });
        let InvalidValue {
            key,
            problem: message,
        } = validate(&llm).unwrap_err();
        assert_eq!(key, "llm.routes[0].targets");
        assert!(message.contains("nope"), "{message}");
    }

    #[test]
    fn native_responses_only_for_openai_kind() {
        let mut llm = LlmConfig::default();
        let mut b = BackendConfig::new(BackendKind::Openai, "https://api.openai.com/v1");
        b.responses = ResponsesMode::Native;
        llm.backends.insert("oai".into(), b.clone());
        assert!(validate(&llm).is_ok());
        b.kind = BackendKind::Anthropic;
        llm.backends.insert("oai".into(), b);
        let InvalidValue {
            key,
            problem: message,
        } = validate(&llm).unwrap_err();
        assert_eq!(key, "llm.backends.oai.responses");
        assert!(message.contains("kind = \"openai\""), "{message}");
    }
}
