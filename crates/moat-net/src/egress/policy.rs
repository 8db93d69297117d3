//! The URL policy: which URLs and addresses an outbound request may reach, and the typed
//! reason when it may not.
//!
//! A decision has two halves. [`Policy::check_url`] parses the URL with the WHATWG parser
//! (the `url` crate: every IPv4 notation, IDNA, full-width digits and trailing dots are
//! normalized there) and judges scheme, userinfo, port and host name, and the address when
//! the host is a literal. [`Policy::check_addr`] judges each address a name resolved to.
//! The client calls both, and connects only to addresses that passed.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use moat_core::config::egress::EgressConfig;
use url::Url;

use super::addr::{self, Class, Range};
use super::host::{self, HostPattern, PatternError};

/// The longest URL judged at all.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// Why a request was refused. Each names the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The text is not a URL the WHATWG parser accepts.
    #[error("not a valid URL ({0})")]
    InvalidUrl(String),
    /// A scheme other than http and https.
    #[error("the scheme {0:?} is refused: only http and https URLs are fetched")]
    Scheme(String),
    /// The URL carries a user name or password.
    #[error("URLs with a user name or password are refused: send credentials in headers")]
    Userinfo,
    /// An IPv6 literal with a zone id (`[fe80::1%25eth0]`).
    #[error("IPv6 zone ids are refused: they name a local interface")]
    ZoneId,
    /// A port not in `egress.allowed_ports`.
    #[error("port {port} is refused (egress.allowed_ports is {allowed:?})")]
    Port {
        /// The port.
        port: u16,
        /// What is allowed.
        allowed: Vec<u16>,
    },
    /// A name refused by a built-in rule.
    #[error("{host} is refused by the built-in rule `{rule}`")]
    BlockedName {
        /// The host.
        host: String,
        /// The rule (`localhost`, `*.internal`, `single-label name`, ...).
        rule: &'static str,
    },
    /// A name on `egress.block_hosts`.
    #[error("{host} matches egress.block_hosts entry `{pattern}`")]
    ListedName {
        /// The host.
        host: String,
        /// The entry.
        pattern: String,
    },
    /// A caller that may reach only listed hosts asked for another.
    #[error("{host} is not in egress.allow_hosts, and this caller may reach listed hosts only")]
    NotListed {
        /// The host.
        host: String,
    },
    /// An address in a range that is not globally reachable.
    #[error("{subject}{carried} is in {range} ({cidr})",
        subject = subject(host, addr), range = range.name, cidr = range.cidr,
        carried = carried.map(|(v4, form)| format!(" carries {v4} ({form}), which")).unwrap_or_default()
    )]
    BlockedAddress {
        /// The host as given in the URL.
        host: String,
        /// The address.
        addr: IpAddr,
        /// The range.
        range: Range,
        /// The IPv4 address inside `addr` that was judged, and the IPv6 form carrying it.
        carried: Option<(std::net::Ipv4Addr, &'static str)>,
    },
    /// An address in `egress.block_cidrs`.
    #[error("{subject} is in egress.block_cidrs entry {cidr}", subject = subject(host, addr))]
    ListedAddress {
        /// The host as given in the URL.
        host: String,
        /// The address.
        addr: IpAddr,
        /// The entry.
        cidr: IpNet,
    },
    /// The name did not resolve to any address.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// More redirects than `egress.max_redirects`.
    #[error("more than {0} redirects (egress.max_redirects)")]
    TooManyRedirects(u8),
    /// A redirect from https to http.
    #[error("a redirect from https to http is refused")]
    Downgrade,
    /// A redirect whose `Location` is missing or not a URL.
    #[error("a redirect without a usable Location header")]
    BadRedirect,
    /// A response whose content type the caller does not accept.
    #[error("the response is {got:?}, which this caller does not accept (accepts {accepted:?})")]
    ContentType {
        /// The response's media type.
        got: String,
        /// What the caller accepts.
        accepted: Vec<String>,
    },
    /// A response larger than the caller's cap.
    #[error("the response is larger than the {0}-byte cap")]
    TooLarge(u64),
    /// The whole exchange took longer than allowed.
    #[error("the request took longer than {0:?} (egress.total_timeout)")]
    Timeout(Duration),
    /// A method the fetcher does not send (`CONNECT`, `TRACE`).
    #[error("the {0} method is refused")]
    Method(String),
    /// The session already has as many requests in flight as it may.
    #[error("this session already has {0} requests in flight (egress.max_concurrent_per_session)")]
    SessionBusy(u32),
}

/// `name (addr)`, or the address alone when the host was the address.
fn subject(host: &str, addr: &IpAddr) -> String {
    if host_key(host).parse::<IpAddr>().is_ok() {
        addr.to_string()
    } else {
        format!("{host} ({addr})")
    }
}

impl Refusal {
    /// A stable, short name of the rule, for the audit log and for tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid-url",
            Self::Scheme(_) => "scheme",
            Self::Userinfo => "userinfo",
            Self::ZoneId => "zone-id",
            Self::Port { .. } => "port",
            Self::BlockedName { .. } => "blocked-name",
            Self::ListedName { .. } => "block-hosts",
            Self::NotListed { .. } => "not-allowlisted",
            Self::BlockedAddress { .. } => "blocked-address",
            Self::ListedAddress { .. } => "block-cidrs",
            Self::Dns { .. } => "dns",
            Self::TooManyRedirects(_) => "redirect-limit",
            Self::Downgrade => "redirect-downgrade",
            Self::BadRedirect => "redirect-location",
            Self::ContentType { .. } => "content-type",
            Self::TooLarge(_) => "too-large",
            Self::Timeout(_) => "timeout",
            Self::SessionBusy(_) => "session-limit",
            Self::Method(_) => "method",
        }
    }

    /// What the machine's owner could set to allow this, if anything (for the owner's
    /// eyes, like `moat egress check`; not for the model or channel that was refused).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::BlockedName { .. } => {
                Some("to reach it anyway, add the name to egress.allow_hosts")
            }
            Self::BlockedAddress { .. } => {
                Some("to reach it anyway, add the range (or one address) to egress.allow_cidrs")
            }
            Self::Port { .. } => Some("to reach it anyway, add the port to egress.allowed_ports"),
            Self::NotListed { .. } => Some("this caller reaches only names in egress.allow_hosts"),
            _ => None,
        }
    }

    /// The rule in full: the code, and the range or name rule when there is one
    /// (`blocked-address:loopback`, `blocked-name:*.internal`).
    pub fn rule(&self) -> String {
        match self {
            Self::BlockedAddress { range, .. } => format!("{}:{}", self.code(), range.name),
            Self::BlockedName { rule, .. } => format!("{}:{rule}", self.code()),
            _ => self.code().to_string(),
        }
    }
}

/// A URL that passed [`Policy::check_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The normalized URL: what is sent.
    pub url: Url,
    /// The host: an address that already passed, or a name still to resolve.
    pub host: Host,
    /// The port connected to.
    pub port: u16,
}

/// The host of a [`Checked`] URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A literal address (checked).
    Addr(IpAddr),
    /// A DNS name, lowercase, punycode, without trailing dots; its addresses still
    /// need [`Policy::check_addr`].
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => a.fmt(f),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// Why a configuration could not become a policy; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    /// The config key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Which URLs and addresses may be reached.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_ports: Vec<u16>,
    any_port: bool,
    allow_hosts: Vec<HostPattern>,
    block_hosts: Vec<HostPattern>,
    allow_cidrs: Vec<IpNet>,
    block_cidrs: Vec<IpNet>,
    listed_only: bool,
    trusted_host: Option<String>,
}

impl Default for Policy {
    /// The built-in rules with ports 80 and 443.
    fn default() -> Self {
        Self {
            allowed_ports: vec![80, 443],
            any_port: false,
            allow_hosts: Vec::new(),
            block_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            block_cidrs: Vec::new(),
            listed_only: false,
            trusted_host: None,
        }
    }
}

fn patterns(key: &'static str, list: &[String]) -> Result<Vec<HostPattern>, PolicyError> {
    list.iter()
        .map(|p| {
            HostPattern::parse(p).map_err(|e: PatternError| PolicyError {
                key,
                message: e.to_string(),
            })
        })
        .collect()
}

fn cidrs(key: &'static str, list: &[String]) -> Result<Vec<IpNet>, PolicyError> {
    list.iter()
        .map(|c| {
            c.parse::<IpNet>()
                .map(|n| as_ipv4_net(n).trunc())
                .map_err(|_| PolicyError {
                    key,
                    message: format!("{c:?} is not a CIDR range, like \"10.1.2.0/24\""),
                })
        })
        .collect()
}

impl Policy {
    /// The policy `[egress]` describes.
    pub fn from_config(c: &EgressConfig) -> Result<Self, PolicyError> {
        Ok(Self {
            allowed_ports: c.allowed_ports.clone(),
            any_port: false,
            allow_hosts: patterns("egress.allow_hosts", &c.allow_hosts)?,
            block_hosts: patterns("egress.block_hosts", &c.block_hosts)?,
            allow_cidrs: cidrs("egress.allow_cidrs", &c.allow_cidrs)?,
            block_cidrs: cidrs("egress.block_cidrs", &c.block_cidrs)?,
            listed_only: false,
            trusted_host: None,
        })
    }

    /// The policy of an upstream the owner configured (an LLM backend's base URL): that
    /// one host, at any port and any address (local model servers live on loopback and
    /// the LAN), and nothing else.
    pub fn configured_upstream(url: &Url) -> Self {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => Some(host::trim_dots(d).to_string()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        Self {
            any_port: true,
            listed_only: true,
            trusted_host: host,
            ..Self::default()
        }
    }

    /// The same policy, reaching only names on `allow_hosts` (for callers like webhooks
    /// whose destinations are known in advance).
    pub fn listed_only(mut self) -> Self {
        self.listed_only = true;
        self
    }

    /// Judges a URL, without DNS.
    pub fn check_url(&self, input: &str) -> Result<Checked, Refusal> {
        if input.len() > MAX_URL_LEN {
            return Err(Refusal::InvalidUrl(format!(
                "longer than {MAX_URL_LEN} bytes"
            )));
        }
        let url = match Url::parse(input) {
            Ok(url) => url,
            Err(e) => return Err(refusal_for_parse_error(input, e)),
        };
        self.check_parsed(url)
    }

    /// Judges a parsed URL, without DNS.
    pub fn check_parsed(&self, mut url: Url) -> Result<Checked, Refusal> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Refusal::Scheme(other.chars().take(32).collect())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Userinfo);
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Refusal::InvalidUrl("no port".into()))?;
        let host = match url.host() {
            Some(url::Host::Ipv4(a)) => Host::Addr(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Host::Addr(IpAddr::V6(a)),
            Some(url::Host::Domain(d)) => {
                let name = host::trim_dots(d);
                // `127.0.0.1..` is a name to the URL parser (it ends in an empty label)
                // but an address once its dots are trimmed, as a resolver trims them.
                let reparsed = (name.len() != d.len()).then(|| url::Host::parse(name));
                match reparsed {
                    Some(Ok(url::Host::Ipv4(a))) => Host::Addr(IpAddr::V4(a)),
                    Some(Ok(url::Host::Ipv6(a))) => Host::Addr(IpAddr::V6(a)),
                    _ => Host::Name(name.to_string()),
                }
            }
            None => return Err(Refusal::InvalidUrl("no host".into())),
        };
        if let Host::Addr(a) = host
            && !matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
        {
            // Send the address itself, so that no resolver reads the name differently.
            url.set_ip_host(a)
                .map_err(|()| Refusal::InvalidUrl("cannot set the address".into()))?;
        }
        if self.is_trusted(&host) {
            return Ok(Checked { url, host, port });
        }
        if !self.any_port && !self.allowed_ports.contains(&port) {
            return Err(Refusal::Port {
                port,
                allowed: self.allowed_ports.clone(),
            });
        }
        match &host {
            Host::Addr(a) => {
                if self.listed_only {
                    return Err(Refusal::NotListed {
                        host: a.to_string(),
                    });
                }
                self.check_addr(&a.to_string(), *a)?;
            }
            Host::Name(name) => self.check_name(name)?,
        }
        Ok(Checked { url, host, port })
    }

    fn is_trusted(&self, host: &Host) -> bool {
        match (&self.trusted_host, host) {
            (Some(t), Host::Name(n)) => t == n,
            (Some(t), Host::Addr(a)) => t.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(*a),
            (None, _) => false,
        }
    }

    fn check_name(&self, name: &str) -> Result<(), Refusal> {
        if name.is_empty() {
            return Err(Refusal::InvalidUrl("empty host".into()));
        }
        if let Some(p) = self.block_hosts.iter().find(|p| p.matches(name)) {
            return Err(Refusal::ListedName {
                host: name.into(),
                pattern: p.to_string(),
            });
        }
        let listed = self.allow_hosts.iter().any(|p| p.matches(name));
        if self.listed_only && !listed {
            return Err(Refusal::NotListed { host: name.into() });
        }
        if !listed && let Some(rule) = host::builtin_rule(name) {
            return Err(Refusal::BlockedName {
                host: name.into(),
                rule,
            });
        }
        Ok(())
    }

    /// Judges one address that `host` resolved to (or is).
    pub fn check_addr(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        if self
            .trusted_host
            .as_deref()
            .is_some_and(|t| t == host_key(host))
        {
            return Ok(());
        }
        let ip = canonical(ip);
        let embedded = match ip {
            IpAddr::V6(v6) => addr::embedded_v4(v6).map(|(v4, _, _)| IpAddr::V4(v4)),
            IpAddr::V4(_) => None,
        };
        // A block catches the address however it is wrapped; an allow opens the address
        // as written only (a NAT64 or 6to4 form of it goes through a relay, not to it).
        let blocked = self
            .block_cidrs
            .iter()
            .find(|n| n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e)));
        if let Some(&cidr) = blocked {
            return Err(Refusal::ListedAddress {
                host: host.into(),
                addr: ip,
                cidr,
            });
        }
        if self.allow_cidrs.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match addr::classify(ip) {
            Class::Global => Ok(()),
            Class::Blocked { range, carried } => Err(Refusal::BlockedAddress {
                host: host.into(),
                addr: ip,
                range,
                carried,
            }),
        }
    }

    /// Judges every address a name resolved to: one bad address refuses them all (a
    /// name that answers both a public and a private address is a rebinding attempt).
    pub fn check_resolved(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::Dns {
                host: host.into(),
                reason: "no addresses".into(),
            });
        }
        addrs.iter().try_for_each(|a| self.check_addr(host, *a))
    }

    /// Judges a redirect from `from` to the `Location` value `location`.
    pub fn check_redirect(&self, from: &Url, location: &str) -> Result<Checked, Refusal> {
        if location.len() > MAX_URL_LEN {
            return Err(Refusal::BadRedirect);
        }
        let next = from.join(location).map_err(|_| Refusal::BadRedirect)?;
        if from.scheme() == "https" && next.scheme() == "http" {
            return Err(Refusal::Downgrade);
        }
        self.check_parsed(next)
    }
}

/// `::ffff:a.b.c.d/n` (n >= 96) is the IPv4 range `a.b.c.d/(n - 96)`: addresses are
/// judged in their IPv4 form, so the range must be too.
fn as_ipv4_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// A host as the resolver and the trusted-host rule see it: no brackets, no trailing dots.
fn host_key(host: &str) -> &str {
    host::trim_dots(host.trim_start_matches('[').trim_end_matches(']'))
}

/// IPv4-mapped IPv6 addresses are judged (and reported) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn refusal_for_parse_error(input: &str, e: url::ParseError) -> Refusal {
    // The WHATWG parser has no zone ids; say so rather than "invalid IPv6 address".
    let authority = input.split_once("//").map_or(input, |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or(rest)
    });
    if let Some(start) = authority.find('[')
        && authority[start..]
            .split(']')
            .next()
            .is_some_and(|h| h.contains('%'))
    {
        return Refusal::ZoneId;
    }
    Refusal::InvalidUrl(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_notations_all_normalize_to_loopback() {
        let p = Policy::default();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://0177.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://0x7f.0.0.0x1/",
            "http://127.0.0.1./",
            "http://０x7f.1/",
            "http://１２７.０.０.１/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
        ] {
            let r = p.check_url(url).unwrap_err();
            assert_eq!(r.rule(), "blocked-address:loopback", "{url}: {r}");
        }
    }

    #[test]
    fn lists_exact_and_suffix_and_cidr() {
        let config = EgressConfig {
            allow_hosts: vec!["wiki.internal".into()],
            block_hosts: vec!["*.evil.example".into()],
            allow_cidrs: vec!["10.1.0.0/16".into()],
            block_cidrs: vec!["10.1.2.0/24".into(), "8.8.8.8/32".into()],
            ..EgressConfig::default()
        };
        let p = Policy::from_config(&config).unwrap();
        assert!(p.check_url("https://wiki.internal/").is_ok());
        assert_eq!(
            p.check_url("https://db.internal/").unwrap_err().code(),
            "blocked-name"
        );
        assert_eq!(
            p.check_url("https://a.evil.example/").unwrap_err().code(),
            "block-hosts"
        );
        assert!(p.check_url("https://evil.example.com/").is_ok());
        assert!(p.check_url("http://10.1.3.4/").is_ok());
        assert_eq!(
            p.check_url("http://10.1.2.3/").unwrap_err().code(),
            "block-cidrs"
        );
        assert_eq!(
            p.check_url("http://10.2.0.1/").unwrap_err().rule(),
            "blocked-address:private"
        );
        // An allowed name is still judged by what it resolves to.
        assert_eq!(
            p.check_addr("wiki.internal", "127.0.0.1".parse().unwrap())
                .unwrap_err()
                .code(),
            "blocked-address"
        );
        assert!(
            p.check_addr("wiki.internal", "10.1.9.9".parse().unwrap())
                .is_ok()
        );
        assert_eq!(
            p.check_addr("x.example", "::ffff:8.8.8.8".parse().unwrap())
                .unwrap_err()
                .code(),
            "block-cidrs"
        );
    }

    #[test]
    fn allows_open_the_address_as_written_and_blocks_catch_every_form() {
        let config = EgressConfig {
            allow_cidrs: vec!["10.1.0.0/16".into()],
            block_cidrs: vec!["::ffff:93.184.216.0/120".into()],
            ..EgressConfig::default()
        };
        let p = Policy::from_config(&config).unwrap();
        assert!(p.check_url("http://10.1.2.3/").is_ok());
        for wrapped in ["http://[::10.1.2.3]/", "http://[64:ff9b::a01:203]/"] {
            assert_eq!(
                p.check_url(wrapped).unwrap_err().code(),
                "blocked-address",
                "{wrapped}"
            );
        }
        for blocked in ["http://93.184.216.34/", "http://[::ffff:93.184.216.34]/"] {
            assert_eq!(p.check_url(blocked).unwrap_err().code(), "block-cidrs");
        }
        let r = p.check_url("http://[64:ff9b::7f00:1]/").unwrap_err();
        assert_eq!(
            r.to_string(),
            "64:ff9b::7f00:1 carries 127.0.0.1 (nat64), which is in loopback (127.0.0.0/8)"
        );
        assert!(r.hint().unwrap().contains("egress.allow_cidrs"));
    }

    #[test]
    fn redirects() {
        let p = Policy::default();
        let from = Url::parse("https://example.com/a/b").unwrap();
        assert_eq!(
            p.check_redirect(&from, "http://example.com/").unwrap_err(),
            Refusal::Downgrade
        );
        assert_eq!(
            p.check_redirect(&from, "//127.0.0.1/").unwrap_err().code(),
            "blocked-address"
        );
        assert_eq!(
            p.check_redirect(&from, "../c").unwrap().url.as_str(),
            "https://example.com/c"
        );
        let plain = Url::parse("http://example.com/").unwrap();
        assert!(p.check_redirect(&plain, "https://example.org/").is_ok());
        assert_eq!(
            p.check_redirect(&plain, "file:///etc/passwd")
                .unwrap_err()
                .code(),
            "scheme"
        );
    }

    #[test]
    fn configured_upstream_trusts_its_host_only() {
        let url = Url::parse("http://127.0.0.1:11434/v1").unwrap();
        let p = Policy::configured_upstream(&url);
        assert!(
            p.check_url("http://127.0.0.1:11434/v1/chat/completions")
                .is_ok()
        );
        assert_eq!(
            p.check_url("http://127.0.0.2:11434/").unwrap_err().code(),
            "not-allowlisted"
        );
        let named = Policy::configured_upstream(&Url::parse("http://localhost:8080").unwrap());
        assert!(named.check_url("http://localhost:8080/v1/models").is_ok());
        assert!(
            named
                .check_addr("localhost", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(named.check_url("http://other.example/").is_err());
    }
}
