//! The verifier: walks the chain, then checks every signed statement against it.
//!
//! # What is detected
//!
//! - **modified**: any byte of an entry changed (its hash no longer matches), or an entry
//!   rewritten with a fresh hash (the next entry's `prev_hash` no longer matches, or a
//!   signed checkpoint or head records another hash for it).
//! - **reordered**: entries out of sequence (two swapped).
//! - **deleted**: entries missing from the middle (a gap in `seq`).
//! - **truncated**: the log ends before an entry that a checkpoint, the vault's copy of the
//!   latest checkpoint, or the signed head vouches for. The head is rewritten at every
//!   group commit, so this also covers entries written after the last checkpoint.
//! - **bad-signature**: a checkpoint or head that the audit key (kept in the vault) did not
//!   sign: a forged chain cannot carry a valid one.
//! - **missing-checkpoint**: the vault holds a checkpoint that `checkpoints.jsonl` does not
//!   (the file deleted or cut), or checkpoints exist but the head is gone.
//!
//! # What is not detected
//!
//! - Entries written since the last signed head (at most one group commit, lost in a crash
//!   anyway) can be removed unnoticed.
//! - An attacker who saved an old `head` and `checkpoints.jsonl` and the matching log prefix
//!   can roll all three back together to that point, unless the vault's own checkpoint is
//!   newer than that point (it is updated at every checkpoint): the vault bounds the
//!   rollback to the last checkpoint.
//! - Anyone holding the vault's key (the master password, or the seal on this machine) can
//!   forge everything: the log protects against editing files, not against the owner.
//! - Entries written by a process that had no key (a `moat vault` command whose unlock
//!   failed) are chained but vouched for only by the next head or checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use crate::AuditError;
use crate::entry::{self, GENESIS};
use crate::sign::{Kind, Statement};
use crate::store::{self, Head};

/// The kind of a break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// An entry's bytes changed.
    Modified,
    /// Entries out of order.
    Reordered,
    /// Entries missing from the middle.
    Deleted,
    /// Entries missing from the end.
    Truncated,
    /// A statement the audit key did not sign.
    BadSignature,
    /// A checkpoint (or the head) that should exist does not.
    MissingCheckpoint,
}

impl BreakKind {
    /// The name `moat audit verify` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Modified => "modified",
            Self::Reordered => "reordered",
            Self::Deleted => "deleted",
            Self::Truncated => "truncated",
            Self::BadSignature => "bad signature",
            Self::MissingCheckpoint => "missing checkpoint",
        }
    }
}

/// The first break found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// What kind.
    pub kind: BreakKind,
    /// The entry it is at, where there is one.
    pub seq: Option<u64>,
    /// What was found, for a person.
    pub detail: String,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries checked.
    pub entries: u64,
    /// The last entry's seq (0 for an empty log).
    pub last_seq: u64,
    /// The latest valid checkpoint's seq.
    pub last_checkpoint: Option<u64>,
    /// The signed head's seq.
    pub head: Option<u64>,
    /// Bytes of an unfinished last line (a crash mid-write), set aside at the next start.
    pub unfinished_tail: Option<usize>,
    /// The first break, if any.
    pub broken: Option<Break>,
}

/// What the verifier trusts: both come from the vault.
pub struct Trust<'a> {
    /// The audit key's public half.
    pub public: &'a VerifyingKey,
    /// The vault's copy of the latest checkpoint.
    pub anchor: Option<&'a Statement>,
}

fn broken(kind: BreakKind, seq: Option<u64>, detail: impl Into<String>) -> Option<Break> {
    Some(Break {
        kind,
        seq,
        detail: detail.into(),
    })
}

/// Verifies the log in `dir` from entry `from` (default: the first), calling `progress`
/// with (bytes done, bytes total) as it goes.
pub fn verify(
    dir: &Path,
    trust: &Trust<'_>,
    from: Option<u64>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, AuditError> {
    let from = from.unwrap_or(1).max(1);
    let mut report = Report::default();

    // The statements first: the chain walk remembers the hashes they name.
    let checkpoints = read_checkpoints(dir)?;
    let head = store::read_head(dir, trust.public).map_err(|e| AuditError::io(dir, e))?;
    let mut wanted: BTreeMap<u64, Option<[u8; 32]>> = BTreeMap::new();
    for s in checkpoints.iter().flatten().chain(trust.anchor) {
        wanted.insert(s.seq, None);
    }
    if let Head::Signed(h) = &head {
        wanted.insert(h.seq, None);
    }

    let chain = walk(dir, from, &mut wanted, &mut report, progress)?;
    if chain.is_some() {
        report.broken = chain;
        return Ok(report);
    }
    report.broken = check_statements(&checkpoints, &head, trust, &wanted, from, &mut report);
    Ok(report)
}

fn read_checkpoints(dir: &Path) -> Result<Option<Vec<Statement>>, AuditError> {
    let path = dir.join(store::CHECKPOINTS);
    let bytes = match moat_core::atomic::read_regular(&path, store::MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        // An unreadable line is a statement nobody signed.
        out.push(serde_json::from_slice(line).unwrap_or(Statement {
            seq: 0,
            hash: String::new(),
            time: String::new(),
            sig: String::new(),
        }));
    }
    Ok(Some(out))
}

/// Walks every segment; returns the first chain break.
fn walk(
    dir: &Path,
    from: u64,
    wanted: &mut BTreeMap<u64, Option<[u8; 32]>>,
    report: &mut Report,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<Break>, AuditError> {
    let mut segments = store::segments(dir).map_err(|e| AuditError::io(dir, e))?;
    // Start at the segment holding `from`.
    if let Some(i) = segments.iter().rposition(|(first, _)| *first <= from) {
        segments.drain(..i);
    }
    let total: u64 = segments
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0u64;
    let mut expected = from;
    let mut prev_hex: Option<[u8; 64]> = (from == 1).then(|| {
        let mut h = [0u8; 64];
        hex::encode_to_slice(GENESIS, &mut h).expect("64 hex digits");
        h
    });
    let last_index = segments.len().saturating_sub(1);
    for (index, (_, path)) in segments.iter().enumerate() {
        let bytes = moat_core::atomic::read_regular(path, store::MAX_FILE_BYTES)
            .map_err(|e| AuditError::io(path, e))?;
        let mut lines = bytes.split_inclusive(|b| *b == b'\n').peekable();
        while let Some(raw) = lines.next() {
            let Some(line) = raw.strip_suffix(b"\n") else {
                if index == last_index && lines.peek().is_none() {
                    report.unfinished_tail = Some(raw.len());
                    break;
                }
                return Ok(broken(
                    BreakKind::Modified,
                    Some(expected),
                    format!("an unfinished line inside {}", path.display()),
                ));
            };
            let Some(c) = entry::check(line) else {
                return Ok(broken(
                    BreakKind::Modified,
                    Some(expected),
                    "a line that is not an entry",
                ));
            };
            if c.seq < from && prev_hex.is_none() {
                continue;
            }
            if !c.intact {
                return Ok(broken(
                    BreakKind::Modified,
                    Some(c.seq),
                    "its hash does not match its contents",
                ));
            }
            if c.seq != expected {
                let next_seq = lines
                    .peek()
                    .and_then(|l| entry::check(l.strip_suffix(b"\n").unwrap_or(l)))
                    .map(|n| n.seq);
                return Ok(if c.seq < expected || next_seq == Some(expected) {
                    broken(
                        BreakKind::Reordered,
                        Some(expected),
                        format!("entry {} stands where entry {expected} should", c.seq),
                    )
                } else {
                    broken(
                        BreakKind::Deleted,
                        Some(expected),
                        format!("entries {expected} to {} are missing", c.seq - 1),
                    )
                });
            }
            if let Some(prev) = &prev_hex
                && prev.as_slice() != c.prev_hex
            {
                return Ok(broken(
                    BreakKind::Modified,
                    Some(c.seq.saturating_sub(1).max(1)),
                    format!("entry {} does not follow from the one before it", c.seq),
                ));
            }
            let mut h = [0u8; 64];
            h.copy_from_slice(c.hash_hex);
            prev_hex = Some(h);
            if let Some(slot) = wanted.get_mut(&c.seq) {
                *slot = entry::unhex(c.hash_hex);
            }
            report.entries += 1;
            report.last_seq = c.seq;
            expected = c.seq + 1;
        }
        done += bytes.len() as u64;
        progress(done, total);
    }
    Ok(None)
}

fn check_statements(
    checkpoints: &Option<Vec<Statement>>,
    head: &Head,
    trust: &Trust<'_>,
    seen: &BTreeMap<u64, Option<[u8; 32]>>,
    from: u64,
    report: &mut Report,
) -> Option<Break> {
    let last = report.last_seq;
    // Does the chain agree with a signed statement?
    let against = |what: &str, s: &Statement| -> Option<Break> {
        if s.seq < from {
            return None;
        }
        if s.seq > last {
            return broken(
                BreakKind::Truncated,
                Some(last + 1),
                format!(
                    "the log ends at entry {last}, but {what} vouches for entry {}",
                    s.seq
                ),
            );
        }
        let stated = entry::unhex(s.hash.as_bytes());
        let actual = seen.get(&s.seq).copied().flatten();
        (stated.is_none() || stated != actual).then(|| Break {
            kind: BreakKind::Modified,
            seq: Some(s.seq),
            detail: format!("entry {} is not the one {what} signed", s.seq),
        })
    };

    if let Some(list) = checkpoints {
        for s in list {
            if !s.verifies(Kind::Checkpoint, trust.public) {
                return broken(
                    BreakKind::BadSignature,
                    Some(s.seq),
                    format!(
                        "the checkpoint at entry {} is not signed by the audit key",
                        s.seq
                    ),
                );
            }
            if let Some(b) = against("a signed checkpoint", s) {
                return Some(b);
            }
            report.last_checkpoint = Some(s.seq);
        }
    }
    if let Some(anchor) = trust.anchor {
        let listed = checkpoints
            .as_ref()
            .is_some_and(|list| list.iter().any(|s| s == anchor));
        if !listed {
            return broken(
                BreakKind::MissingCheckpoint,
                Some(anchor.seq),
                format!(
                    "the vault holds a checkpoint at entry {} that {} lacks",
                    anchor.seq,
                    store::CHECKPOINTS
                ),
            );
        }
        if let Some(b) = against("the vault's checkpoint", anchor) {
            return Some(b);
        }
    }
    match head {
        Head::Signed(h) => {
            report.head = Some(h.seq);
            against("the signed head", h)
        }
        Head::Unsigned => broken(
            BreakKind::BadSignature,
            None,
            "the head is not signed by the audit key",
        ),
        Head::Missing if report.last_checkpoint.is_some() || trust.anchor.is_some() => broken(
            BreakKind::MissingCheckpoint,
            None,
            "the signed head is missing",
        ),
        Head::Missing => None,
    }
}
