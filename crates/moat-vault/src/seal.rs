//! Sealing: unlock the vault without a password, on this machine and at this path only.
//!
//! `MOAT_HOME/vault.seal` holds the vault's data key wrapped (AES-256-GCM) by a seal key
//! that needs three things, none of them in the sealed file:
//!
//! 1. a random 256-bit secret kept **outside** `MOAT_HOME`, in a user-only file under the
//!    seal directory (`MOAT_SEAL_DIR`, else `$XDG_DATA_HOME/moat/seal`, else
//!    `~/.local/share/moat/seal`), named after a hash of the home's path and the seal's id;
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
//! ```text
//! vault.seal, version 1
//!  0  8  magic "MOATSEAL"
//!  8  1  version = 1
//!  9  1  flags: bit 0 = PIN required
//! 10  8  seal id (names the outside secret's file)
//! 18 32  salt
//! 50 12  nonce
//! 62 48  wrapped data key = AES-256-GCM(seal key, nonce, data key, aad = bytes 0..50)
//! ```
//!
//! Resealing writes a new outside file, then the new seal, then deletes the old file, all
//! under the vault's lock: a crash at any point leaves a seal whose outside file exists.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::format::{KdfParams, random};
use crate::{Vault, VaultError};

const MAGIC: &[u8; 8] = b"MOATSEAL";
const VERSION: u8 = 1;
const FLAG_PIN: u8 = 1;
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
    Elsewhere(PathBuf),
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

    /// The outside secret's file for the seal with `id`.
    fn outside_for(&self, id: &[u8]) -> PathBuf {
        let home = hex::encode(&Sha256::digest(self.home.as_os_str().as_encoded_bytes())[..16]);
        self.dir.join(format!("{home}-{}.key", hex::encode(id)))
    }

    /// The outside secret of the current seal, if there is one.
    pub fn outside(&self) -> Option<PathBuf> {
        let bytes = std::fs::read(&self.sealed).ok()?;
        (bytes.len() == LEN && &bytes[..8] == MAGIC).then(|| self.outside_for(&bytes[10..18]))
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

    /// Seals `vault`'s data key here, replacing any earlier seal (and its outside secret).
    pub fn seal(&self, vault: &Vault, pin: Option<&[u8]>) -> Result<(), SealError> {
        let _lock = crate::lock(&self.home.join("vault.moat"))?;
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
        let previous = self.outside();

        let id = random::<8>()?;
        let outside_path = self.outside_for(&id);
        let outside = Zeroizing::new(random::<32>()?);
        write(&outside_path, outside.as_ref())?;
        let salt = random::<32>()?;
        let key = self.seal_key(&outside, &salt, pin)?;
        let nonce_bytes = random::<12>()?;
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(if pin.is_some() { FLAG_PIN } else { 0 });
        out.extend_from_slice(&id);
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
        write(&self.sealed, &out)?;
        if let Some(old) = previous.filter(|p| *p != outside_path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
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
        let outside_path = self.outside_for(&bytes[10..18]);
        let outside_bytes = match std::fs::read(&outside_path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SealError::Elsewhere(outside_path));
            }
            Err(e) => return Err(io(&outside_path)(e)),
        };
        let outside: [u8; 32] = outside_bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Mismatch)?;
        let outside = Zeroizing::new(outside);
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

    /// Removes the seal and its outside secret.
    pub fn remove(&self) -> Result<bool, SealError> {
        let _lock = crate::lock(&self.home.join("vault.moat"))?;
        let existed = self.sealed.exists();
        let outside = self.outside();
        for p in std::iter::once(&self.sealed).chain(outside.as_ref()) {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(p)(e)),
            }
        }
        Ok(existed)
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
        p.seal(&vault, None).unwrap();
        assert_eq!(p.status(), Some(false));
        let key = p.unseal(None).unwrap();
        assert!(Vault::open(&home.join("vault.moat"), Unlock::DataKey(&key)).is_ok());

        let first_outside = p.outside().unwrap();
        p.seal(&vault, Some(b"1234")).unwrap();
        assert!(
            !first_outside.exists(),
            "resealing deletes the old outside secret"
        );
        assert_eq!(p.status(), Some(true));
        assert!(matches!(p.unseal(None), Err(SealError::NeedsPin)));
        assert!(matches!(p.unseal(Some(b"9999")), Err(SealError::Mismatch)));
        assert!(p.unseal(Some(b"1234")).is_ok());
        let outside = p.outside().unwrap();
        assert!(p.remove().unwrap());
        assert!(!outside.exists(), "the outside secret goes with the seal");
        assert!(matches!(p.unseal(None), Err(SealError::NotSealed(_))));
    }

    #[test]
    fn a_copied_home_does_not_unseal() {
        let (root, home, p) = setup();
        let vault = Vault::open(&home.join("vault.moat"), b"password").unwrap();
        p.seal(&vault, None).unwrap();
        // The whole home, copied to another path on this machine.
        let copy = root.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        for f in ["vault.moat", "vault.seal"] {
            std::fs::copy(home.join(f), copy.join(f)).unwrap();
        }
        let there = paths(&copy, &root.path().join("seal"));
        assert!(matches!(there.unseal(None), Err(SealError::Elsewhere(_))));
        // With the outside secret copied too, under the copy's name, the path binding refuses.
        std::fs::copy(p.outside().unwrap(), there.outside().unwrap()).unwrap();
        assert!(matches!(there.unseal(None), Err(SealError::Mismatch)));
        // The password still opens the copy.
        assert!(Vault::open(&copy.join("vault.moat"), b"password").is_ok());
    }

    #[test]
    fn the_sealed_file_holds_nothing_that_unseals() {
        let (_r, home, p) = setup();
        let vault = Vault::open(&home.join("vault.moat"), b"password").unwrap();
        p.seal(&vault, None).unwrap();
        std::fs::remove_file(p.outside().unwrap()).unwrap();
        assert!(matches!(p.unseal(None), Err(SealError::Elsewhere(_))));
        let mut bytes = std::fs::read(&p.sealed).unwrap();
        bytes[70] ^= 1;
        std::fs::write(&p.sealed, &bytes).unwrap();
        assert!(p.unseal(None).is_err());
    }
}
