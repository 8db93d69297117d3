//! `moat account`: the accounts pooled behind a backend (`[[llm.backends.NAME.accounts]]`),
//! the OAuth login that creates one, and the credentials `moat serve` hands the gateway.
//!
//! OAuth tokens live in the vault under `moat.oauth.BACKEND.ACCOUNT`; the server and
//! `moat account check` refresh them and write them back through the vault's data key.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use moat_core::config::llm::{
    AccountConfig, BackendConfig, DEFAULT_ACCOUNT, LlmConfig, oauth_vault_entry, valid_backend_name,
};
use moat_core::home::Home;
use moat_core::secret::SecretRef;
use moat_llm::Backend;
use moat_llm::oauth::{OAuthClient, TokenStore};
use moat_llm::pool::headroom::Headroom;
use moat_llm::pool::{Account, Credential};
use moat_vault::{Unlock, Vault, VaultError};

use crate::app::accounts::{VaultTokens, account_credential};
use crate::cli::AccountCommand;
use crate::{Failure, app};

pub(crate) fn run(home: &Home, command: &AccountCommand) -> Result<(), Failure> {
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
            app::config_edit::check(&llm)?;
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
    let mut doc = app::config_edit::read_doc(home)?;
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
    app::config_edit::write_doc(home, &doc)
}

fn list(home: &Home) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let llm = &loaded.config.llm;
    if llm.backends.is_empty() {
        println!("{}", app::config_edit::NO_BACKENDS);
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
    let mut doc = app::config_edit::read_doc(home)?;
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
    app::config_edit::write_doc(home, &doc)?;
    if account.oauth {
        let entry = oauth_vault_entry(backend, name);
        let vault = app::vault::unlock(home)?;
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
    let vault = app::vault::unlock_or_create(home)?;
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
            let code = moat_llm::oauth::callback::code_from_pasted(&pasted, &login.state).map_err(|e| Failure::usage(e.into()))?;
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
    let record = |outcome: &str| {
        moat_audit::Record::new(
            app::audit::cli_actor(),
            "account.oauth_login",
            format!("{backend}/{name}"),
            outcome,
        )
    };
    app::audit::audited(home, record, || {
        store
            .save(&entry, &tokens)
            .map_err(|e| Failure::runtime(anyhow!("the login worked but {e}")))
    })?;
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
        println!("{}", app::config_edit::NO_BACKENDS);
        return Ok(());
    }
    let needs_vault = selected.iter().any(|(_, b)| {
        b.pool()
            .iter()
            .any(|a| a.oauth || matches!(a.key, Some(SecretRef::Vault(_))))
    });
    let vault = if needs_vault {
        Some(app::vault::unlock(home)?)
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
    let answer = moat_llm::probe_models(
        &upstream,
        &b.base_url,
        credential.as_ref(),
        b.connect_timeout * 3,
    )
    .await
    .map_err(|e| Failure::runtime(anyhow!("{e}")))?;
    let (status, latency) = (answer.status, answer.latency);
    let mut headroom = Headroom::default();
    headroom.update(&answer.headers, Instant::now());
    if !status.is_success() {
        let message = answer.error_message().unwrap_or_default();
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
