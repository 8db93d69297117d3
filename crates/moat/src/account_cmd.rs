//! `moat account`: the accounts pooled behind a backend (`[[llm.backends.NAME.accounts]]`),
//! the OAuth login that creates one, and the credentials `moat serve` hands the gateway.
//!
//! OAuth tokens live in the vault under `moat.oauth.BACKEND.ACCOUNT`; the server and
//! `moat account check` refresh them and write them back through the vault's data key.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use http::Method;
use http_body_util::BodyExt;
use moat_core::config::llm::{
    AccountConfig, BackendConfig, DEFAULT_ACCOUNT, LlmConfig, oauth_vault_entry, valid_backend_name,
};
use moat_core::home::Home;
use moat_core::secret::SecretRef;
use moat_llm::backend::{Backend, Endpoint};
use moat_llm::oauth::{OAuthClient, TokenSource, TokenStore, Tokens};
use moat_llm::pool::headroom::Headroom;
use moat_llm::pool::{Account, AccountEvent, Credential, PoolEvents};
use moat_vault::{Unlock, Vault, VaultError};
use zeroize::Zeroizing;

use crate::Failure;
use crate::cli::AccountCommand;

pub fn run(home: &Home, command: &AccountCommand) -> Result<(), Failure> {
    match command {
        AccountCommand::Add {
            backend,
            name,
            key_secret,
            oauth,
            manual,
            no_browser,
            timeout,
            replace,
        } => {
            if !valid_backend_name(name) {
                return Err(Failure::usage(anyhow!(
                    "{name:?} is not an account name: use letters, digits, '-' and '_' (at most 64)"
                )));
            }
            let loaded = crate::load_config(home, &[])?;
            let config = backend_config(&loaded.config.llm, backend)?;
            let account = match (key_secret, oauth) {
                (Some(secret), false) => {
                    AccountConfig {
                        name: name.clone(),
                        key: Some(format!("secret:{secret}").parse::<SecretRef>().map_err(
                            |e| {
                                Failure::usage(anyhow!(
                                    "the value of --key-secret is not usable ({e})"
                                ))
                            },
                        )?),
                        oauth: false,
                    }
                }
                (None, true) => AccountConfig {
                    name: name.clone(),
                    key: None,
                    oauth: true,
                },
                _ => {
                    return Err(Failure::usage(anyhow!(
                        "give the account a credential: --key-secret NAME (a vault secret) or --oauth"
                    )));
                }
            };
            // Checked before any login: a login whose account cannot be saved is wasted.
            let mut llm = loaded.config.llm.clone();
            let exists = put_account(&mut llm, backend, account.clone(), *replace)?;
            check(&llm)?;
            if *oauth {
                login(home, backend, name, config, *manual, *no_browser, *timeout)?;
            }
            write_account(home, backend, &account, exists)?;
            println!(
                "moat: account {name:?} {} backend {backend:?} in {}; restart `moat serve` to use it",
                if exists { "replaced in" } else { "added to" },
                home.config_file().display()
            );
            if let Some(SecretRef::Vault(secret)) = &account.key {
                println!(
                    "moat: its key is read from the vault secret {secret:?} (add it with `moat vault add {secret}` if it isn't there)"
                );
            }
            Ok(())
        }
        AccountCommand::List => list(home),
        AccountCommand::Remove { backend, name } => remove(home, backend, name),
        AccountCommand::Check { backend, name } => {
            check_accounts(home, backend.as_deref(), name.as_deref())
        }
    }
}

fn backend_config<'a>(llm: &'a LlmConfig, backend: &str) -> Result<&'a BackendConfig, Failure> {
    llm.backends.get(backend).ok_or_else(|| {
        Failure::usage(anyhow!(
            "no backend named {backend:?} (see `moat backend list`; add one with `moat backend add`)"
        ))
    })
}

fn check(llm: &LlmConfig) -> Result<(), Failure> {
    moat_core::config::llm::validate(llm)
        .map_err(|(key, message)| Failure::usage(anyhow!("invalid value for `{key}`: {message}")))
}

/// Puts `account` into `llm`; returns whether it replaced one.
fn put_account(
    llm: &mut LlmConfig,
    backend: &str,
    account: AccountConfig,
    replace: bool,
) -> Result<bool, Failure> {
    let b = llm.backends.get_mut(backend).expect("checked");
    if account.name == DEFAULT_ACCOUNT && b.key.is_some() {
        return Err(Failure::usage(anyhow!(
            "\"default\" is the account of backend {backend:?}'s own key; choose another name"
        )));
    }
    match b.accounts.iter().position(|a| a.name == account.name) {
        Some(_) if !replace => Err(Failure::usage(anyhow!(
            "backend {backend:?} has an account {:?}; use --replace to overwrite it, or `moat account remove {backend} {}`",
            account.name,
            account.name
        ))),
        Some(i) => {
            b.accounts[i] = account;
            Ok(true)
        }
        None => {
            b.accounts.push(account);
            Ok(false)
        }
    }
}

fn accounts_array<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    home: &Home,
    backend: &str,
) -> Result<&'a mut toml_edit::ArrayOfTables, Failure> {
    let not_here = || {
        Failure::usage(anyhow!(
            "backend {backend:?} is not a [llm.backends.{backend}] table in {}; moat edits only what is written there",
            home.config_file().display()
        ))
    };
    let table = doc
        .get_mut("llm")
        .and_then(|l| l.get_mut("backends"))
        .and_then(|b| b.get_mut(backend))
        .and_then(|b| b.as_table_mut())
        .ok_or_else(not_here)?;
    table
        .entry("accounts")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| {
            Failure::usage(anyhow!(
                "`llm.backends.{backend}.accounts` in config.toml is not written as [[llm.backends.{backend}.accounts]] tables; rewrite it that way to let moat edit it"
            ))
        })
}

fn write_account(
    home: &Home,
    backend: &str,
    account: &AccountConfig,
    replace: bool,
) -> Result<(), Failure> {
    let mut doc = crate::backend_cmd::read_doc(home)?;
    let accounts = accounts_array(&mut doc, home, backend)?;
    let mut entry = toml_edit::Table::new();
    entry.insert("name", toml_edit::value(&account.name));
    if let Some(key) = &account.key {
        entry.insert("key", toml_edit::value(key.to_string()));
    }
    if account.oauth {
        entry.insert("oauth", toml_edit::value(true));
    }
    let existing = (0..accounts.len()).find(|&i| {
        accounts
            .get(i)
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str())
            == Some(&account.name)
    });
    match existing {
        Some(i) if replace => {
            *accounts.get_mut(i).expect("in range") = entry;
        }
        _ => accounts.push(entry),
    }
    crate::backend_cmd::write_doc(home, &doc)
}

fn list(home: &Home) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let llm = &loaded.config.llm;
    if llm.backends.is_empty() {
        println!("{}", crate::backend_cmd::NO_BACKENDS);
        return Ok(());
    }
    println!(
        "{:<16} {:<16} {:<12} STRATEGY",
        "BACKEND", "ACCOUNT", "CREDENTIAL"
    );
    for (name, b) in &llm.backends {
        for a in b.pool() {
            let credential = match (&a.key, a.oauth) {
                (_, true) => "oauth",
                (Some(_), _) => "key ***",
                (None, false) => "none",
            };
            println!(
                "{:<16} {:<16} {:<12} {}",
                name,
                a.name,
                credential,
                b.strategy.as_str()
            );
        }
    }
    Ok(())
}

fn remove(home: &Home, backend: &str, name: &str) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let config = backend_config(&loaded.config.llm, backend)?;
    if name == DEFAULT_ACCOUNT && config.key.is_some() {
        return Err(Failure::usage(anyhow!(
            "\"default\" is backend {backend:?}'s own key; change it with `moat backend add {backend} ... --replace`"
        )));
    }
    let Some(account) = config.accounts.iter().find(|a| a.name == name) else {
        return Err(Failure::usage(anyhow!(
            "backend {backend:?} has no account {name:?} (see `moat account list`)"
        )));
    };
    let mut doc = crate::backend_cmd::read_doc(home)?;
    let accounts = accounts_array(&mut doc, home, backend)?;
    let before = accounts.len();
    accounts.retain(|t| t.get("name").and_then(|n| n.as_str()) != Some(name));
    if accounts.len() == before {
        return Err(Failure::usage(anyhow!(
            "account {name:?} of backend {backend:?} is not set in {} (it comes from elsewhere)",
            home.config_file().display()
        )));
    }
    if accounts.is_empty() {
        let table = doc["llm"]["backends"][backend]
            .as_table_mut()
            .expect("found above");
        table.remove("accounts");
    }
    crate::backend_cmd::write_doc(home, &doc)?;
    if account.oauth {
        let entry = oauth_vault_entry(backend, name);
        let vault = crate::vault_cmd::unlock(home)?;
        let key = vault.data_key_copy();
        drop(vault);
        match Vault::update(&home.vault_file(), Unlock::DataKey(&key), |v| {
            v.remove(&entry)
        }) {
            Ok(()) | Err(VaultError::NoEntry(_)) => {}
            Err(e) => {
                return Err(Failure::runtime(anyhow!(
                    "the account was removed from config, but its tokens could not be removed from the vault ({e}); remove them with `moat vault remove {entry}`"
                )));
            }
        }
    }
    println!(
        "moat: account {name:?} removed from backend {backend:?}; restart `moat serve` to apply"
    );
    Ok(())
}

/// Runs the OAuth login and keeps the tokens in the vault.
fn login(
    home: &Home,
    backend: &str,
    name: &str,
    config: &BackendConfig,
    manual: bool,
    no_browser: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let Some(provider) = &config.oauth else {
        return Err(Failure::usage(anyhow!(
            "backend {backend:?} has no OAuth provider: set client_id, authorize_url and token_url under [llm.backends.{backend}.oauth] in config.toml"
        )));
    };
    // The vault first: a login whose tokens cannot be kept is wasted. A fresh home gets
    // the sealed vault `moat serve` would make.
    home.ensure().map_err(Failure::runtime)?;
    if !home.vault_file().exists()
        && let Some(outside) = crate::vault_cmd::create_sealed(home)?
    {
        println!(
            "moat: created a vault sealed to this machine ({}, other half in {outside}) for the tokens",
            home.vault_file().display()
        );
    }
    let vault = crate::vault_cmd::unlock(home)?;
    let data_key = vault.data_key_copy();
    drop(vault);
    let client = OAuthClient::new(provider).map_err(|e| Failure::usage(e.into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    let tokens = runtime.block_on(async {
        if manual {
            let login = client
                .login(MANUAL_REDIRECT)
                .map_err(Failure::runtime)?;
            println!("moat: open this URL in a browser, log in and approve:\n\n  {}\n", login.authorize_url);
            println!(
                "moat: the browser then tries to open {MANUAL_REDIRECT}?code=... and fails; paste that whole address (or just the code) here:"
            );
            let pasted = read_line().map_err(Failure::runtime)?;
            let code = pasted_code(&pasted, &login.state).map_err(|e| Failure::usage(e.into()))?;
            client
                .exchange(&login, &code)
                .await
                .map_err(Failure::runtime)
        } else {
            let callback = moat_llm::oauth::callback::Callback::bind()
                .await
                .map_err(Failure::runtime)?;
            let login = client
                .login(&callback.redirect_uri())
                .map_err(Failure::runtime)?;
            println!("moat: open this URL in a browser, log in and approve:\n\n  {}\n", login.authorize_url);
            if !no_browser && desktop() {
                open_browser(&login.authorize_url);
            }
            println!(
                "moat: waiting up to {} for the provider to send the browser back to {} (Ctrl-C to give up; --manual if this machine has no browser)",
                humantime::format_duration(timeout),
                callback.redirect_uri()
            );
            let code = callback
                .wait(&login.state, timeout)
                .await
                .map_err(Failure::runtime)?;
            client
                .exchange(&login, &code)
                .await
                .map_err(Failure::runtime)
        }
    })?;
    let store = VaultTokens {
        path: home.vault_file(),
        data_key,
    };
    let entry = oauth_vault_entry(backend, name);
    store
        .save(&entry, &tokens)
        .map_err(|e| Failure::runtime(anyhow!("the login worked but {e}")))?;
    let expiry = tokens
        .expires_in()
        .map(|s| {
            format!(
                "; the access token expires in {}",
                humantime::format_duration(Duration::from_secs(s.max(0) as u64))
            )
        })
        .unwrap_or_default();
    println!(
        "moat: logged in; tokens kept in the vault as {entry:?}{expiry}{}",
        if tokens.refresh.is_some() {
            " (moat refreshes it)"
        } else {
            " (no refresh token: log in again when it expires)"
        }
    );
    crate::audit_cmd::record_now(
        home,
        moat_audit::Record::new(
            crate::audit_cmd::cli_actor(),
            "account.oauth_login",
            format!("{backend}/{name}"),
            "ok",
        ),
    );
    Ok(())
}

/// Where a `--manual` login sends the browser: nothing listens there, and the user copies
/// the address the browser fails to open.
const MANUAL_REDIRECT: &str = "http://127.0.0.1/callback";

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the pasted code")?;
    Ok(line.trim().to_string())
}

/// The code from what a user pasted: the whole redirect address (its `state` must
/// match), `CODE#STATE` as some providers' pages show it (the state must match too), or
/// the bare code (PKCE still binds it to this login's verifier).
fn pasted_code(pasted: &str, state: &str) -> Result<String, moat_llm::oauth::OAuthError> {
    use moat_llm::oauth::OAuthError;
    if pasted.is_empty() {
        return Err(OAuthError::Denied {
            code: "nothing_pasted".into(),
            description: None,
        });
    }
    let Ok(url) = url::Url::parse(pasted) else {
        if let Some((code, pasted_state)) = pasted.split_once('#') {
            if pasted_state != state {
                return Err(OAuthError::StateMismatch);
            }
            return Ok(code.to_string());
        }
        return Ok(pasted.to_string());
    };
    let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if params.get("state").map(String::as_str) != Some(state) {
        return Err(OAuthError::StateMismatch);
    }
    if let Some(error) = params.get("error") {
        return Err(OAuthError::Denied {
            code: error.chars().take(64).collect(),
            description: None,
        });
    }
    params
        .get("code")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or(OAuthError::Denied {
            code: "no_code".into(),
            description: None,
        })
}

fn desktop() -> bool {
    std::io::stdout().is_terminal()
        && (std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some())
}

fn open_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        println!("moat: could not start a browser (xdg-open); open the URL above yourself");
    }
}

/// OAuth tokens in the vault, written through the data key (no password prompt).
pub struct VaultTokens {
    pub path: PathBuf,
    pub data_key: Zeroizing<[u8; 32]>,
}

impl TokenStore for VaultTokens {
    fn save(&self, entry: &str, tokens: &Tokens) -> Result<(), String> {
        let value = Zeroizing::new(tokens.to_vault_json());
        Vault::update(&self.path, Unlock::DataKey(&self.data_key), |v| {
            match v.remove(entry) {
                Ok(()) | Err(VaultError::NoEntry(_)) => {}
                Err(e) => return Err(e),
            }
            v.add(
                entry,
                value.as_bytes().to_vec(),
                Some("OAuth tokens of an LLM account (kept by moat)".into()),
                None,
            )
        })
        .map_err(|e| format!("the vault could not be updated: {e}"))
    }

    fn load(&self, entry: &str) -> Option<Tokens> {
        let vault = Vault::open(&self.path, Unlock::DataKey(&self.data_key)).ok()?;
        Tokens::from_vault_json(std::str::from_utf8(vault.get(entry)?.value()).ok()?)
    }
}

/// Each account's credential, for the gateway: keys from the vault or the environment,
/// OAuth tokens from the vault with a store that writes refreshed ones back.
pub fn credentials(
    home: &Home,
    vault: &Vault,
    llm: &LlmConfig,
) -> Result<moat_llm::Credentials, Failure> {
    let mut out = moat_llm::Credentials::new();
    let store: Arc<dyn TokenStore> = Arc::new(VaultTokens {
        path: home.vault_file(),
        data_key: vault.data_key_copy(),
    });
    for (backend, b) in &llm.backends {
        let client = match &b.oauth {
            Some(o) => Some(Arc::new(
                OAuthClient::new(o).map_err(|e| Failure::usage(e.into()))?,
            )),
            None => None,
        };
        for a in b.pool() {
            let credential =
                account_credential(vault, backend, b, &a, client.as_ref(), store.clone())?;
            out.insert((backend.clone(), a.name.clone()), credential);
        }
    }
    Ok(out)
}

fn account_credential(
    vault: &Vault,
    backend: &str,
    b: &BackendConfig,
    a: &AccountConfig,
    client: Option<&Arc<OAuthClient>>,
    store: Arc<dyn TokenStore>,
) -> Result<Credential, Failure> {
    let key_name = if a.name == DEFAULT_ACCOUNT && b.key.is_some() {
        format!("llm.backends.{backend}.key")
    } else {
        format!("llm.backends.{backend}.accounts.{}.key", a.name)
    };
    if let Some(r) = &a.key {
        return Ok(Credential::Key(crate::serve::resolve_secret(
            vault, r, &key_name,
        )?));
    }
    if !a.oauth {
        return Ok(Credential::None);
    }
    let entry = oauth_vault_entry(backend, &a.name);
    let tokens = vault
        .get(&entry)
        .and_then(|e| std::str::from_utf8(e.value()).ok())
        .and_then(Tokens::from_vault_json)
        .ok_or_else(|| {
            Failure::usage(anyhow!(
                "account {:?} of backend {backend:?} is an OAuth account without tokens in the vault; log in with `moat account add {backend} {} --oauth --replace`",
                a.name,
                a.name
            ))
        })?;
    let client = client
        .expect("validated: oauth accounts have a provider")
        .clone();
    Ok(Credential::OAuth(Arc::new(TokenSource::new(
        client, entry, tokens, store,
    ))))
}

/// Account events (auth failures) as audit entries.
pub struct AuditAccountEvents(pub moat_audit::AuditLog);

impl PoolEvents for AuditAccountEvents {
    fn account_event(&self, event: AccountEvent) {
        let mut record = moat_audit::Record::new(
            "system",
            event.action,
            format!("{}/{}", event.backend, event.account),
            "failed",
        );
        for (k, v) in event.detail {
            record = record.detail(k, v);
        }
        if let Err(e) = self.0.record(record) {
            tracing::error!(error = %e, "cannot write an account event to the audit log");
        }
    }
}

/// `moat account check`: each account's credential against its backend, one request each.
fn check_accounts(
    home: &Home,
    only_backend: Option<&str>,
    only_account: Option<&str>,
) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let llm = &loaded.config.llm;
    if let Some(b) = only_backend {
        backend_config(llm, b)?;
    }
    let selected: Vec<(&String, &BackendConfig)> = llm
        .backends
        .iter()
        .filter(|(n, _)| only_backend.is_none_or(|b| b == n.as_str()))
        .collect();
    if selected.is_empty() {
        println!("{}", crate::backend_cmd::NO_BACKENDS);
        return Ok(());
    }
    let needs_vault = selected.iter().any(|(_, b)| {
        b.pool()
            .iter()
            .any(|a| a.oauth || matches!(a.key, Some(SecretRef::Vault(_))))
    });
    let vault = if needs_vault {
        Some(crate::vault_cmd::unlock(home)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    let mut failures = 0;
    let mut checked = 0;
    for (backend, b) in selected {
        let client = match &b.oauth {
            Some(o) => Some(Arc::new(
                OAuthClient::new(o).map_err(|e| Failure::usage(e.into()))?,
            )),
            None => None,
        };
        for a in b.pool() {
            if only_account.is_some_and(|n| n != a.name) {
                continue;
            }
            checked += 1;
            let result = (|| {
                let credential =
                    match &vault {
                        Some(v) => {
                            let store: Arc<dyn TokenStore> = Arc::new(VaultTokens {
                                path: home.vault_file(),
                                data_key: v.data_key_copy(),
                            });
                            account_credential(v, backend, b, &a, client.as_ref(), store)?
                        }
                        None => match &a.key {
                            Some(r) => Credential::Key(r.resolve().map_err(|e| {
                                Failure::usage(anyhow!("account {:?}: {e}", a.name))
                            })?),
                            None => Credential::None,
                        },
                    };
                runtime.block_on(check_one(backend, b, &a.name, credential))
            })();
            match result {
                Ok(line) => println!("ok    {backend}/{}: {line}", a.name),
                Err(f) => {
                    failures += 1;
                    let text = moat_core::redact::global()
                        .redact(&format!("{:#}", f.error()))
                        .into_owned();
                    println!("FAIL  {backend}/{}: {text}", a.name);
                }
            }
        }
    }
    if let Some(n) = only_account
        && checked == 0
    {
        return Err(Failure::usage(anyhow!(
            "no account {n:?} (see `moat account list`)"
        )));
    }
    if failures > 0 {
        return Err(Failure::runtime(anyhow!(
            "{failures} of {checked} account(s) failed the check"
        )));
    }
    Ok(())
}

async fn check_one(
    backend: &str,
    b: &BackendConfig,
    name: &str,
    credential: Credential,
) -> Result<String, Failure> {
    let mut oauth_note = String::new();
    if let Credential::OAuth(source) = &credential {
        oauth_note = match source.expires_in() {
            Some(s) if s > 0 => format!(
                "; OAuth token expires in {}",
                humantime::format_duration(Duration::from_secs(s as u64))
            ),
            Some(_) => "; OAuth token expired (refreshing)".into(),
            None => "; OAuth token without expiry".into(),
        };
    }
    let account = Account::new(name, credential);
    let upstream = Backend::new(backend, b, Vec::new(), &Default::default())
        .map_err(|e| Failure::usage(e.into()))?;
    let credential = account
        .credential(upstream.auth())
        .await
        .map_err(|e| Failure::runtime(anyhow!("{}", e.message)))?;
    let req = upstream
        .request(
            Method::GET,
            Endpoint::Models,
            bytes::Bytes::new(),
            &http::HeaderMap::new(),
            credential.as_ref(),
        )
        .map_err(|e| Failure::runtime(anyhow!("{}", e.message)))?;
    let started = Instant::now();
    let wait = b.connect_timeout * 3;
    let resp = tokio::time::timeout(wait, upstream.send(req))
        .await
        .map_err(|_| Failure::runtime(anyhow!("no answer within {wait:?}")))?
        .map_err(|e| Failure::runtime(anyhow!("cannot reach {}: {e}", b.base_url)))?;
    let status = resp.status();
    let latency = started.elapsed();
    let mut headroom = Headroom::default();
    headroom.update(resp.headers(), Instant::now());
    let body = http_body_util::Limited::new(resp.into_body(), 1024 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if !status.is_success() {
        let message = moat_llm::errors::upstream_message(&body).unwrap_or_default();
        return Err(Failure::runtime(anyhow!(
            "answered {status} in {} ms{}{}{oauth_note}",
            latency.as_millis(),
            if message.is_empty() { "" } else { ": " },
            message
        )));
    }
    let limits: Vec<String> = headroom
        .dims()
        .map(|(k, d)| format!("{} {}/{}", k.as_str(), d.remaining, d.limit))
        .collect();
    Ok(format!(
        "answered {status} in {} ms{}{oauth_note}",
        latency.as_millis(),
        if limits.is_empty() {
            String::new()
        } else {
            format!("; left: {}", limits.join(", "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_codes() {
        assert_eq!(pasted_code("abc", "s").unwrap(), "abc");
        assert_eq!(
            pasted_code("http://127.0.0.1/callback?code=xyz&state=s", "s").unwrap(),
            "xyz"
        );
        assert!(pasted_code("http://127.0.0.1/callback?code=xyz&state=t", "s").is_err());
        assert!(pasted_code("", "s").is_err());
        assert_eq!(pasted_code("xyz#s", "s").unwrap(), "xyz");
        assert!(matches!(
            pasted_code("xyz#forged", "s"),
            Err(moat_llm::oauth::OAuthError::StateMismatch)
        ));
        assert!(pasted_code("http://127.0.0.1/callback?error=access_denied&state=s", "s").is_err());
    }
}
