//! Sealing: unlock the vault without a password, on this machine and at this path only.
//!
//! `MOAT_HOME/vault.seal` holds the vault's data key wrapped (AES-256-GCM) by a seal key
//! that needs three things, none of them in the sealed file:
//!
//! 1. a random 256-bit secret kept **outside** `MOAT_HOME`: in the OS keyring (the Secret
//!    Service, e.g. GNOME Keyring or KWallet) where one answers, otherwise in a user-only
//!    file under the seal directory (`MOAT_SEAL_DIR`, else `$XDG_DATA_HOME/moat/seal`, else
//!    `~/.local/share/moat/seal`); either way named after a hash of the home's path and the
//!    seal's id. [`SealStore`] picks which (`MOAT_SEAL_STORE`);
//! 2. this machine's id (`/etc/machine-id`, or `/var/lib/dbus/machine-id`);
//! 3. the home's canonical path.
//!
//! With a PIN, the seal key is Argon2id(PIN) salted with all three; without, it is SHA-256
//! over them and the seal's salt. A copy of `MOAT_HOME` alone, elsewhere, does not unseal:
//! the outside secret is not in it.
//!
//! What this does **not** protect against: anyone who can read your files as you (or as
//! root) on this machine can unseal, exactly as moat does; and anyone holding a copy of
//! *both* MOAT_HOME and the outside secret (a backup of your whole home directory) can too,
//! since the machine id is not secret and the path is guessable. The machine id is then
//! only a speed bump, and absent where the system has none ([`machine_bound`] says). A PIN
//! adds a secret they must also know; a short one can be guessed offline. The password
//! still opens the vault wherever the file goes.
//!
//! The keyring keeps the outside secret out of file backups and encrypted at rest under the
//! login password, but any process running as you while the keyring is unlocked can read
//! it, and while it is locked (before login, on a headless boot) the seal does not open:
//! choose the file store (`--store file`) for a service that starts before anyone logs in.
//!
//! ```text
//! vault.seal, version 1
//!  0  8  magic "MOATSEAL"
//!  8  1  version = 1
//!  9  1  flags: bit 0 = PIN required, bit 1 = outside secret in the OS keyring
//! 10  8  seal id (names the outside secret's file or keyring entry)
//! 18 32  salt
//! 50 12  nonce
//! 62 48  wrapped data key = AES-256-GCM(seal key, nonce, data key, aad = bytes 0..50)
//! ```
//!
//! Resealing writes a new outside secret, then the new seal, then deletes the old secret,
//! all under the vault's lock: a crash at any point leaves a seal whose outside secret
//! exists.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::format::{KdfParams, random};
use crate::keyring::{self, KeyringError};
use crate::{Vault, VaultError};

const MAGIC: &[u8; 8] = b"MOATSEAL";
const VERSION: u8 = 1;
const FLAG_PIN: u8 = 1;
const FLAG_KEYRING: u8 = 2;
const LEN: usize = 110;
const AAD_END: usize = 50;
const DOMAIN: &[u8] = b"moat-seal-v1\0";

/// Where the sealing material lives for one home.
#[derive(Debug, Clone)]
pub struct SealPaths {
    /// `MOAT_HOME/vault.seal`.
    pub sealed: PathBuf,
    /// The directory of outside secrets.
    dir: PathBuf,
    home: PathBuf,
}

/// Where a new seal keeps its outside secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SealStore {
    /// The OS keyring when one answers, else a file.
    #[default]
    Auto,
    /// The OS keyring, or fail.
    Keyring,
    /// A user-only file in the seal directory.
    File,
}

impl SealStore {
    /// The choice in `MOAT_SEAL_STORE` (`auto`, `keyring` or `file`), `auto` when unset.
    pub fn from_env() -> Result<Self, SealError> {
        match std::env::var("MOAT_SEAL_STORE") {
            Err(std::env::VarError::NotPresent) => Ok(Self::Auto),
            Ok(v) if v.is_empty() => Ok(Self::Auto),
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotUnicode(_)) => Err(SealError::BadStore("?".into())),
        }
    }
}

impl std::str::FromStr for SealStore {
    type Err = SealError;
    fn from_str(s: &str) -> Result<Self, SealError> {
        match s {
            "auto" => Ok(Self::Auto),
            "keyring" => Ok(Self::Keyring),
            "file" => Ok(Self::File),
            other => Err(SealError::BadStore(other.chars().take(40).collect())),
        }
    }
}

/// Where a seal's outside secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// An entry in the OS keyring, under service `moat`.
    Keyring(String),
    /// A user-only file.
    File(PathBuf),
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keyring(name) => write!(f, "the OS keyring entry moat/{name}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What [`SealPaths::seal`] did.
#[derive(Debug)]
pub struct Sealed {
    /// Where the outside secret went.
    pub outside: Outside,
    /// Why the keyring was passed over, when `auto` fell back to a file.
    pub keyring_skipped: Option<KeyringError>,
    /// The previous seal's keyring entry, when it could not be deleted, and why.
    pub leftover: Option<(Outside, KeyringError)>,
}

/// Errors of sealing and unsealing.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The vault is not sealed.
    #[error("the vault is not sealed (no {0})")]
    NotSealed(PathBuf),
    /// The outside secret is missing: another machine, another path, or it was removed.
    #[error(
        "the seal cannot be opened here: {0} is missing (the vault was sealed on another machine or at another path); unlock with the password and run `moat vault seal` again"
    )]
    Elsewhere(Outside),
    /// The OS keyring could not be used.
    #[error("{0}; unlock with the password, or seal with `moat vault seal --store file`")]
    Keyring(#[from] KeyringError),
    /// The seal is gone but its keyring entry could not be deleted.
    #[error(
        "the seal is removed, but {0} could not be deleted ({1}); delete it with your keyring's own tool"
    )]
    KeyringLeftover(Outside, KeyringError),
    /// `MOAT_SEAL_STORE` or `--store` names no store.
    #[error("unknown seal store {0:?}: use auto, keyring or file")]
    BadStore(String),
    /// The key did not unwrap: another machine id or path, a wrong PIN, or tampering.
    #[error(
        "the seal does not open: wrong PIN, another machine, or a damaged seal; unlock with the password"
    )]
    Mismatch,
    /// The seal needs a PIN and none was given.
    #[error("the seal needs its PIN")]
    NeedsPin,
    /// The seal file is damaged.
    #[error("{0} is damaged; remove it with `moat vault unseal` and seal again")]
    Damaged(PathBuf),
    /// The seal directory is inside MOAT_HOME, which would defeat its purpose.
    #[error(
        "the seal directory {0} is inside MOAT_HOME; set MOAT_SEAL_DIR to a directory outside it"
    )]
    InsideHome(PathBuf),
    /// No place for the outside secret could be found.
    #[error("no seal directory: set MOAT_SEAL_DIR (or HOME)")]
    NoSealDir,
    /// Reading or writing failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SealError + '_ {
    move |source| {
        SealError::Vault(VaultError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl SealPaths {
    /// The paths for `home`, with the seal directory from the environment.
    pub fn for_home(home: &Path) -> Result<Self, SealError> {
        let dir = match std::env::var_os("MOAT_SEAL_DIR").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                Some(d) => PathBuf::from(d).join("moat/seal"),
                None => PathBuf::from(std::env::var_os("HOME").ok_or(SealError::NoSealDir)?)
                    .join(".local/share/moat/seal"),
            },
        };
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        let dir = std::fs::canonicalize(&dir)
            .or_else(|_| std::path::absolute(&dir))
            .unwrap_or(dir);
        if dir.starts_with(&home) {
            return Err(SealError::InsideHome(dir));
        }
        Ok(Self {
            sealed: home.join("vault.seal"),
            dir,
            home,
        })
    }

    /// The name shared by a seal's outside secret wherever it lives: this home and the id.
    fn secret_name(&self, id: &[u8]) -> String {
        let home = hex::encode(&Sha256::digest(self.home.as_os_str().as_encoded_bytes())[..16]);
        format!("{home}-{}", hex::encode(id))
    }

    fn keyring_name(&self, id: &[u8]) -> String {
        format!("seal-{}", self.secret_name(id))
    }

    /// Where the outside secret of the seal with `id` lives.
    fn outside_for(&self, id: &[u8], in_keyring: bool) -> Outside {
        if in_keyring {
            Outside::Keyring(self.keyring_name(id))
        } else {
            Outside::File(self.dir.join(format!("{}.key", self.secret_name(id))))
        }
    }

    /// The outside secret of the current seal, if there is one.
    pub fn outside(&self) -> Option<Outside> {
        let bytes = std::fs::read(&self.sealed).ok()?;
        (bytes.len() == LEN && &bytes[..8] == MAGIC)
            .then(|| self.outside_for(&bytes[10..18], bytes[9] & FLAG_KEYRING != 0))
    }

    /// Whether a seal exists, and whether it needs a PIN.
    pub fn status(&self) -> Option<bool> {
        let bytes = std::fs::read(&self.sealed).ok()?;
        (bytes.len() == LEN && &bytes[..8] == MAGIC).then(|| bytes[9] & FLAG_PIN != 0)
    }

    fn seal_key(
        &self,
        outside: &[u8; 32],
        salt: &[u8; 32],
        pin: Option<&[u8]>,
    ) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(outside);
        h.update(machine_id());
        h.update([0]);
        h.update(self.home.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(salt);
        let mixed: [u8; 32] = h.finalize().into();
        match pin {
            None => Ok(Zeroizing::new(mixed)),
            Some(pin) => Ok(KdfParams::default().derive(pin, &mixed)?),
        }
    }

    /// Seals `vault`'s data key here, replacing any earlier seal (and its outside secret),
    /// with the outside secret in `store`.
    pub fn seal(
        &self,
        vault: &Vault,
        pin: Option<&[u8]>,
        store: SealStore,
    ) -> Result<Sealed, SealError> {
        let _lock = crate::lock(&self.home.join("vault.moat"))?;
        let previous = self.outside();
        let id = random::<8>()?;
        let outside = Zeroizing::new(random::<32>()?);
        let mut keyring_skipped = None;
        let in_keyring = match store {
            SealStore::File => false,
            SealStore::Keyring | SealStore::Auto => {
                match keyring::put(&self.keyring_name(&id), &outside) {
                    Ok(()) => true,
                    Err(e) if store == SealStore::Auto => {
                        keyring_skipped = Some(e);
                        false
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let outside_at = self.outside_for(&id, in_keyring);
        if let Outside::File(path) = &outside_at {
            self.prepare_dir()?;
            write(path, outside.as_ref())?;
        }
        if let Err(e) = self.write_seal(vault, pin, &id, &outside, in_keyring) {
            // The new seal was not written: its outside secret would only be litter.
            let _ = discard(&outside_at);
            return Err(e);
        }
        let mut leftover = None;
        if let Some(old) = previous.filter(|p| *p != outside_at)
            && let Err(e) = discard(&old)
        {
            leftover = Some((old, e));
        }
        Ok(Sealed {
            outside: outside_at,
            keyring_skipped,
            leftover,
        })
    }

    fn prepare_dir(&self) -> Result<(), SealError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        // An existing directory keeps whatever mode it had: make it private.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.dir))?;
        let real = std::fs::canonicalize(&self.dir).map_err(io(&self.dir))?;
        if real.starts_with(&self.home) {
            return Err(SealError::InsideHome(real));
        }
        Ok(())
    }

    fn write_seal(
        &self,
        vault: &Vault,
        pin: Option<&[u8]>,
        id: &[u8; 8],
        outside: &[u8; 32],
        in_keyring: bool,
    ) -> Result<(), SealError> {
        let salt = random::<32>()?;
        let key = self.seal_key(outside, &salt, pin)?;
        let nonce_bytes = random::<12>()?;
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let mut flags = 0;
        if pin.is_some() {
            flags |= FLAG_PIN;
        }
        if in_keyring {
            flags |= FLAG_KEYRING;
        }
        out.push(flags);
        out.extend_from_slice(id);
        out.extend_from_slice(&salt);
        let nonce: Nonce<_> = nonce_bytes.into();
        let wrapped = cipher(&key)
            .encrypt(
                &nonce,
                Payload {
                    msg: vault.data_key(),
                    aad: &out[..AAD_END],
                },
            )
            .map_err(|_| SealError::Mismatch)?;
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&wrapped);
        write(&self.sealed, &out)
    }

    /// Recovers the data key; `pin` is needed when the seal was made with one.
    pub fn unseal(&self, pin: Option<&[u8]>) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let bytes = match std::fs::read(&self.sealed) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SealError::NotSealed(self.sealed.clone()));
            }
            Err(e) => return Err(io(&self.sealed)(e)),
        };
        if bytes.len() != LEN || &bytes[..8] != MAGIC || bytes[8] != VERSION {
            return Err(SealError::Damaged(self.sealed.clone()));
        }
        let needs_pin = bytes[9] & FLAG_PIN != 0;
        if needs_pin && pin.is_none() {
            return Err(SealError::NeedsPin);
        }
        let outside =
            self.read_outside(self.outside_for(&bytes[10..18], bytes[9] & FLAG_KEYRING != 0))?;
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&bytes[18..50]);
        let key = self.seal_key(&outside, &salt, if needs_pin { pin } else { None })?;
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes.copy_from_slice(&bytes[50..62]);
        let nonce: Nonce<_> = nonce_bytes.into();
        let plain = Zeroizing::new(
            cipher(&key)
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &bytes[62..],
                        aad: &bytes[..AAD_END],
                    },
                )
                .map_err(|_| SealError::Mismatch)?,
        );
        let mut data_key = Zeroizing::new([0u8; 32]);
        data_key.copy_from_slice(&plain);
        Ok(data_key)
    }

    fn read_outside(&self, at: Outside) -> Result<Zeroizing<[u8; 32]>, SealError> {
        match &at {
            Outside::Keyring(name) => match keyring::get(name) {
                Ok(secret) => Ok(secret),
                Err(KeyringError::Missing(_)) => Err(SealError::Elsewhere(at)),
                Err(e) => Err(e.into()),
            },
            Outside::File(path) => {
                let bytes = match std::fs::read(path) {
                    Ok(b) => Zeroizing::new(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SealError::Elsewhere(at));
                    }
                    Err(e) => return Err(io(path)(e)),
                };
                let secret: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| SealError::Mismatch)?;
                Ok(Zeroizing::new(secret))
            }
        }
    }

    /// Removes the seal and its outside secret.
    pub fn remove(&self) -> Result<bool, SealError> {
        let _lock = crate::lock(&self.home.join("vault.moat"))?;
        let outside = self.outside();
        let existed = match std::fs::remove_file(&self.sealed) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&self.sealed)(e)),
        };
        // The seal is gone first: an outside secret left behind opens nothing.
        match outside {
            Some(Outside::File(path)) => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            },
            Some(Outside::Keyring(name)) => {
                if let Err(e) = keyring::delete(&name) {
                    return Err(SealError::KeyringLeftover(Outside::Keyring(name), e));
                }
            }
            None => {}
        }
        Ok(existed)
    }
}

/// Deletes an outside secret that no seal uses any more. A file that will not go is
/// harmless litter without its seal; a keyring entry is reported, since only the user's
/// keyring tool can reach it later.
fn discard(outside: &Outside) -> Result<(), KeyringError> {
    match outside {
        Outside::File(path) => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Outside::Keyring(name) => keyring::delete(name),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    moat_core::atomic::write_atomic(path, bytes).map_err(|e| {
        SealError::Vault(VaultError::Io {
            path: e.path,
            source: e.source,
        })
    })
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    let mut key: Key<Aes256Gcm> = (*key).into();
    let cipher = Aes256Gcm::new(&key);
    zeroize::Zeroize::zeroize(key.as_mut_slice());
    cipher
}

/// Whether this system has a machine id for the seal to bind to.
pub fn machine_bound() -> bool {
    !machine_id().is_empty()
}

/// This machine's id, or nothing where the system has none.
fn machine_id() -> Vec<u8> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .map(|id| id.trim_ascii().to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Unlock;

    const FAST: KdfParams = KdfParams {
        m_kib: 8 * 1024,
        t: 1,
        p: 1,
    };

    fn setup() -> (tempfile::TempDir, PathBuf, SealPaths) {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        std::fs::create_dir(&home).unwrap();
        Vault::create(&home.join("vault.moat"), b"password", FAST).unwrap();
        let paths = paths(&home, &root.path().join("seal"));
        (root, home, paths)
    }

    fn paths(home: &Path, seal_dir: &Path) -> SealPaths {
        let home = std::fs::canonicalize(home).unwrap();
        SealPaths {
            sealed: home.join("vault.seal"),
            dir: seal_dir.to_path_buf(),
            home,
        }
    }

    #[test]
    fn seal_and_unseal_without_and_with_a_pin() {
        let (_r, home, p) = setup();
        let vault = Vault::open(&home.join("vault.moat"), b"password").unwrap();
        p.seal(&vault, None, SealStore::File).unwrap();
        assert_eq!(p.status(), Some(false));
        let key = p.unseal(None).unwrap();
        assert!(Vault::open(&home.join("vault.moat"), Unlock::DataKey(&key)).is_ok());

        let Some(Outside::File(first_outside)) = p.outside() else {
            panic!("a file seal")
        };
        p.seal(&vault, Some(b"1234"), SealStore::File).unwrap();
        assert!(
            !first_outside.exists(),
            "resealing deletes the old outside secret"
        );
        assert_eq!(p.status(), Some(true));
        assert!(matches!(p.unseal(None), Err(SealError::NeedsPin)));
        assert!(matches!(p.unseal(Some(b"9999")), Err(SealError::Mismatch)));
        assert!(p.unseal(Some(b"1234")).is_ok());
        let Some(Outside::File(outside)) = p.outside() else {
            panic!("a file seal")
        };
        assert!(p.remove().unwrap());
        assert!(!outside.exists(), "the outside secret goes with the seal");
        assert!(matches!(p.unseal(None), Err(SealError::NotSealed(_))));
    }

    #[test]
    fn stores_are_named_and_unknown_names_refused() {
        assert_eq!("auto".parse::<SealStore>().unwrap(), SealStore::Auto);
        assert_eq!("keyring".parse::<SealStore>().unwrap(), SealStore::Keyring);
        assert_eq!("file".parse::<SealStore>().unwrap(), SealStore::File);
        let err = "vault".parse::<SealStore>().unwrap_err().to_string();
        assert!(err.contains("auto, keyring or file"), "{err}");
    }

    #[test]
    fn a_copied_home_does_not_unseal() {
        let (root, home, p) = setup();
        let vault = Vault::open(&home.join("vault.moat"), b"password").unwrap();
        p.seal(&vault, None, SealStore::File).unwrap();
        // The whole home, copied to another path on this machine.
        let copy = root.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for f in ["vault.moat", "vault.seal"] {
            std::fs::copy(home.join(f), copy.join(f)).unwrap();
        }
        let there = paths(&copy, &root.path().join("seal"));
        assert!(matches!(there.unseal(None), Err(SealError::Elsewhere(_))));
        // With the outside secret copied too, under the copy's name, the path binding refuses.
        let (Some(Outside::File(from)), Some(Outside::File(to))) = (p.outside(), there.outside())
        else {
            panic!("file seals")
        };
        std::fs::copy(from, to).unwrap();
        assert!(matches!(there.unseal(None), Err(SealError::Mismatch)));
        // The password still opens the copy.
        assert!(Vault::open(&copy.join("vault.moat"), b"password").is_ok());
    }

    #[test]
    fn the_sealed_file_holds_nothing_that_unseals() {
        let (_r, home, p) = setup();
        let vault = Vault::open(&home.join("vault.moat"), b"password").unwrap();
        p.seal(&vault, None, SealStore::File).unwrap();
        let Some(Outside::File(outside)) = p.outside() else {
            panic!("a file seal")
        };
        std::fs::remove_file(outside).unwrap();
        assert!(matches!(p.unseal(None), Err(SealError::Elsewhere(_))));
        let mut bytes = std::fs::read(&p.sealed).unwrap();
        bytes[70] ^= 1;
        std::fs::write(&p.sealed, &bytes).unwrap();
        assert!(p.unseal(None).is_err());
    }
}
