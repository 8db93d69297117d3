//! The channels of `[channels.NAME]` made into adapters, with their secrets from the
//! vault, as `moat serve` runs them and `moat channel test` tries one.

use std::sync::Arc;

use moat_channels::discord::{Discord, DiscordSettings};
use moat_channels::email::{Email, EmailSettings};
use moat_channels::irc::{Irc, IrcSettings};
use moat_channels::matrix::{Matrix, MatrixSettings};
use moat_channels::telegram::{Telegram, TelegramSettings};
use moat_channels::webhook::{Hook, Webhook, WebhookSettings};
use moat_channels::{Adapter, ChannelError, Incoming, Pairing, Spec};
use moat_core::config::Config;
use moat_core::config::channels::ChannelConfig;
use moat_core::home::Home;
use moat_core::secret::SecretString;
use moat_state::StateStore;
use tokio::sync::mpsc;

use crate::Failure;

/// Where a telegram channel's Bot API is unless `api_base` says otherwise.
pub(crate) const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";
/// Where a discord channel's REST API is unless `api_base` says otherwise.
pub(crate) const DEFAULT_DISCORD_API: &str = "https://discord.com/api/v10";

/// The pairing store in MOAT_HOME's state store.
pub(crate) fn pairing(home: &Home, config: &Config) -> Result<Pairing, Failure> {
    home.ensure().map_err(Failure::runtime)?;
    let db = StateStore::open(&home.state_db()).map_err(Failure::runtime)?;
    Ok(Pairing::new(db, config.pairing.clone()))
}

/// The pairing store with each channel's on_approve and the audit log, as `serve` shares
/// it between the channels and the web chat.
pub(crate) fn desk(
    home: &Home,
    config: &Config,
    audit: Option<moat_audit::AuditLog>,
) -> Result<moat_channels::owner::Desk, Failure> {
    let release = config
        .channels
        .iter()
        .map(|(name, c)| {
            (
                name.clone(),
                c.on_approve == moat_core::config::channels::OnApprove::Release,
            )
        })
        .collect();
    Ok(moat_channels::owner::Desk::new(
        pairing(home, config)?,
        release,
        audit,
    ))
}

/// The secret a channel names, read from the vault while it is open.
pub(crate) fn secret(
    vault: &moat_vault::Vault,
    name: &str,
    c: &ChannelConfig,
) -> Result<Option<SecretString>, String> {
    let named = [
        ("password_secret", &c.password_secret),
        ("token_secret", &c.token_secret),
        ("key_secret", &c.key_secret),
    ];
    let Some((key, Some(secret))) = named.into_iter().find(|(_, s)| s.is_some()) else {
        return Ok(None);
    };
    let entry = vault.get(secret).ok_or_else(|| {
        format!(
            "channels.{name}.{key} names {secret:?}, which is not in the vault; add it with `moat vault add {secret}`"
        )
    })?;
    let value = String::from_utf8(entry.value().to_vec())
        .map_err(|_| format!("the secret {secret:?} is not UTF-8 text"))?;
    Ok(Some(SecretString::new(value)))
}

/// The adapter for one channel, given its secret (or why it has none).
pub(crate) fn adapter(
    home: &Home,
    name: &str,
    c: &ChannelConfig,
    secret: Result<Option<SecretString>, String>,
) -> Arc<dyn Adapter> {
    match build(home, name, c, secret) {
        Ok(a) => a,
        Err(why) => Arc::new(Unavailable(why)),
    }
}

fn build(
    home: &Home,
    name: &str,
    c: &ChannelConfig,
    secret: Result<Option<SecretString>, String>,
) -> Result<Arc<dyn Adapter>, String> {
    let password = secret?;
    match c.kind.as_str() {
        "irc" => {
            let roots = match &c.ca_file {
                Some(path) => Some(
                    moat_channels::irc::roots_from_pem(path)
                        .map_err(|e| format!("channels.{name}.ca_file {}: {e}", path.display()))?,
                ),
                None => None,
            };
            Ok(Arc::new(Irc::new(IrcSettings {
                server: c.server.clone().unwrap_or_default(),
                tls: c.tls.unwrap_or(true),
                roots,
                nick: c.nick.clone().unwrap_or_default(),
                sasl_user: c.sasl_user.clone(),
                password,
                rooms: c.rooms.clone(),
                send_per_second: c.send_per_second,
                max_piece: c.max_message_bytes.unwrap_or(moat_channels::irc::MAX_PIECE),
            })))
        }
        "matrix" => {
            let password = password.ok_or_else(|| {
                format!("channels.{name}: a matrix channel needs password_secret")
            })?;
            let hs = c.homeserver.as_deref().unwrap_or_default();
            let homeserver = url::Url::parse(hs)
                .map_err(|e| format!("channels.{name}.homeserver {hs:?}: {e}"))?;
            Ok(Arc::new(Matrix::new(MatrixSettings {
                homeserver,
                user: c.user.clone().unwrap_or_default(),
                password,
                state_dir: state_dir(home, name),
                rooms: c.rooms.clone(),
                max_piece: c
                    .max_message_bytes
                    .unwrap_or(moat_channels::matrix::MAX_PIECE),
            })))
        }
        "email" => {
            let password = password.ok_or_else(|| {
                format!("channels.{name}: an email channel needs password_secret")
            })?;
            let address = c.address.clone().unwrap_or_default();
            let email = Email::new(EmailSettings {
                imap_server: c.imap_server.clone().unwrap_or_default(),
                smtp_server: c.smtp_server.clone().unwrap_or_default(),
                tls: c.tls.unwrap_or(true),
                user: c.user.clone().unwrap_or_else(|| address.clone()),
                address,
                password,
                authserv_id: c.authserv_id.clone().unwrap_or_default(),
                // Checked when the config was read.
                trusted_relays: c
                    .trusted_relays
                    .iter()
                    .filter_map(|r| moat_core::config::channels::parse_relay(r))
                    .collect(),
                max_piece: c
                    .max_message_bytes
                    .unwrap_or(moat_channels::email::MAX_PIECE),
            })
            .map_err(|e| format!("channels.{name}: {e}"))?;
            Ok(Arc::new(email))
        }
        "discord" => {
            let token = password
                .ok_or_else(|| format!("channels.{name}: a discord channel needs token_secret"))?;
            let base = c.api_base.as_deref().unwrap_or(DEFAULT_DISCORD_API);
            let api_base = url::Url::parse(base)
                .map_err(|e| format!("channels.{name}.api_base {base:?}: {e}"))?;
            Ok(Arc::new(Discord::new(DiscordSettings {
                api_base,
                token,
                max_piece: c
                    .max_message_bytes
                    .unwrap_or(moat_channels::discord::MAX_PIECE),
            })))
        }
        "telegram" => Ok(telegram(name, c, password)?),
        other => Err(format!(
            "channels.{name}: moat cannot connect kind {other:?}"
        )),
    }
}

fn telegram(
    name: &str,
    c: &ChannelConfig,
    token: Option<SecretString>,
) -> Result<Arc<Telegram>, String> {
    let token =
        token.ok_or_else(|| format!("channels.{name}: a telegram channel needs token_secret"))?;
    let base = c.api_base.as_deref().unwrap_or(DEFAULT_TELEGRAM_API);
    let api_base =
        url::Url::parse(base).map_err(|e| format!("channels.{name}.api_base {base:?}: {e}"))?;
    let webhook_url = match &c.webhook_url {
        Some(u) => Some(
            url::Url::parse(u).map_err(|e| format!("channels.{name}.webhook_url {u:?}: {e}"))?,
        ),
        None => None,
    };
    Ok(Arc::new(Telegram::new(TelegramSettings {
        api_base,
        token,
        max_piece: c
            .max_message_bytes
            .unwrap_or(moat_channels::telegram::MAX_PIECE),
        webhook_url,
    })))
}

/// Where a channel keeps what it must across restarts (a Matrix device and its keys).
pub(crate) fn state_dir(home: &Home, name: &str) -> std::path::PathBuf {
    home.root().join("channels").join(name)
}

/// The enabled channels of `config`, ready to start, and the webhooks among them by
/// name (the server routes `/hooks/NAME` to them).
pub(crate) fn specs(
    home: &Home,
    config: &Config,
    secrets: &std::collections::BTreeMap<String, Result<Option<SecretString>, String>>,
) -> (Vec<Spec>, Hooks) {
    let mut hooks = Hooks::new();
    let specs = config
        .channels
        .iter()
        .filter(|(_, c)| c.enabled)
        .map(|(name, c)| {
            let secret = secrets.get(name).cloned().unwrap_or(Ok(None));
            let adapter: Arc<dyn Adapter> = match hooked(name, c, secret.clone()) {
                Some(Ok((adapter, hook))) => {
                    hooks.insert(name.clone(), hook);
                    adapter
                }
                Some(Err(why)) => Arc::new(Unavailable(why)),
                None => adapter(home, name, c, secret),
            };
            Spec {
                name: name.clone(),
                config: c.clone(),
                adapter,
            }
        })
        .collect();
    (specs, hooks)
}

/// The channels that take requests on `/hooks/NAME`, by name.
pub(crate) type Hooks = std::collections::BTreeMap<String, Arc<dyn Hook>>;

/// A channel that takes requests on `/hooks/NAME` (a webhook, a Telegram bot in webhook
/// mode) as its adapter and its hook; None for the others; or why it cannot be.
#[allow(clippy::type_complexity)]
fn hooked(
    name: &str,
    c: &ChannelConfig,
    secret: Result<Option<SecretString>, String>,
) -> Option<Result<(Arc<dyn Adapter>, Arc<dyn Hook>), String>> {
    match c.kind.as_str() {
        "webhook" => Some(webhook(name, c, secret).map(|w| {
            let hook: Arc<dyn Hook> = w.clone();
            (w as Arc<dyn Adapter>, hook)
        })),
        "telegram" if c.webhook_url.is_some() => {
            Some(secret.and_then(|s| telegram(name, c, s)).map(|t| {
                let hook: Arc<dyn Hook> = t.clone();
                (t as Arc<dyn Adapter>, hook)
            }))
        }
        _ => None,
    }
}

/// A webhook channel, or why it cannot be.
fn webhook(
    name: &str,
    c: &ChannelConfig,
    secret: Result<Option<SecretString>, String>,
) -> Result<Arc<Webhook>, String> {
    let build = || {
        let key = secret?
            .ok_or_else(|| format!("channels.{name}: a webhook channel needs key_secret"))?;
        let url = match &c.url {
            Some(u) => {
                Some(url::Url::parse(u).map_err(|e| format!("channels.{name}.url {u:?}: {e}"))?)
            }
            None => None,
        };
        Ok(Arc::new(Webhook::new(WebhookSettings {
            name: name.to_string(),
            key,
            url,
            replay_window: c.replay_window,
            max_piece: c
                .max_message_bytes
                .unwrap_or(moat_channels::webhook::MAX_PIECE),
        })))
    };
    build()
}

/// A channel that cannot start (a missing secret, an unreadable CA): its status says why.
struct Unavailable(String);

#[async_trait::async_trait]
impl Adapter for Unavailable {
    async fn run(
        &self,
        _inbox: mpsc::Sender<Incoming>,
        _connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        Err(ChannelError::Refused(self.0.clone()))
    }

    async fn send(&self, _to: &moat_channels::Target, _text: &str) -> Result<(), ChannelError> {
        Err(ChannelError::Send(self.0.clone()))
    }

    fn max_piece(&self) -> usize {
        350
    }
}
