//! `[agent]`: the assistant. Which model it thinks with, how far one turn may go, and how
//! much it is trusted to act alone in each domain. Data only; `moat-agent` enforces it.
//!
//! ```toml
//! [agent]
//! model = "claude-sonnet-4-5"          # any model name the router serves
//! max_steps = 8                         # model calls in one turn
//! max_tool_time = "2m"                  # tool run time in one turn, all calls together
//! session_idle = "24h"                  # a conversation idle this long starts afresh
//! approval_timeout = "10m"              # a call waiting for the owner is denied after this
//! promote_after = 20                    # approved, successful calls that earn a level
//! messages_per_minute = 20              # per sender
//! token_budget = 1000000                # per conversation, over token_window
//! token_window = "1h"
//! max_concurrent_turns = 4              # over all conversations
//!
//! [agent.trust]                         # starting levels: 0 none, 1 inform, 2 suggest,
//! files = 3                             # 3 act and report, 4 autonomous
//! shell = 2
//!
//! [agent.ceilings]                      # the most each domain may ever reach
//! shell = 3
//!
//! [agent.secrets.github-token]          # a vault secret the model may use by handle
//! tools = ["http_request"]
//! hosts = ["api.github.com"]            # where a request carrying it may go
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// The trust domains a tool can belong to.
pub const DOMAINS: [&str; 9] = [
    "messaging",
    "files",
    "web",
    "shell",
    "code",
    "email",
    "calendar",
    "integrations",
    "system",
];

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The model the assistant calls, by any name the router serves.
    pub model: String,
    /// Most model calls in one turn.
    pub max_steps: u32,
    /// Most tool run time in one turn, all calls together.
    #[serde(with = "humantime_serde")]
    pub max_tool_time: Duration,
    /// Most output tokens one model call may ask for.
    pub max_tokens: u32,
    /// A session idle this long is forgotten and starts afresh.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A call waiting for the owner's approval is denied after this.
    #[serde(with = "humantime_serde")]
    pub approval_timeout: Duration,
    /// Approved, successful calls in a domain, with no denial, that raise its level by
    /// one (up to its ceiling). 0 turns promotion off.
    pub promote_after: u32,
    /// Starting trust level per domain (0-4); unnamed domains start at 1 (inform).
    pub trust: BTreeMap<String, u8>,
    /// The most each domain may reach, by promotion or by `moat trust set`; unnamed
    /// domains may reach 3 (act and report). 4 (autonomous) is never reached unasked.
    pub ceilings: BTreeMap<String, u8>,
    /// Vault secrets the model may use by handle (`{{secret:NAME}}`), and where.
    pub secrets: BTreeMap<String, SecretUse>,
    /// Most messages one sender may send a minute.
    pub messages_per_minute: u32,
    /// Most tokens one conversation may use over `token_window`.
    pub token_budget: u64,
    /// The sliding window `token_budget` counts over.
    #[serde(with = "humantime_serde")]
    pub token_window: Duration,
    /// Most turns running at once, over all conversations.
    pub max_concurrent_turns: u32,
    /// Model Context Protocol servers whose tools the assistant may use, by name.
    pub mcp: BTreeMap<String, McpServerConfig>,
}

/// One `[agent.mcp.NAME]`: a Model Context Protocol server, either a program spoken to
/// over stdio inside the sandbox (`command`) or a streamable HTTP endpoint reached
/// through the egress policy (`url`). Its tools are offered as `mcp__NAME__TOOL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpServerConfig {
    /// A stdio server: the program and its arguments.
    pub command: Vec<String>,
    /// The sandbox profile a stdio server runs under (`[sandbox.profiles.NAME]`).
    pub profile: String,
    /// Environment variables for a stdio server.
    pub env: BTreeMap<String, String>,
    /// Environment variables of a stdio server whose values are vault secrets:
    /// `VARIABLE = "secret-name"`.
    pub env_secrets: BTreeMap<String, String>,
    /// A streamable HTTP server's URL.
    pub url: Option<String>,
    /// A vault secret an HTTP server gets as `Authorization: Bearer`.
    pub bearer_secret: Option<String>,
    /// The trust domain its tools belong to.
    pub domain: String,
    /// Its tools that only read: a domain at level 1 (inform) still offers them.
    pub read_only: Vec<String>,
    /// Only these of its tools are offered; all when empty.
    pub tools: Vec<String>,
    /// Longest one call may take (the turn's tool time bounds it too).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for McpServerConfig {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            profile: "default".into(),
            env: BTreeMap::new(),
            env_secrets: BTreeMap::new(),
            url: None,
            bearer_secret: None,
            domain: "integrations".into(),
            read_only: Vec::new(),
            tools: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Whether `name` may name an MCP server: its tools are called `mcp__NAME__TOOL`, which
/// must stay within the 64 characters of `[A-Za-z0-9_-]` that model APIs accept.
pub fn valid_mcp_name(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Where one secret may be used by handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretUse {
    /// The tools whose arguments may carry it.
    pub tools: Vec<String>,
    /// For a tool that sends it somewhere (`http_request`): the hosts it may go to
    /// (`api.github.com`, `*.example.com`). Such a tool may not send it anywhere when
    /// this is empty.
    pub hosts: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            model: "claude-sonnet-4-5".into(),
            max_steps: 8,
            max_tool_time: Duration::from_secs(120),
            max_tokens: 4096,
            session_idle: Duration::from_secs(24 * 3600),
            approval_timeout: Duration::from_secs(600),
            promote_after: 20,
            trust: BTreeMap::new(),
            ceilings: BTreeMap::new(),
            secrets: BTreeMap::new(),
            messages_per_minute: 20,
            token_budget: 1_000_000,
            token_window: Duration::from_secs(3600),
            max_concurrent_turns: 4,
            mcp: BTreeMap::new(),
        }
    }
}

fn mcp_rules(name: &str, s: &McpServerConfig) -> Result<(), (String, String)> {
    let key = |k: &str| format!("agent.mcp.{name}.{k}");
    if !valid_mcp_name(name) {
        return Err((
            format!("agent.mcp.{name}"),
            "an MCP server's name is 1-24 lowercase letters, digits or '-'".into(),
        ));
    }
    match (&s.url, s.command.is_empty()) {
        (Some(_), false) => {
            return Err((
                key("url"),
                "give either command (a stdio server) or url (an HTTP server), not both".into(),
            ));
        }
        (None, true) => {
            return Err((
                key("command"),
                "give command = [\"program\", \"arg\"...] (a stdio server) or url = \"https://...\" (an HTTP server)".into(),
            ));
        }
        (Some(url), true) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err((key("url"), "must be an http:// or https:// URL".into()));
            }
            if !s.env.is_empty() || !s.env_secrets.is_empty() {
                return Err((
                    key("env"),
                    "applies to stdio servers (command); an HTTP server gets bearer_secret".into(),
                ));
            }
        }
        (None, false) => {
            if s.bearer_secret.is_some() {
                return Err((
                    key("bearer_secret"),
                    "applies to HTTP servers (url); a stdio server gets env_secrets".into(),
                ));
            }
            if s.command[0].trim().is_empty() {
                return Err((key("command"), "the program is empty".into()));
            }
        }
    }
    if !DOMAINS.contains(&s.domain.as_str()) {
        return Err((
            key("domain"),
            format!("is not a trust domain; use one of {}", DOMAINS.join(", ")),
        ));
    }
    if s.timeout.is_zero() {
        return Err((key("timeout"), "must be longer than 0s".into()));
    }
    Ok(())
}

/// Checks `[agent]`; the error names the key.
pub fn validate(a: &AgentConfig) -> Result<(), InvalidValue> {
    rules(a).map_err(InvalidValue::from)
}

fn rules(a: &AgentConfig) -> Result<(), (String, String)> {
    if a.model.trim().is_empty() {
        return Err((
            "agent.model".into(),
            "must name a model the router serves".into(),
        ));
    }
    for (key, n) in [
        ("agent.max_steps", u64::from(a.max_steps)),
        (
            "agent.messages_per_minute",
            u64::from(a.messages_per_minute),
        ),
        (
            "agent.max_concurrent_turns",
            u64::from(a.max_concurrent_turns),
        ),
        ("agent.token_budget", a.token_budget),
    ] {
        if n == 0 {
            return Err((key.into(), "must be at least 1".into()));
        }
    }
    if a.token_window.is_zero() {
        return Err(("agent.token_window".into(), "must be longer than 0s".into()));
    }
    for (table, map) in [("agent.trust", &a.trust), ("agent.ceilings", &a.ceilings)] {
        for (domain, level) in map {
            if !DOMAINS.contains(&domain.as_str()) {
                return Err((
                    format!("{table}.{domain}"),
                    format!("is not a trust domain; use one of {}", DOMAINS.join(", ")),
                ));
            }
            if *level > 4 {
                return Err((
                    format!("{table}.{domain}"),
                    "must be a level from 0 (none) to 4 (autonomous)".into(),
                ));
            }
        }
    }
    for (name, usage) in &a.secrets {
        if let Some(bad) = usage
            .hosts
            .iter()
            .find(|h| !super::egress::valid_host_pattern(h))
        {
            return Err((
                format!("agent.secrets.{name}.hosts"),
                format!("{bad:?} is not a host name or *.name pattern"),
            ));
        }
    }
    for (name, server) in &a.mcp {
        mcp_rules(name, server)?;
    }
    for (domain, level) in &a.trust {
        let ceiling = a.ceilings.get(domain).copied().unwrap_or(3);
        if *level > ceiling {
            return Err((
                format!("agent.trust.{domain}"),
                format!("is above its ceiling ({ceiling}); raise agent.ceilings.{domain} first"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(toml_text: &str) -> (String, String) {
        let config: AgentConfig = toml::from_str(toml_text).unwrap();
        rules(&config).unwrap_err()
    }

    #[test]
    fn mcp_servers_are_stdio_or_http_and_say_which_key_is_wrong() {
        let ok: AgentConfig = toml::from_str(
            "[mcp.files]\ncommand = [\"mcp-files\", \"--root\", \"/srv\"]\nread_only = [\"list\"]\n\n[mcp.remote-api]\nurl = \"https://mcp.example.com/mcp\"\nbearer_secret = \"api\"\ndomain = \"web\"\n",
        )
        .unwrap();
        rules(&ok).unwrap();
        assert_eq!(ok.mcp["files"].profile, "default");
        assert_eq!(ok.mcp["files"].domain, "integrations");

        for (text, key, says) in [
            ("[mcp.x]\n", "agent.mcp.x.command", "give command"),
            (
                "[mcp.x]\ncommand = [\"a\"]\nurl = \"https://h/\"\n",
                "agent.mcp.x.url",
                "not both",
            ),
            (
                "[mcp.x]\nurl = \"ftp://h/\"\n",
                "agent.mcp.x.url",
                "http:// or https://",
            ),
            (
                "[mcp.x]\nurl = \"https://h/\"\nenv_secrets = { T = \"t\" }\n",
                "agent.mcp.x.env",
                "stdio servers",
            ),
            (
                "[mcp.x]\ncommand = [\"a\"]\nbearer_secret = \"t\"\n",
                "agent.mcp.x.bearer_secret",
                "HTTP servers",
            ),
            (
                "[mcp.x]\ncommand = [\"a\"]\ndomain = \"everything\"\n",
                "agent.mcp.x.domain",
                "not a trust domain",
            ),
            (
                "[mcp.Bad_Name]\ncommand = [\"a\"]\n",
                "agent.mcp.Bad_Name",
                "lowercase",
            ),
        ] {
            let (k, why) = refused(text);
            assert_eq!(k, key, "{text}");
            assert!(why.contains(says), "{text}: {why}");
        }
    }
}
