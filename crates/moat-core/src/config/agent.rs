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
        }
    }
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
