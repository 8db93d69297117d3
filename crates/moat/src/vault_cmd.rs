//! `moat vault ...`: the command-line face of moat-vault. Passwords come from a prompt
//! without echo, from `MOAT_VAULT_PASSWORD_FILE`, or (only with an explicit opt-in) from
//! `MOAT_VAULT_PASSWORD`. Values never reach the terminal except through `get --reveal`.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use moat_core::home::Home;
use moat_vault::seal::{Outside, SealPaths, SealStore};
use moat_vault::{KdfParams, Unlock, Vault, VaultError, VaultEvent};
use zeroize::Zeroizing;

use crate::Failure;
use crate::cli::VaultCommand;

/// Read a password from this file (first line).
const PASSWORD_FILE_ENV: &str = "MOAT_VAULT_PASSWORD_FILE";
/// The password itself; read only with [`PASSWORD_ENV_OPT_IN`] set.
const PASSWORD_ENV: &str = "MOAT_VAULT_PASSWORD";
/// The new password for `passwd` when there is no terminal.
const NEW_PASSWORD_FILE_ENV: &str = "MOAT_VAULT_NEW_PASSWORD_FILE";
/// The seal's PIN when there is no terminal.
const PIN_FILE_ENV: &str = "MOAT_VAULT_PIN_FILE";
/// Opt-in for [`PASSWORD_ENV`].
const PASSWORD_ENV_OPT_IN: &str = "MOAT_ALLOW_PASSWORD_ENV";

pub fn run(home: &Home, command: &VaultCommand) -> Result<(), Failure> {
    let path = home.vault_file();
    match command {
        VaultCommand::Init => {
            home.ensure().map_err(Failure::runtime)?;
            if path.exists() {
                return Err(Failure::usage(anyhow!(
                    "a vault already exists at {}",
                    path.display()
                )));
            }
            let password = new_password()?;
            with_progress("creating the vault", || {
                Vault::create(&path, &password, KdfParams::default())
            })
            .map_err(vault_failure)?;
            // A seal left from an earlier vault holds another data key: it must go.
            if let Ok(paths) = SealPaths::for_home(home.root()) {
                let _ = paths.remove();
            }
            emit(home, VaultEvent::Init);
            println!(
                "created {} (AES-256-GCM, Argon2id m=64MiB t=3 p=1)",
                path.display()
            );
        }
        VaultCommand::Status => {
            status(&path)?;
            let paths = SealPaths::for_home(home.root()).ok();
            let outside = paths.as_ref().and_then(|p| p.outside());
            match paths.as_ref().and_then(|p| p.status()) {
                Some(true) => println!("sealed to this machine and path, with a PIN"),
                Some(false) => {
                    println!("sealed to this machine and path: unlocks without a password here")
                }
                None => println!(
                    "not sealed: every unlock needs the password (`moat vault seal` to change that)"
                ),
            }
            if let Some(outside) = outside {
                println!("the seal's other half is {outside}");
            }
        }
        VaultCommand::List => {
            let vault = open(home, &path)?;
            let (own, yours): (Vec<_>, Vec<_>) = vault
                .entries()
                .partition(|e| e.name().starts_with(RESERVED));
            if yours.is_empty() {
                println!("the vault is empty; add a secret with `moat vault add NAME`");
            }
            for e in yours {
                let updated = std::time::UNIX_EPOCH + Duration::from_secs(e.updated());
                let mut line = format!(
                    "{}  updated {}",
                    e.name(),
                    humantime::format_rfc3339_seconds(updated)
                );
                // Free text someone typed, or pasted: shown, never interpreted.
                if let Some(s) = e.scope() {
                    line.push_str(&format!("  scope {}", crate::terminal::shown(s, false)));
                }
                if let Some(d) = e.description() {
                    line.push_str(&format!("  {}", crate::terminal::shown(d, false)));
                }
                println!("{}", moat_core::redact::global().redact(&line));
            }
            if !own.is_empty() {
                let names: Vec<&str> = own.iter().map(|e| e.name()).collect();
                println!("(and moat's own: {})", names.join(", "));
            }
        }
        VaultCommand::Add {
            name,
            stdin,
            description,
            scope,
        } => {
            // Before the value is asked for.
            moat_vault::check_new_name(name).map_err(vault_failure)?;
            if name.starts_with(RESERVED) {
                return Err(Failure::usage(anyhow!(
                    "names starting with {RESERVED:?} are moat's own (the audit key and checkpoint); choose another name"
                )));
            }
            let credential = credential(home, "vault password")?;
            let value = read_value(*stdin)?;
            transact(home, &path, &credential, |v| {
                v.add(name, value.to_vec(), description.clone(), scope.clone())
            })?;
            emit(home, VaultEvent::Add { name: name.clone() });
            println!("added {name}");
        }
        VaultCommand::Remove { name } => {
            let credential = credential(home, "vault password")?;
            transact(home, &path, &credential, |v| v.remove(name))?;
            emit(home, VaultEvent::Remove { name: name.clone() });
            println!("removed {name}");
        }
        VaultCommand::Rename { old, new } => {
            moat_vault::check_new_name(new).map_err(vault_failure)?;
            if let Some(reserved) = [old, new].into_iter().find(|n| n.starts_with(RESERVED)) {
                return Err(Failure::usage(anyhow!(
                    "{reserved:?} is one of moat's own names (the audit key and checkpoint): entries under {RESERVED:?} are neither renamed nor made by renaming"
                )));
            }
            let credential = credential(home, "vault password")?;
            transact(home, &path, &credential, |v| v.rename(old, new))?;
            emit(
                home,
                VaultEvent::Rename {
                    from: old.clone(),
                    to: new.clone(),
                },
            );
            println!("renamed {old} to {new}");
        }
        VaultCommand::Get {
            name,
            reveal,
            force,
        } => {
            if !reveal {
                return Err(Failure::usage(anyhow!(
                    "`moat vault get` prints a secret value: add --reveal to confirm"
                )));
            }
            if !std::io::stdout().is_terminal() && !force {
                return Err(Failure::usage(anyhow!(
                    "refusing to write a secret to a pipe or file; add --force if that is what you want"
                )));
            }
            let vault = open(home, &path)?;
            let entry = vault
                .get(name)
                .ok_or_else(|| vault_failure(VaultError::NoEntry(name.clone())))?;
            emit(home, VaultEvent::Reveal { name: name.clone() });
            let mut out = std::io::stdout().lock();
            out.write_all(entry.value())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(Failure::runtime)?;
        }
        VaultCommand::Passwd => {
            let old = credential(home, "current vault password")?;
            let new = replacement_password()?;
            transact(home, &path, &old, |v| {
                v.change_password(&new, KdfParams::default())
            })?;
            emit(home, VaultEvent::PasswordChanged);
            println!("password changed; the data key was rewrapped, entries were not re-encrypted");
        }
        VaultCommand::Seal { pin, store } => {
            let store = match store {
                Some(s) => s.parse::<SealStore>(),
                None => SealStore::from_env(),
            }
            .map_err(|e| Failure::usage(e.into()))?;
            let vault = open(home, &path)?;
            let paths = SealPaths::for_home(home.root()).map_err(Failure::runtime)?;
            let pin = if *pin { Some(new_pin()?) } else { None };
            let sealed = with_progress("sealing", || {
                paths.seal(&vault, pin.as_deref().map(|p| p.as_slice()), store)
            })
            .map_err(Failure::runtime)?;
            if let Some(why) = &sealed.keyring_skipped {
                tracing::info!("seal: not using the OS keyring: {why}");
            }
            if let Some((old, why)) = &sealed.leftover {
                eprintln!(
                    "moat: warning: the previous seal's secret, {old}, could not be deleted ({why}); delete it with your keyring's own tool"
                );
            }
            emit(home, VaultEvent::Seal { pin: pin.is_some() });
            if !moat_vault::seal::machine_bound() {
                eprintln!(
                    "moat: warning: this system has no machine id; the seal is bound to the outside secret and the path only"
                );
            }
            println!(
                "sealed: moat now unlocks {} without the password, on this machine and at this path only{}.",
                path.display(),
                if pin.is_some() { ", given the PIN" } else { "" }
            );
            println!(
                "The other half of the seal is {}. Anyone who can read your files here can unseal too; `moat vault unseal` undoes it.",
                sealed.outside
            );
        }
        VaultCommand::Export { out } => {
            let out = std::path::absolute(out).unwrap_or_else(|_| out.clone());
            if out.exists() {
                return Err(Failure::usage(anyhow!(
                    "{} exists; moat exports only to a new file",
                    out.display()
                )));
            }
            let vault = open(home, &path)?;
            let entries: Vec<serde_json::Value> = vault
                .entries()
                .map(|e| {
                    let mut v = serde_json::json!({
                        "name": e.name(),
                        "created": e.created(),
                        "updated": e.updated(),
                        "description": e.description(),
                        "scope": e.scope(),
                    });
                    match std::str::from_utf8(e.value()) {
                        Ok(text) => v["value"] = text.into(),
                        Err(_) => v["value_hex"] = hex::encode(e.value()).into(),
                    }
                    v
                })
                .collect();
            let text = Zeroizing::new(
                serde_json::to_string_pretty(
                    &serde_json::json!({ "moat_vault_export": 1, "entries": entries }),
                )
                .map_err(Failure::runtime)?,
            );
            write_new(&out, text.as_bytes())?;
            emit(home, VaultEvent::Reveal { name: "*".into() });
            println!(
                "exported {} secrets to {} (0600). It holds them in clear: move it somewhere safe or delete it.",
                vault.entries().count(),
                out.display()
            );
        }
        VaultCommand::Unseal => {
            let paths = SealPaths::for_home(home.root()).map_err(Failure::runtime)?;
            if paths.status().is_some() && path.exists() {
                let vault = open(home, &path)?;
                if !vault.password_known() {
                    return Err(Failure::usage(anyhow!(
                        "this vault has no master password anyone knows (moat serve created it sealed); \
                         set one with `moat vault passwd` first, or unsealing would lock you out for good"
                    )));
                }
            }
            if paths.remove().map_err(Failure::runtime)? {
                emit(home, VaultEvent::Unseal);
                println!("unsealed: the vault needs its password again");
            } else {
                println!("the vault was not sealed");
            }
        }
    }
    Ok(())
}

/// Hands a vault event to the audit trail: a structured `tracing` event with target
/// `moat::audit` that the audit log will record.
/// Entry names moat keeps for itself (the audit log's key and checkpoint).
const RESERVED: &str = "moat.";

/// Records a vault event in the audit log (and, with -v, the log).
pub fn emit(home: &Home, event: VaultEvent) {
    tracing::info!(
        target: "moat::audit",
        action = event.action(),
        target_name = event.target().as_deref().unwrap_or(""),
        actor = "cli",
        "vault event"
    );
    let outcome = match event {
        VaultEvent::UnlockFailed => "failed",
        _ => "ok",
    };
    let mut record = moat_audit::Record::new(
        crate::audit_cmd::cli_actor(),
        event.action(),
        event.target().unwrap_or_default(),
        outcome,
    );
    if let VaultEvent::Seal { pin } = event {
        record = record.detail("pin", pin);
    }
    crate::audit_cmd::record_now(home, record);
}

/// Writes `bytes` to `path` (0600) only if nothing is there: written whole to a temporary
/// file, then hard-linked into place, which fails rather than replace a file.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    moat_core::atomic::write_atomic(&tmp, bytes).map_err(Failure::runtime)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Failure::usage(anyhow!(
            "{} exists; moat exports only to a new file",
            path.display()
        )),
        _ => Failure::runtime(anyhow!("cannot create {}: {e}", path.display())),
    })
}

/// Creates a vault for a fresh home and seals it, so `moat serve` can start unattended.
/// Its random master password is never shown: `moat vault passwd` (unlocking through the
/// seal) sets one. On any failure nothing is left behind.
pub fn create_sealed(home: &Home) -> Result<Option<Outside>, Failure> {
    let path = home.vault_file();
    let paths = SealPaths::for_home(home.root()).map_err(Failure::runtime)?;
    let throwaway = Zeroizing::new(moat_vault::format::random::<32>().map_err(Failure::runtime)?);
    match Vault::create(&path, throwaway.as_ref(), KdfParams::default()) {
        // Someone else (`moat vault init`) made one meanwhile: theirs stands untouched.
        Err(VaultError::Exists(_)) => return Ok(None),
        Err(e) => return Err(Failure::runtime(e)),
        Ok(()) => {}
    }
    let sealed = Vault::update(&path, throwaway.as_ref(), |v| {
        v.forget_password();
        Ok(())
    })
    .and_then(|()| Vault::open(&path, throwaway.as_ref()))
    .map_err(Failure::runtime)
    .and_then(|vault| {
        let store = SealStore::from_env().map_err(|e| Failure::usage(e.into()))?;
        paths.seal(&vault, None, store).map_err(Failure::runtime)
    });
    match sealed {
        Ok(sealed) => Ok(Some(sealed.outside)),
        Err(e) => {
            // This call made the vault and nobody can open it without the seal: take it back.
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

fn status(path: &Path) -> Result<(), Failure> {
    match std::fs::read(path) {
        Err(_) => println!(
            "no vault at {}; create one with `moat vault init`",
            path.display()
        ),
        Ok(bytes) => match moat_vault::format::parse_header(&bytes) {
            Ok(h) => println!(
                "vault {} ({} bytes), format v{}, Argon2id m={}KiB t={} p={}",
                path.display(),
                bytes.len(),
                moat_vault::format::VERSION,
                h.kdf.m_kib,
                h.kdf.t,
                h.kdf.p
            ),
            Err(e) => return Err(vault_failure(e)),
        },
    }
    Ok(())
}

/// Unlocks the vault of `home` for reading (for `moat serve` resolving `secret:NAME`).
pub fn unlock(home: &Home) -> Result<Vault, Failure> {
    let path = home.vault_file();
    if !path.exists() {
        return Err(vault_failure(VaultError::Missing(path)));
    }
    open(home, &path)
}

/// What unlocks the vault this time: the seal's data key, or the password.
enum Credential {
    Sealed(Zeroizing<[u8; 32]>),
    Password(Zeroizing<Vec<u8>>),
}

impl Credential {
    fn unlock(&self) -> Unlock<'_> {
        match self {
            Credential::Sealed(key) => Unlock::DataKey(key),
            Credential::Password(pw) => Unlock::Password(pw),
        }
    }
}

/// The seal when this home has one that opens here (asking for its PIN if it needs one
/// and one can be had), else the password.
fn credential(home: &Home, prompt: &str) -> Result<Credential, Failure> {
    if let Ok(paths) = SealPaths::for_home(home.root())
        && let Some(needs_pin) = paths.status()
    {
        let pin = if needs_pin { pin()? } else { None };
        if !needs_pin || pin.is_some() {
            match with_progress("unsealing", || {
                paths.unseal(pin.as_deref().map(|p| p.as_slice()))
            }) {
                Ok(key) => return Ok(Credential::Sealed(key)),
                Err(e) => eprintln!("moat: {e}; asking for the password instead"),
            }
        }
    }
    Ok(Credential::Password(password(prompt)?))
}

/// Opens the vault for reading, applying the guessing delay on a wrong password.
fn open(home: &Home, path: &Path) -> Result<Vault, Failure> {
    let mut credential = credential(home, "vault password")?;
    let mut vault = with_progress("unlocking", || Vault::open(path, credential.unlock()));
    if matches!(credential, Credential::Sealed(_)) && matches!(vault, Err(VaultError::Corrupt(_))) {
        eprintln!(
            "moat: the seal does not belong to this vault (remove it with `moat vault unseal`); asking for the password instead"
        );
        credential = Credential::Password(password("vault password")?);
        vault = with_progress("unlocking", || Vault::open(path, credential.unlock()));
    }
    let vault = guard_attempts(home, vault)?;
    for e in vault.entries() {
        if let Ok(text) = std::str::from_utf8(e.value()) {
            moat_core::redact::global().add_known_secret(text);
        }
    }
    Ok(vault)
}

fn transact(
    home: &Home,
    path: &Path,
    credential: &Credential,
    change: impl FnOnce(&mut Vault) -> Result<(), VaultError>,
) -> Result<(), Failure> {
    let result = with_progress("unlocking", || {
        Vault::update(path, credential.unlock(), change)
    });
    guard_attempts(home, result)
}

/// Counts consecutive wrong passwords in `MOAT_HOME/vault.attempts` and waits longer after
/// each (0.5 s doubling to 30 s) before saying so, so guessing through the CLI is slow.
fn guard_attempts<T>(home: &Home, result: Result<T, VaultError>) -> Result<T, Failure> {
    let counter = home.root().join("vault.attempts");
    match result {
        Err(VaultError::WrongPassword) => {
            emit(home, VaultEvent::UnlockFailed);
            let failures = std::fs::read_to_string(&counter)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .unwrap_or(0)
                + 1;
            let _ = moat_core::atomic::write_atomic(&counter, failures.to_string().as_bytes());
            let delay = Duration::from_millis(
                500u64.saturating_mul(1 << failures.min(6).saturating_sub(1)),
            )
            .min(Duration::from_secs(30));
            std::thread::sleep(delay);
            Err(Failure::runtime(anyhow!(
                "wrong vault password (attempt {failures}); nothing was changed"
            )))
        }
        Err(e) => Err(vault_failure(e)),
        Ok(v) => {
            let _ = std::fs::remove_file(&counter);
            Ok(v)
        }
    }
}

fn vault_failure(e: VaultError) -> Failure {
    match e {
        VaultError::BadName(_)
        | VaultError::KeyAsName
        | VaultError::Exists(_)
        | VaultError::EntryExists(_)
        | VaultError::NoEntry(_) => Failure::usage(e.into()),
        _ => Failure::runtime(e),
    }
}

/// Runs `work`, showing a spinner on a terminal if it takes longer than 300 ms.
fn with_progress<T>(what: &'static str, work: impl FnOnce() -> T) -> T {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let spinner = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(format!("{what} (Argon2id)"));
        bar.enable_steady_tick(Duration::from_millis(100));
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        bar.finish_and_clear();
    });
    let out = work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = spinner.join();
    out
}

/// The vault password, from the first source that has one.
fn password(prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(file) = std::env::var_os(PASSWORD_FILE_ENV) {
        return password_from_file(PASSWORD_FILE_ENV, Path::new(&file));
    }
    if std::io::stdin().is_terminal() {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!("{prompt}: "))
                .context("cannot read the password")
                .map_err(Failure::runtime)?,
        );
        return Ok(Zeroizing::new(typed.as_bytes().to_vec()));
    }
    if let Ok(value) = std::env::var(PASSWORD_ENV) {
        if std::env::var(PASSWORD_ENV_OPT_IN).as_deref() == Ok("1") {
            eprintln!(
                "moat: warning: reading the vault password from {PASSWORD_ENV}; environment variables leak \
                 through process listings, crash dumps and child processes. Prefer {PASSWORD_FILE_ENV}."
            );
            return Ok(Zeroizing::new(value.into_bytes()));
        }
        return Err(Failure::usage(anyhow!(
            "{PASSWORD_ENV} is set but ignored: environment variables leak. Use {PASSWORD_FILE_ENV}=PATH, \
             or set {PASSWORD_ENV_OPT_IN}=1 to accept the risk"
        )));
    }
    Err(Failure::usage(anyhow!(
        "no terminal to ask for the vault password; point {PASSWORD_FILE_ENV} at a file (0600) holding it"
    )))
}

/// The seal's PIN, if one can be had: from MOAT_VAULT_PIN_FILE or a prompt.
fn pin() -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    if let Some(file) = std::env::var_os(PIN_FILE_ENV) {
        return password_from_file(PIN_FILE_ENV, Path::new(&file)).map(Some);
    }
    if std::io::stdin().is_terminal() {
        let typed =
            Zeroizing::new(rpassword::prompt_password("seal PIN: ").map_err(Failure::runtime)?);
        return Ok(Some(Zeroizing::new(typed.as_bytes().to_vec())));
    }
    Ok(None)
}

/// A new PIN: from MOAT_VAULT_PIN_FILE, or typed twice.
fn new_pin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    let pin = if let Some(file) = std::env::var_os(PIN_FILE_ENV) {
        password_from_file(PIN_FILE_ENV, Path::new(&file))?
    } else if std::io::stdin().is_terminal() {
        let first =
            Zeroizing::new(rpassword::prompt_password("new seal PIN: ").map_err(Failure::runtime)?);
        let second =
            Zeroizing::new(rpassword::prompt_password("again: ").map_err(Failure::runtime)?);
        if *first != *second {
            return Err(Failure::usage(anyhow!(
                "the two PINs differ; nothing was sealed"
            )));
        }
        Zeroizing::new(first.as_bytes().to_vec())
    } else {
        return Err(Failure::usage(anyhow!(
            "no terminal to type a PIN; point {PIN_FILE_ENV} at a file holding it"
        )));
    };
    if pin.len() < 4 {
        return Err(Failure::usage(anyhow!(
            "the PIN must have at least 4 characters"
        )));
    }
    Ok(pin)
}

/// The first line of the password file named by the variable `var`.
fn password_from_file(var: &str, file: &Path) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {var} ({})", file.display()))
            .map_err(Failure::usage)?,
    );
    let line = text.lines().next().unwrap_or_default();
    Ok(Zeroizing::new(line.as_bytes().to_vec()))
}

/// The new password for `passwd`: typed twice on a terminal, else from its own file.
fn replacement_password() -> Result<Zeroizing<Vec<u8>>, Failure> {
    match std::env::var_os(NEW_PASSWORD_FILE_ENV) {
        Some(file) => check_new(password_from_file(NEW_PASSWORD_FILE_ENV, Path::new(&file))?),
        None if std::io::stdin().is_terminal() => new_password(),
        None => Err(Failure::usage(anyhow!(
            "no terminal to type the new password; point {NEW_PASSWORD_FILE_ENV} at a file holding it"
        ))),
    }
}

/// A new password, typed twice on a terminal.
fn new_password() -> Result<Zeroizing<Vec<u8>>, Failure> {
    if std::env::var_os(PASSWORD_FILE_ENV).is_some() || !std::io::stdin().is_terminal() {
        let pw = password("new vault password")?;
        return check_new(pw);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("new vault password: ").map_err(Failure::runtime)?,
    );
    let second = Zeroizing::new(rpassword::prompt_password("again: ").map_err(Failure::runtime)?);
    if *first != *second {
        return Err(Failure::usage(anyhow!(
            "the two passwords differ; nothing was changed"
        )));
    }
    check_new(Zeroizing::new(first.as_bytes().to_vec()))
}

fn check_new(pw: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if pw.len() < 8 {
        return Err(Failure::usage(anyhow!(
            "the vault password must have at least 8 characters"
        )));
    }
    Ok(pw)
}

/// The value to store: typed without echo, or all of stdin with `--stdin`.
fn read_value(from_stdin: bool) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut value = Zeroizing::new(Vec::new());
    if from_stdin {
        // One byte past the most a vault holds is enough to refuse: a value piped from
        // the wrong file (or /dev/zero) is not read whole.
        std::io::stdin()
            .take(moat_vault::MAX_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut value)
            .map_err(Failure::runtime)?;
        if value.ends_with(b"\n") {
            value.pop();
            if value.ends_with(b"\r") {
                value.pop();
            }
        }
    } else if std::io::stdin().is_terminal() {
        let typed =
            Zeroizing::new(rpassword::prompt_password("secret value: ").map_err(Failure::runtime)?);
        value.extend_from_slice(typed.as_bytes());
    } else {
        return Err(Failure::usage(anyhow!(
            "no terminal to type the value: pipe it in with --stdin"
        )));
    }
    if value.is_empty() {
        return Err(Failure::usage(anyhow!(
            "the secret value is empty; nothing was stored"
        )));
    }
    Ok(value)
}
