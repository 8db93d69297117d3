//! The channels at run time: each adapter's connection kept up (reconnecting with
//! backoff, never taking another channel down), each message passed through its
//! channel's policy and pairing, admitted ones answered as turns of the sender's
//! conversation, one at a time per sender, and a status per channel for `/status`.
//! `/radio TEXT` from an admitted sender is a message for the radio's DJ instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_agent::{Agent, Approver, Pending, TurnEvents};
use moat_audit::Record;
use moat_core::config::channels::{ChannelConfig, DmPolicy, OnApprove};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use crate::adapter::{Adapter, Incoming, Target, pieces};
use crate::owner::Desk;
use crate::pairing::{Decision, Gate, Pairing, Refusal};

/// Messages waiting to be looked at, per channel; a flood beyond this waits in the
/// adapter (IRC's socket), not in memory here.
const INBOX: usize = 256;
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Messages one sender may have waiting behind their running turn.
const MAX_QUEUED: usize = 4;
/// A streamed reply is edited at most this often.
const STREAM_EDIT_EVERY: Duration = Duration::from_secs(1);
/// How often approvals and expiries made by `moat pairing` are picked up.
const POLL: Duration = Duration::from_millis(500);

/// A channel to run: its name, its config and its adapter.
pub struct Spec {
    /// `[channels.NAME]`.
    pub name: String,
    /// Its table.
    pub config: ChannelConfig,
    /// The connection to its service.
    pub adapter: Arc<dyn Adapter>,
}

/// A channel's state, as `moat channel list` and `/status` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// `[channels.NAME]`.
    pub name: String,
    /// `irc`, `webhook`...
    pub kind: String,
    /// `connecting`, `connected` or `disconnected`.
    pub state: String,
    /// Unix milliseconds when it entered that state.
    pub since: i64,
    /// The last failure, if any, with when it happened.
    pub last_error: Option<String>,
    /// Unix milliseconds of the last message received.
    pub last_message_at: Option<i64>,
    /// Messages received since the start.
    pub received: u64,
    /// Messages sent since the start.
    pub sent: u64,
    /// Connections lost since the start.
    pub reconnects: u64,
}

/// The running channels.
pub struct Hub {
    channels: Vec<Arc<Live>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// Where `/radio TEXT` from an admitted sender goes: the home radio's DJ. The binary
/// provides it (screening the text first); the channels only carry it.
pub trait RadioInbox: Send + Sync {
    /// Leaves `text` from `from` (their display name) on `channel`; returns the answer
    /// for the sender (taken, or why not).
    fn leave(&self, channel: &str, from: &str, text: &str) -> String;
}

impl Hub {
    /// Starts every channel in `specs` on the current runtime.
    pub fn start(specs: Vec<Spec>, agent: Arc<Agent>, desk: Arc<Desk>) -> Hub {
        let shared = Arc::new(Shared {
            agent,
            desk,
            radio: std::sync::OnceLock::new(),
        });
        let mut channels = Vec::new();
        let mut tasks = Vec::new();
        for spec in specs {
            let live = Arc::new(Live {
                status: Mutex::new(Status {
                    name: spec.name.clone(),
                    kind: spec.config.kind.clone(),
                    state: "connecting".into(),
                    since: now_ms(),
                    last_error: None,
                    last_message_at: None,
                    received: 0,
                    sent: 0,
                    reconnects: 0,
                }),
                name: spec.name,
                config: spec.config,
                adapter: spec.adapter,
                shared: shared.clone(),
                senders: Mutex::new(HashMap::new()),
                quiet: Mutex::new(HashMap::new()),
                reply_codes: Default::default(),
            });
            let (tx, rx) = mpsc::channel(INBOX);
            tasks.push(tokio::spawn(live.clone().connect(tx)));
            tasks.push(tokio::spawn(live.clone().dispatch(rx)));
            tasks.push(tokio::spawn(live.clone().poll()));
            channels.push(live);
        }
        Hub {
            channels,
            tasks: Mutex::new(tasks),
            shared,
        }
    }

    /// Sends `/radio TEXT` from admitted senders to `inbox` from now on (once: the radio
    /// starts after the channels).
    pub fn set_radio(&self, inbox: Arc<dyn RadioInbox>) {
        let _ = self.shared.radio.set(inbox);
    }

    /// Each channel's status, in config order.
    pub fn statuses(&self) -> Vec<Status> {
        self.channels
            .iter()
            .map(|c| lock(&c.status).clone())
            .collect()
    }

    /// Disconnects every channel (turns in flight are cancelled).
    pub fn shutdown(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// The words of a `/radio` command, or None when `text` is not one.
fn radio_command(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("/radio")?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

/// What every channel shares: the assistant, and the pairing store with the audit log.
struct Shared {
    agent: Arc<Agent>,
    desk: Arc<Desk>,
    radio: std::sync::OnceLock<Arc<dyn RadioInbox>>,
}

impl Shared {
    fn audit(&self, record: Record) {
        self.desk.audit(record);
    }

    /// Runs `f` on the pairing store.
    fn pairing<T>(&self, f: impl FnOnce(&Pairing) -> T) -> T {
        self.desk.with(f)
    }
}

/// One running channel.
struct Live {
    name: String,
    config: ChannelConfig,
    adapter: Arc<dyn Adapter>,
    shared: Arc<Shared>,
    status: Mutex<Status>,
    /// Per sender: the lock that keeps their turns in order, and the stop signal of the
    /// one running.
    senders: Mutex<HashMap<String, Arc<SenderState>>>,
    /// When each rate-limited sender was last audited (one record per sender per hour).
    quiet: Mutex<HashMap<String, Instant>>,
    /// The codes by which this channel's owners answer waiting tool calls.
    reply_codes: crate::approvals::ReplyCodes,
}

#[derive(Default)]
struct SenderState {
    turn: tokio::sync::Mutex<()>,
    stop: Notify,
    /// Messages waiting for the running turn to end.
    queued: std::sync::atomic::AtomicUsize,
}

impl Live {
    /// Keeps the connection up: reconnects with exponential backoff (1 s to 30 s, with
    /// jitter), the backoff reset by a connection that was accepted.
    async fn connect(self: Arc<Self>, inbox: mpsc::Sender<Incoming>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.set_state("connecting", None);
            let accepted = std::sync::atomic::AtomicBool::new(false);
            let connected = || {
                accepted.store(true, std::sync::atomic::Ordering::Relaxed);
                self.set_state("connected", None);
                tracing::info!(channel = %self.name, "channel connected");
            };
            let result = self.adapter.run(inbox.clone(), &connected).await;
            let why = match result {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            tracing::warn!(channel = %self.name, "channel disconnected: {why}");
            if accepted.load(std::sync::atomic::Ordering::Relaxed) {
                backoff = Duration::from_secs(1);
                lock(&self.status).reconnects += 1;
            }
            self.set_state("disconnected", Some(why));
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn dispatch(self: Arc<Self>, mut inbox: mpsc::Receiver<Incoming>) {
        while let Some(message) = inbox.recv().await {
            {
                let mut s = lock(&self.status);
                s.received += 1;
                s.last_message_at = Some(now_ms());
            }
            let live = self.clone();
            tokio::spawn(async move { live.handle(message).await });
        }
    }

    /// Picks up what `moat pairing` decided: expiries to audit, released messages to
    /// answer.
    async fn poll(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL).await;
            let now = now_ms();
            match self.shared.pairing(|p| p.expire(now)) {
                Ok(expired) => {
                    for r in expired {
                        self.shared.audit(
                            Record::new(
                                "system",
                                "pairing.expired",
                                format!("{}:{}", r.channel, r.sender),
                                "expired",
                            )
                            .detail("request", r.id.as_str()),
                        );
                    }
                }
                Err(e) => tracing::warn!(channel = %self.name, "pairing expiry failed: {e}"),
            }
            let released = match self.shared.pairing(|p| p.released(&self.name)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(channel = %self.name, "reading released messages failed: {e}");
                    continue;
                }
            };
            for r in released {
                self.shared.audit(Record::new(
                    "system",
                    "pairing.released",
                    format!("{}:{}", self.name, r.sender),
                    "answered",
                ));
                let live = self.clone();
                tokio::spawn(async move {
                    let to = Target::Direct(r.sender.clone());
                    live.turn(&r.sender, &r.sender, to, &r.text).await;
                });
            }
        }
    }

    async fn handle(self: Arc<Self>, m: Incoming) {
        let text = m.text.trim();
        if text.is_empty() {
            return;
        }
        match &m.place {
            Target::Room(_) => {
                // In a room: only mentions, only from senders already admitted. An
                // unknown sender gets nothing: no pairing codes in public.
                if !m.mentioned || !self.admitted(&m.sender) {
                    return;
                }
                self.turn(&m.sender, &m.display, m.place.clone(), text)
                    .await;
            }
            Target::Direct(_) => self.direct(&m, text).await,
        }
    }

    fn is_owner(&self, sender: &str) -> bool {
        self.config.owners.iter().any(|o| o == sender)
    }

    fn admitted(&self, sender: &str) -> bool {
        if self.is_owner(sender) {
            return self.config.dm_policy != DmPolicy::Disabled;
        }
        match self.config.dm_policy {
            DmPolicy::Disabled => false,
            DmPolicy::Open => true,
            DmPolicy::Allowlist | DmPolicy::Pairing => {
                self.config.allow_from.iter().any(|a| a == sender)
                    || self
                        .shared
                        .pairing(|p| p.allowed(&self.name, sender))
                        .unwrap_or(false)
            }
        }
    }

    async fn direct(&self, m: &Incoming, text: &str) {
        let now = now_ms();
        if self.is_owner(&m.sender) && self.config.dm_policy != DmPolicy::Disabled {
            let to = Target::Direct(m.sender.clone());
            if let Some(answer) = self.approval_reply(&m.sender, text, now) {
                self.say(&to, &answer).await;
            } else if let Some(answer) = self.owner_command(&m.sender, text, now) {
                self.say(&to, &answer).await;
            } else {
                self.turn(&m.sender, &m.display, to, text).await;
            }
            return;
        }
        let decision = self.shared.pairing(|p| {
            let gate = Gate {
                channel: &self.name,
                policy: self.config.dm_policy,
                allow_from: &self.config.allow_from,
            };
            p.decide(&gate, &m.sender, &m.display, text, now)
        });
        let to = Target::Direct(m.sender.clone());
        let who = format!("{}:{}", self.name, m.sender);
        match decision {
            Err(e) => {
                tracing::warn!(channel = %self.name, "pairing failed: {e}");
            }
            Ok(Decision::Admit) => self.turn(&m.sender, &m.display, to, text).await,
            Ok(Decision::Pair { code, request }) => {
                self.shared.audit(
                    Record::new(
                        format!("channel:{who}"),
                        "pairing.requested",
                        &who,
                        "pending",
                    )
                    .detail("request", request.id.as_str())
                    .detail("expires_at", request.expires_at),
                );
                let minutes = (request.expires_at - request.created_at) / 60_000;
                let kept = match self.config.on_approve {
                    OnApprove::Release => "Your message is kept and answered once they approve.",
                    OnApprove::Drop => "Write again once they approve.",
                };
                let note = format!(
                    "This assistant talks only with people its owner has approved. Your pairing code is {code} (good for {minutes} minutes): give it to the owner, who approves it with `moat pairing approve {code}`. {kept}"
                );
                self.say(&to, &note).await;
            }
            Ok(Decision::Waiting) => {}
            Ok(Decision::Tell(note)) => {
                self.shared.audit(Record::new(
                    format!("channel:{who}"),
                    "pairing.refused",
                    &who,
                    "told",
                ));
                self.say(&to, &note).await;
            }
            Ok(Decision::Ignore(why)) => {
                tracing::debug!(channel = %self.name, reason = why.as_str(), "a message was dropped");
                if why == Refusal::RateLimited && self.first_quiet(&m.sender) {
                    self.shared.audit(Record::new(
                        format!("channel:{who}"),
                        "pairing.refused",
                        &who,
                        why.as_str(),
                    ));
                }
            }
        }
    }

    /// The owner's `/approve CODE` or `/deny CODE` for a waiting tool call, answered and
    /// audited; None when `text` is neither. A wrong code counts against the sender, as
    /// a wrong pairing code does.
    fn approval_reply(&self, sender: &str, text: &str, now: i64) -> Option<String> {
        let (yes, code) = crate::approvals::reply(text)?;
        if !self.may_try_code(sender, now) {
            return Some(
                "Too many wrong codes this hour; use `moat approvals` on the machine.".into(),
            );
        }
        let Some(id) = self.reply_codes.take(code, now) else {
            self.wrong_code(sender, now);
            return Some(
                "No call waits for approval with that code (it was answered, expired, or mistyped); `moat approvals list` shows those waiting.".into(),
            );
        };
        let store = self.shared.agent.store();
        let answered = tokio::task::block_in_place(|| lock(&store).answer(&id, yes));
        let (action, verb) = if yes {
            ("agent.approval.approve", "Approved")
        } else {
            ("agent.approval.deny", "Denied")
        };
        let who = format!("channel:{}:{sender}", self.name);
        Some(match answered {
            Ok(pending) => {
                self.shared.audit(
                    Record::new(&who, action, &pending.tool, &pending.state)
                        .detail("approval", id.as_str())
                        .detail("session", pending.session.as_str()),
                );
                format!("{verb}: {}.", pending.tool)
            }
            Err(e) => {
                self.shared.audit(
                    Record::new(&who, action, &id, "failed").detail("reason", e.to_string()),
                );
                format!("Not answered: {e}")
            }
        })
    }

    /// The owner's `/pair` command, answered and audited; None when `text` is not one.
    /// A wrong code counts against the sender, as a stranger's guess would.
    fn owner_command(&self, sender: &str, text: &str, now: i64) -> Option<String> {
        if !text.starts_with("/pair") {
            return None;
        }
        if !self.may_try_code(sender, now) {
            return Some(
                "Too many wrong codes this hour; use `moat pairing` on the machine.".into(),
            );
        }
        let who = format!("channel:{}:{sender}", self.name);
        let outcome = self.shared.desk.owner_command(&who, text, now)?;
        if outcome.wrong_code {
            self.wrong_code(sender, now);
        }
        Some(outcome.reply)
    }

    /// Whether `sender` may give a code now (pairing's hourly limit on wrong codes).
    fn may_try_code(&self, sender: &str, now: i64) -> bool {
        self.shared
            .pairing(|p| p.may_try(&self.name, sender, now))
            .unwrap_or(false)
    }

    /// Counts a wrong code against `sender`.
    fn wrong_code(&self, sender: &str, now: i64) {
        let _ = self
            .shared
            .pairing(|p| p.wrong_code(&self.name, sender, now));
    }

    /// True once an hour per sender: a flood makes one audit record, not thousands.
    fn first_quiet(&self, sender: &str) -> bool {
        let mut q = lock(&self.quiet);
        let now = Instant::now();
        q.retain(|_, at| now.duration_since(*at) < Duration::from_secs(3600));
        if q.contains_key(sender) {
            return false;
        }
        q.insert(sender.to_string(), now);
        true
    }

    fn sender(&self, sender: &str) -> Arc<SenderState> {
        lock(&self.senders)
            .entry(sender.to_string())
            .or_default()
            .clone()
    }

    /// One turn of `sender`'s conversation; the reply goes to `to`. `/stop` stops the
    /// sender's running turn instead.
    async fn turn(&self, sender: &str, display: &str, to: Target, text: &str) {
        let state = self.sender(sender);
        if text == "/stop" {
            state.stop.notify_waiters();
            return;
        }
        if let Some(words) = radio_command(text) {
            let answer = match (self.shared.radio.get(), words.is_empty()) {
                (None, _) => "The radio is not playing here.".to_string(),
                (Some(_), true) => {
                    "Send /radio and your message, and the DJ reads it on air.".to_string()
                }
                (Some(inbox), false) => inbox.leave(&self.name, display, words),
            };
            self.say(&to, &answer).await;
            return;
        }
        // A sender who writes faster than turns end waits in line, up to a point: past it
        // the message is refused with a word, not queued without end.
        use std::sync::atomic::Ordering::SeqCst;
        if state.queued.fetch_add(1, SeqCst) >= MAX_QUEUED {
            state.queued.fetch_sub(1, SeqCst);
            self.say(&to, "Too many messages at once; this one was dropped. Wait for the answers, then write again.")
                .await;
            return;
        }
        let _in_order = state.turn.lock().await;
        state.queued.fetch_sub(1, SeqCst);
        tracing::debug!(channel = %self.name, "a turn starts");
        self.adapter.typing(&to).await;
        let written = Arc::new(Mutex::new(String::new()));
        let streams = self.adapter.edits();
        let mut events = Written {
            text: written.clone(),
            streams,
        };
        let approver = Waits {
            live: self,
            to: &to,
            sender,
        };
        let agent = &self.shared.agent;
        let standing = if self.is_owner(sender) {
            "owner"
        } else {
            self.config.trust.as_str()
        };
        let prefix = match &to {
            Target::Room(_) => format!("{display}: "),
            Target::Direct(_) => String::new(),
        };
        let run = agent.turn(&self.name, sender, standing, text, &mut events, &approver);
        tokio::pin!(run);
        // Where the service edits messages, the reply is shown as it is written: sent
        // once it has begun, then edited at most once a second (services rate-limit edits).
        let mut shown: Option<(String, usize)> = None;
        let mut tick = tokio::time::interval(STREAM_EDIT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reply = loop {
            tokio::select! {
                result = &mut run => break match result {
                    Ok(reply) => reply,
                    Err(e) => e.to_string(),
                },
                () = state.stop.notified() => break "stopped: the turn and its tools were cancelled".into(),
                _ = tick.tick(), if streams => {
                    let so_far = lock(&written).clone();
                    shown = self.show_partial(&to, &prefix, &so_far, shown).await;
                }
            }
        };
        tracing::debug!(channel = %self.name, "a turn ended; replying");
        let reply = format!("{prefix}{reply}");
        match shown {
            Some((id, _)) => self.finish(&to, &id, &reply).await,
            None => self.say(&to, &reply).await,
        }
    }

    /// Shows the reply written so far (with a mark that more is coming): sends it the
    /// first time, edits it after. What does not fit one message waits for the end.
    async fn show_partial(
        &self,
        to: &Target,
        prefix: &str,
        so_far: &str,
        shown: Option<(String, usize)>,
    ) -> Option<(String, usize)> {
        let text = format!("{prefix}{} …", so_far.trim_end());
        let grown = shown
            .as_ref()
            .map_or(!so_far.trim().is_empty(), |(_, n)| so_far.len() > *n);
        if !grown || text.len() > self.adapter.max_piece() {
            return shown;
        }
        match &shown {
            None => match self.adapter.send_editable(to, &text).await {
                Ok(id) if !id.is_empty() => {
                    lock(&self.status).sent += 1;
                    Some((id, so_far.len()))
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(channel = %self.name, "no streamed reply: {e}");
                    None
                }
            },
            Some((id, _)) => {
                if let Err(e) = self.adapter.edit(to, id, &text).await {
                    tracing::debug!(channel = %self.name, "an edit of the streamed reply failed: {e}");
                }
                Some((id.clone(), so_far.len()))
            }
        }
    }

    /// Puts the whole reply in place of the streamed one: its first piece by an edit, the
    /// rest as messages of their own.
    async fn finish(&self, to: &Target, id: &str, reply: &str) {
        let mut parts = pieces(reply, self.adapter.max_piece()).into_iter();
        let first = parts.next().unwrap_or_default();
        if let Err(e) = self.adapter.edit(to, id, &first).await {
            tracing::warn!(channel = %self.name, "the final edit of a reply failed: {e}");
            self.say(to, reply).await;
            return;
        }
        let rest: Vec<String> = parts.collect();
        if !rest.is_empty() {
            self.say(to, &rest.join("\n")).await;
        }
    }

    /// Sends `text` in as many pieces as the service needs.
    async fn say(&self, to: &Target, text: &str) {
        for piece in pieces(text, self.adapter.max_piece()) {
            match self.adapter.send(to, &piece).await {
                Ok(()) => lock(&self.status).sent += 1,
                Err(e) => {
                    tracing::warn!(channel = %self.name, "a reply was not sent: {e}");
                    lock(&self.status).last_error = Some(format!("{}: {e}", stamp()));
                    return;
                }
            }
        }
    }

    fn set_state(&self, state: &str, error: Option<String>) {
        let mut s = lock(&self.status);
        s.state = state.into();
        s.since = now_ms();
        if let Some(e) = error {
            s.last_error = Some(format!("{}: {e}", stamp()));
        }
    }
}

/// What an outside channel sees of a turn: the reply's text as it is written (where the
/// service can edit messages), no tool chatter.
struct Written {
    text: Arc<Mutex<String>>,
    streams: bool,
}

impl TurnEvents for Written {
    fn streams(&self) -> bool {
        self.streams
    }

    fn text_delta(&mut self, delta: &str) {
        lock(&self.text).push_str(delta);
    }

    fn text(&mut self, _text: &str) {
        // A new text block (after a tool call) starts afresh in the stream.
        lock(&self.text).push('\n');
    }

    fn tool_call(&mut self, _tool: &str, _arguments: &Value) {}
    fn tool_result(&mut self, _tool: &str, _ok: bool, _output: &str) {}
    fn notice(&mut self, _text: &str) {}
}

/// A call from a channel's sender that waits for the owner. The owners of the channel get
/// a prompt with a one-time code (in the conversation, when the sender is one of them; by
/// direct message otherwise) and answer with `/approve CODE` or `/deny CODE`, or with
/// `moat approvals` or the web chat; the store has the answer.
struct Waits<'a> {
    live: &'a Live,
    to: &'a Target,
    sender: &'a str,
}

/// The most characters of a call's (redacted) arguments a prompt shows.
const PROMPT_ARGUMENTS: usize = 300;

#[async_trait::async_trait]
impl Approver for Waits<'_> {
    async fn ask(&self, pending: &Pending) -> bool {
        let live = self.live;
        let owners = &live.config.owners;
        let code = live.reply_codes.issue(&pending.id, pending.expires_at);
        // However the wait ends (answered, expired, the turn stopped), the code is spent.
        let _spent = crate::approvals::Withdraw(&live.reply_codes, &pending.id);
        let minutes = ((pending.expires_at - now_ms()) / 60_000).max(1);
        let mut arguments: String = pending.arguments.chars().take(PROMPT_ARGUMENTS).collect();
        if pending.arguments.chars().count() > PROMPT_ARGUMENTS {
            arguments.push('…');
        }
        let who = if live.is_owner(self.sender) {
            "Your assistant".to_string()
        } else {
            format!("{} (on {})", self.sender, live.name)
        };
        let prompt = format!(
            "{who} wants to run {} ({}; risk: {}) with {arguments}. Reply /approve {code} or /deny {code} within {minutes} minutes.",
            pending.tool, pending.reason, pending.risk
        );
        if live.is_owner(self.sender) {
            // In a room the prompt (its code, the call's arguments) goes by direct message.
            let to = match self.to {
                Target::Room(_) => Target::Direct(self.sender.to_string()),
                direct => direct.clone(),
            };
            live.say(&to, &prompt).await;
        } else {
            let told = if owners.is_empty() {
                format!(
                    "This needs the owner's approval: {} ({}). They answer with `moat approvals approve {}`.",
                    pending.tool, pending.reason, pending.id
                )
            } else {
                format!(
                    "This needs the owner's approval: {} ({}). They have been asked.",
                    pending.tool, pending.reason
                )
            };
            live.say(self.to, &told).await;
            for owner in owners {
                live.say(&Target::Direct(owner.clone()), &prompt).await;
            }
        }
        let store = live.shared.agent.store();
        loop {
            tokio::time::sleep(POLL).await;
            let state = tokio::task::block_in_place(|| {
                lock(&store)
                    .approval(&pending.id)
                    .map(|p| p.map(|p| p.state))
            });
            match state {
                Ok(Some(s)) if s == "pending" => continue,
                Ok(Some(s)) => return s == "approved",
                Ok(None) | Err(_) => return false,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    d + d * u32::from(b[0]) / 1024
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    moat_agent::store::now_ms()
}

fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::radio_command;

    #[test]
    fn radio_commands_are_only_the_word_itself() {
        assert_eq!(
            radio_command("/radio Happy birthday!"),
            Some("Happy birthday!")
        );
        assert_eq!(radio_command("/radio"), Some(""));
        assert_eq!(radio_command("/radio   "), Some(""));
        assert_eq!(radio_command("/radiohead is great"), None);
        assert_eq!(radio_command("play /radio"), None);
    }
}
