//! Email: IMAP in (IDLE, so a message is seen as it arrives, with a periodic re-check),
//! SMTP out, replies threaded by Message-ID (`In-Reply-To`, `References`, `Re:`).
//!
//! A sender is the address in `From:`, which anyone can write. So a message is taken only
//! when the receiving server vouches for it: its topmost `Authentication-Results` header
//! from the configured `authserv_id` (the server's own name, which it strips from what
//! senders forge) must show DMARC, DKIM or SPF passing for the From domain, or its topmost
//! `Received` header (the one the receiving server adds, `by` its `authserv_id`) must name
//! one of the `trusted_relays` as the host it took the message from (a relay that
//! authenticates its own senders). Anything else is dropped without an answer: replying to forged mail would make moat a source of
//! backscatter, and would hand a pairing code to whoever forged the address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use moat_core::secret::SecretString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::adapter::{Adapter, ChannelError, Incoming, Target};

/// Replies are split at this size (mail takes more; people read less at once).
pub const MAX_PIECE: usize = 64 * 1024;
/// The largest message read from the mailbox; a larger one is marked seen and skipped.
const MAX_MESSAGE: usize = 1024 * 1024;
/// The longest text taken from a message's body.
const MAX_TEXT: usize = 16 * 1024;
/// IDLE is renewed this often, and the mailbox searched again: servers drop IDLE after
/// 30 minutes, and one that does not tell of new mail is still read within this.
const IDLE_RENEW: Duration = Duration::from_secs(5 * 60);

/// How to reach one mailbox.
#[derive(Clone)]
pub struct EmailSettings {
    /// IMAP `host:port`.
    pub imap_server: String,
    /// SMTP `host:port` (465: TLS at once; otherwise STARTTLS when `tls`).
    pub smtp_server: String,
    /// TLS for both (only loopback or a trusted network without).
    pub tls: bool,
    /// The assistant's address (From of its replies).
    pub address: String,
    /// The login name for both (usually the address).
    pub user: String,
    /// The password.
    pub password: SecretString,
    /// The receiving server's `Authentication-Results` id whose verdicts are trusted.
    pub authserv_id: String,
    /// Relays whose mail the receiving server took is vouched for.
    pub trusted_relays: Vec<ipnet::IpNet>,
    /// The most text one reply carries.
    pub max_piece: usize,
}

/// What a reply to a sender needs to thread.
#[derive(Clone, Default)]
struct Thread {
    subject: String,
    message_id: Option<String>,
    references: Vec<String>,
}

/// A mailbox, watched by the hub.
pub struct Email {
    settings: EmailSettings,
    /// The thread of each sender's last message, for the reply.
    threads: Mutex<HashMap<String, Thread>>,
    smtp: AsyncSmtpTransport<Tokio1Executor>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> Stream for T {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn host_port(s: &str) -> (String, u16) {
    match s.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (s.to_string(), 0),
    }
}

impl Email {
    /// An adapter for `settings`.
    pub fn new(settings: EmailSettings) -> Result<Email, ChannelError> {
        let (host, port) = host_port(&settings.smtp_server);
        let builder = if !settings.tls {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
        } else if port == 465 {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| ChannelError::Refused(format!("the SMTP server {host:?}: {e}")))?
        } else {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| ChannelError::Refused(format!("the SMTP server {host:?}: {e}")))?
        };
        let smtp = builder
            .port(port)
            .credentials(Credentials::new(
                settings.user.clone(),
                settings.password.expose().to_string(),
            ))
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Email {
            settings,
            threads: Mutex::new(HashMap::new()),
            smtp,
        })
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, ChannelError> {
        let s = &self.settings;
        let tcp = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(&s.imap_server))
            .await
            .map_err(|_| {
                ChannelError::Connection(format!("connecting to {} timed out", s.imap_server))
            })?
            .map_err(|e| {
                ChannelError::Connection(format!("cannot connect to {}: {e}", s.imap_server))
            })?;
        if !s.tls {
            return Ok(Box::new(tcp));
        }
        let (host, _) = host_port(&s.imap_server);
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| ChannelError::Refused(format!("{host:?} is not a TLS server name")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(crate::irc::client_tls(None)))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                ChannelError::Connection(format!("TLS with {} failed: {e}", s.imap_server))
            })?;
        Ok(Box::new(tls))
    }

    /// The message as a person's message to the assistant, if its sender is vouched for.
    fn incoming(&self, raw: &[u8]) -> Option<Incoming> {
        let message = mail_parser::MessageParser::default().parse(raw)?;
        let from = message.from()?.first()?.address()?.to_ascii_lowercase();
        if from == self.settings.address.to_ascii_lowercase() {
            return None;
        }
        if !vouched(raw, &self.settings.authserv_id, &from)
            && !relayed(
                raw,
                &self.settings.authserv_id,
                &self.settings.trusted_relays,
            )
        {
            tracing::info!(
                "an email whose sender the receiving server did not authenticate was dropped"
            );
            return None;
        }
        let text: String = message
            .body_text(0)
            .map(|t| without_quotes(&t))
            .unwrap_or_default()
            .chars()
            .take(MAX_TEXT)
            .collect();
        let subject = message.subject().unwrap_or("").to_string();
        let message_id = message.message_id().map(|m| format!("<{m}>"));
        let mut references: Vec<String> = message
            .references()
            .as_text_list()
            .map(|l| l.iter().map(|r| format!("<{r}>")).collect())
            .or_else(|| {
                message
                    .references()
                    .as_text()
                    .map(|r| vec![format!("<{r}>")])
            })
            .unwrap_or_default();
        if let Some(id) = &message_id {
            references.push(id.clone());
        }
        let body = if text.trim().is_empty() {
            subject.clone()
        } else {
            text
        };
        lock(&self.threads).insert(
            from.clone(),
            Thread {
                subject,
                message_id,
                references,
            },
        );
        let display = message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .map_or_else(|| from.clone(), |n| format!("{n} <{from}>"));
        Some(Incoming {
            place: Target::Direct(from.clone()),
            sender: from,
            display,
            mentioned: true,
            text: body,
        })
    }
}

/// The body without quoted lines and what follows a signature mark.
fn without_quotes(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        if line == "-- " {
            break;
        }
        if line.trim_start().starts_with('>') {
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

/// Whether the topmost `Authentication-Results` from `authserv_id` shows DMARC, DKIM or
/// SPF passing for the domain of `from` (relaxed alignment: the same domain or a parent).
fn vouched(raw: &[u8], authserv_id: &str, from: &str) -> bool {
    let Some(domain) = from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()) else {
        return false;
    };
    let aligned = |d: &str| {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        // Relaxed alignment: one is the other or a subdomain of it; a bare top-level
        // domain aligns with nothing.
        d.contains('.')
            && (domain == d
                || domain.ends_with(&format!(".{d}"))
                || d.ends_with(&format!(".{domain}")))
    };
    let Some(results) = headers(raw)
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authentication-results"))
        .map(|(_, value)| value)
        .find(|value| {
            value
                .split(';')
                .next()
                .and_then(|id| id.split_whitespace().next())
                .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
        })
    else {
        return false;
    };
    results.split(';').skip(1).any(|clause| {
        let mut words = clause.split_whitespace();
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else {
            return false;
        };
        if !result.eq_ignore_ascii_case("pass") {
            return false;
        }
        let props: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let prop = |k: &str| {
            props
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| *v)
        };
        match method.to_ascii_lowercase().as_str() {
            "dmarc" => prop("header.from").is_some_and(aligned),
            "dkim" => prop("header.d")
                .or(prop("header.i").map(|i| i.rsplit('@').next().unwrap_or(i)))
                .is_some_and(aligned),
            "spf" => prop("smtp.mailfrom")
                .map(|m| m.rsplit('@').next().unwrap_or(m))
                .is_some_and(aligned),
            _ => false,
        }
    })
}

/// Whether the topmost `Received` header was added by `authserv_id` (the receiving
/// server, whose header is always the top one) for a message it took from an address in
/// `relays`. Lower `Received` headers are the sender's to write and are never read.
fn relayed(raw: &[u8], authserv_id: &str, relays: &[ipnet::IpNet]) -> bool {
    if relays.is_empty() {
        return false;
    }
    let Some(received) = headers(raw)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("received"))
        .map(|(_, value)| value)
    else {
        return false;
    };
    // `from HELO (NAME [ADDRESS]) by HOST ...; DATE`
    let words: Vec<&str> = received.split_whitespace().collect();
    let by = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("by"))
        .and_then(|i| words.get(i + 1));
    if !by.is_some_and(|host| host.trim_end_matches(';').eq_ignore_ascii_case(authserv_id)) {
        return false;
    }
    let from_part = received
        .split_whitespace()
        .take_while(|w| !w.eq_ignore_ascii_case("by"))
        .collect::<Vec<_>>()
        .join(" ");
    // Every bracketed address before `by` must be a trusted relay: the sender picks the
    // HELO name, and `EHLO [10.0.0.25]` from elsewhere reads `from [10.0.0.25] (unknown
    // [203.0.113.9])`; only the address in the server's own comment is the peer's.
    let addresses: Vec<&str> = from_part
        .split('[')
        .skip(1)
        .map(|rest| rest.split(']').next().unwrap_or(""))
        .collect();
    !addresses.is_empty()
        && addresses.iter().all(|a| {
            let a = a
                .strip_prefix("IPv6:")
                .or_else(|| a.strip_prefix("ipv6:"))
                .unwrap_or(a);
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| relays.iter().any(|r| r.contains(&ip)))
        })
}

/// The message's header fields, unfolded, in order.
fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\n\n")
        .next()
        .unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

#[async_trait::async_trait]
impl Adapter for Email {
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        let s = &self.settings;
        let stream = self.connect().await?;
        let mut client = async_imap::Client::new(stream);
        client
            .read_response()
            .await
            .map_err(|e| ChannelError::Connection(format!("no IMAP greeting: {e}")))?
            .ok_or_else(|| ChannelError::Connection("the IMAP server closed at once".into()))?;
        let mut session = client.login(&s.user, s.password.expose()).await.map_err(|_| {
            ChannelError::Refused(format!(
                "the IMAP server refused the login of {:?}; check user and the vault secret named by password_secret",
                s.user
            ))
        })?;
        let imap = |what: &str| {
            let what = what.to_string();
            move |e: async_imap::error::Error| ChannelError::Connection(format!("IMAP {what}: {e}"))
        };
        session.select("INBOX").await.map_err(imap("select"))?;
        connected();
        loop {
            let unseen = session.uid_search("UNSEEN").await.map_err(imap("search"))?;
            let mut uids: Vec<u32> = unseen.into_iter().collect();
            uids.sort_unstable();
            for uid in uids {
                let raw = {
                    let mut fetched = session
                        .uid_fetch(uid.to_string(), "(RFC822.SIZE BODY.PEEK[])")
                        .await
                        .map_err(imap("fetch"))?;
                    let mut raw = None;
                    while let Some(f) = fetched.next().await {
                        let f = f.map_err(imap("fetch"))?;
                        if f.size.is_some_and(|n| n as usize > MAX_MESSAGE) {
                            continue;
                        }
                        raw = f.body().map(<[u8]>::to_vec);
                    }
                    raw
                };
                // Seen before it is handed on: a crash must not answer it twice.
                {
                    let mut stored = session
                        .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                        .await
                        .map_err(imap("store"))?;
                    while stored.next().await.is_some() {}
                }
                if let Some(m) = raw.as_deref().and_then(|r| self.incoming(r))
                    && inbox.send(m).await.is_err()
                {
                    return Ok(());
                }
            }
            let mut idle = session.idle();
            idle.init().await.map_err(imap("idle"))?;
            let (wait, _stop) = idle.wait_with_timeout(IDLE_RENEW);
            wait.await.map_err(imap("idle"))?;
            session = idle.done().await.map_err(imap("idle"))?;
        }
    }

    async fn send(&self, to: &Target, text: &str) -> Result<(), ChannelError> {
        let (Target::Direct(who) | Target::Room(who)) = to;
        let thread = lock(&self.threads).get(who).cloned().unwrap_or_default();
        let from: Mailbox = self.settings.address.parse().map_err(|_| {
            ChannelError::Send("the channel's address is not an email address".into())
        })?;
        let rcpt: Mailbox = who
            .parse()
            .map_err(|_| ChannelError::Send(format!("{who:?} is not an email address")))?;
        let subject = if thread.subject.is_empty() {
            "Your assistant".to_string()
        } else if thread.subject.to_ascii_lowercase().starts_with("re:") {
            thread.subject.clone()
        } else {
            format!("Re: {}", thread.subject)
        };
        let mut builder = lettre::Message::builder()
            .from(from)
            .to(rcpt)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        if let Some(id) = &thread.message_id {
            builder = builder.in_reply_to(id.clone());
        }
        if !thread.references.is_empty() {
            builder = builder.references(thread.references.join(" "));
        }
        let message = builder
            .body(text.to_string())
            .map_err(|e| ChannelError::Send(format!("building the reply: {e}")))?;
        self.smtp
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| ChannelError::Send(format!("sending the reply: {e}")))
    }

    fn max_piece(&self) -> usize {
        self.settings.max_piece.min(MAX_PIECE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(results: &str) -> Vec<u8> {
        format!("Authentication-Results: {results}\r\nFrom: Alice <alice@example.org>\r\nSubject: hi\r\n\r\nbody\r\n").into_bytes()
    }

    #[test]
    fn only_the_trusted_server_vouches_for_an_aligned_domain() {
        let ok = |r: &str| vouched(&mail(r), "mx.home.test", "alice@example.org");
        assert!(ok(
            "mx.home.test; dkim=pass header.d=example.org header.s=s1"
        ));
        assert!(ok(
            "mx.home.test; spf=pass smtp.mailfrom=bounce@mail.example.org; dkim=none"
        ));
        assert!(
            !ok("mx.home.test; spf=pass smtp.mailfrom=x@evil.test"),
            "spf mailfrom must align with From"
        );
        assert!(ok("mx.home.test; dmarc=pass header.from=example.org"));
        assert!(!ok("mx.home.test; dkim=fail header.d=example.org"));
        assert!(
            !ok("other.server; dkim=pass header.d=example.org"),
            "a forged header from another id"
        );
        assert!(
            !ok("mx.home.test; dkim=pass header.d=org"),
            "alignment is to the domain, not a TLD"
        );
        // Only the topmost header from the trusted id counts.
        let two = b"Authentication-Results: mx.home.test; dkim=fail header.d=example.org\r\n\
Authentication-Results: mx.home.test; dkim=pass header.d=example.org\r\nFrom: a@example.org\r\n\r\nx";
        assert!(!vouched(two, "mx.home.test", "a@example.org"));
    }

    #[test]
    fn a_trusted_relay_vouches_only_in_the_receiving_servers_own_header() {
        let relays: Vec<ipnet::IpNet> = vec![
            "10.0.0.25/32".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ];
        let mail = |received: &str| {
            format!("{received}From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n").into_bytes()
        };
        let top = "Received: from relay.corp (relay.corp [10.0.0.25])\r\n\tby mx.home.test (Postfix) with ESMTPS id 1;\r\n\tMon, 7 Dec 2026 15:00:00 +0000\r\n";
        assert!(relayed(&mail(top), "mx.home.test", &relays));
        assert!(relayed(
            &mail("Received: from r (r [IPv6:fd00:1::7]) by MX.home.test; x\r\n"),
            "mx.home.test",
            &relays
        ));
        // Not from a trusted address, not added by the receiving server, or only lower
        // down (written by the sender): not vouched.
        for received in [
            "Received: from evil (evil [10.0.0.26]) by mx.home.test; x\r\n",
            "Received: from relay.corp (relay.corp [10.0.0.25]) by mx.evil.test; x\r\n",
            "Received: from evil (evil [203.0.113.9]) by mx.home.test; x\r\nReceived: from relay.corp (relay.corp [10.0.0.25]) by mx.home.test; x\r\n",
            "Received: from relay.corp by mx.home.test; x\r\n",
            // A HELO that names the relay's address, from another host.
            "Received: from [10.0.0.25] (unknown [203.0.113.9]) by mx.home.test; x\r\n",
        ] {
            assert!(
                !relayed(&mail(received), "mx.home.test", &relays),
                "{received}"
            );
        }
        assert!(!relayed(&mail(top), "mx.home.test", &[]));
    }

    #[test]
    fn quotes_and_signatures_are_left_out() {
        assert_eq!(
            without_quotes("yes please\n\n> earlier text\n-- \nAlice"),
            "yes please"
        );
    }
}
