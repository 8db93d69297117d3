//! The `vault.moat` file format, version 1. `FORMAT.md` beside this crate is the spec;
//! this module is its only reader and writer.
//!
//! ```text
//! offset  size  field
//!  0       8    magic  "MOATVLT\0"
//!  8       1    version = 1
//!  9       1    kdf id  = 1 (Argon2id, v0x13)
//! 10       4    m_cost in KiB (u32 LE)
//! 14       4    t_cost (u32 LE)
//! 18       4    p_cost (u32 LE)
//! 22      32    salt
//! 54      12    wrap nonce
//! 66      48    wrapped data key: AES-256-GCM(KEK, wrap nonce, data key, aad = bytes 0..54)
//! 114     12    body nonce
//! 126      …    body: AES-256-GCM(data key, body nonce, entries, aad = bytes 0..114)
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

use crate::VaultError;

/// The magic bytes at the start of every vault file.
pub const MAGIC: &[u8; 8] = b"MOATVLT\0";
/// The format version this build reads and writes.
pub const VERSION: u8 = 1;
/// The KDF id for Argon2id v0x13.
pub const KDF_ARGON2ID: u8 = 1;

const KDF_END: usize = 54;
const WRAP_NONCE: usize = 54;
const WRAPPED_KEY: usize = 66;
const BODY_NONCE: usize = 114;
const BODY: usize = 126;
const TAG: usize = 16;
/// The body's associated data: the whole header before the body nonce, so a header that
/// was tampered with fails even when the data key comes from a seal, not the password.
const BODY_AAD_END: usize = 114;

/// Argon2id cost parameters, stored in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// m = 64 MiB, t = 3, p = 1.
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Refuses parameters a tampered header could use to make unlocking hang or exhaust
    /// memory, and ones too weak to be worth a password.
    fn check(self) -> Result<Self, VaultError> {
        let ok = (8 * 1024..=1024 * 1024).contains(&self.m_kib)
            && (1..=10).contains(&self.t)
            && (1..=8).contains(&self.p);
        if ok {
            Ok(self)
        } else {
            Err(VaultError::Corrupt("KDF parameters out of range"))
        }
    }

    /// Derives the key-encryption key from `password` and `salt`.
    pub fn derive(
        self,
        password: &[u8],
        salt: &[u8; 32],
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| VaultError::Corrupt("KDF parameters rejected"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|_| VaultError::Corrupt("key derivation failed"))?;
        Ok(out)
    }
}

/// The parsed fixed-size header.
#[derive(Debug, Clone)]
pub struct Header {
    /// KDF parameters.
    pub kdf: KdfParams,
    /// KDF salt.
    pub salt: [u8; 32],
    wrap_nonce: [u8; 12],
    wrapped_key: [u8; 48],
}

/// Fresh random bytes.
pub fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(b)
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    let mut key: Key<Aes256Gcm> = (*key).into();
    let cipher = Aes256Gcm::new(&key);
    // The cipher zeroizes its own schedule on drop (the `zeroize` feature); this copy too.
    zeroize::Zeroize::zeroize(key.as_mut_slice());
    cipher
}

impl Header {
    /// A header wrapping `data_key` under the key derived from `password`.
    pub fn seal_key(
        kdf: KdfParams,
        password: &[u8],
        data_key: &[u8; 32],
    ) -> Result<Self, VaultError> {
        let kdf = kdf.check()?;
        let salt = random::<32>()?;
        let kek = kdf.derive(password, &salt)?;
        let wrap_nonce = random::<12>()?;
        let mut header = Header {
            kdf,
            salt,
            wrap_nonce,
            wrapped_key: [0; 48],
        };
        let aad = header.kdf_bytes();
        let nonce: Nonce<_> = wrap_nonce.into();
        let ct = cipher(&kek)
            .encrypt(
                &nonce,
                Payload {
                    msg: data_key,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Corrupt("wrapping the data key failed"))?;
        header.wrapped_key.copy_from_slice(&ct);
        Ok(header)
    }

    /// Unwraps the data key; a wrong password and a tampered header look the same.
    pub fn open_key(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let kek = self.kdf.derive(password, &self.salt)?;
        let aad = self.kdf_bytes();
        let nonce: Nonce<_> = self.wrap_nonce.into();
        let plain = Zeroizing::new(
            cipher(&kek)
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &self.wrapped_key,
                        aad: &aad,
                    },
                )
                .map_err(|_| VaultError::WrongPassword)?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        Ok(key)
    }

    /// Bytes 0..54: magic, version, KDF id and parameters, salt.
    fn kdf_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(KDF_END);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(KDF_ARGON2ID);
        b.extend_from_slice(&self.kdf.m_kib.to_le_bytes());
        b.extend_from_slice(&self.kdf.t.to_le_bytes());
        b.extend_from_slice(&self.kdf.p.to_le_bytes());
        b.extend_from_slice(&self.salt);
        b
    }
}

/// Serializes a whole file: header and the body encrypted under `data_key`.
pub fn encode(header: &Header, data_key: &[u8; 32], body: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut out = header.kdf_bytes();
    out.extend_from_slice(&header.wrap_nonce);
    out.extend_from_slice(&header.wrapped_key);
    let body_nonce = random::<12>()?;
    out.extend_from_slice(&body_nonce);
    let nonce: Nonce<_> = body_nonce.into();
    let ct = cipher(data_key)
        .encrypt(
            &nonce,
            Payload {
                msg: body,
                aad: &out[..BODY_AAD_END],
            },
        )
        .map_err(|_| VaultError::Corrupt("encrypting the entries failed"))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Parses the header of a file, refusing anything that is not a whole v1 vault.
pub fn parse_header(file: &[u8]) -> Result<Header, VaultError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(VaultError::Corrupt("not a moat vault (bad magic)"));
    }
    match file.get(8) {
        Some(&VERSION) => {}
        Some(&v) if v > VERSION => return Err(VaultError::TooNew(v)),
        Some(_) => return Err(VaultError::Corrupt("unknown format version")),
        None => return Err(VaultError::Corrupt("file is truncated")),
    }
    if file.len() < BODY + TAG {
        return Err(VaultError::Corrupt("file is truncated"));
    }
    if file[9] != KDF_ARGON2ID {
        return Err(VaultError::Corrupt("unknown key derivation function"));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]);
    let kdf = KdfParams {
        m_kib: u32_at(10),
        t: u32_at(14),
        p: u32_at(18),
    }
    .check()?;
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&file[22..KDF_END]);
    let mut wrap_nonce = [0u8; 12];
    wrap_nonce.copy_from_slice(&file[WRAP_NONCE..WRAPPED_KEY]);
    let mut wrapped_key = [0u8; 48];
    wrapped_key.copy_from_slice(&file[WRAPPED_KEY..BODY_NONCE]);
    Ok(Header {
        kdf,
        salt,
        wrap_nonce,
        wrapped_key,
    })
}

/// Decrypts the body of `file` with `data_key`.
pub fn decrypt_body(file: &[u8], data_key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut body_nonce = [0u8; 12];
    body_nonce.copy_from_slice(&file[BODY_NONCE..BODY]);
    let nonce: Nonce<_> = body_nonce.into();
    cipher(data_key)
        .decrypt(
            &nonce,
            Payload {
                msg: &file[BODY..],
                aad: &file[..BODY_AAD_END],
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Corrupt("entries fail authentication (tampered or damaged)"))
}
