//! The command line: what each command does, and every flag with its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `moat --version`: the version, then the commit, target and profile of the build
/// (`-V` prints the version alone).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MOAT_BUILD_COMMIT"),
    ", ",
    env!("MOAT_BUILD_TARGET"),
    ", ",
    env!("MOAT_BUILD_PROFILE"),
    " build; TLS rustls with ring)"
);

/// moat: a local-first AI gateway that keeps your keys.
///
/// moat stands between your AI tools and the world. Point Claude Code, Codex CLI, Cursor or
/// the official SDKs at it; it listens on 127.0.0.1 only unless you configure
/// authentication, and it keeps everything it owns in MOAT_HOME (default ~/.moat).
///
/// Start here:
///   moat serve              run the gateway on http://127.0.0.1:7411
///   moat doctor             check permissions, config and exposure, with fixes
///   moat config show        print the effective configuration
#[derive(Debug, Parser)]
#[command(
    name = "moat",
    version,
    long_version = LONG_VERSION,
    propagate_version = true,
    max_term_width = 100,
    verbatim_doc_comment
)]
pub(crate) struct Cli {
    /// The directory holding config, state and secrets [default: ~/.moat]
    #[arg(long, global = true, env = "MOAT_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// More log output: -v for debug, -vv for trace (overrides log.level)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway until Ctrl-C or SIGTERM.
    ///
    /// The main listener (default 127.0.0.1:7411) carries every route; the optional LAN
    /// listener carries only /health and read-only media. A non-loopback main listener
    /// needs an API key (MOAT_API_KEY or auth.api_key) and TLS (or --allow-insecure-remote).
    /// At each start a new control token is written to MOAT_HOME/control.token (0600);
    /// control routes such as /status require it as the X-Moat-Control-Token header.
    Serve(ServeArgs),
    /// Show or locate the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check MOAT_HOME permissions, the config and listener exposure; print a fix for
    /// each problem. Exits non-zero when a check fails. Changes nothing.
    Doctor,
    /// Ask the running server for its status (uses MOAT_HOME/control.token).
    Status,
    /// Manage the encrypted vault (MOAT_HOME/vault.moat) that holds every credential.
    ///
    /// A sealed vault (see `seal`) unlocks without a password. Otherwise the password is
    /// read from a prompt without echo, or from the file named by MOAT_VAULT_PASSWORD_FILE.
    /// MOAT_VAULT_PASSWORD is honoured only with MOAT_ALLOW_PASSWORD_ENV=1 (environment
    /// variables leak to other processes).
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Check, read and export the tamper-evident audit log (MOAT_HOME/audit).
    ///
    /// Every entry is hash-chained to the one before; checkpoints and the head are signed
    /// with a key kept in the vault, and the vault keeps the latest checkpoint too, so
    /// `verify` (which unlocks the vault) also catches a deleted tail or a rewritten log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage the LLM backends moat forwards to (kept under [llm.backends] in config.toml).
    ///
    /// Credentials are referenced, never stored in config: add the key to the vault first
    /// (`moat vault add NAME`), then `--key-secret NAME`. The server reads backends at
    /// start; restart it after a change.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Manage the accounts pooled behind a backend ([[llm.backends.NAME.accounts]]).
    ///
    /// A backend can hold several credentials for the same API (keys, or OAuth logins).
    /// Each request goes to the account with the most rate-limit headroom (or round-robin,
    /// or fill-first: `strategy` under the backend), a conversation stays on its account
    /// while that has headroom, and a 429, 401 or 403 cools the account and retries on
    /// another. The backend's own `key` is its account named `default`.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Show where the tokens went: requests, tokens, error rate and latency per backend,
    /// account and model, read from MOAT_HOME/state.db (the server need not run).
    ///
    /// Examples:
    ///   moat usage                 the last 24 hours
    ///   moat usage --since 7d
    ///   moat usage --since all --json
    #[command(verbatim_doc_comment)]
    Usage {
        /// How far back: a duration like 1h, 24h, 7d, or `all` (what llm.usage_retention kept).
        #[arg(long, default_value = "24h", value_name = "DURATION|all")]
        since: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show which backend and upstream model a model name reaches, and the rule that
    /// decided it (a dry run of the route table; nothing is sent).
    Route {
        /// The model name a client would send, e.g. claude-sonnet-4-5 or local:smollm2.
        model: String,
    },
    /// Test the egress policy: what moat would do with a URL that a model, a channel or a
    /// remote server supplied.
    ///
    /// The policy is [egress] in config.toml: allowed_ports, allow_hosts / block_hosts
    /// (`example.com` or `*.example.com`), allow_cidrs / block_cidrs. Built in: only http
    /// and https, no user:password@, no loopback, private, link-local (cloud metadata),
    /// CGNAT or other non-global addresses in any notation, no localhost, *.internal,
    /// *.local or single-label names.
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Scan text for prompt injection: prints the tier (none, low, medium, high), the
    /// score and each signal with its byte span.
    ///
    /// Sees through Unicode look-alikes, full-width and accented letters, leetspeak,
    /// invisible characters, and payloads in base64, hex, URL-encoding, HTML entities,
    /// ROT13 and Unicode tags. It flags; it never changes or drops text.
    ///
    /// Exit status by tier, for scripts: 0 none, 3 low, 4 medium, 5 high
    /// (1: the input could not be read).
    ///
    /// Examples:
    ///   moat scan page.html
    ///   curl -s https://example.com | moat scan -
    ///   moat scan --json message.txt
    #[command(verbatim_doc_comment)]
    Scan {
        /// The file to scan, or - for standard input.
        file: std::path::PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in the sandbox that tool calls use, to try a profile.
    ///
    /// The `process` level gives the command new namespaces (no network, its own PIDs), a
    /// read-only root of the host's /usr and libraries, a private /tmp, and a fresh
    /// /workspace as its only writable place (host folders only with --grant); an empty
    /// environment but PATH, HOME and what you declare; no capabilities, no_new_privs,
    /// Landlock and a seccomp filter; and limits: memory, CPUs, processes, wall time
    /// (the whole process tree is killed), output size. Memory and processes are held by
    /// a cgroup of the call's own where moat can make one (cgroup v2, or v1 on a hybrid
    /// host, as root), else by rlimits; the summary says which, and why not a cgroup.
    ///
    /// The command's output is printed as it was captured; a summary goes to stderr.
    /// Exit status: the command's own; 128+N when signal N killed it; 124 on timeout;
    /// 137 when it ran out of memory (cgroups only); 159 (128+SIGSYS) when it made a
    /// forbidden system call; 125 when the sandbox could not be set up; 127 when the
    /// command was not found.
    ///
    /// Examples:
    ///   moat sandbox run -- sh -c 'id; ls /'
    ///   moat sandbox run --grant ro:/srv/data -- python3 /srv/data/report.py
    ///   moat sandbox run --profile build --wall-time 5m -- make -j2
    ///   moat sandbox run --tool shell --trust guest -- sh -c 'ulimit -a'
    ///   moat sandbox run --secret GITHUB_TOKEN=github -- ./publish.sh
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Talk with the assistant in this terminal, as its owner.
    ///
    /// Each line you type is one turn: the assistant ([agent] in the config) calls its
    /// model through moat's router and uses its tools as the trust levels allow. A call
    /// that waits for your approval is shown with its arguments: answer y or n. The
    /// conversation is kept (`moat sessions`) until it is idle for agent.session_idle.
    /// End with Ctrl-D or /quit.
    ///
    /// With --web, prints the address of the web chat of the running `moat serve` (the
    /// same assistant in a browser tab, with approvals as buttons) instead. The address
    /// carries the control token in its fragment, which no server or log sees; it is good
    /// until the server restarts.
    ///
    /// Examples:
    ///   moat chat
    ///   echo "list the files in your workspace" | moat chat
    ///   xdg-open "$(moat chat --web)"
    #[command(verbatim_doc_comment)]
    Chat {
        /// Print the web chat's address instead of chatting here.
        #[arg(long)]
        web: bool,
    },
    /// The assistant's conversations: list them, show one, forget one.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// The assistant's trust level per domain (0 none, 1 inform, 2 suggest, 3 act and
    /// report, 4 autonomous): show, set, its history, roll back the last change.
    ///
    /// Examples:
    ///   moat trust show
    ///   moat trust set shell 2
    ///   moat trust history files
    ///   moat trust rollback files
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Tool calls waiting for your approval: list, approve or deny them by id.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// What the assistant noted for you (its `notes` tool): list, delete.
    #[command(subcommand)]
    Notes(NotesCommand),
    /// The messaging channels the assistant is reached through: add, list, test, remove.
    ///
    /// A channel connects when `moat serve` starts. Nobody reaches the assistant on it
    /// until you admit them: with the default dm_policy "pairing", a stranger's direct
    /// message gets a one-time code and is held unseen until you approve the code
    /// (`moat pairing approve CODE`). In rooms the assistant answers only admitted
    /// senders who mention it.
    ///
    /// Examples:
    ///   moat channel add irc home --server irc.libera.chat:6697 --nick my-assistant
    ///   moat channel add irc lan --server 127.0.0.1:6667 --plain --nick moat --room '#home'
    ///   moat vault add matrix-pw && moat channel add matrix home --homeserver https://matrix.example.org \
    ///       --user @assistant:example.org --password-secret matrix-pw
    ///   moat vault add telegram-bot && moat channel add telegram phone --token-secret telegram-bot
    ///   moat vault add mail-pw && moat channel add email mail --imap-server imap.example.org:993 \
    ///       --smtp-server smtp.example.org:587 --address assistant@example.org \
    ///       --authserv-id mx.example.org --password-secret mail-pw
    ///   moat vault add discord-bot && moat channel add discord friends --token-secret discord-bot
    ///   moat vault add ci-key && moat channel add webhook ci --key-secret ci-key --url https://ci.example/moat
    ///   moat channel list
    ///   moat channel test home
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Strangers waiting to talk to the assistant: list their requests, approve or deny
    /// one by the code the sender was given.
    ///
    /// Approving adds the sender to the channel's allowlist and answers what they wrote
    /// (or drops it: the channel's on_approve). Codes are good for pairing.code_ttl (15
    /// minutes) and once.
    ///
    /// Examples:
    ///   moat pairing list
    ///   moat pairing approve K7QM-2XWD
    ///   moat pairing deny K7QM-2XWD
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Pairing(PairingCommand),
    /// Who may talk to the assistant on each channel without pairing: list, add, remove.
    /// Removing a sender ends their conversations.
    ///
    /// Examples:
    ///   moat allowlist list
    ///   moat allowlist add home alice
    ///   moat allowlist remove home alice
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Allowlist(AllowlistCommand),
    /// The home radio: the music libraries it plays from, and the running station.
    ///
    /// The station plays a Subsonic server's library (Navidrome, Gonic, Airsonic,
    /// supysonic...) as one continuous crossfaded stream at /radio/live, with a player
    /// page at /radio/. Both are on the LAN listener too (server.lan_listen), read-only;
    /// skipping, pausing and queueing are for this machine, with the control token.
    ///
    /// Examples:
    ///   moat vault add subsonic-home
    ///   moat radio library add home --url http://127.0.0.1:4533 --user me --password-secret subsonic-home
    ///   moat radio library test home
    ///   moat radio open          # the player's address with the token, for this machine
    ///   moat radio now
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Radio(RadioCommand),
    /// Print a shell completion script, e.g. `moat completions bash > ~/.local/share/bash-completion/completions/moat`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// moat as your systemd user service: install (write the unit, enable, start),
    /// uninstall, status.
    ///
    ///   moat service install     # ~/.config/systemd/user/moat.service, started now and at login
    ///   journalctl --user -u moat -f
    #[command(verbatim_doc_comment)]
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Write man pages into DIR, one per command (moat.1, moat-serve.1, moat-radio-cast.1...),
    /// as packages install them: `man ./DIR/moat.1` reads one in place.
    Manpages {
        /// Where (made if missing).
        dir: PathBuf,
    },
}

/// `moat service` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write the unit for this binary and MOAT_HOME, then enable and start it.
    Install {
        /// Only write the unit (no systemctl): for machines whose user manager runs later.
        #[arg(long)]
        unit_only: bool,
    },
    /// Stop and disable the service and remove its unit (MOAT_HOME is left alone).
    Uninstall,
    /// Whether the unit is there, enabled and running.
    Status,
    /// Print the unit instead of writing it.
    Unit {
        /// The binary it starts (default: this one).
        #[arg(long, value_name = "PATH")]
        exe: Option<PathBuf>,
        /// The package's unit: no MOAT_HOME, the default ~/.moat of whoever runs it.
        #[arg(long)]
        packaged: bool,
    },
}

/// `moat sessions` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// Every conversation, most recent first.
    List,
    /// One conversation's transcript.
    Show {
        /// Its id (`moat sessions list`).
        id: String,
    },
    /// Delete a conversation and its transcript.
    Forget {
        /// Its id.
        id: String,
    },
}

/// `moat trust` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TrustCommand {
    /// Each domain's level and ceiling.
    Show,
    /// Set a domain's level (never above its ceiling, agent.ceilings).
    Set {
        /// The domain: messaging, files, web, shell, code, email, calendar, integrations, system.
        domain: String,
        /// 0 none, 1 inform, 2 suggest, 3 act and report, 4 autonomous.
        level: u8,
    },
    /// Every change, with its reason and evidence.
    History {
        /// Only this domain's.
        domain: Option<String>,
    },
    /// Restore the level a domain had before its last change.
    Rollback {
        /// The domain.
        domain: String,
    },
}

/// `moat approvals` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// The calls waiting.
    List,
    /// Let a waiting call run.
    Approve {
        /// Its id (`moat approvals list`).
        id: String,
    },
    /// Refuse a waiting call (the domain is lowered for the rest of that turn).
    Deny {
        /// Its id.
        id: String,
    },
}

/// `moat radio` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RadioCommand {
    /// The Subsonic servers the station can play from: add, list, test, remove.
    #[command(subcommand)]
    Library(LibraryCommand),
    /// Print the player's address on this machine with the control token in its
    /// fragment (which a browser never sends): opened, the page offers skip, pause and
    /// queueing.
    Open,
    /// What is on air and coming up, from the running server.
    Now,
    /// The station, its voice and DJ, quiet and silent windows now, and each integration
    /// (calendars, weather, casting): working, failing and why, or off and why.
    Status,
    /// The DJ's voice: try it.
    #[command(subcommand)]
    Tts(TtsCommand),
    /// The station on the speakers of the house (UPnP/DLNA renderers), through the
    /// running server: they play the LAN listener's /radio/live (`--lan-listen`).
    #[command(subcommand)]
    Cast(CastCommand),
}

/// `moat radio cast` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CastCommand {
    /// The speakers that answer a search on the LAN listener's network, with what they do.
    List {
        /// How long to wait for answers, in seconds (at most 10).
        #[arg(long, default_value_t = 2.0)]
        wait: f64,
    },
    /// A speaker plays the station.
    Play {
        /// Its name (as `list` shows it, any case) or its uuid.
        speaker: String,
        /// Set its volume first, 0 to 100.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        volume: Option<u8>,
    },
    /// A speaker stops.
    Stop {
        /// Its name or uuid.
        speaker: String,
    },
    /// Set a speaker's volume.
    Volume {
        /// Its name or uuid.
        speaker: String,
        /// 0 to 100.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        volume: u8,
    },
}

/// `moat radio tts` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TtsCommand {
    /// Speak TEXT with the configured voice ([radio.tts]) into the speech cache and print
    /// the clip's path and length; a second time, it comes from the cache.
    Say {
        /// What to say.
        text: String,
        /// Another voice than the configured one (e.g. en-gb, de; `espeak-ng --voices`).
        #[arg(long)]
        voice: Option<String>,
        /// Also copy the WAV file here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `moat radio library` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum LibraryCommand {
    /// Add a library to config.toml; the station plays it from the next `moat serve`.
    Add {
        /// A name for the library (letters, digits, '-' and '_').
        name: String,
        /// The server's address, the part before /rest/ (e.g. http://127.0.0.1:4533).
        #[arg(long)]
        url: String,
        /// The user moat signs in as.
        #[arg(long)]
        user: String,
        /// The vault secret holding the password (`moat vault add NAME` first).
        #[arg(long, value_name = "NAME")]
        password_secret: String,
        /// Overwrite a library of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// The libraries in config.toml.
    List,
    /// Sign in to a library once and report its version, how moat authenticates, and
    /// a sample of its songs.
    Test {
        /// The library's name.
        name: String,
    },
    /// Remove a library from config.toml.
    Remove {
        /// The library's name.
        name: String,
    },
}

/// `moat channel` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ChannelCommand {
    /// Add a channel to config.toml; `moat serve` connects it at its next start.
    Add(Box<ChannelAdd>),
    /// The channels, with their state from the running server (connected, last error,
    /// last message).
    List,
    /// Connect to a channel's service once and report whether it accepts moat (a
    /// webhook: POST a signed test message to its url).
    Test {
        /// The channel's name.
        name: String,
    },
    /// Remove a channel from config.toml (its allowlist stays, for a channel re-added).
    Remove {
        /// The channel's name.
        name: String,
    },
}

/// `moat channel add`.
#[derive(Debug, Args)]
pub(crate) struct ChannelAdd {
    /// The service.
    #[arg(value_parser = ["irc", "matrix", "telegram", "discord", "email", "webhook"])]
    pub(crate) kind: String,
    /// A name for the channel (letters, digits, '-' and '_'); sessions, allowlists
    /// and audit records use it.
    pub(crate) name: String,
    /// IRC: the server as host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) server: Option<String>,
    /// IRC: the nick the assistant uses (taken: nick_, nick_2...).
    #[arg(long)]
    pub(crate) nick: Option<String>,
    /// Matrix: the homeserver's URL.
    #[arg(long, value_name = "URL")]
    pub(crate) homeserver: Option<String>,
    /// Matrix: the bot account's user id (@assistant:example.org); email: the login name.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Telegram, Discord: the vault secret holding the bot token (@BotFather's, or the
    /// Discord developer portal's).
    #[arg(long, value_name = "NAME")]
    pub(crate) token_secret: Option<String>,
    /// Telegram, Discord: the API's base URL (default https://api.telegram.org,
    /// https://discord.com/api/v10), for a self-hosted Bot API server or a proxy.
    #[arg(long, value_name = "URL")]
    pub(crate) api_base: Option<String>,
    /// IRC, email: connect without TLS (only sensible on loopback or a network you trust).
    #[arg(long)]
    pub(crate) plain: bool,
    /// A room to join (IRC: #channel; Matrix: !id:server or #alias:server, joined when
    /// invited), where the assistant answers admitted senders who mention it; repeat.
    #[arg(long = "room", value_name = "ROOM")]
    pub(crate) rooms: Vec<String>,
    /// Who may talk: pairing (strangers get a code you approve), allowlist (only
    /// those listed), open (anyone; needs --allow '*'), disabled.
    #[arg(long, value_parser = ["pairing", "allowlist", "open", "disabled"], default_value = "pairing")]
    pub(crate) dm_policy: String,
    /// A sender admitted without pairing; repeat for more.
    #[arg(long = "allow", value_name = "SENDER")]
    pub(crate) allow: Vec<String>,
    /// Email: the IMAP server as host:port (993: TLS).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) imap_server: Option<String>,
    /// Email: the SMTP server as host:port (587: STARTTLS; 465: TLS).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) smtp_server: Option<String>,
    /// Email: the assistant's address (also the login unless --user says otherwise).
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) address: Option<String>,
    /// Email: the name your mail server writes in Authentication-Results; only mail it
    /// vouches for (DMARC, DKIM or SPF passing for the From domain) is read.
    #[arg(long, value_name = "NAME")]
    pub(crate) authserv_id: Option<String>,
    /// Email: a relay that authenticates its own senders (an address or range, e.g.
    /// 10.0.0.25): mail your server took from it is read without Authentication-Results.
    /// Repeat for more.
    #[arg(long = "trusted-relay", value_name = "ADDRESS")]
    pub(crate) trusted_relays: Vec<String>,
    /// Webhook: the vault secret holding the HMAC-SHA256 key both sides sign with.
    #[arg(long, value_name = "NAME")]
    pub(crate) key_secret: Option<String>,
    /// Webhook: where replies are POSTed, signed (without it the channel only listens).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// IRC: the SASL PLAIN account (its password in --password-secret).
    #[arg(long)]
    pub(crate) sasl_user: Option<String>,
    /// The vault secret holding the password (IRC: SASL or server; Matrix: the bot's).
    #[arg(long, value_name = "NAME")]
    pub(crate) password_secret: Option<String>,
    /// Replace a channel of the same name.
    #[arg(long)]
    pub(crate) replace: bool,
}

/// `moat pairing` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PairingCommand {
    /// The requests waiting: channel, sender, their first words, when the code expires.
    List,
    /// Admit the sender who was given CODE.
    Approve {
        /// The code (ABCD-EFGH; any case, dash optional).
        code: String,
    },
    /// Refuse the sender who was given CODE (or the request id `list` shows); what they
    /// wrote is deleted unseen.
    Deny {
        /// The code, or the request's id.
        code: String,
    },
}

/// `moat allowlist` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AllowlistCommand {
    /// Every admitted sender (or one channel's), with who admitted them; the config's
    /// allow_from are marked.
    List {
        /// Only this channel.
        channel: Option<String>,
    },
    /// Admit a sender.
    Add {
        /// The channel's name.
        channel: String,
        /// The sender, as the channel names them (an IRC nick).
        sender: String,
    },
    /// Remove a sender; their conversations end.
    Remove {
        /// The channel's name.
        channel: String,
        /// The sender.
        sender: String,
    },
}

/// `moat notes` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum NotesCommand {
    /// Your notes.
    List,
    /// Delete one.
    Delete {
        /// Its number (`moat notes list`).
        id: i64,
    },
}

/// `moat sandbox` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCommand {
    /// Run one command sandboxed and report how it ended.
    Run(SandboxRun),
}

/// `moat sandbox run`.
#[derive(Debug, Args)]
pub(crate) struct SandboxRun {
    /// The profile from [sandbox.profiles.NAME] (`default` is built in).
    #[arg(long, value_name = "NAME", conflicts_with = "tool")]
    pub profile: Option<String>,
    /// Run as the tool NAME would: with the profile [sandbox.tools.NAME] chooses for the
    /// trust level given by --trust.
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// The trust level whose profile --tool uses (the assistant gives one to each
    /// sender; you at the terminal are `owner`).
    #[arg(long, value_name = "LEVEL", default_value = "owner", requires = "tool")]
    pub trust: String,
    /// A host folder visible at the same path (ro:/path or rw:/path), or a destination
    /// reachable through moat's egress proxy (net:HOST[:PORT], port 443 by default,
    /// net:*.example.com for subdomains; it must also pass [egress]). Repeatable.
    #[arg(long = "grant", value_name = "ro:PATH|rw:PATH|net:HOST[:PORT]")]
    pub grants: Vec<String>,
    /// An environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Inject the vault secret NAME as the variable VAR for this call only (repeatable).
    #[arg(long = "secret", value_name = "VAR=NAME")]
    pub secrets: Vec<String>,
    /// Override the profile's memory limit, in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Override the profile's wall-time limit, e.g. 10s or 5m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wall_time: Option<std::time::Duration>,
    /// Pass this process's standard input to the command (read fully first).
    #[arg(long)]
    pub stdin: bool,
    /// Keep the workspace folder afterwards and print where it is.
    #[arg(long)]
    pub keep_workspace: bool,
    /// Pass the command's output to a terminal untouched. By default, output bound for a
    /// terminal shows control characters as ^X and \u{..} (an untrusted program's escape
    /// sequences could retitle the window, write the clipboard or hide text); output to
    /// a pipe or file is always passed untouched.
    #[arg(long)]
    pub raw_output: bool,
    /// Print the report as JSON on stdout instead of the command's output.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments (after --).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `moat egress` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EgressCommand {
    /// Show whether URL would be fetched, and the rule that decides it.
    ///
    /// A dry run: the name is resolved (every address must pass) but nothing is sent.
    /// Exits 0 when the URL would be fetched, 1 when it would be refused.
    ///
    /// Examples:
    ///   moat egress check https://example.com/page
    ///   moat egress check http://169.254.169.254/latest/meta-data/
    #[command(verbatim_doc_comment)]
    Check {
        /// The URL, as a model or a channel would supply it.
        url: String,
    },
}

/// `moat backend` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum BackendCommand {
    /// Add a backend to config.toml.
    ///
    /// Examples:
    ///   moat backend add anthropic --kind anthropic --base-url https://api.anthropic.com \
    ///       --key-secret anthropic-key --models 'claude-*'
    ///   moat backend add local --kind openai --base-url http://127.0.0.1:8080/v1 --models smollm2
    ///   moat backend add openai --kind openai --base-url https://api.openai.com/v1 \
    ///       --key-secret openai-key --native-responses --models 'gpt-*'
    #[command(verbatim_doc_comment)]
    Add {
        /// A name for the backend (letters, digits, '-' and '_'); routes refer to it.
        name: String,
        /// The API it speaks: `anthropic` (Messages API) or `openai` (any
        /// OpenAI-compatible server: OpenAI, OpenRouter, Groq, Ollama, vLLM, llama.cpp).
        #[arg(long, value_parser = ["anthropic", "openai"])]
        kind: String,
        /// Where the API lives. Anthropic: https://api.anthropic.com (moat appends
        /// /v1/messages). OpenAI-compatible: the URL ending in /v1 (moat appends
        /// /chat/completions).
        #[arg(long, value_name = "URL")]
        base_url: String,
        /// The vault secret holding the backend's API key (see `moat vault add`).
        #[arg(long, value_name = "NAME")]
        key_secret: Option<String>,
        /// Send the key as `Authorization: Bearer` to an Anthropic backend (OAuth tokens)
        /// instead of `x-api-key`.
        #[arg(long)]
        bearer: bool,
        /// Pass /v1/responses through untouched to the backend's own /responses (OpenAI
        /// itself, or a server that implements the Responses API, built-in tools and all)
        /// instead of translating it to Chat Completions. openai backends only.
        #[arg(long)]
        native_responses: bool,
        /// Model names (exact or glob like 'claude-*') this backend serves under their own
        /// name; repeat for more.
        #[arg(long = "models", value_name = "GLOB")]
        models: Vec<String>,
        /// Replace a backend of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// List the backends; keys show only as `***`.
    List,
    /// Remove a backend from config.toml (refused while a route still names it).
    Remove {
        /// The backend's name.
        name: String,
    },
    /// Send one minimal request (the model list) to a backend and report the latency and
    /// the models it offers. Unlocks the vault for the key.
    Test {
        /// The backend's name.
        name: String,
    },
}

/// `moat account` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AccountCommand {
    /// Add an account to a backend's pool, with a key from the vault or an OAuth login.
    ///
    /// With --oauth, moat prints the provider's authorize URL (and opens it on a desktop),
    /// receives the code on a one-shot server on 127.0.0.1 and a random port, checks
    /// `state`, and exchanges the code with a PKCE verifier that never leaves moat. The
    /// tokens go to the vault; moat refreshes them. The provider's settings (client_id,
    /// authorize_url, token_url, scopes) go under [llm.backends.NAME.oauth].
    ///
    /// Examples:
    ///   moat vault add anthropic-work && moat account add anthropic work --key-secret anthropic-work
    ///   moat account add myprovider me --oauth
    ///   moat account add myprovider me --oauth --manual     (no browser on this machine)
    #[command(verbatim_doc_comment)]
    #[command(group(clap::ArgGroup::new("credential").required(true).args(["key_secret", "oauth"])))]
    Add {
        /// The backend (see `moat backend list`).
        backend: String,
        /// A name for the account (letters, digits, '-' and '_').
        name: String,
        /// The vault secret holding the account's API key.
        #[arg(long, value_name = "SECRET")]
        key_secret: Option<String>,
        /// Log in with OAuth 2.0 (authorization code with PKCE).
        #[arg(long)]
        oauth: bool,
        /// Paste the code (or the address the browser was sent to) instead of receiving
        /// it on a local port: for machines without a browser.
        #[arg(long, requires = "oauth")]
        manual: bool,
        /// Print the authorize URL without opening a browser.
        #[arg(long, requires = "oauth")]
        no_browser: bool,
        /// How long to wait for the browser to come back.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "oauth")]
        timeout: std::time::Duration,
        /// Replace an account of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// List each backend's accounts (credentials shown only as their kind).
    List,
    /// Remove an account (and its OAuth tokens from the vault).
    Remove {
        /// The backend.
        backend: String,
        /// The account.
        name: String,
    },
    /// Send one request per account (the model list) and report status, latency and the
    /// rate-limit headroom the provider announced; refreshes OAuth tokens that are due.
    /// Exits non-zero if any account fails.
    Check {
        /// Only this backend's accounts.
        backend: Option<String>,
        /// Only this account.
        name: Option<String>,
    },
}

/// `moat audit` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the whole chain and every signed checkpoint; exit 1 on any break.
    ///
    /// Prints `chain intact: N entries, last checkpoint at SEQ`, or the first broken entry
    /// and the kind of break: modified, reordered, deleted, truncated, bad signature,
    /// missing checkpoint. Needs the vault (seal or password) for the audit key.
    Verify {
        /// Start at this entry, trusting the ones before it.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
    },
    /// Print the latest entries, and with -f the new ones as they come.
    Tail {
        /// Keep printing new entries until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Only actions matching this glob, e.g. 'vault.*' or 'auth.denied'.
        #[arg(long, value_name = "GLOB")]
        action: Option<String>,
        /// How many entries to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Print the entries, as stored (JSON Lines, verifiable), to stdout or a new file.
    Export {
        /// Only entries from this time on: RFC 3339 (2026-11-23T10:00:00Z) or a date.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Write to this new file (0600) instead of stdout; an existing file is kept.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `moat vault` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum VaultCommand {
    /// Create an empty vault protected by a new password (at least 8 characters).
    Init,
    /// Show whether a vault exists and its format and KDF parameters (no password needed).
    Status,
    /// Store a secret. The value is typed without echo, or read from stdin with --stdin.
    Add {
        /// Name: letters, digits, '_', '-' and '.' (referenced in config as secret:NAME).
        name: String,
        /// Read the value from standard input (one trailing newline is dropped).
        #[arg(long)]
        stdin: bool,
        /// A note for yourself, shown by `list`.
        #[arg(long)]
        description: Option<String>,
        /// Which backend or tool may use it.
        #[arg(long)]
        scope: Option<String>,
    },
    /// List secret names and metadata; values are never shown, not even in part.
    List,
    /// Delete a secret.
    Remove {
        /// The secret's name.
        name: String,
    },
    /// Rename a secret.
    Rename {
        /// The current name.
        old: String,
        /// The new name.
        new: String,
    },
    /// Print a secret's value. Needs --reveal, and --force when stdout is not a terminal.
    Get {
        /// The secret's name.
        name: String,
        /// Confirm that the value should be printed.
        #[arg(long)]
        reveal: bool,
        /// Allow printing into a pipe or file.
        #[arg(long)]
        force: bool,
    },
    /// Change the vault password (rewraps the data key; entries are not re-encrypted).
    ///
    /// The new password is typed twice, or read from MOAT_VAULT_NEW_PASSWORD_FILE.
    Passwd,
    /// Let moat unlock the vault without the password, on this machine and at this path.
    ///
    /// The data key is wrapped by a key made from a random secret kept outside MOAT_HOME,
    /// this machine's id and the home's path; a copy of MOAT_HOME elsewhere does not
    /// unseal. The secret goes to the OS keyring (Secret Service) when one answers, else
    /// to a user-only file in MOAT_SEAL_DIR (default ~/.local/share/moat/seal). Anyone who
    /// can read your files here (you, root) can unseal too; --pin adds a secret they must
    /// also know (MOAT_VAULT_PIN_FILE without a terminal).
    Seal {
        /// Also require a PIN to unseal.
        #[arg(long)]
        pin: bool,
        /// Where the outside secret goes: auto (the keyring if one answers, else a file),
        /// keyring, or file. A keyring is locked until you log in: use file for a service
        /// that starts at boot. Default: MOAT_SEAL_STORE, else auto.
        #[arg(long, value_name = "STORE", value_parser = ["auto", "keyring", "file"])]
        store: Option<String>,
    },
    /// Remove the seal: every unlock needs the password again.
    Unseal,
    /// Write every secret, in clear, to a new 0600 JSON file (for a backup or a move).
    Export {
        /// The file to create; an existing file is not overwritten.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
}

/// `moat config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration as TOML (flag > MOAT_* env > config.toml >
    /// default). Secrets appear only as references such as "secret:NAME" or "env:VAR".
    Show,
    /// Print the path of config.toml (it need not exist: moat runs on embedded defaults).
    Path,
}

/// Flags of `moat serve`; each overrides its config key and environment variable.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Main listener address [config: server.listen, env: MOAT_LISTEN, default: 127.0.0.1:7411]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// LAN listener address, or "off" [config: server.lan_listen, env: MOAT_LAN_LISTEN, default: off]
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub lan_listen: Option<String>,

    /// Allow a non-loopback main listener without TLS: keys and tokens then cross the
    /// network in clear text [config: server.allow_insecure_remote]
    #[arg(long)]
    pub allow_insecure_remote: bool,

    /// TLS certificate chain (PEM) for the main listener [config: server.tls.cert]
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the main listener [config: server.tls.key]
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}
