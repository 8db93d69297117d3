//! Exposure by construction: every route has a class, and the class alone decides who may
//! reach it.
//!
//! The rule is data: [`Exposure::checks`] lists the checks each class requires, and
//! [`Policy::decide`] runs them against the facts of one request. Nothing else in moat
//! decides reachability, so this module and its tests are the whole story.
//!
//! | class | checks |
//! |---|---|
//! | `Open` | none |
//! | `Lan` | none (only read-only media; the LAN listener carries nothing else) |
//! | `Api` | peer, host, origin, API key (when configured) |
//! | `Control` | peer, host, origin, control token |
//! | `Page` | peer, host, origin (a page of moat's own UI: no secret in it; what it does goes through `Control` routes) |
//!
//! - **peer**: a loopback peer, or any peer when the main listener was deliberately bound
//!   to a non-loopback address (which start-up allows only with authentication).
//! - **host**: `Host` names this server: a loopback name or the address the peer
//!   connected to, or a configured extra name, with the listener's port. Defeats DNS
//!   rebinding, where a hostile page's name resolves to 127.0.0.1.
//! - **origin**: `Origin` is absent (not a browser) or this server's own origin or the
//!   configured local origin. Defeats CSRF and cross-site WebSocket hijacking.
//! - **API key** / **control token**: compared in constant time.
//!
//! ```
//! use moat_net::{Check, Exposure};
//! assert!(Exposure::Open.checks().is_empty());
//! assert!(Exposure::Control.checks().contains(&Check::ControlToken));
//! ```

use std::net::{IpAddr, SocketAddr};

use http::StatusCode;
use moat_core::config::{is_local_origin, is_loopback_host, split_host_port};
use moat_core::secret::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who may reach a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exposure {
    /// Liveness only: anyone who reaches a listener.
    Open,
    /// Read-only media for the LAN: never state-changing, never a secret.
    Lan,
    /// The LLM endpoints: local clients, and only those presenting the API key if one is set.
    Api,
    /// Everything that changes or reveals state: local, same-site, with the control token.
    Control,
    /// A page (and its script and style) of moat's own UI, such as the web chat: local and
    /// same-site, but without the token, which a browser's navigation cannot send. It
    /// holds no secret and changes nothing; what it does goes through `Control` routes.
    Page,
    /// A signed webhook (`/hooks/NAME`): from anyone who reaches the main listener, as a
    /// service calling back must; the handler admits only a request signed with the
    /// channel's key. Never on the LAN listener.
    Hook,
}

/// One condition a request must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The peer is loopback, or the listener is an authenticated remote one.
    Peer,
    /// `Host` names this server.
    Host,
    /// `Origin` is absent or local.
    Origin,
    /// The API key, when one is configured.
    ApiKey,
    /// The control token.
    ControlToken,
}

impl Exposure {
    /// The checks a request to a route of this class must pass, in order.
    pub const fn checks(self) -> &'static [Check] {
        match self {
            Exposure::Open | Exposure::Lan | Exposure::Hook => &[],
            Exposure::Api => &[Check::Peer, Check::Host, Check::Origin, Check::ApiKey],
            Exposure::Control => &[Check::Peer, Check::Host, Check::Origin, Check::ControlToken],
            Exposure::Page => &[Check::Peer, Check::Host, Check::Origin],
        }
    }

    /// Whether a request's body is read for routes of this class. Open and Lan routes take
    /// none: an unauthenticated caller never makes moat buffer anything. A hook's body is
    /// what its signature covers, so it is read (within the body limits) and then checked.
    pub const fn reads_body(self) -> bool {
        !matches!(self, Exposure::Open | Exposure::Lan)
    }

    /// Whether routes of this class exist on a listener of `kind` at all.
    pub const fn served_on(self, kind: ListenerKind) -> bool {
        match kind {
            ListenerKind::Main => true,
            ListenerKind::Lan => matches!(self, Exposure::Open | Exposure::Lan),
        }
    }
}

/// The two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Every route; loopback unless authenticated.
    Main,
    /// Only `Open` and `Lan` routes.
    Lan,
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListenerKind::Main => "main",
            ListenerKind::Lan => "lan",
        })
    }
}

/// The facts of one request that the checks look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The peer's address.
    pub peer: IpAddr,
    /// The local address the peer connected to.
    pub local: SocketAddr,
    /// The `Host` header (or HTTP/2 `:authority`).
    pub host: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// `x-api-key`, else the `Authorization: Bearer` value.
    pub api_key: Option<&'a str>,
    /// `x-moat-control-token`, else the `Authorization: Bearer` value, else (a browser's
    /// WebSocket, which cannot send headers) a `Sec-WebSocket-Protocol` entry
    /// `moat.token.TOKEN`.
    pub control_token: Option<&'a str>,
    /// A session cookie ([`crate::session`]), read only on the paths it applies to.
    pub session: Option<&'a str>,
}

/// Why a request was refused. The message tells a legitimate caller what to do and
/// tells an attacker nothing they did not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The peer is not loopback and the listener is not open to remote peers.
    Peer,
    /// `Host` does not name this server.
    Host,
    /// `Origin` is a foreign site.
    Origin,
    /// The API key is missing or wrong.
    ApiKey,
    /// The control token is missing or wrong.
    ControlToken,
}

impl Denial {
    /// The HTTP status for this refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Denial::ApiKey => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }
    /// A stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Denial::Peer => "peer_not_allowed",
            Denial::Host => "host_not_allowed",
            Denial::Origin => "origin_not_allowed",
            Denial::ApiKey => "authentication_error",
            Denial::ControlToken => "control_token_required",
        }
    }
    /// A short message for the client.
    pub fn message(self) -> &'static str {
        match self {
            Denial::Peer => "this route is served to local clients only",
            Denial::Host => {
                "the Host header does not name this server; use localhost or a name in server.allowed_hosts"
            }
            Denial::Origin => {
                "cross-origin requests are refused; set server.cors_origin to allow a local web app"
            }
            Denial::ApiKey => {
                "missing or invalid API key: send it as x-api-key or Authorization: Bearer"
            }
            Denial::ControlToken => {
                "missing or invalid control token; send the contents of MOAT_HOME/control.token as X-Moat-Control-Token (a browser's WebSocket: as the subprotocol moat.token.TOKEN)"
            }
        }
    }
}

/// The exposure settings of one listener. Made only by [`Policy::new`], which refuses a
/// remote main listener without a strong API key and TLS (or the explicit opt-out), so an
/// open remote listener cannot be represented.
#[derive(Debug, Clone)]
pub struct Policy {
    kind: ListenerKind,
    /// The main listener faces the network; authentication was checked at construction.
    remote: bool,
    port: u16,
    allowed_hosts: Vec<String>,
    cors_origin: Option<String>,
    api_key: Option<SecretString>,
    control_token: SecretString,
}

/// What a listener's [`Policy`] is made from.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Which listener.
    pub kind: ListenerKind,
    /// The address it is bound to (its port is the one clients must name in `Host`).
    pub bound: SocketAddr,
    /// Extra host names allowed in `Host` (`server.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// The one local web origin allowed (`server.cors_origin`).
    pub cors_origin: Option<String>,
    /// The API key, if one is configured.
    pub api_key: Option<SecretString>,
    /// The control token of this run.
    pub control_token: SecretString,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// `server.allow_insecure_remote`: a remote main listener without TLS, knowingly.
    pub allow_insecure_remote: bool,
}

/// The fewest characters an API key guarding a remote listener may have.
pub const MIN_REMOTE_API_KEY_CHARS: usize = 16;
/// The least guessing work, in bits by character frequency, such a key must take.
const MIN_REMOTE_API_KEY_BITS: f64 = 48.0;

/// The API key as far as a check can see it.
#[derive(Debug, Clone, Copy)]
pub enum ApiKeyState<'a> {
    /// None configured.
    Absent,
    /// Configured, but its value is not at hand (a vault that stays locked for `doctor`).
    Unread,
    /// Configured, with this value.
    Value(&'a str),
}

/// Why a main listener may not face the network as configured. Each says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureProblem {
    /// No API key: anyone who reaches the address could use the accounts.
    #[error("{}. {}", self.problem(), self.fix())]
    NoApiKey {
        /// The listener's address.
        listen: SocketAddr,
    },
    /// No TLS and no explicit opt-out: keys would cross the network in clear text.
    #[error("{}. {}", self.problem(), self.fix())]
    NoTls {
        /// The listener's address.
        listen: SocketAddr,
    },
    /// A key that can be guessed.
    #[error("{}. {}", self.problem(), self.fix())]
    WeakApiKey {
        /// The listener's address.
        listen: SocketAddr,
        /// Why the key is weak.
        weakness: KeyWeakness,
    },
}

/// Why an API key is too weak for a remote listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWeakness {
    /// Fewer characters (not bytes) than [`MIN_REMOTE_API_KEY_CHARS`].
    TooShort {
        /// How many characters it has.
        chars: usize,
    },
    /// It holds whitespace, which clients and shells mangle; all-blank keys are the worst.
    Whitespace,
    /// So repetitive that it takes little guessing (`aaaa…`, `abab…`).
    Repetitive,
}

impl ExposureProblem {
    /// What is wrong, in a sentence.
    pub fn problem(&self) -> String {
        match self {
            Self::NoApiKey { listen } => format!(
                "refusing to listen on {listen} without authentication, as anyone who can reach that address could use your accounts"
            ),
            Self::NoTls { listen } => format!(
                "refusing to listen on {listen} without TLS: keys and tokens would cross the network in clear text"
            ),
            Self::WeakApiKey { listen, weakness } => {
                let why = match weakness {
                    KeyWeakness::TooShort { chars } => format!(
                        "it has {chars} characters, and at least {MIN_REMOTE_API_KEY_CHARS} are needed"
                    ),
                    KeyWeakness::Whitespace => "it contains whitespace".to_string(),
                    KeyWeakness::Repetitive => {
                        "it repeats a few characters, so it takes little guessing".to_string()
                    }
                };
                format!(
                    "auth.api_key is too weak for a listener reachable from the network ({listen}): {why}"
                )
            }
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            Self::NoApiKey { listen } => format!(
                "Set an API key (the MOAT_API_KEY environment variable, or `api_key = \"secret:NAME\"` under [auth] in config.toml), \
                 or listen on loopback (server.listen = \"127.0.0.1:{}\")",
                listen.port()
            ),
            Self::NoTls { .. } => "Configure [server.tls] cert and key, or accept the risk with --allow-insecure-remote \
                 (server.allow_insecure_remote = true)"
                .to_string(),
            Self::WeakApiKey { .. } => {
                "Use a random key, e.g. the output of `openssl rand -hex 24`".to_string()
            }
        }
    }
}

/// Checks the main listener's exposure as configured: an empty list means it may start.
/// A loopback address needs nothing; any other needs a strong API key, and TLS unless
/// `allow_insecure_remote` says otherwise.
pub fn exposure_problems(
    listen: SocketAddr,
    api_key: ApiKeyState<'_>,
    tls: bool,
    allow_insecure_remote: bool,
) -> Vec<ExposureProblem> {
    if listen.ip().is_loopback() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    match api_key {
        ApiKeyState::Absent => problems.push(ExposureProblem::NoApiKey { listen }),
        ApiKeyState::Unread => {}
        ApiKeyState::Value(key) => {
            if let Some(weakness) = key_weakness(key) {
                problems.push(ExposureProblem::WeakApiKey { listen, weakness });
            }
        }
    }
    if !tls && !allow_insecure_remote {
        problems.push(ExposureProblem::NoTls { listen });
    }
    problems
}

/// Why `key` would be a weak lock on a remote listener, if it would.
pub fn key_weakness(key: &str) -> Option<KeyWeakness> {
    if key.chars().any(char::is_whitespace) {
        return Some(KeyWeakness::Whitespace);
    }
    let chars = key.chars().count();
    if chars < MIN_REMOTE_API_KEY_CHARS {
        return Some(KeyWeakness::TooShort { chars });
    }
    // Character frequency gives a ceiling on the guessing work: a random key's count is
    // close to its length times log2 of its alphabet; `abab…` gets 1 bit a character.
    let mut counts = std::collections::HashMap::new();
    for c in key.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = chars as f64;
    let bits: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2() * n
        })
        .sum();
    (bits < MIN_REMOTE_API_KEY_BITS).then_some(KeyWeakness::Repetitive)
}

impl Policy {
    /// The policy of one listener. A main listener bound to a non-loopback address is
    /// refused, with every problem found, unless [`exposure_problems`] finds none.
    pub fn new(settings: PolicySettings) -> Result<Self, Vec<ExposureProblem>> {
        let remote = settings.kind == ListenerKind::Main && !settings.bound.ip().is_loopback();
        if remote {
            let key = match &settings.api_key {
                Some(k) => ApiKeyState::Value(k.expose()),
                None => ApiKeyState::Absent,
            };
            let problems = exposure_problems(
                settings.bound,
                key,
                settings.tls,
                settings.allow_insecure_remote,
            );
            if !problems.is_empty() {
                return Err(problems);
            }
        }
        Ok(Self {
            kind: settings.kind,
            remote,
            port: settings.bound.port(),
            allowed_hosts: settings.allowed_hosts,
            cors_origin: settings.cors_origin,
            api_key: settings.api_key,
            control_token: settings.control_token,
        })
    }

    /// Which listener this policy guards.
    pub fn kind(&self) -> ListenerKind {
        self.kind
    }

    /// The one local web origin CORS answers, if any.
    pub fn cors_origin(&self) -> Option<&str> {
        self.cors_origin.as_deref()
    }

    /// Runs the checks of `class` against `facts`; the first failing check is the answer.
    pub fn decide(&self, class: Exposure, facts: &RequestFacts<'_>) -> Result<(), Denial> {
        // Read-only media is for anyone on the LAN listener; on the main listener it is
        // this machine's (and a remote main listener's callers with the key), with the
        // Host check that stops a DNS-rebinding page from reading it.
        let checks = match (class, self.kind, self.remote) {
            (Exposure::Lan, ListenerKind::Main, false) => &[Check::Peer, Check::Host][..],
            (Exposure::Lan, ListenerKind::Main, true) => {
                &[Check::Peer, Check::Host, Check::ApiKey][..]
            }
            _ => class.checks(),
        };
        for check in checks {
            let ok = match check {
                Check::Peer => facts.peer.is_loopback() || self.remote,
                Check::Host => self.host_allowed(facts),
                Check::Origin => self.origin_allowed(facts),
                Check::ApiKey => match &self.api_key {
                    None => true,
                    Some(key) => facts.api_key.is_some_and(|k| secret_eq(k, key.expose())),
                },
                Check::ControlToken => {
                    facts
                        .control_token
                        .is_some_and(|t| secret_eq(t, self.control_token.expose()))
                        || facts.session.is_some_and(|s| {
                            crate::session::valid(&self.control_token, s, unix_now())
                        })
                }
            };
            if !ok {
                return Err(match check {
                    Check::Peer => Denial::Peer,
                    Check::Host => Denial::Host,
                    Check::Origin => Denial::Origin,
                    Check::ApiKey => Denial::ApiKey,
                    Check::ControlToken => Denial::ControlToken,
                });
            }
        }
        Ok(())
    }

    fn host_allowed(&self, facts: &RequestFacts<'_>) -> bool {
        let Some(host) = facts.host else { return false };
        let (name, port) = split_host_port(host);
        let default_port = if facts.tls { 443 } else { 80 };
        let port_ok = match port {
            Some(p) => strict_port(p) == Some(self.port),
            None => self.port == default_port,
        };
        if !port_ok {
            return false;
        }
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        (facts.peer.is_loopback() && is_loopback_host(name))
            || bare
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip == facts.local.ip())
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name.trim_end_matches('.')))
    }

    fn origin_allowed(&self, facts: &RequestFacts<'_>) -> bool {
        let Some(origin) = facts.origin else {
            return true;
        };
        if self
            .cors_origin
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // Our own origin: same scheme, and the authority the request was sent to.
        let scheme = if facts.tls { "https://" } else { "http://" };
        let Some(authority) = origin.strip_prefix(scheme) else {
            return false;
        };
        let same_authority = facts
            .host
            .is_some_and(|h| h.eq_ignore_ascii_case(authority));
        same_authority && (is_local_origin(origin) || self.remote)
    }
}

/// A port as RFC 3986 writes one: digits only (Rust's parser would also take `+7411`),
/// without leading zeros, so one port has one spelling.
fn strict_port(p: &str) -> Option<u16> {
    let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits || (p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    p.parse().ok()
}

/// Constant-time equality that leaks neither content nor length: both sides are hashed
/// to a fixed size first.
fn secret_eq(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "control-token-0123456789abcdef";
    const KEY: &str = "api-key-0123456789";

    fn policy(remote: bool, api_key: bool) -> Policy {
        Policy::new(PolicySettings {
            kind: ListenerKind::Main,
            bound: if remote {
                "192.0.2.1:7411".parse().unwrap()
            } else {
                "127.0.0.1:7411".parse().unwrap()
            },
            allowed_hosts: vec!["moat.home.arpa".into()],
            cors_origin: Some("http://localhost:5173".into()),
            api_key: api_key.then(|| SecretString::new(KEY.into())),
            control_token: SecretString::new(TOKEN.into()),
            tls: true,
            allow_insecure_remote: false,
        })
        .unwrap()
    }

    fn local() -> RequestFacts<'static> {
        RequestFacts {
            peer: "127.0.0.1".parse().unwrap(),
            local: "127.0.0.1:7411".parse().unwrap(),
            host: Some("127.0.0.1:7411"),
            origin: None,
            tls: false,
            api_key: None,
            control_token: Some(TOKEN),
            session: None,
        }
    }

    fn remote() -> RequestFacts<'static> {
        RequestFacts {
            peer: "10.9.0.2".parse().unwrap(),
            local: "10.9.0.1:7411".parse().unwrap(),
            host: Some("10.9.0.1:7411"),
            ..local()
        }
    }

    #[test]
    fn open_and_lan_need_nothing() {
        let p = policy(false, true);
        let anyone = RequestFacts {
            host: None,
            origin: Some("https://evil.example"),
            control_token: None,
            session: None,
            ..remote()
        };
        assert_eq!(p.decide(Exposure::Open, &anyone), Ok(()));
        // On the LAN listener, read-only media is for anyone.
        let lan = Policy::new(PolicySettings {
            kind: ListenerKind::Lan,
            bound: "0.0.0.0:7412".parse().unwrap(),
            allowed_hosts: Vec::new(),
            cors_origin: None,
            api_key: None,
            control_token: SecretString::new(TOKEN.into()),
            tls: false,
            allow_insecure_remote: false,
        })
        .unwrap();
        assert_eq!(lan.decide(Exposure::Lan, &anyone), Ok(()));
        assert_eq!(lan.decide(Exposure::Open, &anyone), Ok(()));
    }

    #[test]
    fn lan_media_on_the_main_listener_is_this_machines_by_its_own_name() {
        let p = policy(false, true);
        assert_eq!(
            p.decide(
                Exposure::Lan,
                &RequestFacts {
                    control_token: None,
                    ..local()
                }
            ),
            Ok(())
        );
        // A page whose name was rebound to 127.0.0.1 names itself in Host.
        let rebound = RequestFacts {
            host: Some("evil.example:7411"),
            control_token: None,
            ..local()
        };
        assert_eq!(p.decide(Exposure::Lan, &rebound), Err(Denial::Host));
        assert_eq!(p.decide(Exposure::Lan, &remote()), Err(Denial::Peer));
        // A remote main listener serves it to callers with the key only.
        let p = policy(true, true);
        let peer = RequestFacts {
            local: "192.0.2.1:7411".parse().unwrap(),
            host: Some("192.0.2.1:7411"),
            ..remote()
        };
        assert_eq!(p.decide(Exposure::Lan, &peer), Err(Denial::ApiKey));
        let keyed = RequestFacts {
            api_key: Some(KEY),
            ..peer
        };
        assert_eq!(p.decide(Exposure::Lan, &keyed), Ok(()));
    }

    #[test]
    fn control_from_loopback_with_token() {
        let p = policy(false, false);
        assert_eq!(p.decide(Exposure::Control, &local()), Ok(()));
        for host in [
            "localhost:7411",
            "[::1]:7411",
            "LOCALHOST:7411",
            "127.0.0.1:7411",
        ] {
            assert_eq!(
                p.decide(
                    Exposure::Control,
                    &RequestFacts {
                        host: Some(host),
                        ..local()
                    }
                ),
                Ok(()),
                "{host}"
            );
        }
    }

    #[test]
    fn control_refusals_in_order() {
        let p = policy(false, false);
        let cases: &[(RequestFacts<'_>, Denial)] = &[
            (remote(), Denial::Peer),
            (
                RequestFacts {
                    host: Some("evil.example:7411"),
                    ..local()
                },
                Denial::Host,
            ),
            (
                RequestFacts {
                    host: Some("localhost:80"),
                    ..local()
                },
                Denial::Host,
            ),
            (
                RequestFacts {
                    host: Some("localhost"),
                    ..local()
                },
                Denial::Host,
            ),
            (
                RequestFacts {
                    host: Some("localhost.evil.example:7411"),
                    ..local()
                },
                Denial::Host,
            ),
            (
                RequestFacts {
                    host: None,
                    ..local()
                },
                Denial::Host,
            ),
            (
                RequestFacts {
                    origin: Some("https://evil.example"),
                    ..local()
                },
                Denial::Origin,
            ),
            (
                RequestFacts {
                    origin: Some("null"),
                    ..local()
                },
                Denial::Origin,
            ),
            (
                RequestFacts {
                    origin: Some("http://localhost:3000"),
                    ..local()
                },
                Denial::Origin,
            ),
            (
                RequestFacts {
                    control_token: None,
                    session: None,
                    ..local()
                },
                Denial::ControlToken,
            ),
            (
                RequestFacts {
                    control_token: Some("control-token-0123456789abcdeX"),
                    session: None,
                    ..local()
                },
                Denial::ControlToken,
            ),
            (
                RequestFacts {
                    control_token: Some(""),
                    session: None,
                    ..local()
                },
                Denial::ControlToken,
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(p.decide(Exposure::Control, facts), Err(*want), "{facts:?}");
        }
    }

    #[test]
    fn own_and_configured_origins_pass() {
        let p = policy(false, false);
        for origin in ["http://127.0.0.1:7411", "http://localhost:5173"] {
            assert_eq!(
                p.decide(
                    Exposure::Control,
                    &RequestFacts {
                        origin: Some(origin),
                        ..local()
                    }
                ),
                Ok(()),
                "{origin}"
            );
        }
        let https_origin_on_http = RequestFacts {
            origin: Some("https://127.0.0.1:7411"),
            ..local()
        };
        assert_eq!(
            p.decide(Exposure::Control, &https_origin_on_http),
            Err(Denial::Origin)
        );
    }

    #[test]
    fn api_key_is_required_only_when_configured() {
        let facts = RequestFacts {
            control_token: None,
            session: None,
            ..local()
        };
        assert_eq!(policy(false, false).decide(Exposure::Api, &facts), Ok(()));
        assert_eq!(
            policy(false, true).decide(Exposure::Api, &facts),
            Err(Denial::ApiKey)
        );
        let with_key = RequestFacts {
            api_key: Some(KEY),
            ..facts
        };
        assert_eq!(policy(false, true).decide(Exposure::Api, &with_key), Ok(()));
        let wrong = RequestFacts {
            api_key: Some("api-key-0123456788"),
            ..facts
        };
        assert_eq!(
            policy(false, true).decide(Exposure::Api, &wrong),
            Err(Denial::ApiKey)
        );
        // The control token is not an API key.
        assert_eq!(
            policy(false, true).decide(
                Exposure::Api,
                &RequestFacts {
                    api_key: Some(TOKEN),
                    ..facts
                }
            ),
            Err(Denial::ApiKey)
        );
    }

    #[test]
    fn remote_listener_admits_remote_peers_that_authenticate() {
        let p = policy(true, true);
        assert_eq!(p.decide(Exposure::Control, &remote()), Ok(()));
        assert_eq!(
            p.decide(
                Exposure::Control,
                &RequestFacts {
                    control_token: None,
                    session: None,
                    ..remote()
                }
            ),
            Err(Denial::ControlToken)
        );
        assert_eq!(
            p.decide(
                Exposure::Api,
                &RequestFacts {
                    api_key: Some(KEY),
                    ..remote()
                }
            ),
            Ok(())
        );
        assert_eq!(p.decide(Exposure::Api, &remote()), Err(Denial::ApiKey));
        // A remote peer cannot claim to be "localhost".
        assert_eq!(
            p.decide(
                Exposure::Control,
                &RequestFacts {
                    host: Some("localhost:7411"),
                    ..remote()
                }
            ),
            Err(Denial::Host)
        );
        assert_eq!(
            p.decide(
                Exposure::Control,
                &RequestFacts {
                    host: Some("moat.home.arpa:7411"),
                    ..remote()
                }
            ),
            Ok(())
        );
    }

    #[test]
    fn the_lan_listener_serves_only_open_and_lan() {
        assert!(
            Exposure::Open.served_on(ListenerKind::Lan)
                && Exposure::Lan.served_on(ListenerKind::Lan)
        );
        assert!(
            !Exposure::Api.served_on(ListenerKind::Lan)
                && !Exposure::Control.served_on(ListenerKind::Lan)
        );
        assert!(Exposure::Control.served_on(ListenerKind::Main));
        // A webhook is for whoever reaches the main listener, never the LAN one.
        assert!(!Exposure::Hook.served_on(ListenerKind::Lan));
        assert!(Exposure::Hook.served_on(ListenerKind::Main) && Exposure::Hook.checks().is_empty());
    }

    fn settings(bound: &str, key: Option<&str>, tls: bool) -> PolicySettings {
        PolicySettings {
            kind: ListenerKind::Main,
            bound: bound.parse().unwrap(),
            allowed_hosts: Vec::new(),
            cors_origin: None,
            api_key: key.map(|k| SecretString::new(k.into())),
            control_token: SecretString::new(TOKEN.into()),
            tls,
            allow_insecure_remote: false,
        }
    }

    #[test]
    fn a_remote_main_listener_cannot_be_made_open() {
        let problems = Policy::new(settings("0.0.0.0:7411", None, false)).unwrap_err();
        assert_eq!(
            problems,
            vec![
                ExposureProblem::NoApiKey {
                    listen: "0.0.0.0:7411".parse().unwrap()
                },
                ExposureProblem::NoTls {
                    listen: "0.0.0.0:7411".parse().unwrap()
                },
            ]
        );
        assert!(problems[0].to_string().contains("MOAT_API_KEY"));
        assert!(problems[1].to_string().contains("--allow-insecure-remote"));
        let mut opted_out = settings("0.0.0.0:7411", Some(KEY), false);
        opted_out.allow_insecure_remote = true;
        assert!(Policy::new(opted_out).is_ok());
        assert!(Policy::new(settings("[::1]:7411", None, false)).is_ok());
        // The LAN listener carries no Api or Control route: nothing to authenticate.
        let mut lan = settings("0.0.0.0:7412", None, false);
        lan.kind = ListenerKind::Lan;
        assert!(Policy::new(lan).is_ok());
    }

    #[test]
    fn weak_remote_keys_are_refused_with_the_reason() {
        for (key, weakness) in [
            ("                ", KeyWeakness::Whitespace),
            ("correct horse battery staple", KeyWeakness::Whitespace),
            // Eight characters in sixteen bytes: characters are counted, not bytes.
            ("éééééééé", KeyWeakness::TooShort { chars: 8 }),
            ("short-key", KeyWeakness::TooShort { chars: 9 }),
            ("aaaaaaaaaaaaaaaaaaaaaaaa", KeyWeakness::Repetitive),
            ("abababababababababababab", KeyWeakness::Repetitive),
            ("abcdefabcdefabcd", KeyWeakness::Repetitive),
        ] {
            assert_eq!(key_weakness(key), Some(weakness), "{key:?}");
            let problems = Policy::new(settings("192.0.2.1:7411", Some(key), true)).unwrap_err();
            assert!(
                matches!(problems[..], [ExposureProblem::WeakApiKey { .. }]),
                "{key:?}: {problems:?}"
            );
            assert!(
                !problems[0].to_string().contains(key),
                "the key is not quoted"
            );
        }
        for key in [
            "3f9a1c0e7b5d2a4f8e6c1b3d5a7f9e2c4b6d8a0c1e3f5a7b",
            "sk-moat-Zq4Rt8YpLm2Wx6Vn",
            "0123456789abcdef",
        ] {
            assert_eq!(key_weakness(key), None, "{key:?}");
        }
    }

    #[test]
    fn a_port_has_one_spelling() {
        assert_eq!(strict_port("7411"), Some(7411));
        for odd in [
            "+7411", "07411", "0", "", " 7411", "7411 ", "74111", "-1", "0x1cf3",
        ] {
            assert_ne!(strict_port(odd), Some(7411), "{odd:?}");
        }
        let p = policy(false, false);
        for host in ["127.0.0.1:+7411", "127.0.0.1:07411", "localhost:+7411"] {
            let facts = RequestFacts {
                host: Some(host),
                ..local()
            };
            assert_eq!(p.decide(Exposure::Api, &facts), Err(Denial::Host), "{host}");
        }
    }
}
