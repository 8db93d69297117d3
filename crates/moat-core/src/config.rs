//! Configuration: one typed struct, validated at load.
//!
//! Precedence, highest first: command-line flag > `MOAT_*` environment variable >
//! `MOAT_HOME/config.toml` > the embedded default. Every layer is merged into one TOML
//! tree and deserialized once, so an unknown key or a bad value is reported the same way
//! whichever layer it came from, naming the key and where it was set (the file, the
//! variable or the flag).
//!
//! ```
//! use moat_core::config::{Config, DEFAULT_PORT};
//! let c = Config::default();
//! assert_eq!(c.server.listen.port(), DEFAULT_PORT);
//! assert!(c.server.listen.ip().is_loopback());
//! assert!(c.server.lan_listen.is_none());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::home::Home;
use crate::secret::SecretRef;

pub mod agent;
pub mod channels;
pub mod egress;
pub mod llm;
pub mod radio;
pub mod sandbox;

/// The config.toml format this moat writes and reads (top-level `format = N`; a file
/// without it is format 1). A newer one is refused, not guessed at.
pub const CONFIG_FORMAT: u32 = 1;
/// The largest config.toml moat reads.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// The main listener's port unless configured otherwise.
pub const DEFAULT_PORT: u16 = 7411;
/// The largest request body accepted by default: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and the exposure of the server.
    pub server: ServerConfig,
    /// Credentials required from clients.
    pub auth: AuthConfig,
    /// Request size and time limits.
    pub limits: LimitsConfig,
    /// Per-IP rate limiting.
    pub rate_limit: RateLimitConfig,
    /// Logging.
    pub log: LogConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[llm]`: the gateway's backends and routes.
    pub llm: llm::LlmConfig,
    /// `[egress]`: the policy for URLs that someone other than the owner supplied.
    pub egress: egress::EgressConfig,
    /// `[sandbox]`: profiles for running tool commands isolated.
    pub sandbox: sandbox::SandboxConfig,
    /// `[agent]`: the assistant's model, limits and trust.
    pub agent: agent::AgentConfig,
    /// `[channels.NAME]`: the messaging services the assistant is reached through.
    pub channels: BTreeMap<String, channels::ChannelConfig>,
    /// `[pairing]`: the limits on pairing codes.
    pub pairing: channels::PairingConfig,
    /// `[radio]`: the home radio station and its music libraries.
    pub radio: radio::RadioConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The main listener: every route. Loopback unless authentication is configured.
    pub listen: SocketAddr,
    /// The optional LAN listener: only `Open` and `Lan` routes. Off by default.
    #[serde(with = "optional_addr", skip_serializing_if = "Option::is_none")]
    pub lan_listen: Option<SocketAddr>,
    /// Extra host names (no port) clients may use in `Host` to reach the main listener.
    pub allowed_hosts: Vec<String>,
    /// The one browser origin allowed by CORS and by the `Origin` check, e.g.
    /// `http://localhost:5173`. Must be a loopback origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origin: Option<String>,
    /// Allow a non-loopback main listener without TLS (credentials then cross the network
    /// in clear text).
    pub allow_insecure_remote: bool,
    /// TLS for the main listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// How long shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            lan_listen: None,
            allowed_hosts: Vec::new(),
            cors_origin: None,
            allow_insecure_remote: false,
            tls: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[server.tls]`: PEM files; relative paths are relative to `MOAT_HOME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The key clients must present on `Api` routes (`x-api-key` or
    /// `Authorization: Bearer`). A reference (`secret:NAME`, `env:VAR`), never a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Time allowed to receive a request's whole body, once its headers are in.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time allowed to receive a request's headers. Short: every client sends them at
    /// once, and a connection trickling them holds a place under the connection limits.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Most bytes all request bodies together may hold in memory at once; past it,
    /// requests with bodies get 503 until others finish.
    pub max_buffered_bytes: u64,
    /// Most open connections from one client IP (one /64 for IPv6); more are closed at once.
    pub max_connections_per_ip: u32,
    /// Most open connections in all; more are closed at once.
    pub max_connections: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_read_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_buffered_bytes: 256 * 1024 * 1024,
            max_connections_per_ip: 256,
            max_connections: 4096,
        }
    }
}

/// `[rate_limit]`: a token bucket per client IP address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per remote client IP (per /64 for IPv6).
    pub per_second: u32,
    /// Requests a remote IP may send at once before the rate applies.
    pub burst: u32,
    /// Sustained requests per second per local client: a program on this machine,
    /// counted by the credential it presents (every local program shares 127.0.0.1).
    /// High, so that it never binds before a real upstream would: a batch eval against
    /// a fast local model must not meet moat's 429s.
    pub loopback_per_second: u32,
    /// Requests a local client may send at once before its rate applies.
    pub loopback_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 200,
            loopback_per_second: 1000,
            loopback_burst: 4000,
        }
    }
}

/// `[audit]`: the tamper-evident audit log under `MOAT_HOME/audit/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A signed checkpoint after this many entries...
    pub checkpoint_every: u64,
    /// ...or after this long with entries not yet checkpointed.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// A log segment is closed once it reaches this many bytes.
    pub segment_max_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            segment_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Least severe level written: `error`, `warn`, `info`, `debug` or `trace`.
    pub level: LogLevel,
    /// `text` for people, `json` for machines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level name as `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Serde for `Option<SocketAddr>` where `"off"` or `""` mean "no listener".
mod optional_addr {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(
        v: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "" | "off" => Ok(None),
            t => t.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{t:?} is not an address:port (like \"0.0.0.0:7412\") or \"off\""
                ))
            }),
        }
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

/// How a string from the environment or a flag becomes a TOML value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated strings.
    List,
}

/// The `MOAT_*` variables that set config keys, and the keys they set.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("MOAT_LISTEN", "server.listen"),
    ("MOAT_LAN_LISTEN", "server.lan_listen"),
    ("MOAT_ALLOWED_HOSTS", "server.allowed_hosts"),
    ("MOAT_CORS_ORIGIN", "server.cors_origin"),
    ("MOAT_ALLOW_INSECURE_REMOTE", "server.allow_insecure_remote"),
    ("MOAT_TLS_CERT", "server.tls.cert"),
    ("MOAT_TLS_KEY", "server.tls.key"),
    ("MOAT_SHUTDOWN_GRACE", "server.shutdown_grace"),
    ("MOAT_MAX_BODY_BYTES", "limits.max_body_bytes"),
    ("MOAT_BODY_READ_TIMEOUT", "limits.body_read_timeout"),
    ("MOAT_HEADER_TIMEOUT", "limits.header_timeout"),
    ("MOAT_MAX_BUFFERED_BYTES", "limits.max_buffered_bytes"),
    (
        "MOAT_MAX_CONNECTIONS_PER_IP",
        "limits.max_connections_per_ip",
    ),
    ("MOAT_MAX_CONNECTIONS", "limits.max_connections"),
    ("MOAT_RATE_LIMIT_PER_SECOND", "rate_limit.per_second"),
    ("MOAT_RATE_LIMIT_BURST", "rate_limit.burst"),
    (
        "MOAT_RATE_LIMIT_LOOPBACK_PER_SECOND",
        "rate_limit.loopback_per_second",
    ),
    (
        "MOAT_RATE_LIMIT_LOOPBACK_BURST",
        "rate_limit.loopback_burst",
    ),
    ("MOAT_LOG", "log.level"),
    ("MOAT_LOG_FORMAT", "log.format"),
    ("MOAT_AUDIT_CHECKPOINT_EVERY", "audit.checkpoint_every"),
    (
        "MOAT_AUDIT_CHECKPOINT_INTERVAL",
        "audit.checkpoint_interval",
    ),
    ("MOAT_AUDIT_SEGMENT_MAX_BYTES", "audit.segment_max_bytes"),
    ("MOAT_LLM_UPSTREAM_TIMEOUT", "llm.upstream_timeout"),
    ("MOAT_LLM_DEFAULT_MAX_TOKENS", "llm.default_max_tokens"),
    ("MOAT_LLM_RESPONSES_RETENTION", "llm.responses_retention"),
    ("MOAT_EGRESS_ALLOW_HOSTS", "egress.allow_hosts"),
    ("MOAT_EGRESS_ALLOW_CIDRS", "egress.allow_cidrs"),
    ("MOAT_EGRESS_BLOCK_HOSTS", "egress.block_hosts"),
    ("MOAT_EGRESS_BLOCK_CIDRS", "egress.block_cidrs"),
    ("MOAT_EGRESS_TOTAL_TIMEOUT", "egress.total_timeout"),
];

/// The variable whose value is the API key itself; it sets `auth.api_key = "env:MOAT_API_KEY"`.
pub const API_KEY_ENV: &str = "MOAT_API_KEY";

fn kind_of(key: &str) -> Kind {
    match key {
        "server.allowed_hosts"
        | "egress.allow_hosts"
        | "egress.allow_cidrs"
        | "egress.block_hosts"
        | "egress.block_cidrs" => Kind::List,
        "server.allow_insecure_remote" => Kind::Bool,
        "limits.max_body_bytes"
        | "limits.max_buffered_bytes"
        | "limits.max_connections_per_ip"
        | "limits.max_connections"
        | "rate_limit.per_second"
        | "rate_limit.burst"
        | "rate_limit.loopback_per_second"
        | "rate_limit.loopback_burst"
        | "audit.checkpoint_every"
        | "audit.segment_max_bytes"
        | "llm.default_max_tokens" => Kind::Int,
        _ => Kind::Str,
    }
}

/// One setting from a flag: the dotted key, the value as typed, and the flag's name.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted key, e.g. `server.listen`.
    pub key: &'static str,
    /// The value as given.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

impl Override {
    /// A setting from a command-line flag.
    pub fn flag(flag: &'static str, key: &'static str, value: impl Into<String>) -> Self {
        Self {
            key,
            value: value.into(),
            origin: Origin::Flag(flag),
        }
    }
}

/// A configuration that failed to load. Each message names the key and where it was set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that moat does not know.
    #[error("{origin}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// Where it was set.
        origin: Origin,
        /// The dotted key.
        key: String,
        /// The keys allowed at that place.
        hint: String,
    },
    /// A key with a value of the wrong type or out of range.
    #[error("{origin}: invalid value for `{key}`: {message}")]
    Invalid {
        /// Where it was set.
        origin: Origin,
        /// The dotted key.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The file was written for a newer moat.
    #[error(
        "{path} is config format {found}, newer than this moat knows ({known}); upgrade moat (`moat --version` says which this is)"
    )]
    TooNew {
        /// The config file.
        path: PathBuf,
        /// Its `format`.
        found: i64,
        /// The newest this moat reads.
        known: u32,
    },
}

/// A value that parsed but cannot be used: which key, and what is wrong with it. The
/// problem says what is expected, so it names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {problem}")]
pub struct InvalidValue {
    /// The dotted key, e.g. `llm.backends.local.base_url`.
    pub key: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

impl<K: Into<String>> From<(K, String)> for InvalidValue {
    fn from((key, problem): (K, String)) -> Self {
        Self {
            key: key.into(),
            problem,
        }
    }
}

/// A loaded configuration and where each overridden key came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The config file path (whether or not it exists).
    pub file: PathBuf,
    /// Whether the file exists.
    pub file_exists: bool,
    /// The file's `format` (1 when it names none, or there is no file).
    pub format: u32,
    origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// Where `key` was set: a flag, a variable, the file, or `None` for the default.
    pub fn origin_of(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }
}

impl Config {
    /// Loads the configuration for `home` with the process environment and `flags`.
    pub fn load(home: &Home, flags: &[Override]) -> Result<Loaded, ConfigError> {
        Self::load_with(home, |name| std::env::var(name).ok(), flags)
    }

    /// Like [`Config::load`], with the environment given as a function (for tests).
    pub fn load_with(
        home: &Home,
        env: impl Fn(&str) -> Option<String>,
        flags: &[Override],
    ) -> Result<Loaded, ConfigError> {
        let file = home.config_file();
        let read = crate::atomic::read_regular(&file, MAX_CONFIG_BYTES).and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
        });
        let (mut tree, file_exists) = match read {
            Ok(text) => {
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax {
                            path: file.clone(),
                            message: syntax_message(&text, &e),
                        })?;
                (table, true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (toml::Table::new(), false),
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };

        let format = match tree.remove("format") {
            None => 1,
            Some(toml::Value::Integer(n)) if n > i64::from(CONFIG_FORMAT) => {
                return Err(ConfigError::TooNew {
                    path: file,
                    found: n,
                    known: CONFIG_FORMAT,
                });
            }
            Some(toml::Value::Integer(n)) if n >= 1 => n as u32,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    origin: Origin::File(file.clone()),
                    key: "format".into(),
                    message: format!("must be a whole number from 1 to {CONFIG_FORMAT}"),
                });
            }
        };
        let mut origins = BTreeMap::new();
        let mut layer = |key: &'static str, value: toml::Value, origin: Origin| {
            set_dotted(&mut tree, key, value);
            origins.insert(key.to_string(), origin);
        };
        for &(var, key) in ENV_KEYS {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                layer(key, typed(key, &v), Origin::Env(var));
            }
        }
        if env(API_KEY_ENV).is_some_and(|v| !v.is_empty()) {
            layer(
                "auth.api_key",
                toml::Value::String(format!("env:{API_KEY_ENV}")),
                Origin::Env(API_KEY_ENV),
            );
        }
        for o in flags {
            layer(o.key, typed(o.key, &o.value), o.origin.clone());
        }

        // The layer that set `path`, or for a table (a missing field in `server.tls`), a
        // layer that set something inside it; else the file.
        let origin_for = |path: &str| -> Origin {
            origins
                .iter()
                .filter(|(k, _)| path == k.as_str() || path.starts_with(&format!("{k}.")))
                .max_by_key(|(k, _)| k.len())
                .or_else(|| {
                    origins
                        .iter()
                        .find(|(k, _)| k.starts_with(&format!("{path}.")))
                })
                .map(|(_, o)| o.clone())
                .unwrap_or_else(|| Origin::File(file.clone()))
        };

        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(tree))
            .map_err(|e| {
                let path = e.path().to_string();
                // toml appends "in `key`" on a line of its own; the key is named already.
                let message = e
                    .inner()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                match unknown_field(&message) {
                    Some((field, hint)) => {
                        let key = if path == "." || path.ends_with(&field) {
                            path.trim_start_matches('.').to_string()
                        } else {
                            format!("{path}.{field}")
                        };
                        ConfigError::UnknownKey {
                            origin: origin_for(&key),
                            key,
                            hint,
                        }
                    }
                    None => ConfigError::Invalid {
                        origin: origin_for(&path),
                        key: path,
                        message,
                    },
                }
            })?;

        config.resolve_paths(home.root());
        let invalid = |e: InvalidValue| ConfigError::Invalid {
            origin: origin_for(&e.key),
            key: e.key,
            message: e.problem,
        };
        config
            .validate()
            .map_err(InvalidValue::from)
            .map_err(invalid)?;
        llm::validate(&config.llm).map_err(invalid)?;
        egress::validate(&config.egress).map_err(invalid)?;
        sandbox::validate(&config.sandbox).map_err(invalid)?;
        agent::validate(&config.agent).map_err(invalid)?;
        for (name, server) in &config.agent.mcp {
            if !server.command.is_empty() && config.sandbox.profile(&server.profile).is_none() {
                return Err(invalid(InvalidValue {
                    key: format!("agent.mcp.{name}.profile"),
                    problem: format!(
                        "names the sandbox profile {:?}, which is not configured; add [sandbox.profiles.{}] or leave it out for \"default\"",
                        server.profile, server.profile
                    ),
                }));
            }
        }
        channels::validate(&config.channels, &config.pairing).map_err(invalid)?;
        radio::validate(&config.radio)
            .map_err(|(key, problem)| InvalidValue { key, problem })
            .map_err(invalid)?;
        Ok(Loaded {
            config,
            file,
            file_exists,
            format,
            origins,
        })
    }

    fn resolve_paths(&mut self, home: &Path) {
        for c in self.channels.values_mut() {
            if let Some(p) = &mut c.ca_file
                && p.is_relative()
            {
                *p = home.join(&*p);
            }
        }
        if let Some(tls) = &mut self.server.tls {
            for p in [&mut tls.cert, &mut tls.key] {
                if p.is_relative() {
                    *p = home.join(&*p);
                }
            }
        }
    }

    /// Checks values that types alone cannot: ranges, formats, combinations.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let s = &self.server;
        if let Some(lan) = s.lan_listen
            && lan == s.listen
            && lan.port() != 0
        {
            return Err(("server.lan_listen", "must differ from server.listen".into()));
        }
        for h in &s.allowed_hosts {
            if !valid_host_name(h) {
                return Err((
                    "server.allowed_hosts",
                    format!(
                        "{h:?} is not a host name or IP address (give names without scheme or port)"
                    ),
                ));
            }
        }
        if let Some(origin) = &s.cors_origin
            && !is_local_origin(origin)
        {
            return Err((
                "server.cors_origin",
                format!(
                    "{origin:?} is not a local origin; use scheme://host[:port] with a loopback host, like \"http://localhost:5173\""
                ),
            ));
        }
        let a = &self.audit;
        if a.checkpoint_every == 0 {
            return Err(("audit.checkpoint_every", "must be at least 1".into()));
        }
        if a.checkpoint_interval.is_zero() || a.checkpoint_interval > Duration::from_secs(86_400) {
            return Err((
                "audit.checkpoint_interval",
                "must be between 1ms and 24h, like \"60s\"".into(),
            ));
        }
        if !(4096..=1 << 40).contains(&a.segment_max_bytes) {
            return Err((
                "audit.segment_max_bytes",
                "must be between 4096 and 1099511627776 (1 TiB)".into(),
            ));
        }
        if s.shutdown_grace > Duration::from_secs(600) {
            return Err(("server.shutdown_grace", "must be at most 10m".into()));
        }
        if !(1..=1 << 30).contains(&self.limits.max_body_bytes) {
            return Err((
                "limits.max_body_bytes",
                "must be between 1 and 1073741824 (1 GiB)".into(),
            ));
        }
        if self.limits.body_read_timeout.is_zero()
            || self.limits.body_read_timeout > Duration::from_secs(600)
        {
            return Err((
                "limits.body_read_timeout",
                "must be between 1ms and 10m, like \"30s\"".into(),
            ));
        }
        if self.limits.header_timeout.is_zero()
            || self.limits.header_timeout > Duration::from_secs(600)
        {
            return Err((
                "limits.header_timeout",
                "must be between 1ms and 10m, like \"10s\"".into(),
            ));
        }
        if self.limits.max_buffered_bytes < self.limits.max_body_bytes {
            return Err((
                "limits.max_buffered_bytes",
                "must be at least limits.max_body_bytes, or no body of the largest size could be read".into(),
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_ip == 0 {
            return Err((
                "limits.max_connections",
                "connection limits must be at least 1".into(),
            ));
        }
        if self.rate_limit.per_second == 0 {
            return Err(("rate_limit.per_second", "must be at least 1".into()));
        }
        if self.rate_limit.burst == 0 {
            return Err(("rate_limit.burst", "must be at least 1".into()));
        }
        if self.rate_limit.loopback_per_second == 0 {
            return Err((
                "rate_limit.loopback_per_second",
                "must be at least 1".into(),
            ));
        }
        if self.rate_limit.loopback_burst == 0 {
            return Err(("rate_limit.loopback_burst", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The configuration as TOML; secrets appear only as references.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The parser's message with the line and column, but not the quoted source line: that
/// line could hold a secret pasted in the wrong place.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let position = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", position.unwrap_or_default(), e.message().trim())
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" into the field and a hint.
fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let hint = rest
        .trim_start_matches(',')
        .trim()
        .strip_prefix("expected ")
        .map(|e| format!("; expected {}", e.replace("one of ", "one of: ")))
        .unwrap_or_default();
    Some((field.to_string(), hint))
}

/// Converts a string from a variable or flag into the TOML value its key expects.
/// A string that doesn't convert is passed on as a string, so the type error names the key.
fn typed(key: &str, raw: &str) -> toml::Value {
    let raw = raw.trim();
    match kind_of(key) {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => raw
            .parse::<i64>()
            .map_or_else(|_| toml::Value::String(raw.into()), toml::Value::Integer),
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
            "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
            _ => toml::Value::String(raw.into()),
        },
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
    }
}

fn set_dotted(tree: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("keys are non-empty");
    let mut table = tree;
    for part in parts {
        let entry = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            // The file had a scalar where a table belongs; the override wins.
            *entry = toml::Value::Table(toml::Table::new());
        }
        table = entry.as_table_mut().expect("just made a table");
    }
    table.insert(last.to_string(), value);
}

/// Whether `host` is a DNS name or an IP literal, without scheme, port or path.
pub fn valid_host_name(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

/// Whether `host` (no port; IPv6 with or without brackets) names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    // Only the name itself: `*.localhost` is loopback only where the resolver special-cases
    // it, and a hostile DNS server could answer for it elsewhere. Add such names to
    // `server.allowed_hosts` if you use them.
    if host == "localhost" {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `origin` is `http(s)://host[:port]` with a loopback host and nothing else.
pub fn is_local_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
        return false;
    }
    let (host, port) = split_host_port(rest);
    port.is_none_or(|p| p.parse::<u16>().is_ok()) && is_loopback_host(host)
}

/// Splits `host[:port]`, understanding bracketed IPv6 (`[::1]:80`).
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => {
                let (h, rest) = s.split_at(end + 1);
                (h, rest.strip_prefix(':'))
            }
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn home_with(toml: &str) -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::write(home.config_file(), toml).unwrap();
        (dir, home)
    }

    fn load(toml: &str, env: &[(&str, &str)], flags: &[Override]) -> Result<Loaded, ConfigError> {
        let (_d, home) = home_with(toml);
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(&home, |k| env.get(k).cloned(), flags)
    }

    #[test]
    fn the_format_is_read_and_a_newer_one_refused() {
        assert_eq!(load("", &[], &[]).unwrap().format, 1);
        assert_eq!(load("format = 1\n[server]\n", &[], &[]).unwrap().format, 1);
        let err = load("format = 2\n", &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("config format 2, newer than this moat knows (1)"),
            "{err}"
        );
        for bad in ["format = 0\n", "format = \"1\"\n"] {
            let err = load(bad, &[], &[]).unwrap_err().to_string();
            assert!(err.contains("`format`"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = Config::load_with(&Home::at(dir.path()), |_| None, &[]).unwrap();
        assert!(!loaded.file_exists);
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn precedence_is_flag_then_env_then_file() {
        let file = "[server]\nlisten = \"127.0.0.1:1000\"\nlan_listen = \"0.0.0.0:1001\"\n[limits]\nbody_read_timeout = \"5s\"\n";
        let env = [
            ("MOAT_LISTEN", "127.0.0.1:2000"),
            ("MOAT_BODY_READ_TIMEOUT", "2s"),
        ];
        let flags = [Override::flag(
            "--listen",
            "server.listen",
            "127.0.0.1:3000",
        )];
        let l = load(file, &env, &flags).unwrap();
        assert_eq!(l.config.server.listen.port(), 3000);
        assert_eq!(l.config.server.lan_listen.unwrap().port(), 1001);
        assert_eq!(l.config.limits.body_read_timeout, Duration::from_secs(2));
        assert_eq!(
            l.origin_of("server.listen"),
            Some(&Origin::Flag("--listen"))
        );
        assert_eq!(
            l.origin_of("limits.body_read_timeout"),
            Some(&Origin::Env("MOAT_BODY_READ_TIMEOUT"))
        );
    }

    #[test]
    fn unknown_key_names_key_file_and_alternatives() {
        let err = load("[server]\nlisten_addr = \"x\"\n", &[], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{msg}");
        assert!(msg.contains("server.listen_addr"), "{msg}");
        assert!(msg.contains("config.toml"), "{msg}");
        assert!(msg.contains("listen"), "{msg}");

        let err = load("colour = 1\n", &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`colour`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_where_it_was_set() {
        let err = load("[server]\nlisten = \"nope\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.listen") && err.contains("config.toml"),
            "{err}"
        );

        let err = load("", &[("MOAT_RATE_LIMIT_BURST", "many")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rate_limit.burst") && err.contains("MOAT_RATE_LIMIT_BURST"),
            "{err}"
        );

        let err = load(
            "",
            &[],
            &[Override::flag("--lan-listen", "server.lan_listen", "x")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("server.lan_listen") && err.contains("--lan-listen"),
            "{err}"
        );

        let err = load("[rate_limit]\nper_second = 0\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rate_limit.per_second") && err.contains("at least 1"),
            "{err}"
        );

        let err = load(
            "[server]\ncors_origin = \"https://evil.example\"\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.cors_origin"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = load("[server\nlisten = 1", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.toml") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn api_key_is_a_reference_never_a_value() {
        let err = load(
            "[auth]\napi_key = \"sk-ant-canary-in-file-0000\"\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("auth.api_key") && !err.contains("canary"),
            "{err}"
        );

        let l = load("", &[("MOAT_API_KEY", "sk-canary-env-value-123456")], &[]).unwrap();
        assert_eq!(
            l.config.auth.api_key,
            Some(SecretRef::Env("MOAT_API_KEY".into()))
        );
        let shown = l.config.to_toml();
        assert!(
            shown.contains("env:MOAT_API_KEY") && !shown.contains("canary"),
            "{shown}"
        );
    }

    #[test]
    fn lan_listen_can_be_turned_off() {
        let l = load(
            "[server]\nlan_listen = \"0.0.0.0:1\"\n",
            &[("MOAT_LAN_LISTEN", "off")],
            &[],
        )
        .unwrap();
        assert_eq!(l.config.server.lan_listen, None);
    }

    #[test]
    fn tls_paths_are_relative_to_home() {
        let (dir, home) = home_with("[server.tls]\ncert = \"cert.pem\"\nkey = \"/abs/key.pem\"\n");
        let l = Config::load_with(&home, |_| None, &[]).unwrap();
        let tls = l.config.server.tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("cert.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/key.pem"));
    }

    #[test]
    fn shown_config_loads_back_to_the_same() {
        let l = load("[server]\nallowed_hosts = [\"moat.home.arpa\"]\n", &[], &[]).unwrap();
        let (_d, home) = home_with(&l.config.to_toml());
        assert_eq!(
            Config::load_with(&home, |_| None, &[]).unwrap().config,
            l.config
        );
    }

    #[test]
    fn hosts_and_origins() {
        assert!(
            is_loopback_host("localhost")
                && is_loopback_host("[::1]")
                && is_loopback_host("127.0.0.2")
        );
        assert!(is_loopback_host("LOCALHOST."));
        assert!(
            !is_loopback_host("app.localhost"),
            "subdomains only via allowed_hosts"
        );
        assert!(!is_loopback_host("localhost.evil.com") && !is_loopback_host("10.0.0.1"));
        assert!(is_local_origin("http://localhost:5173") && is_local_origin("https://[::1]"));
        assert!(!is_local_origin("http://localhost:5173/path") && !is_local_origin("null"));
        assert!(!is_local_origin("http://user@localhost"));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host_port("a:1"), ("a", Some("1")));
        assert_eq!(split_host_port("::1"), ("::1", None));
    }
}
