//! moat's tamper-evident audit log: append-only JSON Lines segments, hash-chained entry to
//! entry, with Ed25519-signed checkpoints and head so that deleting the tail or rewriting
//! the whole log is caught too, not only an edit in the middle.
//!
//! - [`entry`]: the line format and its hash (the encoding is documented there).
//! - [`redact`]: what is removed from a record before it is queued.
//! - [`log`]: the writer (bounded queue, one writer thread, group commit, recovery).
//! - [`sign`]: checkpoints and the head.
//! - [`verify`]: the verifier, and exactly what it does and does not detect.
//!
//! ```
//! use moat_audit::{AuditKey, AuditWriter, Options, Record, Trust, verify};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let key = AuditKey::generate().unwrap();
//! let public = key.public();
//! let writer = AuditWriter::open(dir.path(), Some(key), None, Options::default()).unwrap();
//! writer.log().record(Record::new("cli:me", "vault.add", "github", "ok")).unwrap();
//! writer.close().unwrap();
//!
//! let trust = Trust { public: &public, anchor: None };
//! let report = verify::verify(dir.path(), &trust, None, &mut |_, _| {}).unwrap();
//! assert_eq!(report.entries, 1);
//! assert!(report.broken.is_none());
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod entry;
pub mod log;
pub mod redact;
pub mod sign;
pub mod store;
pub mod verify;

pub use entry::{Entry, Record};
pub use log::{Anchor, AnchorError, AuditLog, AuditWriter, Options, Recovery, Stats};
pub use sign::{AuditKey, Statement};
pub use verify::{Break, BreakKind, Report, Trust};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The last entry of the log does not check, so the chain cannot be continued.
    #[error(
        "the audit log's last entry in {0} is damaged; run `moat audit verify` to see what happened"
    )]
    DamagedTail(PathBuf),
    /// Writing failed (reported to whoever flushes or closes).
    #[error("the audit log could not be written: {0}")]
    Write(String),
    /// The anchor (the vault) refused the checkpoint.
    #[error(
        "the latest checkpoint could not be stored in the vault ({0}); the log itself is intact, and the next checkpoint tries again"
    )]
    Anchor(#[source] AnchorError),
    /// The writer has stopped.
    #[error("the audit log is closed")]
    Closed,
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
