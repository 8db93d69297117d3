//! moat-vault: the encrypted store for every credential moat holds.
//!
//! One file, `MOAT_HOME/vault.moat` (format in `FORMAT.md`): a random 256-bit data key
//! encrypts the entries with AES-256-GCM; the data key is wrapped by a key derived from the
//! master password with Argon2id. Names and metadata are inside the ciphertext, so a stolen
//! file reveals only its size and KDF parameters. Changing the password rewraps the data
//! key (so an old copy of the file plus the old password still yields it: after a leaked
//! password, make a new vault and move the secrets with `export`).
//!
//! Every change is a transaction: take the file lock, read and decrypt, change, write
//! atomically (0600), release. Values live in zeroizing buffers and never print.
//!
//! ```
//! use moat_vault::{KdfParams, Vault};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("vault.moat");
//! let weak_for_the_example = KdfParams { m_kib: 8 * 1024, t: 1, p: 1 };
//! Vault::create(&path, b"correct horse", weak_for_the_example).unwrap();
//! Vault::update(&path, b"correct horse", |v| v.add("openai", b"sk-example".to_vec(), None, None)).unwrap();
//! let vault = Vault::open(&path, b"correct horse").unwrap();
//! assert_eq!(vault.get("openai").unwrap().value(), b"sk-example");
//! ```
#![deny(missing_docs)]

pub mod events;
pub mod format;
pub mod keyring;
pub mod seal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use events::VaultEvent;
pub use format::KdfParams;

/// The largest value an entry holds. Every value unlocked is handed to the redactor,
/// whose matcher grows with what it must recognize: credentials are kilobytes at most.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The largest vault file moat reads (thousands of entries of [`MAX_VALUE_BYTES`]).
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Errors of the vault. None carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The password does not open this vault (or the header was tampered with).
    #[error("wrong password (or the vault header was tampered with)")]
    WrongPassword,
    /// The file is damaged, truncated or not a vault; it is left untouched.
    #[error(
        "the vault file is damaged or not a vault: {0}; it was not changed (restore it from a backup)"
    )]
    Corrupt(&'static str),
    /// Written by a newer moat.
    #[error("the vault was written by a newer moat (format version {0}); upgrade moat")]
    TooNew(u8),
    /// No vault file.
    #[error("no vault at {0}: create one with `moat vault init`")]
    Missing(PathBuf),
    /// A vault already exists where one was to be created.
    #[error("a vault already exists at {0}")]
    Exists(PathBuf),
    /// No entry by that name.
    #[error("no secret named {0:?} (see `moat vault list`)")]
    NoEntry(String),
    /// An entry by that name exists.
    #[error("a secret named {0:?} exists already; remove it first or choose another name")]
    EntryExists(String),
    /// A value over [`MAX_VALUE_BYTES`] (its length, or as much of it as was read).
    #[error(
        "the secret is larger than the {MAX_VALUE_BYTES} bytes a vault entry holds (keys, tokens and certificates fit: store a large file elsewhere and its key here)"
    )]
    TooLarge(usize),
    /// The name is not valid. Not echoed: a value pasted where a name belongs must not be
    /// printed back.
    #[error(
        "invalid secret name: use 1-128 letters, digits, '_', '-' and '.', starting with a letter, digit or '_'"
    )]
    BadName(String),
    /// The name has the shape of an API key: most likely the key, pasted where its name
    /// belongs. Not echoed.
    #[error(
        "that name looks like an API key, not a name; call the secret something like anthropic-key and give the key as its value when asked"
    )]
    KeyAsName,
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("the random number source failed: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One secret.
#[derive(Serialize, Deserialize)]
pub struct Entry {
    name: String,
    #[serde(with = "b64")]
    value: Zeroizing<Vec<u8>>,
    created: u64,
    updated: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("value", &"[REDACTED]")
            .field("created", &self.created)
            .field("updated", &self.updated)
            .field("description", &self.description)
            .field("scope", &self.scope)
            .finish()
    }
}

impl Entry {
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The secret value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
    /// Creation time, Unix seconds.
    pub fn created(&self) -> u64 {
        self.created
    }
    /// Last change, Unix seconds.
    pub fn updated(&self) -> u64 {
        self.updated
    }
    /// The optional description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// Which backend or tool may use it, if restricted.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

mod b64 {
    use super::*;
    pub(crate) fn serialize<S: serde::Serializer>(
        v: &Zeroizing<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(v.as_slice()));
        s.serialize_str(&text)
    }
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| serde::de::Error::custom("entry value is not base64"))
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    entries: Vec<Entry>,
    /// False for a vault made sealed-only by `moat serve` until `passwd` sets a password
    /// someone knows; unsealing such a vault would lose it.
    #[serde(default = "yes")]
    password_known: bool,
}

fn yes() -> bool {
    true
}

/// What opens a vault: the master password, or the data key itself (unsealed).
#[derive(Clone, Copy)]
pub enum Unlock<'a> {
    /// The master password.
    Password(&'a [u8]),
    /// The data key, as recovered from a seal. A wrong key fails as a damaged body.
    DataKey(&'a [u8; 32]),
}

impl<'a> From<&'a [u8]> for Unlock<'a> {
    fn from(password: &'a [u8]) -> Self {
        Unlock::Password(password)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Unlock<'a> {
    fn from(password: &'a [u8; N]) -> Self {
        Unlock::Password(password)
    }
}

impl<'a> From<&'a Zeroizing<Vec<u8>>> for Unlock<'a> {
    fn from(password: &'a Zeroizing<Vec<u8>>) -> Self {
        Unlock::Password(password)
    }
}

/// An unlocked vault in memory.
pub struct Vault {
    header: format::Header,
    data_key: Zeroizing<[u8; 32]>,
    body: Body,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("entries", &self.body.entries.len())
            .finish_non_exhaustive()
    }
}

/// Whether `name` is a valid entry name: 1-128 of `[A-Za-z0-9_.-]`. Entries made by
/// older versions are held to this only; new ones to [`check_new_name`].
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `name` may name an entry a person makes (`moat vault add`, `rename`; moat's
/// own entries are held to [`valid_name`] only): [`valid_name`], starting with a letter,
/// digit or `_` (not `.`, `..` or something that reads as an option), and not an API
/// key (a key pasted as the name would be listed and logged in the clear). A name is
/// taken for a key when it has a provider key's shape and a key's mix of characters
/// (digits with capitals, or many digits): `hf_token_for_private_models` is a name.
pub fn check_new_name(name: &str) -> Result<(), VaultError> {
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_name(name) || !first_ok {
        return Err(VaultError::BadName(name.to_string()));
    }
    let digits = name.bytes().filter(u8::is_ascii_digit).count();
    let capitals = name.bytes().any(|b| b.is_ascii_uppercase());
    let mixed = digits > 0 && capitals || digits >= 4;
    if mixed && moat_core::redact::looks_like_provider_key(name) {
        return Err(VaultError::KeyAsName);
    }
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The lock file serializing writers of `path` (the vault, and its seal).
pub(crate) fn lock(path: &Path) -> Result<File, VaultError> {
    let lock_path = path.with_extension("lock");
    moat_core::atomic::create_private_file(&lock_path).map_err(io(&lock_path))?;
    let file = File::options()
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    file.lock().map_err(io(&lock_path))?;
    Ok(file)
}

impl Vault {
    /// Creates a new, empty vault at `path` protected by `password`.
    pub fn create(path: &Path, password: &[u8], kdf: KdfParams) -> Result<(), VaultError> {
        let _lock = lock(path)?;
        if path.exists() {
            return Err(VaultError::Exists(path.to_path_buf()));
        }
        let data_key = Zeroizing::new(format::random::<32>()?);
        let header = format::Header::seal_key(kdf, password, &data_key)?;
        Vault {
            header,
            data_key,
            body: Body {
                entries: Vec::new(),
                password_known: true,
            },
        }
        .write(path)
    }

    /// Opens and decrypts the vault at `path` for reading, with a password or a data key
    /// (from a seal).
    pub fn open<'a>(path: &Path, unlock: impl Into<Unlock<'a>>) -> Result<Vault, VaultError> {
        let file = match moat_core::atomic::read_regular(path, MAX_FILE_BYTES) {
            Ok(f) => Zeroizing::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::Missing(path.to_path_buf()));
            }
            Err(e) => return Err(io(path)(e)),
        };
        let header = format::parse_header(&file)?;
        let data_key = match unlock.into() {
            Unlock::Password(password) => header.open_key(password)?,
            Unlock::DataKey(key) => Zeroizing::new(*key),
        };
        let plain = format::decrypt_body(&file, &data_key)?;
        let body: Body = serde_json::from_slice(&plain)
            .map_err(|_| VaultError::Corrupt("entries are not readable"))?;
        Ok(Vault {
            header,
            data_key,
            body,
        })
    }

    /// One change under the file lock: open, apply `change`, write atomically.
    /// Nothing is written if `change` fails.
    pub fn update<'a, T>(
        path: &Path,
        unlock: impl Into<Unlock<'a>>,
        change: impl FnOnce(&mut Vault) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let _lock = lock(path)?;
        let mut vault = Vault::open(path, unlock)?;
        let out = change(&mut vault)?;
        vault.write(path)?;
        Ok(out)
    }

    fn write(&self, path: &Path) -> Result<(), VaultError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(&self.body)
                .map_err(|_| VaultError::Corrupt("entries cannot be serialized"))?,
        );
        let bytes = format::encode(&self.header, &self.data_key, &plain)?;
        moat_core::atomic::write_atomic(path, &bytes).map_err(|e| VaultError::Io {
            path: e.path,
            source: e.source,
        })
    }

    /// The data key, for sealing.
    pub(crate) fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }

    /// A copy of the data key, for a writer that must update this vault later without
    /// asking for the password again (the audit log storing its latest checkpoint). It opens
    /// the vault as [`Unlock::DataKey`].
    pub fn data_key_copy(&self) -> Zeroizing<[u8; 32]> {
        self.data_key.clone()
    }

    /// The KDF parameters in use.
    pub fn kdf(&self) -> KdfParams {
        self.header.kdf
    }

    /// All entries, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.body.entries.iter()
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.body.entries.iter().find(|e| e.name == name)
    }

    /// Adds a new entry; an existing name is refused.
    pub fn add(
        &mut self,
        name: &str,
        value: Vec<u8>,
        description: Option<String>,
        scope: Option<String>,
    ) -> Result<(), VaultError> {
        let value = Zeroizing::new(value);
        if !valid_name(name) {
            return Err(VaultError::BadName(name.to_string()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(VaultError::TooLarge(value.len()));
        }
        if self.get(name).is_some() {
            return Err(VaultError::EntryExists(name.to_string()));
        }
        let t = now();
        self.body.entries.push(Entry {
            name: name.to_string(),
            value,
            created: t,
            updated: t,
            description,
            scope,
        });
        self.body.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Removes an entry.
    pub fn remove(&mut self, name: &str) -> Result<(), VaultError> {
        self.take(name)
            .map(drop)
            .ok_or_else(|| VaultError::NoEntry(name.to_string()))
    }

    /// Sets an entry moat keeps up to date itself (tokens, checkpoints): replaced whole
    /// if it exists (keeping its creation time), added if not.
    pub fn replace(
        &mut self,
        name: &str,
        value: Vec<u8>,
        description: Option<String>,
    ) -> Result<(), VaultError> {
        let previous = self.take(name);
        self.add(name, value, description, None)?;
        if let (Some(previous), Some(entry)) = (
            previous,
            self.body.entries.iter_mut().find(|e| e.name == name),
        ) {
            entry.created = previous.created;
        }
        Ok(())
    }

    fn take(&mut self, name: &str) -> Option<Entry> {
        let at = self.body.entries.iter().position(|e| e.name == name)?;
        Some(self.body.entries.remove(at))
    }

    /// Renames an entry.
    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), VaultError> {
        if !valid_name(new) {
            return Err(VaultError::BadName(new.to_string()));
        }
        if self.get(new).is_some() {
            return Err(VaultError::EntryExists(new.to_string()));
        }
        let entry = self
            .body
            .entries
            .iter_mut()
            .find(|e| e.name == old)
            .ok_or_else(|| VaultError::NoEntry(old.to_string()))?;
        entry.name = new.to_string();
        entry.updated = now();
        self.body.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Rewraps the data key under `new_password` (fresh salt); entries keep their key.
    pub fn change_password(
        &mut self,
        new_password: &[u8],
        kdf: KdfParams,
    ) -> Result<(), VaultError> {
        self.header = format::Header::seal_key(kdf, new_password, &self.data_key)?;
        self.body.password_known = true;
        Ok(())
    }

    /// Whether someone knows the master password (false for a sealed-only vault).
    pub fn password_known(&self) -> bool {
        self.body.password_known
    }

    /// Marks the password as known to nobody (a vault created sealed-only).
    pub fn forget_password(&mut self) {
        self.body.password_known = false;
    }
}

#[cfg(test)]
mod tests;
