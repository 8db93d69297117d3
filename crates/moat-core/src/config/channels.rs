//! `[channels.NAME]`: the messaging services the assistant can be reached through, and
//! who may reach it there. Data only; `moat-channels` connects and enforces it.
//!
//! ```toml
//! [channels.home-irc]
//! kind = "irc"
//! dm_policy = "pairing"        # pairing (default) | allowlist | open | disabled
//! allow_from = ["alice"]       # senders admitted without pairing; ["*"] with "open"
//! owners = ["me"]              # the owner's own ids here: owner standing, /pair commands
//! on_approve = "release"       # what happens to the held message: release | drop
//! rooms = ["#home"]            # rooms joined; only mentions from admitted senders count
//! server = "irc.libera.chat:6697"
//! tls = true
//! nick = "moat-assistant"
//! sasl_user = "moat-assistant" # SASL PLAIN, password from the vault
//! password_secret = "irc-password"
//!
//! [channels.home-matrix]
//! kind = "matrix"
//! homeserver = "https://matrix.example.org"
//! user = "@assistant:example.org"
//! password_secret = "matrix-password"
//!
//! [channels.phone]
//! kind = "telegram"
//! token_secret = "telegram-bot"  # vault secret: the token @BotFather gave
//! # api_base = "https://api.telegram.org"
//!
//! [channels.ci]
//! kind = "webhook"               # POST /hooks/ci in, signed with the key
//! key_secret = "ci-hook-key"     # vault secret: the HMAC-SHA256 key
//! url = "https://ci.example.com/moat"   # where replies go, signed the same way
//!
//! [pairing]                    # limits shared by every channel
//! code_ttl = "15m"
//! max_pending = 3              # codes waiting for the owner, per channel
//! per_sender_per_hour = 3      # code requests and wrong codes
//! per_channel_per_hour = 20
//! max_held = 3                 # messages kept for a waiting sender
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// The kinds of channel moat can connect.
pub const KINDS: [&str; 6] = ["irc", "matrix", "telegram", "discord", "email", "webhook"];

/// Who may talk to the assistant on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    /// Unknown senders get a one-time code; the owner approves or denies.
    #[default]
    Pairing,
    /// Only senders on the allowlist; everyone else gets nothing.
    Allowlist,
    /// Everyone (`allow_from = ["*"]` must say so too).
    Open,
    /// Nobody: the channel stays connected but no message reaches the assistant.
    Disabled,
}

impl DmPolicy {
    /// Its name in config.
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Pairing => "pairing",
            DmPolicy::Allowlist => "allowlist",
            DmPolicy::Open => "open",
            DmPolicy::Disabled => "disabled",
        }
    }
}

/// What becomes of a paired sender's held message once the owner approves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnApprove {
    /// It is answered, as if it had just arrived.
    #[default]
    Release,
    /// It is deleted unseen; the sender writes again.
    Drop,
}

/// One `[channels.NAME]`. Settings for another kind are refused at load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// The service: `irc`, `matrix`, `telegram`, `discord`, `email` or `webhook`.
    pub kind: String,
    /// Whether it is connected at all by `moat serve`.
    pub enabled: bool,
    /// Who may talk to the assistant here.
    pub dm_policy: DmPolicy,
    /// Senders admitted without pairing, as the channel names them (IRC nicks).
    pub allow_from: Vec<String>,
    /// The owner's own ids on this channel: admitted, with the `owner` standing, and
    /// able to answer pairing requests there (`/pair approve CODE`).
    pub owners: Vec<String>,
    /// What happens to a held message when its sender is approved.
    pub on_approve: OnApprove,
    /// The trust paired senders have, as `[sandbox.tools.TOOL] trust` names it.
    pub trust: String,
    /// Rooms joined (IRC channels; Matrix room ids or aliases, joined when invited); the
    /// assistant answers there only when mentioned, and only senders already admitted.
    pub rooms: Vec<String>,
    /// Messages this channel sends a second at most (the service's flood limits).
    pub send_per_second: f64,
    /// The longest message the channel sends in one piece; longer replies are split.
    /// Unset: the service's own limit (IRC: 350 bytes, the 512-byte line less the rest).
    pub max_message_bytes: Option<usize>,
    /// IRC: `host:port` of the server.
    pub server: Option<String>,
    /// IRC: connect with TLS (the default; plain only on loopback or when said).
    pub tls: Option<bool>,
    /// IRC: the nick the assistant uses.
    pub nick: Option<String>,
    /// IRC: the SASL PLAIN account name (with `password_secret`).
    pub sasl_user: Option<String>,
    /// IRC: the vault secret holding the SASL or server password; Matrix: the bot's
    /// password.
    pub password_secret: Option<String>,
    /// Matrix: the homeserver's URL.
    pub homeserver: Option<String>,
    /// Matrix: the bot's user id (`@bot:example.org`) or name; email: the login name
    /// (default: the address).
    pub user: Option<String>,
    /// Email: IMAP `host:port` (993 with TLS).
    pub imap_server: Option<String>,
    /// Email: SMTP `host:port` (587 with STARTTLS, 465 with TLS at once).
    pub smtp_server: Option<String>,
    /// Email: the assistant's address.
    pub address: Option<String>,
    /// Email: the receiving server's `Authentication-Results` id whose verdicts on a
    /// sender (DMARC, DKIM, SPF) are trusted; mail it does not vouch for is dropped.
    pub authserv_id: Option<String>,
    /// Email: addresses or ranges (`10.0.0.25`, `192.168.1.0/24`) of relays that
    /// authenticate their senders themselves (a relay that takes mail only after SMTP
    /// AUTH and keeps From to the account): mail the receiving server (`authserv_id`)
    /// took from one of them is vouched for, with or without `Authentication-Results`.
    pub trusted_relays: Vec<String>,
    /// IRC: trust this CA (PEM file) instead of the system's (a private network).
    pub ca_file: Option<std::path::PathBuf>,
    /// Telegram, Discord: the vault secret holding the bot's token.
    pub token_secret: Option<String>,
    /// Telegram, Discord: the API's base URL (default `https://api.telegram.org`,
    /// `https://discord.com/api/v10`).
    pub api_base: Option<String>,
    /// Telegram: moat's public URL for this channel's `/hooks/NAME` (behind your reverse
    /// proxy): Telegram posts updates there instead of being polled.
    pub webhook_url: Option<String>,
    /// Webhook: the vault secret holding the HMAC-SHA256 key both directions sign with.
    pub key_secret: Option<String>,
    /// Webhook: where replies are POSTed (signed); unset, the channel only listens.
    pub url: Option<String>,
    /// Webhook: how far a request's timestamp may be from now.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            kind: String::new(),
            enabled: true,
            dm_policy: DmPolicy::default(),
            allow_from: Vec::new(),
            owners: Vec::new(),
            on_approve: OnApprove::default(),
            trust: "guest".into(),
            rooms: Vec::new(),
            send_per_second: 1.0,
            max_message_bytes: None,
            server: None,
            tls: None,
            nick: None,
            sasl_user: None,
            password_secret: None,
            homeserver: None,
            user: None,
            imap_server: None,
            smtp_server: None,
            address: None,
            authserv_id: None,
            trusted_relays: Vec::new(),
            ca_file: None,
            token_secret: None,
            api_base: None,
            webhook_url: None,
            key_secret: None,
            url: None,
            replay_window: Duration::from_secs(300),
        }
    }
}

/// `[pairing]`: the limits on pairing codes, shared by every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// How long a pairing code is good for.
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// Codes waiting for the owner on one channel at most.
    pub max_pending: u32,
    /// Code requests (and wrong codes) one sender may make per hour.
    pub per_sender_per_hour: u32,
    /// Code requests one channel may see per hour from everyone together.
    pub per_channel_per_hour: u32,
    /// Messages held for one waiting sender at most; later ones are dropped.
    pub max_held: u32,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(15 * 60),
            max_pending: 3,
            per_sender_per_hour: 3,
            per_channel_per_hour: 20,
            max_held: 3,
        }
    }
}

/// Names and checks the channel tables.
pub fn validate(
    channels: &BTreeMap<String, ChannelConfig>,
    pairing: &PairingConfig,
) -> Result<(), InvalidValue> {
    if pairing.code_ttl.is_zero() || pairing.code_ttl > Duration::from_secs(24 * 3600) {
        return Err(InvalidValue::from((
            "pairing.code_ttl",
            "must be between 1s and 24h".to_string(),
        )));
    }
    for (key, n) in [
        ("pairing.max_pending", pairing.max_pending),
        ("pairing.per_sender_per_hour", pairing.per_sender_per_hour),
        ("pairing.per_channel_per_hour", pairing.per_channel_per_hour),
        ("pairing.max_held", pairing.max_held),
    ] {
        if n == 0 {
            return Err(InvalidValue::from((key, "must be at least 1".to_string())));
        }
    }
    for (name, c) in channels {
        rules(name, c).map_err(|(k, p)| InvalidValue::from((format!("channels.{name}.{k}"), p)))?;
    }
    Ok(())
}

/// A channel name as commands, sessions and audit records use it.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn rules(name: &str, c: &ChannelConfig) -> Result<(), (&'static str, String)> {
    if !valid_name(name) {
        return Err((
            "kind",
            "the channel's name must be letters, digits, '-' and '_' (at most 64)".into(),
        ));
    }
    if !KINDS.contains(&c.kind.as_str()) {
        return Err((
            "kind",
            format!("must be one of {} (got {:?})", KINDS.join(", "), c.kind),
        ));
    }
    let star = c.allow_from.iter().any(|s| s == "*");
    match (c.dm_policy, star) {
        (DmPolicy::Open, false) => {
            return Err((
                "allow_from",
                "dm_policy = \"open\" lets anyone talk to the assistant; say so with allow_from = [\"*\"]".into(),
            ));
        }
        (DmPolicy::Open, true) => {}
        (_, true) => {
            return Err((
                "allow_from",
                "\"*\" admits everyone; it needs dm_policy = \"open\"".into(),
            ));
        }
        _ => {}
    }
    if c.allow_from.iter().any(|s| s.trim().is_empty()) {
        return Err(("allow_from", "has an empty sender".into()));
    }
    if c.owners.iter().any(|s| s.trim().is_empty() || s == "*") {
        return Err((
            "owners",
            "names the owner's own ids on the channel, one by one (no \"*\")".into(),
        ));
    }
    if c.trust.trim().is_empty() {
        return Err(("trust", "must name a trust standing (e.g. guest)".into()));
    }
    if !(c.send_per_second > 0.0 && c.send_per_second <= 100.0) {
        return Err(("send_per_second", "must be above 0 and at most 100".into()));
    }
    if let Some(n) = c.max_message_bytes
        && !(64..=1_000_000).contains(&n)
    {
        return Err(("max_message_bytes", "must be between 64 and 1000000".into()));
    }
    // Each kind-specific setting, whether it is set, and the kinds it belongs to.
    let settings: [(&str, bool, &[&str]); 19] = [
        ("server", c.server.is_some(), &["irc"]),
        ("tls", c.tls.is_some(), &["irc", "email"]),
        ("nick", c.nick.is_some(), &["irc"]),
        ("sasl_user", c.sasl_user.is_some(), &["irc"]),
        ("ca_file", c.ca_file.is_some(), &["irc"]),
        (
            "password_secret",
            c.password_secret.is_some(),
            &["irc", "matrix", "email"],
        ),
        ("rooms", !c.rooms.is_empty(), &["irc", "matrix"]),
        ("homeserver", c.homeserver.is_some(), &["matrix"]),
        ("user", c.user.is_some(), &["matrix", "email"]),
        ("imap_server", c.imap_server.is_some(), &["email"]),
        ("smtp_server", c.smtp_server.is_some(), &["email"]),
        ("address", c.address.is_some(), &["email"]),
        ("authserv_id", c.authserv_id.is_some(), &["email"]),
        ("trusted_relays", !c.trusted_relays.is_empty(), &["email"]),
        (
            "token_secret",
            c.token_secret.is_some(),
            &["telegram", "discord"],
        ),
        ("api_base", c.api_base.is_some(), &["telegram", "discord"]),
        ("webhook_url", c.webhook_url.is_some(), &["telegram"]),
        ("key_secret", c.key_secret.is_some(), &["webhook"]),
        ("url", c.url.is_some(), &["webhook"]),
    ];
    if let Some((key, _, kinds)) = settings
        .iter()
        .find(|(_, set, kinds)| *set && !kinds.contains(&c.kind.as_str()))
    {
        return Err((
            key,
            format!("is a setting of {}, not of {}", kinds.join(" and "), c.kind),
        ));
    }
    match c.kind.as_str() {
        "irc" => irc_rules(c),
        "telegram" | "discord" => bot_rules(c),
        "webhook" => hook_rules(c),
        "matrix" => matrix_rules(c),
        "email" => email_rules(c),
        _ => Ok(()),
    }
}

/// A `trusted_relays` entry: an address (as a one-address range) or a range.
pub fn parse_relay(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

fn email_rules(c: &ChannelConfig) -> Result<(), (&'static str, String)> {
    for (key, value) in [
        ("imap_server", &c.imap_server),
        ("smtp_server", &c.smtp_server),
    ] {
        match value {
            None => return Err((key, "is required: host:port".into())),
            Some(v) if !valid_host_port(v) => {
                return Err((
                    key,
                    format!("{v:?} is not host:port (e.g. imap.example.org:993)"),
                ));
            }
            Some(_) => {}
        }
    }
    match &c.address {
        None => {
            return Err((
                "address",
                "is required: the assistant's email address".into(),
            ));
        }
        Some(a)
            if !a.contains('@') || a.chars().any(|ch| ch.is_whitespace() || ch.is_control()) =>
        {
            return Err(("address", format!("{a:?} is not an email address")));
        }
        Some(_) => {}
    }
    match &c.authserv_id {
        None => {
            return Err((
                "authserv_id",
                "is required: the name your mail server puts in Authentication-Results (e.g. mx.example.org); only mail it vouches for is read".into(),
            ));
        }
        Some(id) if id.trim().is_empty() || id.contains(';') => {
            return Err(("authserv_id", format!("{id:?} is not a server name")));
        }
        Some(_) => {}
    }
    if let Some(bad) = c.trusted_relays.iter().find(|r| parse_relay(r).is_none()) {
        return Err((
            "trusted_relays",
            format!("{bad:?} is not an IP address or range (10.0.0.25, 192.168.1.0/24)"),
        ));
    }
    if c.password_secret.is_none() {
        return Err((
            "password_secret",
            "is required: the vault secret holding the mailbox password".into(),
        ));
    }
    Ok(())
}

fn matrix_rules(c: &ChannelConfig) -> Result<(), (&'static str, String)> {
    let Some(hs) = &c.homeserver else {
        return Err((
            "homeserver",
            "is required: the homeserver's URL (https://matrix.example.org)".into(),
        ));
    };
    if !plain_url(hs) {
        return Err((
            "homeserver",
            format!("{hs:?} is not an http(s) URL without credentials"),
        ));
    }
    let Some(user) = &c.user else {
        return Err((
            "user",
            "is required: the bot's user id (@bot:example.org) or name".into(),
        ));
    };
    if user.trim().is_empty() || user.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(("user", format!("{user:?} is not a Matrix user id or name")));
    }
    if c.password_secret.is_none() {
        return Err((
            "password_secret",
            "is required: the vault secret holding the bot's password".into(),
        ));
    }
    if let Some(bad) = c
        .rooms
        .iter()
        .find(|r| !(r.starts_with('!') || r.starts_with('#')) || !r.contains(':'))
    {
        return Err((
            "rooms",
            format!("{bad:?} is not a room id (!id:server) or alias (#name:server)"),
        ));
    }
    Ok(())
}

fn hook_rules(c: &ChannelConfig) -> Result<(), (&'static str, String)> {
    if c.key_secret.is_none() {
        return Err((
            "key_secret",
            "is required: the vault secret holding the HMAC key (`moat vault add NAME`)".into(),
        ));
    }
    if let Some(u) = &c.url
        && !plain_url(u)
    {
        return Err((
            "url",
            format!("{u:?} is not an http(s) URL without credentials"),
        ));
    }
    if c.replay_window < Duration::from_secs(1) || c.replay_window > Duration::from_secs(3600) {
        return Err(("replay_window", "must be between 1s and 1h".into()));
    }
    Ok(())
}

/// An http(s) URL with a host and no credentials in it.
fn plain_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

/// A bot on a service's API: its token, and where the API is.
fn bot_rules(c: &ChannelConfig) -> Result<(), (&'static str, String)> {
    if let Some(u) = &c.webhook_url
        && !plain_url(u)
    {
        return Err((
            "webhook_url",
            format!("{u:?} is not an http(s) URL without credentials (Telegram wants https)"),
        ));
    }
    if c.token_secret.is_none() {
        return Err((
            "token_secret",
            "is required: the vault secret holding the bot token (`moat vault add NAME`)".into(),
        ));
    }
    if let Some(base) = &c.api_base {
        let ok = url::Url::parse(base).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
        });
        if !ok {
            return Err((
                "api_base",
                format!("{base:?} is not an http(s) URL without credentials or query"),
            ));
        }
    }
    Ok(())
}

fn irc_rules(c: &ChannelConfig) -> Result<(), (&'static str, String)> {
    let Some(server) = &c.server else {
        return Err(("server", "is required: the IRC server as host:port".into()));
    };
    if !valid_host_port(server) {
        return Err((
            "server",
            format!("{server:?} is not host:port (e.g. irc.libera.chat:6697)"),
        ));
    }
    let Some(nick) = &c.nick else {
        return Err(("nick", "is required: the assistant's nick".into()));
    };
    if !valid_nick(nick) {
        return Err((
            "nick",
            format!(
                "{nick:?} is not an IRC nick (a letter first, then letters, digits, -_[]\\`^{{}}|; at most 30)"
            ),
        ));
    }
    if c.sasl_user.is_some() && c.password_secret.is_none() {
        return Err((
            "password_secret",
            "sasl_user needs the vault secret holding its password".into(),
        ));
    }
    if let Some(bad) = c.rooms.iter().find(|r| !valid_irc_room(r)) {
        return Err((
            "rooms",
            format!("{bad:?} is not an IRC channel name (#name)"),
        ));
    }
    Ok(())
}

fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty()
        && port.parse::<u16>().is_ok_and(|p| p > 0)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
}

/// An IRC nick as RFC 2812 allows (and a length servers accept).
pub fn valid_nick(n: &str) -> bool {
    let mut chars = n.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let special = |c: char| "[]\\`_^{|}".contains(c);
    n.len() <= 30
        && (first.is_ascii_alphabetic() || special(first))
        && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

fn valid_irc_room(r: &str) -> bool {
    (r.starts_with('#') || r.starts_with('&'))
        && r.len() > 1
        && r.len() <= 50
        && !r
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == '\x07' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irc() -> ChannelConfig {
        ChannelConfig {
            kind: "irc".into(),
            server: Some("127.0.0.1:6667".into()),
            nick: Some("moat".into()),
            ..Default::default()
        }
    }

    fn check(c: ChannelConfig) -> Result<(), String> {
        let mut m = BTreeMap::new();
        m.insert("home".to_string(), c);
        validate(&m, &PairingConfig::default()).map_err(|e| format!("{}: {}", e.key, e.problem))
    }

    #[test]
    fn open_must_be_said_twice() {
        let mut c = irc();
        c.dm_policy = DmPolicy::Open;
        assert!(check(c.clone()).unwrap_err().contains("allow_from"));
        c.allow_from = vec!["*".into()];
        check(c.clone()).unwrap();
        c.dm_policy = DmPolicy::Pairing;
        assert!(check(c).unwrap_err().contains("needs dm_policy"));
    }

    #[test]
    fn irc_needs_a_server_and_a_nick() {
        let mut c = irc();
        c.server = Some("nohost".into());
        assert!(check(c).unwrap_err().contains("host:port"));
        let mut c = irc();
        c.nick = Some("1bad nick".into());
        assert!(check(c).unwrap_err().contains("nick"));
        let mut c = irc();
        c.rooms = vec!["home".into()];
        assert!(check(c).unwrap_err().contains("rooms"));
        check(irc()).unwrap();
    }

    #[test]
    fn settings_of_another_kind_are_refused() {
        let mut c = irc();
        c.token_secret = Some("t".into());
        assert!(
            check(c)
                .unwrap_err()
                .contains("setting of telegram and discord")
        );
        let t = ChannelConfig {
            kind: "telegram".into(),
            token_secret: Some("t".into()),
            nick: Some("x".into()),
            ..Default::default()
        };
        assert!(check(t).unwrap_err().contains("setting of irc"));
        let t = ChannelConfig {
            kind: "telegram".into(),
            token_secret: Some("t".into()),
            api_base: Some("http://user:pw@127.0.0.1:1".into()),
            ..Default::default()
        };
        assert!(check(t).unwrap_err().contains("api_base"));
    }

    #[test]
    fn unknown_kinds_are_named() {
        let c = ChannelConfig {
            kind: "carrier-pigeon".into(),
            ..Default::default()
        };
        assert!(
            check(c)
                .unwrap_err()
                .contains("one of irc, matrix, telegram, discord, email, webhook")
        );
    }
}
