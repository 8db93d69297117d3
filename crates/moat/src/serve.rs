//! `moat serve`: wires config, home, state and the listeners into one server.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use moat_core::config::{Config, Loaded, Override};
use moat_core::home::Home;
use moat_core::secret::SecretString;
use moat_net::{
    ApiKeyState, BodyLimits, BodyReader, ClientLimiter, ConnLimits, ConnSettings, Drained,
    Exposure, ExposureProblem, GateConfig, Listener, ListenerKind, Policy, PolicySettings,
    RateLimits, RouteTable, exposure_problems,
};
use moat_state::StateStore;
use serde_json::{Value, json};

use crate::app;
use crate::cli::ServeArgs;
use crate::{Failure, load_config};

/// What `/status` reports; built once at start, plus the uptime.
struct StatusInfo {
    started: Instant,
    started_unix: u64,
    listeners: Vec<Value>,
    config: Value,
    gateway: Arc<moat_llm::Gateway>,
    /// The channels (`[channels.NAME]`), or why they are not running.
    channels: Result<Arc<moat_channels::Hub>, String>,
}

pub(crate) fn flags(args: &ServeArgs) -> Vec<Override> {
    let mut o = Vec::new();
    if let Some(a) = args.listen {
        o.push(Override::flag("--listen", "server.listen", a.to_string()));
    }
    if let Some(a) = &args.lan_listen {
        o.push(Override::flag(
            "--lan-listen",
            "server.lan_listen",
            a.clone(),
        ));
    }
    if args.allow_insecure_remote {
        o.push(Override::flag(
            "--allow-insecure-remote",
            "server.allow_insecure_remote",
            "true",
        ));
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        // Paths on the command line are relative to where the command runs (paths in
        // config.toml are relative to MOAT_HOME).
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        o.push(Override::flag(
            "--tls-cert",
            "server.tls.cert",
            absolute(c).display().to_string(),
        ));
        o.push(Override::flag(
            "--tls-key",
            "server.tls.key",
            absolute(k).display().to_string(),
        ));
    }
    o
}

pub(crate) fn run(home: &Home, args: &ServeArgs, verbose: u8) -> Result<(), Failure> {
    home.ensure().map_err(Failure::runtime)?;
    // One server per home: a second would overwrite the first one's token and state.
    let _lock = lock_home(home)?;
    let loaded = load_config(home, &flags(args))?;
    crate::logging::init(&loaded.config.log, verbose);
    let config = &loaded.config;

    // A fresh home gets a vault sealed to this machine, so the first start needs no prompt.
    if let Err(f) = app::vault::ensure(home) {
        tracing::warn!(
            "no vault was created ({:#}); create one with `moat vault init`",
            f.error()
        );
    }
    // Refused before the vault is opened: the key's strength is checked once it is read.
    refuse_exposure(
        config,
        config.auth.api_key.as_ref().map(|_| ApiKeyState::Unread),
    )?;
    refuse_unsafe_home(home)?;
    let secrets = unlock_secrets(home, config)?;
    if let Some(key) = &secrets.api_key {
        refuse_exposure(config, Some(ApiKeyState::Value(key.expose())))?;
    }
    let tls = tls_config(config)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    let (gateway, recorder) = app::llm::gateway(home, config, secrets.credentials, &secrets.audit)?;
    // The web chat's assistant; the gateway serves without it, and the chat says why.
    let agent = secrets.agent_handles.and_then(|handles| {
        app::agent::agent(home, config, gateway.clone(), secrets.audit.log(), handles)
            .map(Arc::new)
            .map_err(|f| format!("{:#}", f.error()))
    });
    if let Err(why) = &agent {
        tracing::warn!("the web chat's assistant is not available: {why}");
    }
    let (channels, hooks) = app::channels::specs(home, config, &secrets.channel_secrets);
    let served = runtime.block_on(serve(
        home,
        &loaded,
        secrets.api_key,
        tls,
        secrets.audit.log(),
        gateway,
        Rooms {
            agent,
            channels,
            hooks,
            radio_password: secrets.radio_password,
            radio_speech_key: secrets.radio_speech_key,
            radio_weather_key: secrets.radio_weather_key,
        },
    ));
    // Everything answered is in state.db before the process ends.
    recorder.flush();
    // The last checkpoint, whatever happened above.
    let closed = secrets.audit.close();
    served?;
    closed.map_err(Failure::runtime)
}

/// The rooms beside the gateway as the server runs them: the assistant (for the web
/// chat and the channels) and the radio.
struct Rooms {
    /// The agent, or why there is none.
    agent: Result<Arc<moat_agent::Agent>, String>,
    /// The enabled channels, to start once the listeners are up.
    channels: Vec<moat_channels::Spec>,
    /// The webhook channels among them, which `/hooks/NAME` feeds.
    hooks: app::channels::Hooks,
    /// The radio library's password, or why there is none.
    radio_password: Result<SecretString, String>,
    /// The speech server's key for the DJ's voice, if it has one, or why not.
    radio_speech_key: Result<Option<SecretString>, String>,
    /// The weather service's key, if it is configured, or why not.
    radio_weather_key: Result<Option<SecretString>, String>,
}

/// What the vault gives a server at start: the values it needs are read once, here, and
/// the vault is closed again (see docs/architecture.md on why not at each use).
struct Secrets {
    api_key: Option<SecretString>,
    /// The secrets the assistant uses by handle, or why it cannot have them.
    agent_handles: Result<moat_agent::Handles, String>,
    credentials: moat_llm::Credentials,
    audit: moat_audit::AuditWriter,
    /// Per channel, the secret it names (or why it cannot have it).
    channel_secrets: std::collections::BTreeMap<String, Result<Option<SecretString>, String>>,
    /// The station's library password (or why it cannot have it).
    radio_password: Result<SecretString, String>,
    /// The DJ's speech server key (or why it cannot have it).
    radio_speech_key: Result<Option<SecretString>, String>,
    /// The weather service's key (or why it cannot have it).
    radio_weather_key: Result<Option<SecretString>, String>,
}

/// Opens the vault once for the API key, every account's credential and the audit key.
fn unlock_secrets(home: &Home, config: &Config) -> Result<Secrets, Failure> {
    let vault = app::vault::unlock(home).map_err(|f| {
        f.context(
            "moat serve needs the vault: it holds the audit log's signing key (seal it with `moat vault seal` for unattended starts, or set MOAT_VAULT_PASSWORD_FILE)".into(),
        )
    })?;
    let api_key = match &config.auth.api_key {
        Some(r) => Some(app::secrets::resolve_secret(&vault, r, "auth.api_key")?),
        None => None,
    };
    Ok(Secrets {
        api_key,
        agent_handles: app::agent::handles(&vault, config).map_err(|f| format!("{:#}", f.error())),
        credentials: app::accounts::credentials(home, &vault, &config.llm)?,
        audit: app::audit::open_keyed(home, &vault, &config.audit)?,
        channel_secrets: config
            .channels
            .iter()
            .map(|(name, c)| (name.clone(), app::channels::secret(&vault, name, c)))
            .collect(),
        radio_password: match config.radio.station_library() {
            Some((name, lib)) => app::radio::password(&vault, name, lib),
            None => Err("no library is configured".into()),
        },
        radio_speech_key: app::radio::speech_key(&vault, &config.radio.tts),
        radio_weather_key: app::radio::weather_key(&vault, &config.radio),
    })
}

/// The main listener's TLS configuration, loaded (and refused with exit 2) before any
/// listener is bound.
fn tls_config(config: &Config) -> Result<Option<Arc<moat_net::TlsServerConfig>>, Failure> {
    let tls = match &config.server.tls {
        Some(t) => {
            Some(moat_net::server_config(&t.cert, &t.key).map_err(|e| Failure::usage(e.into()))?)
        }
        None => None,
    };
    if !config.server.listen.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            listen = %config.server.listen,
            "main listener is reachable from the network WITHOUT TLS (allow_insecure_remote): API keys and tokens cross it in clear text"
        );
    }
    Ok(tls)
}

async fn serve(
    home: &Home,
    loaded: &Loaded,
    api_key: Option<SecretString>,
    tls: Option<Arc<moat_net::TlsServerConfig>>,
    audit: moat_audit::AuditLog,
    gateway: Arc<moat_llm::Gateway>,
    rooms: Rooms,
) -> Result<(), Failure> {
    let Rooms {
        agent,
        channels,
        hooks,
        radio_password,
        radio_speech_key,
        radio_weather_key,
    } = rooms;
    let config = &loaded.config;
    let state = StateStore::open(&home.state_db()).map_err(Failure::runtime)?;
    let now_unix = record_start(&state, loaded, &audit)?;
    let main = Listener::bind(
        ListenerKind::Main,
        config.server.listen,
        "server.listen",
        tls,
    )
    .await
    .map_err(Failure::runtime)?;
    let lan = match config.server.lan_listen {
        Some(addr) => Some(
            Listener::bind(ListenerKind::Lan, addr, "server.lan_listen", None)
                .await
                .map_err(Failure::runtime)?,
        ),
        None => None,
    };
    // Only after binding succeeded: a second instance must not replace the token of the first.
    let control_token = publish_control_token(home, &main)?;

    // The pairing store, shared by the channels and the web chat's `/pair` commands.
    let desk = Arc::new(app::channels::desk(home, config, Some(audit.clone()))?);
    let hub = match (&agent, channels.is_empty()) {
        (_, true) => Err("no channel is configured".to_string()),
        (Err(why), false) => {
            tracing::warn!("the channels are not started: the assistant is not available: {why}");
            Err(format!("the assistant is not available: {why}"))
        }
        (Ok(agent), false) => Ok(Arc::new(moat_channels::Hub::start(
            channels,
            agent.clone(),
            desk.clone(),
        ))),
    };
    let status = Arc::new(StatusInfo {
        started: Instant::now(),
        started_unix: now_unix,
        listeners: [Some(&main), lan.as_ref()]
            .into_iter()
            .flatten()
            .map(listener_json)
            .collect(),
        config: config_summary(loaded),
        gateway: gateway.clone(),
        channels: hub.clone(),
    });
    let web_chat = agent.is_ok();
    let agent_for_shutdown = agent.clone();
    let context = app::radio::context(&config.radio, &config.egress, radio_weather_key);
    let station = app::radio::station(
        home,
        &config.radio,
        radio_password,
        radio_speech_key,
        gateway.clone(),
        &context,
    )
    .await;
    match (&station, config.radio.station_library()) {
        (Err(why), Some(_)) => tracing::warn!("the radio is not playing: {why}"),
        (Ok(_), _) => {
            println!("moat: radio at /radio/ (`moat radio open` prints its address with the token)")
        }
        _ => {}
    }
    // Live streams never end by themselves: the station stops when shutdown begins, so
    // the drain is not held for the grace period by the listeners.
    let radio_on_air = station.as_ref().ok().cloned();
    if let (Ok(hub), Some(station)) = (&hub, &radio_on_air) {
        hub.set_radio(Arc::new(crate::radio::ChannelInbox {
            station: station.clone(),
        }));
    }
    // Speakers are pointed at the LAN listener's stream: without one there is no casting.
    let caster = match &lan {
        Some(l) => moat_radio::cast::Caster::new(l.local_addr()),
        None => Err(
            "casting needs the LAN listener, which speakers can reach: start with --lan-listen 0.0.0.0:7412 or set server.lan_listen"
                .to_string(),
        ),
    };
    let radio = Arc::new(crate::radio::Radio::new(
        station,
        caster,
        context,
        control_token.clone(),
    ));
    let table = crate::webchat::routes(
        crate::radio::routes(
            gateway
                .clone()
                .control_routes(gateway.routes(RouteTable::new())),
            radio,
        ),
        agent,
        desk,
    )
    .route("/health", Exposure::Open, get(health))
    .route(
        "/status",
        Exposure::Control,
        get(status_handler).with_state(status),
    );
    // Only a server with a webhook channel has the route: without one, nobody can make it
    // read a body without credentials.
    let table = if hooks.is_empty() {
        table
    } else {
        table.route(
            "/hooks/{name}",
            Exposure::Hook,
            axum::routing::post(crate::hooks::receive).with_state(Arc::new(hooks)),
        )
    };
    let limiter = ClientLimiter::new(RateLimits {
        per_second: config.rate_limit.per_second,
        burst: config.rate_limit.burst,
        loopback_per_second: config.rate_limit.loopback_per_second,
        loopback_burst: config.rate_limit.loopback_burst,
    })
    .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot start the rate limiter clock: {e}")))?;
    let events = Arc::new(crate::audit_sink::AuditEvents::new(audit.clone()));
    let gate = GateConfig {
        bodies: BodyReader::new(
            BodyLimits {
                max_bytes: config.limits.max_body_bytes,
                read_timeout: config.limits.body_read_timeout,
            },
            config.limits.max_buffered_bytes,
        ),
        limiter: limiter.clone(),
        events: Some(events.clone()),
    };

    let signals = Signals::install().map_err(Failure::runtime)?;
    let mut served = Vec::new();
    for l in [Some(main), lan].into_iter().flatten() {
        let scheme = if l.is_tls() { "https" } else { "http" };
        println!(
            "moat: {} listener on {scheme}://{}",
            l.kind(),
            l.local_addr()
        );
        let policy = listener_policy(config, &l, api_key.clone(), control_token.clone())?;
        let routes = table.compile(policy).map_err(Failure::runtime)?;
        served.push((l, routes));
    }
    if web_chat {
        println!("moat: web chat at /chat; `moat chat --web` prints its address with the token");
    }
    println!("moat: control token in {}", home.control_token().display());
    if !loaded.file_exists {
        println!(
            "moat: no {} yet; running on embedded defaults (see `moat config show`)",
            loaded.file.display()
        );
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "moat is serving");

    let cleaner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.forget_idle();
        }
    });
    let conns = ConnLimits::new(
        config.limits.max_connections_per_ip,
        config.limits.max_connections,
    );
    let settings = ConnSettings {
        header_read_timeout: config.limits.header_timeout,
        shutdown_grace: config.server.shutdown_grace,
    };
    let shutdown = async move {
        signals.shutdown().await;
        if let Some(station) = radio_on_air {
            station.stop();
        }
    };
    let drained = moat_net::serve(served, gate, conns, settings, shutdown).await;
    cleaner.abort();
    if let Ok(hub) = &hub {
        hub.shutdown();
    }
    if let Ok(agent) = &agent_for_shutdown {
        // Its MCP servers end with the server (a stdio server's tree is killed).
        agent.shutdown().await;
    }
    events.flush_counts();
    record_stop(home, config, drained, &audit, &state)
}

/// Writes a fresh control token (0600) and where this server listens, so `moat status`
/// sends the token to this server and nowhere else.
fn publish_control_token(home: &Home, main: &Listener) -> Result<SecretString, Failure> {
    let control_token = new_control_token().map_err(Failure::runtime)?;
    moat_core::atomic::write_atomic(
        &home.control_token(),
        format!("{}\n", control_token.expose()).as_bytes(),
    )
    .map_err(Failure::runtime)?;
    let serve_info = json!({
        "pid": std::process::id(),
        "main": main.local_addr().to_string(),
        "tls": main.is_tls(),
    });
    moat_core::atomic::write_atomic(&home.serve_info(), serve_info.to_string().as_bytes())
        .map_err(Failure::runtime)?;
    Ok(control_token)
}

/// The exposure policy of one bound listener; [`Policy::new`] refuses an open remote one
/// even if the checks before the vault was opened were somehow passed.
fn listener_policy(
    config: &Config,
    l: &Listener,
    api_key: Option<SecretString>,
    control_token: SecretString,
) -> Result<Arc<Policy>, Failure> {
    Policy::new(PolicySettings {
        kind: l.kind(),
        bound: l.local_addr(),
        allowed_hosts: config.server.allowed_hosts.clone(),
        cors_origin: config.server.cors_origin.clone(),
        api_key,
        control_token,
        tls: l.is_tls(),
        allow_insecure_remote: config.server.allow_insecure_remote,
    })
    .map(Arc::new)
    .map_err(|problems| Failure::usage(anyhow::anyhow!(join(&problems))))
}

/// After the listeners closed: says how the drain went, records the stop and removes the
/// token and the listening address.
fn record_stop(
    home: &Home,
    config: &Config,
    drained: Drained,
    audit: &moat_audit::AuditLog,
    state: &StateStore,
) -> Result<(), Failure> {
    match drained {
        Drained::All => tracing::info!("all in-flight requests finished"),
        Drained::TimedOut => tracing::warn!(
            grace = ?config.server.shutdown_grace,
            "shutdown grace period ran out; dropped the remaining connections (server.shutdown_grace)"
        ),
    }
    let _ = audit.record(moat_audit::Record::new(
        "system",
        "server.stopped",
        "",
        "ok",
    ));
    let _ = std::fs::remove_file(home.control_token());
    let _ = std::fs::remove_file(home.serve_info());
    state.checkpoint().map_err(Failure::runtime)?;
    tracing::info!("moat stopped");
    Ok(())
}

/// Refuses to start (exit 2) when someone else could change what moat reads (a config
/// that points a backend at their server receives the key at the next start); warns
/// when others can only read.
fn refuse_unsafe_home(home: &Home) -> Result<(), Failure> {
    let problems = home.permission_problems().map_err(|e| {
        Failure::runtime(anyhow::anyhow!(
            "cannot check the permissions of {}: {e}",
            home.root().display()
        ))
    })?;
    let (unsafe_, loose): (Vec<_>, Vec<_>) = problems.into_iter().partition(|p| p.is_unsafe());
    for problem in loose {
        tracing::warn!("{problem}");
    }
    if unsafe_.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = unsafe_.iter().map(ToString::to_string).collect();
    Err(Failure::usage(anyhow::anyhow!(
        "refusing to serve: other users could change what moat reads at start (its config, vault or seal)\n{}",
        lines.join("\n")
    )))
}

/// Refuses to start (exit 2) with every exposure problem of the main listener, each with
/// its fix; `api_key` is `None` when none is configured.
fn refuse_exposure(config: &Config, api_key: Option<ApiKeyState<'_>>) -> Result<(), Failure> {
    let problems = exposure_problems(
        config.server.listen,
        api_key.unwrap_or(ApiKeyState::Absent),
        config.server.tls.is_some(),
        config.server.allow_insecure_remote,
    );
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(anyhow::anyhow!(join(&problems))))
}

fn join(problems: &[ExposureProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records the start in the audit log and `state.db` and returns its time; and a config
/// change since the last start, by the hash of the effective configuration (which holds
/// secret references, never values).
fn record_start(
    state: &StateStore,
    loaded: &Loaded,
    audit: &moat_audit::AuditLog,
) -> Result<u64, Failure> {
    use sha2::Digest;
    let text = toml::to_string(&loaded.config).map_err(Failure::runtime)?;
    let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let previous = state.meta("config_hash").map_err(Failure::runtime)?;
    let file = loaded.file.display().to_string();
    if let Some(previous) = previous.filter(|p| *p != hash) {
        audit
            .record(
                moat_audit::Record::new("system", "config.changed", &file, "ok")
                    .detail("previous_hash", previous)
                    .detail("hash", hash.as_str()),
            )
            .map_err(Failure::runtime)?;
    }
    state
        .set_meta("config_hash", &hash)
        .map_err(Failure::runtime)?;
    audit
        .record(
            moat_audit::Record::new("system", "server.started", &file, "ok")
                .detail("version", env!("CARGO_PKG_VERSION"))
                .detail("config_hash", hash.as_str())
                .detail("listen", loaded.config.server.listen.to_string()),
        )
        .map_err(Failure::runtime)?;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if state
        .meta("first_start")
        .map_err(Failure::runtime)?
        .is_none()
    {
        state
            .set_meta("first_start", &now_unix.to_string())
            .map_err(Failure::runtime)?;
    }
    state
        .set_meta("last_start", &now_unix.to_string())
        .map_err(Failure::runtime)?;
    Ok(now_unix)
}

/// Holds `MOAT_HOME/serve.lock` for the life of the process.
fn lock_home(home: &Home) -> Result<std::fs::File, Failure> {
    let path = home.root().join("serve.lock");
    moat_core::atomic::create_private_file(&path).map_err(Failure::runtime)?;
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .map_err(Failure::runtime)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure::runtime(anyhow::anyhow!(
            "another `moat serve` is running with MOAT_HOME {} (see {}); stop it, or use another MOAT_HOME",
            home.root().display(),
            home.serve_info().display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Failure::runtime(e)),
    }
}

/// 256 random bits, hex-encoded; registered with the redactor.
fn new_control_token() -> anyhow::Result<SecretString> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for the control token: {e}"))?;
    Ok(SecretString::new(hex::encode(bytes)))
}

/// SIGTERM and SIGINT, caught from the moment this is made: made before moat says it is
/// listening, so a signal right after start still gets the clean shutdown.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
        })
    }

    /// Completes on the first signal; a second one exits at once.
    async fn shutdown(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        tracing::info!(
            "shutting down: no new connections; finishing in-flight requests (signal again to exit now)"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = self.term.recv() => {},
                _ = self.int.recv() => {},
            }
            eprintln!("moat: second signal, exiting without waiting");
            std::process::exit(130);
        });
    }
}

/// Liveness and nothing else. The hottest route, so the response is built directly, with
/// room for the headers the gate adds.
async fn health() -> axum::response::Response {
    let mut headers = http::HeaderMap::with_capacity(8);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let mut resp = axum::response::Response::new(axum::body::Body::from(r#"{"status":"ok"}"#));
    *resp.headers_mut() = headers;
    resp
}

async fn status_handler(State(info): State<Arc<StatusInfo>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": info.started.elapsed().as_secs(),
        "started_at_unix": info.started_unix,
        "listeners": info.listeners,
        "config": info.config,
        "backends": info.gateway.status(),
        "channels": match &info.channels {
            Ok(hub) => json!(hub.statuses()),
            Err(why) => json!({"not_running": why}),
        },
    }))
}

fn listener_json(l: &Listener) -> Value {
    let classes: Vec<&str> = [
        Exposure::Open,
        Exposure::Lan,
        Exposure::Api,
        Exposure::Control,
        Exposure::Page,
        Exposure::Hook,
    ]
    .into_iter()
    .filter(|c| c.served_on(l.kind()))
    .map(|c| match c {
        Exposure::Open => "open",
        Exposure::Lan => "lan",
        Exposure::Api => "api",
        Exposure::Control => "control",
        Exposure::Page => "page",
        Exposure::Hook => "hook",
    })
    .collect();
    json!({
        "kind": l.kind().to_string(),
        "address": l.local_addr().to_string(),
        "tls": l.is_tls(),
        "classes": classes,
    })
}

/// A summary with references only: nothing here is secret.
fn config_summary(loaded: &Loaded) -> Value {
    let c: &Config = &loaded.config;
    json!({
        "file": loaded.file.display().to_string(),
        "file_exists": loaded.file_exists,
        "api_key": c.auth.api_key.as_ref().map(|r| r.to_string()),
        "allowed_hosts": c.server.allowed_hosts,
        "cors_origin": c.server.cors_origin,
        "max_body_bytes": c.limits.max_body_bytes,
        "body_read_timeout_secs": c.limits.body_read_timeout.as_secs_f64(),
        "rate_limit": { "per_second": c.rate_limit.per_second, "burst": c.rate_limit.burst },
    })
}
