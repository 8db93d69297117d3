//! `[egress]`: what moat may fetch when a URL comes from someone other than the owner
//! (a model's tool call, a channel, a remote server). Data only; `moat-net` enforces it.
//!
//! ```toml
//! [egress]
//! allowed_ports = [80, 443]
//! allow_hosts = ["wiki.home.arpa"]      # lifts the built-in name rules for these names
//! allow_cidrs = ["192.168.1.20/32"]     # lifts the built-in address rules for these ranges
//! block_hosts = ["*.example.net"]       # always refused (wins over allow lists)
//! block_cidrs = ["203.0.113.0/24"]
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// `[egress]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Ports a URL may name (its scheme's default port when it names none).
    pub allowed_ports: Vec<u16>,
    /// Names exempt from the built-in name rules (`localhost`, `*.internal`, ...):
    /// `example.com` or `*.example.com`. Their addresses are still checked.
    pub allow_hosts: Vec<String>,
    /// Names always refused.
    pub block_hosts: Vec<String>,
    /// Address ranges exempt from the built-in address rules, like `192.168.1.0/24`.
    pub allow_cidrs: Vec<String>,
    /// Address ranges always refused.
    pub block_cidrs: Vec<String>,
    /// Most redirects followed for one request.
    pub max_redirects: u8,
    /// Longest wait for a TCP connection (the TLS handshake counts against
    /// `total_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest a whole fetch may take, redirects and body included.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// Largest response body read.
    pub max_response_bytes: u64,
    /// Most fetches in flight for one session (one conversation, one channel).
    pub max_concurrent_per_session: u32,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            allowed_ports: vec![80, 443],
            allow_hosts: Vec::new(),
            block_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            block_cidrs: Vec::new(),
            max_redirects: 5,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_response_bytes: 10 * 1024 * 1024,
            max_concurrent_per_session: 10,
        }
    }
}

/// Whether `text` has the shape of a host pattern (`name` or `*.name`); the full IDNA
/// check happens where the policy is built.
pub fn valid_host_pattern(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.' || c == '_')
}

/// Checks `[egress]`; the error names the key.
pub fn validate(e: &EgressConfig) -> Result<(), InvalidValue> {
    rules(e).map_err(InvalidValue::from)
}

fn rules(e: &EgressConfig) -> Result<(), (&'static str, String)> {
    if e.allowed_ports.is_empty() || e.allowed_ports.contains(&0) {
        return Err((
            "egress.allowed_ports",
            "list at least one port between 1 and 65535, like [80, 443]".into(),
        ));
    }
    for (key, list) in [
        ("egress.allow_hosts", &e.allow_hosts),
        ("egress.block_hosts", &e.block_hosts),
    ] {
        if let Some(bad) = list.iter().find(|h| !valid_host_pattern(h)) {
            return Err((
                key,
                format!(
                    "{bad:?} is not a host pattern: write `example.com` (that name) or `*.example.com` (its subdomains); list addresses under allow_cidrs or block_cidrs"
                ),
            ));
        }
    }
    for (key, list) in [
        ("egress.allow_cidrs", &e.allow_cidrs),
        ("egress.block_cidrs", &e.block_cidrs),
    ] {
        if let Some(bad) = list.iter().find(|c| c.parse::<ipnet::IpNet>().is_err()) {
            return Err((
                key,
                format!(
                    "{bad:?} is not a CIDR range; write it like \"10.1.2.0/24\" or \"fd00::/8\""
                ),
            ));
        }
    }
    if e.max_redirects > 20 {
        return Err(("egress.max_redirects", "must be at most 20".into()));
    }
    for (key, d) in [
        ("egress.connect_timeout", e.connect_timeout),
        ("egress.total_timeout", e.total_timeout),
    ] {
        if d.is_zero() || d > Duration::from_secs(600) {
            return Err((key, "must be between 1ms and 10m, like \"30s\"".into()));
        }
    }
    if !(1..=1 << 32).contains(&e.max_response_bytes) {
        return Err((
            "egress.max_response_bytes",
            "must be between 1 and 4294967296 (4 GiB)".into(),
        ));
    }
    if !(1..=1024).contains(&e.max_concurrent_per_session) {
        return Err((
            "egress.max_concurrent_per_session",
            "must be between 1 and 1024".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_refusals_name_the_key() {
        assert!(validate(&EgressConfig::default()).is_ok());
        let bad = |f: fn(&mut EgressConfig)| {
            let mut c = EgressConfig::default();
            f(&mut c);
            validate(&c).unwrap_err().key
        };
        assert_eq!(bad(|c| c.allowed_ports.clear()), "egress.allowed_ports");
        assert_eq!(
            bad(|c| c.allow_hosts.push("http://x".into())),
            "egress.allow_hosts"
        );
        assert_eq!(
            bad(|c| c.block_hosts.push("10.0.0.1".into())),
            "egress.block_hosts"
        );
        assert_eq!(
            bad(|c| c.allow_cidrs.push("10.0.0.1/33".into())),
            "egress.allow_cidrs"
        );
        assert_eq!(
            bad(|c| c.total_timeout = Duration::ZERO),
            "egress.total_timeout"
        );
        assert!(valid_host_pattern("*.example.com"));
        assert!(valid_host_pattern("bücher.example"));
        assert!(!valid_host_pattern("*.*.example.com"));
    }
}
