//! Opening the vault for a command: the seal or the password, the delay after a wrong
//! password, the redactor told every value, and the sealed vault a fresh home gets.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use moat_core::home::Home;
use moat_vault::seal::{Outside, SealPaths, SealStore};
use moat_vault::{KdfParams, Unlock, Vault, VaultError, VaultEvent};
use zeroize::Zeroizing;

use super::progress::with_progress;
use super::prompt::{password, pin};
use crate::Failure;

/// Entry names moat keeps for itself (the audit log's key and checkpoint).
pub(crate) const RESERVED: &str = "moat.";

/// Records a vault event in the audit log (and, with -v, the log).
pub(crate) fn emit(home: &Home, event: VaultEvent) {
    let outcome = match event {
        VaultEvent::UnlockFailed => "failed",
        _ => "ok",
    };
    super::audit::record_now(home, record(&event, outcome));
}

/// Makes a change to the vault with its audit record on both sides (see
/// [`super::audit::audited`]).
pub(crate) fn audited<T>(
    home: &Home,
    event: VaultEvent,
    change: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    super::audit::audited(home, |outcome| record(&event, outcome), change)
}

fn record(event: &VaultEvent, outcome: &str) -> moat_audit::Record {
    tracing::info!(
        target: "moat::audit",
        action = event.action(),
        target_name = event.target().as_deref().unwrap_or(""),
        actor = "cli",
        outcome,
        "vault event"
    );
    let mut record = moat_audit::Record::new(
        super::audit::cli_actor(),
        event.action(),
        event.target().unwrap_or_default(),
        outcome,
    );
    if let VaultEvent::Seal { pin } = event {
        record = record.detail("pin", *pin);
    }
    record
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

/// Gives a fresh home the vault `moat serve` would make: sealed to this machine, so no
/// prompt is needed, and says so. A home that has a vault keeps it untouched.
pub(crate) fn ensure(home: &Home) -> Result<(), Failure> {
    home.ensure().map_err(Failure::runtime)?;
    if home.vault_file().exists() {
        return Ok(());
    }
    if let Some(outside) = create_sealed(home)? {
        println!(
            "moat: created a vault sealed to this machine ({}, other half in {outside}); set a master password with `moat vault passwd`",
            home.vault_file().display()
        );
    }
    Ok(())
}

/// Unlocks the vault of `home`, creating the sealed one a fresh home gets first.
pub(crate) fn unlock_or_create(home: &Home) -> Result<Vault, Failure> {
    ensure(home)?;
    unlock(home)
}

/// Creates a vault for a fresh home and seals it, so `moat serve` can start unattended.
/// Its random master password is never shown: `moat vault passwd` (unlocking through the
/// seal) sets one. On any failure nothing is left behind.
fn create_sealed(home: &Home) -> Result<Option<Outside>, Failure> {
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

/// Unlocks the vault of `home` for reading (for `moat serve` resolving `secret:NAME`).
pub(crate) fn unlock(home: &Home) -> Result<Vault, Failure> {
    let path = home.vault_file();
    if !path.exists() {
        return Err(failure(VaultError::Missing(path)));
    }
    open(home, &path)
}

/// What unlocks the vault this time: the seal's data key, or the password.
pub(crate) enum Credential {
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
pub(crate) fn credential(home: &Home, prompt: &str) -> Result<Credential, Failure> {
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

pub(crate) fn transact(
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
        Err(e) => Err(failure(e)),
        Ok(v) => {
            let _ = std::fs::remove_file(&counter);
            Ok(v)
        }
    }
}

pub(crate) fn failure(e: VaultError) -> Failure {
    match e {
        VaultError::BadName(_)
        | VaultError::KeyAsName
        | VaultError::Exists(_)
        | VaultError::EntryExists(_)
        | VaultError::NoEntry(_) => Failure::usage(e.into()),
        _ => Failure::runtime(e),
    }
}
