//! One audit entry: what producers hand in ([`Record`]), how it is written as one line, and
//! how a line is read back and checked.
//!
//! # The line and its hash
//!
//! Each entry is one line of compact JSON whose members always come in this order:
//!
//! ```text
//! {"seq":N,"time":T,"actor":A,"action":B,"target":C,"outcome":D,"details":E,"prev_hash":P,"hash":H}
//! ```
//!
//! `seq` is a decimal integer, `time` RFC 3339 UTC with microseconds, `actor` to `outcome`
//! JSON strings, `details` a JSON object, `prev_hash` and `hash` 64 lowercase hex digits.
//! Strings are written by `serde_json` (escapes are fixed: `\"`, `\\`, `\n`... and `\u00XX`
//! for other control characters), so the same fields always give the same bytes.
//!
//! `hash = SHA-256("moat-audit-v1\n" || line[..i])`, where `line[..i]` is every byte of the
//! line before `,"hash":` — that is, the encoding of every other field, `prev_hash`
//! included. The encoding is unambiguous: JSON strings are delimited and escaped, so no two
//! different tuples of fields share these bytes, and changing any byte of a line (or its
//! `hash`) breaks it. The verifier hashes the bytes exactly as stored; it never re-encodes.
//! The first entry's `prev_hash` is 64 zeros.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash of "nothing before": the first entry's `prev_hash`.
pub const GENESIS: [u8; 32] = [0; 32];

const DOMAIN: &[u8] = b"moat-audit-v1\n";
/// Every line ends with this marker, 64 hex digits and `"}`.
const HASH_MARKER: &[u8] = b",\"hash\":\"";
const PREV_MARKER: &[u8] = b"\"prev_hash\":\"";
/// `,"hash":"` + 64 + `"}`.
const SUFFIX_LEN: usize = HASH_MARKER.len() + 64 + 2;
/// `"prev_hash":"` + 64 + `"`, just before the suffix.
const PREV_LEN: usize = PREV_MARKER.len() + 64 + 1;

/// What a producer records. Every string and every detail is redacted before it is queued
/// (see [`crate::redact`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Who acted: `cli:USER`, `api:PEER`, `channel:SENDER`, `system`.
    pub actor: String,
    /// What happened, dotted: `vault.add`, `auth.denied`, `proxy.upstream_error`.
    pub action: String,
    /// What it happened to (an entry name, a route, a backend).
    pub target: String,
    /// `ok`, `denied`, `failed`...
    pub outcome: String,
    /// Anything else, as a JSON object.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// A record with no details.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            details: serde_json::Map::new(),
        }
    }

    /// Adds one detail.
    pub fn detail(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(name.to_owned(), value.into());
        self
    }
}

/// An entry as read back from the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub time: String,
    /// See [`Record::actor`].
    pub actor: String,
    /// See [`Record::action`].
    pub action: String,
    /// See [`Record::target`].
    pub target: String,
    /// See [`Record::outcome`].
    pub outcome: String,
    /// See [`Record::details`].
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The previous entry's hash, hex.
    pub prev_hash: String,
    /// This entry's hash, hex.
    pub hash: String,
}

/// The current time as entries carry it.
pub fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Appends the line for `record` (with its newline) to `out`; returns its hash.
pub fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    time: &str,
    record: &Record,
    prev: &[u8; 32],
) -> [u8; 32] {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    for (name, value) in [
        ("time", time),
        ("actor", &record.actor),
        ("action", &record.action),
        ("target", &record.target),
        ("outcome", &record.outcome),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        serde_json::to_writer(&mut *out, value).expect("a string always serializes");
    }
    out.extend_from_slice(b",\"details\":");
    serde_json::to_writer(&mut *out, &record.details).expect("a JSON map always serializes");
    out.push(b',');
    out.extend_from_slice(PREV_MARKER);
    out.extend_from_slice(hex::encode(prev).as_bytes());
    out.push(b'"');
    let hash = hash_of(&out[start..]);
    out.extend_from_slice(HASH_MARKER);
    out.extend_from_slice(hex::encode(hash).as_bytes());
    out.extend_from_slice(b"\"}\n");
    hash
}

fn hash_of(covered: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(covered);
    h.finalize().into()
}

/// What the verifier needs from one line (without its newline), read without parsing the
/// JSON: the line's shape is fixed at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The `seq` field.
    pub seq: u64,
    /// The `prev_hash` field, as hex.
    pub prev_hex: &'a [u8],
    /// The `hash` field, as hex.
    pub hash_hex: &'a [u8],
    /// Whether `hash` is the hash of the line.
    pub intact: bool,
}

/// Reads a line's seq and hashes and checks its hash; `None` when the line does not have
/// an entry's shape at all.
pub fn check(line: &[u8]) -> Option<Checked<'_>> {
    let body = line.strip_prefix(b"{\"seq\":")?;
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || body.get(digits) != Some(&b',') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&body[..digits]).ok()?.parse().ok()?;
    if line.len() < 8 + digits + PREV_LEN + SUFFIX_LEN {
        return None;
    }
    let covered_end = line.len() - SUFFIX_LEN;
    let (covered, suffix) = line.split_at(covered_end);
    if !suffix.starts_with(HASH_MARKER) || !suffix.ends_with(b"\"}") {
        return None;
    }
    let prev_field = &covered[covered.len() - PREV_LEN..];
    if !prev_field.starts_with(PREV_MARKER) || !prev_field.ends_with(b"\"") {
        return None;
    }
    let hash_hex = &suffix[HASH_MARKER.len()..HASH_MARKER.len() + 64];
    let prev_hex = &prev_field[PREV_MARKER.len()..PREV_MARKER.len() + 64];
    let mut actual = [0u8; 64];
    hex::encode_to_slice(hash_of(covered), &mut actual).expect("64 hex digits for 32 bytes");
    Some(Checked {
        seq,
        prev_hex,
        hash_hex,
        intact: actual.as_slice() == hash_hex,
    })
}

/// Parses a line into an [`Entry`] (for `tail` and `export`; the verifier uses [`check`]).
pub fn parse(line: &[u8]) -> Option<Entry> {
    serde_json::from_slice(line).ok()
}

/// Decodes 64 hex digits.
pub fn unhex(hex_digits: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, record: &Record, prev: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
        let mut out = Vec::new();
        let hash = encode(&mut out, seq, "2026-01-01T00:00:00.000000Z", record, prev);
        (out, hash)
    }

    #[test]
    fn a_line_is_json_and_checks() {
        let record = Record::new("cli:me", "vault.add", "k \"quoted\"\n", "ok").detail("n", 3);
        let (bytes, hash) = line(7, &record, &GENESIS);
        assert_eq!(bytes.last(), Some(&b'\n'));
        let body = &bytes[..bytes.len() - 1];
        let entry = parse(body).unwrap();
        assert_eq!(entry.seq, 7);
        assert_eq!(entry.target, "k \"quoted\"\n");
        assert_eq!(entry.details["n"], 3);
        assert_eq!(entry.hash, hex::encode(hash));
        assert_eq!(entry.prev_hash, hex::encode(GENESIS));
        let c = check(body).unwrap();
        assert!(c.intact);
        assert_eq!(c.seq, 7);
        assert_eq!(c.hash_hex, hex::encode(hash).as_bytes());
    }

    #[test]
    fn every_byte_matters() {
        let record = Record::new("system", "a.b", "t", "ok").detail("x", "y");
        let (bytes, _) = line(12, &record, &[7; 32]);
        let body = &bytes[..bytes.len() - 1];
        for i in 0..body.len() {
            for flip in [1u8, 0x20] {
                let mut bad = body.to_vec();
                bad[i] ^= flip;
                if let Some(c) = check(&bad) {
                    assert!(!c.intact || bad == body, "byte {i} ^ {flip} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn odd_lines_are_not_entries() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"seq\":,",
            b"{\"seq\":1,\"hash\":\"\"}",
            b"not json at all, not even close to an entry's shape, and long enough to matter",
        ] {
            assert!(check(bad).is_none());
        }
    }
}
