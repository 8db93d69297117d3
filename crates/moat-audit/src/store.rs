//! The files under `MOAT_HOME/audit/`.
//!
//! | file | what |
//! |---|---|
//! | `<first seq, 16 digits>.jsonl` | a segment of the chain, one entry per line |
//! | `checkpoints.jsonl` | signed checkpoints, one per line |
//! | `head` | the signed head: two fixed 512-byte slots written alternately, so a torn write leaves the other |
//! | `lock` | serializes writers across processes |
//! | `torn-<seq>-<time>.jsonl` | an unfinished last line set aside at start |

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::sign::{Kind, Statement};

/// The checkpoint file's name.
pub const CHECKPOINTS: &str = "checkpoints.jsonl";
/// The head file's name.
pub const HEAD: &str = "head";
const SLOT: u64 = 512;

/// The segments in `dir`, in chain order: (first seq, path).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for item in read {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".jsonl")
            && stem.len() == 16
            && let Ok(first) = stem.parse::<u64>()
        {
            out.push((first, item.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The name of the segment whose first entry is `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016}.jsonl")
}

/// Opens (creating, 0600) a file for appending and reading.
pub fn open_append(path: &Path) -> io::Result<File> {
    File::options()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The last `max` bytes of `file` (all of it when shorter), and where they start.
pub fn read_tail(file: &mut File, max: u64) -> io::Result<(u64, Vec<u8>)> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.take(len - start).read_to_end(&mut buf)?;
    Ok((start, buf))
}

/// Writes `statement` into head slot `slot` (0 or 1) and syncs it.
pub fn write_head(file: &File, slot: u64, statement: &Statement) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(statement).map_err(io::Error::other)?;
    if bytes.len() >= SLOT as usize {
        return Err(io::Error::other("head statement too long"));
    }
    bytes.resize(SLOT as usize - 1, b' ');
    bytes.push(b'\n');
    file.write_all_at(&bytes, slot * SLOT)?;
    file.sync_data()
}

/// What the head file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// No head file.
    Missing,
    /// A file whose slots hold no statement `public` signed.
    Unsigned,
    /// The newest statement that verifies.
    Signed(Statement),
}

/// The largest file of the audit folder moat reads: far past any segment (a device or
/// pipe in a file's place is refused whatever the bound).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Reads the head, keeping the newest slot that `public` signed.
pub fn read_head(dir: &Path, public: &VerifyingKey) -> io::Result<Head> {
    let bytes = match moat_core::atomic::read_regular(&dir.join(HEAD), MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Head::Missing),
        Err(e) => return Err(e),
    };
    let best = bytes
        .chunks(SLOT as usize)
        .filter_map(|slot| serde_json::from_slice::<Statement>(slot.trim_ascii()).ok())
        .filter(|s| s.verifies(Kind::Head, public))
        .max_by_key(|s| s.seq);
    Ok(best.map_or(Head::Unsigned, Head::Signed))
}

/// Syncs a directory, so that a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
