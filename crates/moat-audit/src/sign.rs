//! Signed statements about the chain: checkpoints and the head.
//!
//! Both say "the entry at `seq` has hash `hash`, as of `time`", signed with Ed25519 over
//! `"moat-audit-" || kind || "-v1\n" || seq (8 bytes, big-endian) || hash (32 bytes) ||
//! time (UTF-8)`, with kind `checkpoint` or `head`. The signing key lives in the vault; so
//! does the latest checkpoint. Nobody without the key can make a statement that verifies,
//! so a forged chain cannot carry one.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The audit log's signing key (an Ed25519 seed).
pub struct AuditKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("public", &hex::encode(self.public().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// A new random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        let key = Self::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key with this seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The seed, for keeping in the vault.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half, which verifies what this key signs.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// A signed statement of kind `kind` about the entry `seq` with `hash`.
    pub fn sign(&self, kind: Kind, seq: u64, hash: &[u8; 32], time: &str) -> Statement {
        let sig = self.signing.sign(&message(kind, seq, hash, time));
        Statement {
            seq,
            hash: hex::encode(hash),
            time: time.to_owned(),
            sig: hex::encode(sig.to_bytes()),
        }
    }
}

/// What a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A periodic checkpoint, kept in `checkpoints.jsonl` and the latest in the vault.
    Checkpoint,
    /// The head: the last entry synced, rewritten at every group commit.
    Head,
}

/// A signed statement: the entry `seq` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The entry's sequence number.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// When the statement was made.
    pub time: String,
    /// The Ed25519 signature, hex.
    pub sig: String,
}

impl Statement {
    /// Whether `public` signed this as a statement of `kind`.
    pub fn verifies(&self, kind: Kind, public: &VerifyingKey) -> bool {
        let (Some(hash), Ok(sig)) = (
            crate::entry::unhex(self.hash.as_bytes()),
            hex::decode(&self.sig),
        ) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&sig) else {
            return false;
        };
        public
            .verify(&message(kind, self.seq, &hash, &self.time), &sig)
            .is_ok()
    }
}

fn message(kind: Kind, seq: u64, hash: &[u8; 32], time: &str) -> Vec<u8> {
    let tag: &[u8] = match kind {
        Kind::Checkpoint => b"moat-audit-checkpoint-v1\n",
        Kind::Head => b"moat-audit-head-v1\n",
    };
    let mut m = Vec::with_capacity(tag.len() + 40 + time.len());
    m.extend_from_slice(tag);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(time.as_bytes());
    m
}

/// Parses a public key from hex.
pub fn public_from_hex(hex_digits: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&crate::entry::unhex(hex_digits.as_bytes())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_verify_only_as_signed() {
        let key = AuditKey::generate().unwrap();
        let other = AuditKey::generate().unwrap();
        let s = key.sign(Kind::Checkpoint, 9, &[1; 32], "t");
        assert!(s.verifies(Kind::Checkpoint, &key.public()));
        assert!(!s.verifies(Kind::Head, &key.public()), "kinds do not mix");
        assert!(!s.verifies(Kind::Checkpoint, &other.public()));
        let mut moved = s.clone();
        moved.seq = 10;
        assert!(!moved.verifies(Kind::Checkpoint, &key.public()));
        let back = AuditKey::from_seed(&key.seed());
        assert_eq!(back.public(), key.public());
    }
}
