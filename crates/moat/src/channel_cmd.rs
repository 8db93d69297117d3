//! `moat channel`, `moat pairing` and `moat allowlist`: the channels in config.toml, the
//! strangers waiting to be admitted, and who is.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use moat_audit::Record;
use moat_channels::PairingError;
use moat_core::config::Config;
use moat_core::config::channels::{ChannelConfig, DmPolicy, OnApprove, valid_name};
use moat_core::home::Home;

use crate::app::config_edit::{read_doc, write_doc};
use crate::cli::{AllowlistCommand, ChannelAdd, ChannelCommand, PairingCommand};
use crate::terminal::shown;
use crate::{Failure, app, load_config};

/// `moat channel`.
pub(crate) fn channel(home: &Home, command: &ChannelCommand) -> Result<(), Failure> {
    match command {
        ChannelCommand::Add(args) => {
            let ChannelAdd {
                kind,
                name,
                server,
                nick,
                token_secret,
                api_base,
                key_secret,
                url,
                homeserver,
                user,
                imap_server,
                smtp_server,
                address,
                authserv_id,
                trusted_relays,
                plain,
                rooms,
                dm_policy,
                allow,
                sasl_user,
                password_secret,
                replace,
            } = args.as_ref();
            let policy = match dm_policy.as_str() {
                "allowlist" => DmPolicy::Allowlist,
                "open" => DmPolicy::Open,
                "disabled" => DmPolicy::Disabled,
                _ => DmPolicy::Pairing,
            };
            let plain_ok = kind == "irc" || kind == "email";
            let c = ChannelConfig {
                kind: kind.clone(),
                dm_policy: policy,
                allow_from: allow.clone(),
                rooms: rooms.clone(),
                server: server.clone(),
                // Said only when it differs from the default (TLS), and only for IRC.
                tls: (plain_ok && *plain).then_some(false),
                nick: nick.clone(),
                sasl_user: sasl_user.clone(),
                password_secret: password_secret.clone(),
                token_secret: token_secret.clone(),
                api_base: api_base.clone(),
                key_secret: key_secret.clone(),
                url: url.clone(),
                homeserver: homeserver.clone(),
                user: user.clone(),
                imap_server: imap_server.clone(),
                smtp_server: smtp_server.clone(),
                address: address.clone(),
                authserv_id: authserv_id.clone(),
                trusted_relays: trusted_relays.clone(),
                ..ChannelConfig::default()
            };
            if !plain_ok && *plain {
                return Err(Failure::usage(anyhow!(
                    "--plain is for irc and email; other channels' URLs say http or https themselves"
                )));
            }
            add(home, name, &c, *replace)
        }
        ChannelCommand::List => list(home),
        ChannelCommand::Test { name } => test(home, name),
        ChannelCommand::Remove { name } => remove(home, name),
    }
}

fn add(home: &Home, name: &str, c: &ChannelConfig, replace: bool) -> Result<(), Failure> {
    if !valid_name(name) {
        return Err(Failure::usage(anyhow!(
            "{name:?} is not a channel name: use letters, digits, '-' and '_' (at most 64)"
        )));
    }
    let loaded = load_config(home, &[])?;
    if loaded.config.channels.contains_key(name) && !replace {
        return Err(Failure::usage(anyhow!(
            "a channel named {name:?} exists; use --replace to overwrite it, or `moat channel remove {name}`"
        )));
    }
    let mut channels = loaded.config.channels.clone();
    channels.insert(name.to_string(), c.clone());
    moat_core::config::channels::validate(&channels, &loaded.config.pairing)
        .map_err(|e| Failure::usage(anyhow!("{e}")))?;
    let mut doc = read_doc(home)?;
    let table = channels_table(&mut doc)?;
    let mut entry = toml_edit::Table::new();
    entry.insert("kind", toml_edit::value(c.kind.as_str()));
    entry.insert("dm_policy", toml_edit::value(c.dm_policy.as_str()));
    let strings = |v: &[String]| {
        let mut a = toml_edit::Array::new();
        for s in v {
            a.push(s.as_str());
        }
        toml_edit::value(a)
    };
    if !c.allow_from.is_empty() {
        entry.insert("allow_from", strings(&c.allow_from));
    }
    for (key, value) in [
        ("server", &c.server),
        ("nick", &c.nick),
        ("sasl_user", &c.sasl_user),
        ("password_secret", &c.password_secret),
        ("token_secret", &c.token_secret),
        ("api_base", &c.api_base),
        ("key_secret", &c.key_secret),
        ("url", &c.url),
        ("homeserver", &c.homeserver),
        ("user", &c.user),
        ("imap_server", &c.imap_server),
        ("smtp_server", &c.smtp_server),
        ("address", &c.address),
        ("authserv_id", &c.authserv_id),
    ] {
        if let Some(v) = value {
            entry.insert(key, toml_edit::value(v.as_str()));
        }
    }
    if let Some(tls) = c.tls {
        entry.insert("tls", toml_edit::value(tls));
    }
    if !c.rooms.is_empty() {
        entry.insert("rooms", strings(&c.rooms));
    }
    if !c.trusted_relays.is_empty() {
        entry.insert("trusted_relays", strings(&c.trusted_relays));
    }
    table.insert(name, toml_edit::Item::Table(entry));
    write_doc(home, &doc)?;
    println!(
        "moat: channel {name:?} ({}) added to {}; restart `moat serve` to connect it",
        c.kind,
        home.config_file().display()
    );
    if let Some(secret) = c.password_secret.as_ref().or(c.token_secret.as_ref()) {
        println!(
            "moat: its {} is read from the vault secret {secret:?} (add it with `moat vault add {secret}` if it isn't there)",
            if c.token_secret.is_some() {
                "bot token"
            } else {
                "password"
            }
        );
    }
    if c.dm_policy == DmPolicy::Pairing {
        println!(
            "moat: strangers who write to it get a pairing code; approve one with `moat pairing approve CODE`"
        );
    }
    Ok(())
}

fn channels_table(doc: &mut toml_edit::DocumentMut) -> Result<&mut toml_edit::Table, Failure> {
    doc.entry("channels")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| {
            Failure::usage(anyhow!(
                "`channels` in config.toml is not a [table]; write it as a table section to let moat edit it"
            ))
        })
}

fn remove(home: &Home, name: &str) -> Result<(), Failure> {
    let mut doc = read_doc(home)?;
    let removed = doc
        .get_mut("channels")
        .and_then(|c| c.as_table_like_mut())
        .and_then(|c| c.remove(name));
    if removed.is_none() {
        return Err(Failure::usage(anyhow!(
            "no channel named {name:?} in {} (see `moat channel list`)",
            home.config_file().display()
        )));
    }
    write_doc(home, &doc)?;
    println!("moat: channel {name:?} removed; restart `moat serve` to disconnect it");
    Ok(())
}

fn list(home: &Home) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    if loaded.config.channels.is_empty() {
        println!(
            "no channels; add one with `moat channel add irc NAME --server HOST:PORT --nick NICK` or `moat channel add telegram NAME --token-secret SECRET`"
        );
        return Ok(());
    }
    // The live state comes from the running server, when there is one.
    let live = crate::status::endpoint(home)
        .ok()
        .filter(|e| !e.tls)
        .and_then(|e| crate::status::get(e.addr, "/status", &e.token).ok())
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
    for (name, c) in &loaded.config.channels {
        let status = live
            .as_ref()
            .and_then(|s| s["channels"].as_array())
            .and_then(|a| a.iter().find(|c| c["name"] == name.as_str()));
        let state = match (&live, status) {
            (None, _) => "not running (no `moat serve`)".to_string(),
            (Some(_), None) if !c.enabled => "disabled".to_string(),
            (Some(l), None) => match l["channels"]["not_running"].as_str() {
                Some(why) => format!("not running: {why}"),
                None => "not running (restart `moat serve` to connect it)".into(),
            },
            (Some(_), Some(s)) => describe(s),
        };
        println!(
            "{name}  {}  {}  dm_policy={}  {}",
            c.kind,
            where_(c),
            c.dm_policy.as_str(),
            state
        );
    }
    Ok(())
}

/// Where a channel connects to, for the owner's eyes.
fn where_(c: &ChannelConfig) -> &str {
    match c.kind.as_str() {
        "telegram" => c
            .api_base
            .as_deref()
            .unwrap_or(app::channels::DEFAULT_TELEGRAM_API),
        "discord" => c
            .api_base
            .as_deref()
            .unwrap_or(app::channels::DEFAULT_DISCORD_API),
        "webhook" => c.url.as_deref().unwrap_or("(listens only)"),
        "matrix" => c.homeserver.as_deref().unwrap_or("-"),
        "email" => c.imap_server.as_deref().unwrap_or("-"),
        _ => c.server.as_deref().unwrap_or("-"),
    }
}

fn describe(s: &serde_json::Value) -> String {
    let mut out = format!(
        "{} since {}",
        s["state"].as_str().unwrap_or("?"),
        app::agent::time(s["since"].as_i64().unwrap_or(0))
    );
    if let Some(at) = s["last_message_at"].as_i64() {
        out.push_str(&format!("; last message {}", app::agent::time(at)));
    }
    out.push_str(&format!(
        "; {} in, {} out",
        s["received"].as_u64().unwrap_or(0),
        s["sent"].as_u64().unwrap_or(0)
    ));
    if let Some(e) = s["last_error"].as_str() {
        out.push_str(&format!("; last error: {}", shown(e, false)));
    }
    out
}

fn test(home: &Home, name: &str) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let Some(c) = loaded.config.channels.get(name) else {
        return Err(Failure::usage(anyhow!(
            "no channel named {name:?} (see `moat channel list`)"
        )));
    };
    let named = c
        .password_secret
        .as_ref()
        .or(c.token_secret.as_ref())
        .or(c.key_secret.as_ref());
    let secret = match named {
        None => Ok(None),
        Some(_) => {
            let vault = app::vault::unlock(home)?;
            app::channels::secret(&vault, name, c)
        }
    };
    let secret = secret.map_err(|why| Failure::usage(anyhow!(why)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let started = Instant::now();
    if c.kind == "webhook" {
        return test_webhook(home, &runtime, name, c, secret);
    }
    let adapter = app::channels::adapter(home, name, c, Ok(secret));
    let outcome = runtime.block_on(async {
        let (inbox, _keep) = tokio::sync::mpsc::channel(16);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = std::sync::Mutex::new(Some(tx));
        let connected = move || {
            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
        };
        tokio::select! {
            r = adapter.run(inbox, &connected) => Err(match r {
                Ok(()) => "the connection closed".to_string(),
                Err(e) => e.to_string(),
            }),
            _ = rx => Ok(()),
            () = tokio::time::sleep(Duration::from_secs(20)) => Err("no answer in 20 s".into()),
        }
    });
    match outcome {
        Ok(()) => {
            println!(
                "moat: channel {name:?}: {} accepted moat in {:.1} ms",
                where_(c),
                started.elapsed().as_secs_f64() * 1000.0
            );
            Ok(())
        }
        Err(why) => Err(Failure::runtime(anyhow!(
            "channel {name:?}: {}",
            shown(&why, false)
        ))),
    }
}

/// A webhook has nothing to connect to: its test is a signed POST to its url.
fn test_webhook(
    home: &Home,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    c: &ChannelConfig,
    secret: Option<moat_core::secret::SecretString>,
) -> Result<(), Failure> {
    let Some(url) = &c.url else {
        println!(
            "moat: channel {name:?} only listens (no url): send it signed POSTs at /hooks/{name}"
        );
        return Ok(());
    };
    let mut config = c.clone();
    config.enabled = true;
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert(name.to_string(), Ok(secret));
    let mut one = Config::default();
    one.channels.insert(name.to_string(), config);
    let (specs, _) = app::channels::specs(home, &one, &secrets);
    let Some(spec) = specs.into_iter().find(|s| s.name == name) else {
        return Err(Failure::usage(anyhow!("channel {name:?} cannot be built")));
    };
    let started = Instant::now();
    let sent = runtime.block_on(moat_channels::Adapter::send(
        spec.adapter.as_ref(),
        &moat_channels::Target::Direct("moat-test".into()),
        "moat channel test: this is a signed test message",
    ));
    match sent {
        Ok(()) => {
            println!(
                "moat: channel {name:?}: {url} took a signed test message in {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            Ok(())
        }
        Err(e) => Err(Failure::runtime(anyhow!(
            "channel {name:?}: {}",
            shown(&e.to_string(), false)
        ))),
    }
}

/// `moat pairing`.
pub(crate) fn pairing(home: &Home, command: &PairingCommand) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let config = &loaded.config;
    let store = app::channels::pairing(home, config)?;
    let now = moat_channels::hub::now_ms();
    match command {
        PairingCommand::List => {
            let pending = store.pending(now).map_err(pairing_error)?;
            if pending.is_empty() {
                println!("no pairing request is waiting");
            }
            for r in pending {
                let display = if r.display != r.sender {
                    format!(" ({})", shown(&r.display, false))
                } else {
                    String::new()
                };
                println!(
                    "{}  {}  {}{}  expires {}\n    \"{}\"",
                    r.id,
                    r.channel,
                    shown(&r.sender, false),
                    display,
                    app::agent::time(r.expires_at),
                    shown(&r.preview, false)
                );
            }
            Ok(())
        }
        PairingCommand::Approve { code } => {
            // The code is what admits; the record names the sender, never the code.
            let keep = |channel: &str| {
                config
                    .channels
                    .get(channel)
                    .is_none_or(|c| c.on_approve == OnApprove::Release)
            };
            let result = store.approve(code, keep, now);
            decided(home, "pairing.approve", result, |r| {
                let what = if keep(&r.channel) {
                    "what they wrote is answered now"
                } else {
                    "what they wrote was dropped (on_approve = \"drop\")"
                };
                println!(
                    "approved {} on {}: they may talk to the assistant; {what}",
                    shown(&r.sender, false),
                    r.channel
                );
            })
        }
        PairingCommand::Deny { code } => {
            let result = store.deny(code, now);
            decided(home, "pairing.deny", result, |r| {
                println!(
                    "denied {} on {}; what they wrote was deleted",
                    shown(&r.sender, false),
                    r.channel
                );
            })
        }
    }
}

/// Audits the owner's decision (or the wrong code) and prints what became of it.
fn decided(
    home: &Home,
    action: &str,
    result: Result<moat_channels::Request, PairingError>,
    print: impl FnOnce(&moat_channels::Request),
) -> Result<(), Failure> {
    match result {
        Ok(r) => {
            app::audit::record_now(
                home,
                Record::new(
                    app::audit::cli_actor(),
                    action,
                    format!("{}:{}", r.channel, r.sender),
                    r.state.as_str(),
                )
                .detail("request", r.id.as_str()),
            );
            print(&r);
            Ok(())
        }
        Err(e) => {
            let outcome = match &e {
                PairingError::NoSuchCode => "no_such_code",
                PairingError::Expired => "expired",
                PairingError::Used(_) => "used",
                PairingError::Sqlite(_) => "failed",
            };
            app::audit::record_now(
                home,
                Record::new(app::audit::cli_actor(), action, "pairing", outcome),
            );
            Err(pairing_error(e))
        }
    }
}

fn pairing_error(e: PairingError) -> Failure {
    match e {
        PairingError::Sqlite(_) => Failure::runtime(anyhow!("{e}")),
        _ => Failure::usage(anyhow!("{e}")),
    }
}

/// `moat allowlist`.
pub(crate) fn allowlist(home: &Home, command: &AllowlistCommand) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let config = &loaded.config;
    let store = app::channels::pairing(home, config)?;
    let now = moat_channels::hub::now_ms();
    match command {
        AllowlistCommand::List { channel } => {
            if let Some(c) = channel {
                known(config, c)?;
            }
            let mut any = false;
            for (name, c) in &config.channels {
                if channel.as_ref().is_some_and(|w| w != name) {
                    continue;
                }
                for sender in &c.allow_from {
                    any = true;
                    println!("{name}  {}  (config: allow_from)", shown(sender, false));
                }
            }
            for a in store.allowlist(channel.as_deref()).map_err(pairing_error)? {
                any = true;
                println!(
                    "{}  {}  added {} by {}",
                    a.channel,
                    shown(&a.sender, false),
                    app::agent::time(a.added_at),
                    a.added_by
                );
            }
            if !any {
                println!("nobody is admitted yet");
            }
            Ok(())
        }
        AllowlistCommand::Add { channel, sender } => {
            known(config, channel)?;
            if sender.trim().is_empty() || sender == "*" {
                return Err(Failure::usage(anyhow!(
                    "name one sender; to let anyone talk, set dm_policy = \"open\" and allow_from = [\"*\"] in the channel's config"
                )));
            }
            let record = |outcome: &str| {
                Record::new(
                    app::audit::cli_actor(),
                    "allowlist.add",
                    format!("{channel}:{sender}"),
                    outcome,
                )
            };
            let added = app::audit::audited(home, record, || {
                store
                    .allow(channel, sender, &app::audit::cli_actor(), now)
                    .map_err(pairing_error)
            })?;
            if added {
                println!(
                    "{} may talk to the assistant on {channel}",
                    shown(sender, false)
                );
            } else {
                println!(
                    "{} was already on {channel}'s allowlist",
                    shown(sender, false)
                );
            }
            Ok(())
        }
        AllowlistCommand::Remove { channel, sender } => {
            let record = |outcome: &str| {
                Record::new(
                    app::audit::cli_actor(),
                    "allowlist.remove",
                    format!("{channel}:{sender}"),
                    outcome,
                )
            };
            let removed = app::audit::audited(home, record, || {
                store.disallow(channel, sender).map_err(pairing_error)
            })?;
            let in_config = config
                .channels
                .get(channel)
                .is_some_and(|c| c.allow_from.contains(sender));
            // Their conversations end with their admission.
            let agent = app::agent::store(home)?;
            let ended = agent
                .forget_sender(channel, sender)
                .map_err(|e| Failure::runtime(anyhow!("{e}")))?;
            if !removed && !in_config {
                return Err(Failure::usage(anyhow!(
                    "{} is not on {channel}'s allowlist (see `moat allowlist list`)",
                    shown(sender, false)
                )));
            }
            if removed {
                println!(
                    "{} removed from {channel}'s allowlist; {ended} conversation(s) ended",
                    shown(sender, false)
                );
            }
            if in_config {
                println!(
                    "{} is still in channels.{channel}.allow_from in config.toml: remove it there too",
                    shown(sender, false)
                );
            }
            Ok(())
        }
    }
}

fn known(config: &Config, channel: &str) -> Result<(), Failure> {
    if config.channels.contains_key(channel) {
        return Ok(());
    }
    Err(Failure::usage(anyhow!(
        "no channel named {channel:?} (see `moat channel list`)"
    )))
}
