//! The OS keyring (Secret Service, through the `keyring` project's crates) as a place for a
//! seal's outside secret.
//!
//! Every call runs on its own thread under a deadline: a Secret Service that is locked may
//! wait on a prompt nobody answers (a headless login, a service started at boot), and moat
//! must then say so rather than hang.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use keyring_core::{CredentialStore, Entry, Error};
use zeroize::Zeroizing;

/// The keyring service name moat's seal entries are filed under.
const SERVICE: &str = "moat";

/// How long one keyring call may take before moat gives up on it.
const DEADLINE: Duration = Duration::from_secs(5);

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No Secret Service answered (no session bus, or nothing serving it).
    #[error("no OS keyring is reachable ({0})")]
    Unavailable(String),
    /// The keyring has no entry under the name.
    #[error("the OS keyring has no entry {0}")]
    Missing(String),
    /// The keyring did not answer in time, typically locked behind a prompt.
    #[error("the OS keyring did not answer within {}s (is it locked?)", DEADLINE.as_secs())]
    Timeout,
    /// The keyring answered with an error.
    #[error("the OS keyring refused: {0}")]
    Failed(String),
}

/// Stores `secret` under `name`, replacing what was there.
pub(crate) fn put(name: &str, secret: &[u8; 32]) -> Result<(), KeyringError> {
    let name_owned = name.to_owned();
    let value = Zeroizing::new(hex::encode(secret));
    // Hex, not raw bytes: some Secret Service implementations (KDE Wallet) hold UTF-8 only.
    with_deadline(move || {
        entry(&name_owned)?
            .set_password(&value)
            .map_err(|e| describe(e, &name_owned))
    })
}

/// Reads the secret stored under `name`.
pub(crate) fn get(name: &str) -> Result<Zeroizing<[u8; 32]>, KeyringError> {
    let name_owned = name.to_owned();
    let text = with_deadline(move || {
        entry(&name_owned)?
            .get_password()
            .map(Zeroizing::new)
            .map_err(|e| describe(e, &name_owned))
    })?;
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.as_bytes(), out.as_mut_slice())
        .map_err(|_| KeyringError::Failed(format!("the entry {name} is not a moat seal secret")))?;
    Ok(out)
}

/// Deletes the entry `name`; an entry already gone is not an error.
pub(crate) fn delete(name: &str) -> Result<(), KeyringError> {
    let name_owned = name.to_owned();
    match with_deadline(move || {
        entry(&name_owned)?
            .delete_credential()
            .map_err(|e| describe(e, &name_owned))
    }) {
        Err(KeyringError::Missing(_)) => Ok(()),
        other => other,
    }
}

fn store() -> Result<Arc<CredentialStore>, KeyringError> {
    let store = zbus_secret_service_keyring_store::Store::new()
        .map_err(|e| KeyringError::Unavailable(short(&e)))?;
    Ok(store)
}

fn entry(name: &str) -> Result<Entry, KeyringError> {
    store()?
        .build(SERVICE, name, None)
        .map_err(|e| describe(e, name))
}

fn describe(e: Error, name: &str) -> KeyringError {
    match e {
        Error::NoEntry => KeyringError::Missing(name.to_owned()),
        Error::NoStorageAccess(_) => KeyringError::Unavailable(short(&e)),
        other => KeyringError::Failed(short(&other)),
    }
}

/// The error's text, cut short: D-Bus errors can run to many lines.
fn short(e: &Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// Runs `work` on its own thread and waits at most [`DEADLINE`] for it. A call that overruns
/// is left to finish (or not) on its own; its result is dropped.
fn with_deadline<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("moat-keyring".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| KeyringError::Failed(e.to_string()))?;
    match rx.recv_timeout(DEADLINE) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(KeyringError::Timeout),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(KeyringError::Failed("the keyring call panicked".into()))
        }
    }
}
