//! IRC (RFC 1459/2812 with the IRCv3 pieces that matter here): TLS (rustls, ring) or
//! plain, capability negotiation (`CAP LS 302`), SASL PLAIN, a nick of our own without
//! NickServ (taken → `nick_`, `nick_2`...), PING/PONG both ways, a typing indicator
//! (`+typing` on `TAGMSG`) where the server offers `message-tags`, and a flood-safe send
//! queue (a burst of 4, then `send_per_second`).
//!
//! A sender is their nick, case-folded as RFC 1459 does (`[]\~` are `{}|^`). A nick is
//! only as much an identity as the network makes it: on a network without registered
//! nicks whoever takes a paired nick speaks as that sender (docs/channels.md).
//!
//! Nothing from the model reaches the wire unfiltered: control characters (CR and LF
//! above all, which would start a second IRC command) are removed from every line sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use moat_core::secret::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::adapter::{Adapter, ChannelError, Incoming, Target};

/// The most text one PRIVMSG carries: 512 bytes a line, less the command, the target
/// and the prefix the server adds when relaying it (`:nick!user@host `).
pub const MAX_PIECE: usize = 350;
/// Silence after which we ask the server whether it is still there.
const IDLE: Duration = Duration::from_secs(90);
/// How long a reply waits for a connection before it is given up.
const SEND_WAIT: Duration = Duration::from_secs(30);
/// The longest line read from a server (IRCv3 tags allow 8 KiB of them).
const MAX_LINE: usize = 16 * 1024;

/// How to reach one IRC network.
#[derive(Clone)]
pub struct IrcSettings {
    /// `host:port`.
    pub server: String,
    /// TLS, checked against `roots` (the system's when None).
    pub tls: bool,
    /// Trust these instead of the system store (a private network's CA).
    pub roots: Option<rustls::RootCertStore>,
    /// The nick we ask for.
    pub nick: String,
    /// SASL PLAIN account, with `password`.
    pub sasl_user: Option<String>,
    /// The SASL password, or the server password (PASS) without `sasl_user`.
    pub password: Option<SecretString>,
    /// Channels joined.
    pub rooms: Vec<String>,
    /// Messages sent a second, after a burst of 4.
    pub send_per_second: f64,
    /// The most text one message carries.
    pub max_piece: usize,
}

/// An IRC connection, reconnected by the hub.
pub struct Irc {
    settings: IrcSettings,
    /// The running connection's send queue, None while disconnected.
    queue: watch::Sender<Option<mpsc::Sender<String>>>,
    /// Whether the running connection's server took `message-tags` (typing indicators).
    tags: AtomicBool,
}

impl Irc {
    /// An adapter for `settings`.
    pub fn new(settings: IrcSettings) -> Irc {
        Irc {
            settings,
            queue: watch::Sender::new(None),
            tags: AtomicBool::new(false),
        }
    }

    async fn stream(&self) -> Result<Box<dyn Stream>, ChannelError> {
        let s = &self.settings;
        let tcp = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(&s.server))
            .await
            .map_err(|_| ChannelError::Connection(format!("connecting to {} timed out", s.server)))?
            .map_err(|e| {
                ChannelError::Connection(format!("cannot connect to {}: {e}", s.server))
            })?;
        let _ = tcp.set_nodelay(true);
        if !s.tls {
            return Ok(Box::new(tcp));
        }
        let host = s
            .server
            .rsplit_once(':')
            .map_or(s.server.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| ChannelError::Refused(format!("{host:?} is not a TLS server name")))?;
        let config = client_tls(s.roots.clone());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| ChannelError::Connection(format!("TLS with {} failed: {e}", s.server)))?;
        Ok(Box::new(tls))
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The CA certificates in a PEM file, to trust instead of the system's.
pub fn roots_from_pem(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err("has no certificate".into());
    }
    Ok(store)
}

/// A TLS client config on ring, trusting `roots` or the system's (the bundled Mozilla
/// roots when the system has none).
pub(crate) fn client_tls(roots: Option<rustls::RootCertStore>) -> rustls::ClientConfig {
    let roots = roots.unwrap_or_else(|| {
        let mut store = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(native.certs);
        if added == 0 {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        store
    });
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[async_trait::async_trait]
impl Adapter for Irc {
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        let stream = self.stream().await?;
        let (read, write) = tokio::io::split(stream);
        let (urgent_tx, urgent_rx) = mpsc::unbounded_channel::<String>();
        let (queue_tx, queue_rx) = mpsc::channel::<String>(1024);
        let writer = tokio::spawn(write_lines(
            write,
            urgent_rx,
            queue_rx,
            self.settings.send_per_second,
        ));
        self.tags.store(false, Ordering::Relaxed);
        let mut session = Session {
            settings: &self.settings,
            urgent: urgent_tx,
            queue: queue_tx,
            nick: self.settings.nick.clone(),
            tries: 0,
            welcomed: false,
            offered: Vec::new(),
            tags: &self.tags,
        };
        let result = session.run(read, &inbox, connected, &self.queue).await;
        self.queue.send_replace(None);
        self.tags.store(false, Ordering::Relaxed);
        writer.abort();
        result
    }

    async fn send(&self, to: &Target, text: &str) -> Result<(), ChannelError> {
        let target = match to {
            Target::Direct(nick) | Target::Room(nick) => nick,
        };
        self.queue_line(format!("PRIVMSG {} :{}", clean(target), clean(text)))
            .await
    }

    async fn typing(&self, to: &Target) {
        // Only on a live connection whose server took tags: an indicator never waits.
        if !self.tags.load(Ordering::Relaxed) || self.queue.borrow().is_none() {
            return;
        }
        let target = match to {
            Target::Direct(nick) | Target::Room(nick) => nick,
        };
        // IRCv3 typing: clients show it for a few seconds, or until the message arrives.
        let line = format!("@+typing=active TAGMSG {}", clean(target));
        if let Err(e) = self.queue_line(line).await {
            tracing::debug!("no typing indicator: {e}");
        }
    }

    fn max_piece(&self) -> usize {
        self.settings.max_piece.min(MAX_PIECE)
    }
}

impl Irc {
    /// Puts `line` on the running connection's send queue, waiting a while for one.
    async fn queue_line(&self, line: String) -> Result<(), ChannelError> {
        let mut rx = self.queue.subscribe();
        let queue = tokio::time::timeout(SEND_WAIT, rx.wait_for(Option::is_some))
            .await
            .map_err(|_| ChannelError::Send("not connected to the IRC server".into()))?
            .map_err(|_| ChannelError::Send("the channel is shutting down".into()))?
            .clone()
            .expect("waited for a queue");
        queue
            .send(line)
            .await
            .map_err(|_| ChannelError::Send("the connection closed before the message went".into()))
    }
}

/// One connection's registration and messages.
struct Session<'a> {
    settings: &'a IrcSettings,
    urgent: mpsc::UnboundedSender<String>,
    queue: mpsc::Sender<String>,
    /// The nick the server knows us by.
    nick: String,
    /// Nicks tried that were taken.
    tries: u32,
    welcomed: bool,
    /// The capabilities the server listed so far (`CAP LS` may take several lines).
    offered: Vec<String>,
    /// Set when the server took `message-tags`.
    tags: &'a AtomicBool,
}

impl Session<'_> {
    fn now(&self, line: String) {
        let _ = self.urgent.send(line);
    }

    async fn run(
        &mut self,
        read: impl AsyncRead + Unpin,
        inbox: &mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
        published: &watch::Sender<Option<mpsc::Sender<String>>>,
    ) -> Result<(), ChannelError> {
        let s = self.settings;
        let sasl = s.sasl_user.is_some() && s.password.is_some();
        if !sasl && let Some(p) = &s.password {
            self.now(format!("PASS :{}", clean(p.expose())));
        }
        // A server without capabilities answers 421 and registers us anyway; one with
        // them waits for CAP END.
        self.now("CAP LS 302".into());
        self.now(format!("NICK {}", self.nick));
        self.now(format!("USER {} 0 * :moat assistant", self.nick));
        let mut reader = BufReader::new(read);
        let mut buf = Vec::with_capacity(512);
        let mut pinged = false;
        loop {
            buf.clear();
            let read = tokio::time::timeout(IDLE, read_line(&mut reader, &mut buf)).await;
            match read {
                Err(_) if !pinged => {
                    pinged = true;
                    self.now("PING :moat".into());
                    continue;
                }
                Err(_) => {
                    return Err(ChannelError::Connection(
                        "the IRC server stopped answering".into(),
                    ));
                }
                Ok(Err(e)) => return Err(ChannelError::Connection(format!("reading: {e}"))),
                Ok(Ok(0)) => {
                    return Err(ChannelError::Connection(
                        "the IRC server closed the connection".into(),
                    ));
                }
                Ok(Ok(_)) => pinged = false,
            }
            let text = String::from_utf8_lossy(&buf);
            let Some(m) = Message::parse(text.trim_end_matches(['\r', '\n'])) else {
                continue;
            };
            match m.command {
                "PING" => self.now(format!("PONG :{}", clean(m.arg(0)))),
                "CAP" => self.capabilities(&m, sasl)?,
                "421" if m.arg(1).eq_ignore_ascii_case("CAP") && sasl => {
                    return Err(no_sasl());
                }
                "AUTHENTICATE" if m.arg(0) == "+" => {
                    let user = s.sasl_user.as_deref().unwrap_or_default();
                    let pass = s
                        .password
                        .as_ref()
                        .map(SecretString::expose)
                        .unwrap_or_default();
                    let blob = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}\0{user}\0{pass}"));
                    for chunk in blob.as_bytes().chunks(400) {
                        self.now(format!("AUTHENTICATE {}", String::from_utf8_lossy(chunk)));
                    }
                    if blob.len() % 400 == 0 {
                        self.now("AUTHENTICATE +".into());
                    }
                }
                "903" => self.now("CAP END".into()),
                "902" | "904" | "905" | "906" | "908" => {
                    return Err(ChannelError::Refused(format!(
                        "SASL login as {:?} failed ({}); check sasl_user and the password secret",
                        s.sasl_user.as_deref().unwrap_or_default(),
                        m.command
                    )));
                }
                "464" => {
                    return Err(ChannelError::Refused(
                        "the IRC server refused the password".into(),
                    ));
                }
                "465" => {
                    return Err(ChannelError::Refused(format!(
                        "the IRC server banned this client: {}",
                        m.last()
                    )));
                }
                "432" | "433" | "436" | "437" if !self.welcomed => {
                    self.tries += 1;
                    if self.tries > 9 {
                        return Err(ChannelError::Refused(format!(
                            "every nick from {} on is taken",
                            s.nick
                        )));
                    }
                    self.nick = next_nick(&s.nick, self.tries);
                    self.now(format!("NICK {}", self.nick));
                }
                "001" => {
                    self.welcomed = true;
                    if !m.arg(0).is_empty() {
                        self.nick = m.arg(0).to_string();
                    }
                    for room in &s.rooms {
                        let _ = self.queue.send(format!("JOIN {}", clean(room))).await;
                    }
                    published.send_replace(Some(self.queue.clone()));
                    connected();
                }
                "NICK" if fold(m.nick()) == fold(&self.nick) => {
                    self.nick = m.arg(0).to_string();
                }
                "KICK" if fold(m.arg(1)) == fold(&self.nick) => {
                    let _ = self.queue.send(format!("JOIN {}", clean(m.arg(0)))).await;
                }
                "ERROR" => {
                    return Err(ChannelError::Connection(format!(
                        "the IRC server ended the connection: {}",
                        m.last()
                    )));
                }
                "PRIVMSG" => {
                    if let Some(incoming) = self.incoming(&m)
                        && inbox.send(incoming).await.is_err()
                    {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }

    /// One step of capability negotiation: ask for `message-tags` (typing) and `sasl`
    /// (when configured) among what the server lists; end it once answered.
    fn capabilities(&mut self, m: &Message<'_>, sasl: bool) -> Result<(), ChannelError> {
        match m.arg(1) {
            "LS" => {
                self.offered.extend(
                    m.last()
                        .split_whitespace()
                        .map(|c| c.split('=').next().unwrap_or(c).to_ascii_lowercase()),
                );
                if m.arg(2) == "*" {
                    return Ok(()); // more lines follow
                }
                let has = |cap: &str| self.offered.iter().any(|c| c == cap);
                if sasl && !has("sasl") {
                    return Err(no_sasl());
                }
                let wanted: Vec<&str> = [("message-tags", true), ("sasl", sasl)]
                    .into_iter()
                    .filter(|(cap, want)| *want && has(cap))
                    .map(|(cap, _)| cap)
                    .collect();
                if wanted.is_empty() {
                    self.now("CAP END".into());
                } else {
                    self.now(format!("CAP REQ :{}", wanted.join(" ")));
                }
            }
            "ACK" => {
                let acked: Vec<&str> = m.last().split_whitespace().collect();
                self.tags
                    .store(acked.contains(&"message-tags"), Ordering::Relaxed);
                if sasl && acked.contains(&"sasl") {
                    self.now("AUTHENTICATE PLAIN".into());
                } else {
                    self.now("CAP END".into());
                }
            }
            "NAK" if sasl => return Err(no_sasl()),
            "NAK" => self.now("CAP END".into()),
            _ => {}
        }
        Ok(())
    }

    fn incoming(&self, m: &Message<'_>) -> Option<Incoming> {
        let from = m.nick();
        let target = m.arg(0);
        let text = m.last();
        // CTCP (ACTION, VERSION...) is not a message to the assistant.
        if from.is_empty() || fold(from) == fold(&self.nick) || text.starts_with('\x01') {
            return None;
        }
        let text = strip_formatting(text);
        let sender = fold(from);
        if fold(target) == fold(&self.nick) {
            return Some(Incoming {
                place: Target::Direct(sender.clone()),
                sender,
                display: from.to_string(),
                mentioned: true,
                text,
            });
        }
        let (mentioned, text) = mention(&text, &self.nick);
        Some(Incoming {
            sender,
            display: from.to_string(),
            place: Target::Room(target.to_string()),
            mentioned,
            text,
        })
    }
}

fn no_sasl() -> ChannelError {
    ChannelError::Refused(
        "the IRC server does not offer SASL; remove sasl_user or use a network that has it".into(),
    )
}

/// Writes urgent lines (registration, PONG) at once and queued ones (messages, joins)
/// no faster than `per_second` after a burst of 4.
async fn write_lines(
    mut w: impl AsyncWrite + Unpin,
    mut urgent: mpsc::UnboundedReceiver<String>,
    mut queue: mpsc::Receiver<String>,
    per_second: f64,
) {
    let interval = Duration::from_secs_f64(1.0 / per_second.max(0.01));
    let burst = 4.0;
    let mut tokens: f64 = burst;
    let mut last = tokio::time::Instant::now();
    loop {
        let line = tokio::select! {
            biased;
            Some(line) = urgent.recv() => line,
            Some(line) = queue.recv() => {
                let now = tokio::time::Instant::now();
                tokens = (tokens + now.duration_since(last).as_secs_f64() / interval.as_secs_f64()).min(burst);
                last = now;
                if tokens < 1.0 {
                    let wait = interval.mul_f64(1.0 - tokens);
                    tokio::time::sleep(wait).await;
                    tokens = 1.0;
                    last = tokio::time::Instant::now();
                }
                tokens -= 1.0;
                line
            }
            else => return,
        };
        let mut bytes = line.into_bytes();
        bytes.truncate(510);
        bytes.extend_from_slice(b"\r\n");
        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (the rest of a longer one is dropped).
async fn read_line(
    r: &mut (impl AsyncBufReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..used.min(room)]);
        r.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

/// One IRC line: `[@tags] [:prefix] COMMAND params [:trailing]`.
#[derive(Debug)]
struct Message<'a> {
    prefix: &'a str,
    command: &'a str,
    args: Vec<&'a str>,
}

impl<'a> Message<'a> {
    fn parse(mut line: &'a str) -> Option<Message<'a>> {
        if line.starts_with('@') {
            line = line.split_once(' ')?.1.trim_start();
        }
        let mut prefix = "";
        if let Some(rest) = line.strip_prefix(':') {
            let (p, rest) = rest.split_once(' ')?;
            prefix = p;
            line = rest.trim_start();
        }
        let (head, trailing) = match line.split_once(" :") {
            Some((h, t)) => (h, Some(t)),
            None => (line, None),
        };
        let mut words = head.split(' ').filter(|w| !w.is_empty());
        let command = words.next()?;
        let mut args: Vec<&str> = words.collect();
        if let Some(t) = trailing {
            args.push(t);
        }
        Some(Message {
            prefix,
            command,
            args,
        })
    }

    fn arg(&self, i: usize) -> &'a str {
        self.args.get(i).copied().unwrap_or("")
    }

    fn last(&self) -> &'a str {
        self.args.last().copied().unwrap_or("")
    }

    /// The nick of the prefix (`nick!user@host`).
    fn nick(&self) -> &'a str {
        self.prefix.split(['!', '@']).next().unwrap_or("")
    }
}

/// A nick case-folded as RFC 1459 does, for comparing and as a sender id.
pub fn fold(nick: &str) -> String {
    nick.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The `n`th nick to try when `base` is taken: `base_`, then `base_2`, `base_3`...
fn next_nick(base: &str, n: u32) -> String {
    let suffix = if n == 1 {
        "_".to_string()
    } else {
        format!("_{n}")
    };
    let keep = base.len().min(30 - suffix.len());
    format!("{}{suffix}", &base[..keep])
}

/// Whether a room message addresses `nick` (`nick: ...`, `nick, ...`, or the nick as a
/// word anywhere), and the text with a leading address removed.
fn mention(text: &str, nick: &str) -> (bool, String) {
    let folded = fold(nick);
    let lead = text
        .split_once([':', ','])
        .filter(|(head, _)| fold(head.trim()) == folded);
    if let Some((_, rest)) = lead {
        return (true, rest.trim().to_string());
    }
    let word = |w: &str| {
        fold(w.trim_matches(|c: char| !c.is_alphanumeric() && !"[]\\`_^{|}-".contains(c))) == folded
    };
    (text.split_whitespace().any(word), text.to_string())
}

/// Text with mIRC formatting (bold, colours...) and other control characters removed.
fn strip_formatting(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Colour: \x03 then up to two digits, optionally ,NN.
            '\x03' => {
                for _ in 0..2 {
                    if chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                }
                if chars.peek() == Some(&',') {
                    let mut look = chars.clone();
                    look.next();
                    if look.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                        for _ in 0..2 {
                            if chars.peek().is_some_and(char::is_ascii_digit) {
                                chars.next();
                            }
                        }
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A line's worth of text safe to put on the wire: no CR, LF, NUL or other control
/// character (tabs become spaces).
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a session says during capability negotiation, for the server's `lines`.
    fn negotiate(sasl: bool, lines: &[&str]) -> (Vec<String>, Result<(), String>, bool) {
        let settings = IrcSettings {
            server: "127.0.0.1:6667".into(),
            tls: false,
            roots: None,
            nick: "moat".into(),
            sasl_user: sasl.then(|| "moat".into()),
            password: sasl.then(|| SecretString::new("pw".into())),
            rooms: Vec::new(),
            send_per_second: 1.0,
            max_piece: MAX_PIECE,
        };
        let (urgent, mut said) = mpsc::unbounded_channel();
        let (queue, _) = mpsc::channel(1);
        let tags = AtomicBool::new(false);
        let mut session = Session {
            settings: &settings,
            urgent,
            queue,
            nick: "moat".into(),
            tries: 0,
            welcomed: false,
            offered: Vec::new(),
            tags: &tags,
        };
        let mut result = Ok(());
        for line in lines {
            let m = Message::parse(line).unwrap();
            if let Err(e) = session.capabilities(&m, sasl) {
                result = Err(e.to_string());
                break;
            }
        }
        let mut out = Vec::new();
        while let Ok(line) = said.try_recv() {
            out.push(line);
        }
        (out, result, tags.load(Ordering::Relaxed))
    }

    #[test]
    fn capabilities_are_asked_for_among_those_offered_and_negotiation_ends() {
        // message-tags offered over two lines: asked for, taken, negotiation ended.
        let (said, ok, tags) = negotiate(
            false,
            &[
                ":irc CAP * LS * :multi-prefix away-notify",
                ":irc CAP * LS :message-tags sasl=PLAIN,EXTERNAL",
                ":irc CAP moat ACK :message-tags",
            ],
        );
        assert_eq!(said, ["CAP REQ :message-tags", "CAP END"]);
        assert!(ok.is_ok() && tags);
        // Nothing wanted: ended at once, no typing.
        let (said, _, tags) = negotiate(false, &[":irc CAP * LS :multi-prefix"]);
        assert_eq!(said, ["CAP END"]);
        assert!(!tags);
        // SASL configured and offered: asked for with the tags, then authenticated.
        let (said, ok, _) = negotiate(
            true,
            &[
                ":irc CAP * LS :sasl message-tags",
                ":irc CAP moat ACK :message-tags sasl",
            ],
        );
        assert_eq!(said, ["CAP REQ :message-tags sasl", "AUTHENTICATE PLAIN"]);
        assert!(ok.is_ok());
        // SASL configured but not offered, or refused: a clear error.
        for lines in [
            &[":irc CAP * LS :message-tags"][..],
            &[":irc CAP * LS :sasl", ":irc CAP moat NAK :sasl"][..],
        ] {
            let (_, err, _) = negotiate(true, lines);
            assert!(err.unwrap_err().contains("does not offer SASL"));
        }
    }

    #[test]
    fn lines_parse_with_tags_prefix_and_trailing() {
        let m = Message::parse("@time=x :alice!a@h PRIVMSG moat :hello there: you").unwrap();
        assert_eq!(m.nick(), "alice");
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.args, ["moat", "hello there: you"]);
        let m = Message::parse("PING :abc").unwrap();
        assert_eq!((m.command, m.arg(0)), ("PING", "abc"));
        let m = Message::parse(":srv 433 * moat :Nickname already in use").unwrap();
        assert_eq!(m.command, "433");
        assert!(Message::parse("").is_none());
        assert!(Message::parse(":onlyprefix").is_none());
    }

    #[test]
    fn nothing_from_the_model_starts_a_second_command() {
        assert_eq!(clean("hi\r\nQUIT :bye\0"), "hiQUIT :bye");
        assert_eq!(clean("\x01VERSION\x01"), "VERSION");
    }

    #[test]
    fn mentions_and_nicks() {
        assert_eq!(
            mention("moat: what time", "moat"),
            (true, "what time".into())
        );
        assert_eq!(mention("MOAT, hi", "moat"), (true, "hi".into()));
        assert!(mention("ask moat later", "moat").0);
        assert!(!mention("moatless talk", "moat").0);
        assert_eq!(fold("Al[ice]~"), "al{ice}^");
        assert_eq!(next_nick("moat", 1), "moat_");
        assert_eq!(next_nick("moat", 3), "moat_3");
        assert!(next_nick(&"x".repeat(30), 2).len() <= 30);
    }

    #[test]
    fn formatting_is_removed() {
        assert_eq!(
            strip_formatting("\x02bold\x02 \x0304,12red\x03 x"),
            "bold red x"
        );
        assert_eq!(strip_formatting("\x031,2x"), "x");
    }
}
