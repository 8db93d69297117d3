//! Host names: the built-in names that never leave the machine or the cloud, and the
//! patterns users write in allow and block lists.
//!
//! Names arrive already normalized by the URL parser (lowercase, IDNA to punycode,
//! full-width and other compatibility characters mapped); here only trailing dots are
//! dropped, so `localhost.` and `localhost` are one name.

use std::fmt;

/// `host` without its trailing dots.
pub fn trim_dots(host: &str) -> &str {
    host.trim_end_matches('.')
}

/// Exact names that reach the machine itself or a cloud's metadata service.
const BLOCKED_NAMES: &[&str] = &[
    "localhost",
    "metadata",
    "metadata.goog",
    "metadata.google.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// Domains whose every name is local or special-use (RFC 6761, 6762, 8375, 7686, 9476),
/// and the top-level names home and office networks use without owning them.
const BLOCKED_DOMAINS: &[&str] = &[
    "*.localhost",
    "*.local",
    "*.internal",
    "*.localdomain",
    "*.home.arpa",
    "*.onion",
    "*.invalid",
    "*.test",
    "*.example",
    "*.alt",
    "*.lan",
    "*.home",
    "*.corp",
    "*.intranet",
    "*.private",
];

/// The built-in rule that refuses `host` (already trimmed), if any.
pub fn builtin_rule(host: &str) -> Option<&'static str> {
    if let Some(name) = BLOCKED_NAMES.iter().find(|n| **n == host) {
        return Some(name);
    }
    if !host.contains('.') {
        // A dotless name goes through the resolver's search domains: an intranet host.
        return Some("single-label name");
    }
    BLOCKED_DOMAINS.iter().copied().find(|rule| {
        let domain = rule.strip_prefix("*.").unwrap_or(rule);
        host == domain || is_subdomain(host, domain)
    })
}

fn is_subdomain(host: &str, domain: &str) -> bool {
    host.len() > domain.len()
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

/// An entry of `egress.allow_hosts` or `egress.block_hosts`: `example.com` matches that
/// name only, `*.example.com` matches every name under it (not `example.com` itself).
/// Never a substring match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One name.
    Exact(String),
    /// Every subdomain of this domain.
    Subdomains(String),
}

/// Why a host pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The text is not a DNS name.
    #[error("{0:?} is not a host name; write `example.com` or `*.example.com`")]
    NotAName(String),
    /// The text is an IP address.
    #[error("{0:?} is an address; list addresses under allow_cidrs or block_cidrs")]
    Address(String),
}

impl HostPattern {
    /// Parses one pattern, normalizing it the way URL hosts are normalized.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let (wild, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if name.is_empty() || name.contains(['*', '/', ':', '@', ' ']) {
            return Err(PatternError::NotAName(text.into()));
        }
        match url::Host::parse(name) {
            Ok(url::Host::Domain(d)) => {
                let d = trim_dots(&d).to_string();
                if d.is_empty() {
                    return Err(PatternError::NotAName(text.into()));
                }
                Ok(if wild {
                    Self::Subdomains(d)
                } else {
                    Self::Exact(d)
                })
            }
            Ok(_) => Err(PatternError::Address(text.into())),
            Err(_) => Err(PatternError::NotAName(text.into())),
        }
    }

    /// Whether `host` (normalized, trimmed) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Subdomains(domain) => is_subdomain(host, domain),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Subdomains(domain) => write!(f, "*.{domain}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names() {
        for (host, rule) in [
            ("localhost", Some("localhost")),
            ("foo.localhost", Some("*.localhost")),
            ("metadata.google.internal", Some("metadata.google.internal")),
            ("db.internal", Some("*.internal")),
            ("printer.local", Some("*.local")),
            ("router.home.arpa", Some("*.home.arpa")),
            ("intranet", Some("single-label name")),
            ("nas.lan", Some("*.lan")),
            ("wiki.corp", Some("*.corp")),
            ("x.example", Some("*.example")),
            ("example.com", None),
            ("notlocalhost.com", None),
            ("localhost.com", None),
            ("internal.example.com", None),
        ] {
            assert_eq!(builtin_rule(host), rule, "{host}");
        }
    }

    #[test]
    fn patterns_match_by_label_never_substring() {
        let exact = HostPattern::parse("Example.COM.").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("api.example.com"));
        assert!(!exact.matches("example.com.evil.net"));
        let sub = HostPattern::parse("*.example.com").unwrap();
        assert!(sub.matches("api.example.com"));
        assert!(sub.matches("a.b.example.com"));
        assert!(!sub.matches("example.com"));
        assert!(!sub.matches("evilexample.com"));
        assert!(!sub.matches("example.com.evil.net"));
        assert_eq!(
            HostPattern::parse("bücher.example").unwrap(),
            HostPattern::Exact("xn--bcher-kva.example".into())
        );
        assert!(matches!(
            HostPattern::parse("10.0.0.1"),
            Err(PatternError::Address(_))
        ));
        for bad in ["", "*.", "a*.com", "http://x.com", "x.com:80", "*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
