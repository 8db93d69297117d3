//! The binary's side of the audit log: the signing key and the latest checkpoint live in
//! the vault, under names of their own; command-line processes record what they did.

use std::path::PathBuf;

use anyhow::anyhow;
use moat_audit::{Anchor, AnchorError, AuditKey, AuditWriter, Options, Record, Statement};
use moat_core::config::AuditConfig;
use moat_core::home::Home;
use moat_vault::{Unlock, Vault, VaultError};
use zeroize::Zeroizing;

use crate::Failure;

/// The vault entry holding the audit log's Ed25519 seed (hex).
pub(crate) const KEY_ENTRY: &str = "moat.audit.signing-key";

/// The vault entry holding the latest checkpoint (JSON).
pub(crate) const ANCHOR_ENTRY: &str = "moat.audit.checkpoint";

/// The audit directory of `home`.
pub(crate) fn dir(home: &Home) -> PathBuf {
    home.root().join("audit")
}

/// The actor for things a person did on the command line.
pub(crate) fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn options(config: &AuditConfig) -> Options {
    Options {
        segment_max_bytes: config.segment_max_bytes,
        checkpoint_every: config.checkpoint_every,
        checkpoint_interval: config.checkpoint_interval,
        ..Options::default()
    }
}

/// Opens the log for a process that holds the unlocked vault: it signs with the vault's
/// audit key (created there on first use) and keeps the latest checkpoint in the vault.
pub(crate) fn open_keyed(
    home: &Home,
    vault: &Vault,
    config: &AuditConfig,
) -> Result<AuditWriter, Failure> {
    let path = home.vault_file();
    let data_key = vault.data_key_copy();
    let key = match vault.get(KEY_ENTRY) {
        Some(e) => parse_key(e.value())?,
        None => {
            let key = AuditKey::generate().map_err(|e| Failure::runtime(anyhow!("{e}")))?;
            let seed = Zeroizing::new(hex::encode(key.seed()));
            let added = Vault::update(&path, Unlock::DataKey(&data_key), |v| {
                v.add(
                    KEY_ENTRY,
                    seed.as_bytes().to_vec(),
                    Some("signs the audit log's checkpoints (made by moat)".into()),
                    None,
                )
            });
            match added {
                Ok(()) => key,
                // Another process made one meanwhile: use theirs.
                Err(VaultError::EntryExists(_)) => {
                    let fresh =
                        Vault::open(&path, Unlock::DataKey(&data_key)).map_err(Failure::runtime)?;
                    parse_key(fresh.get(KEY_ENTRY).expect("it exists").value())?
                }
                Err(e) => return Err(Failure::runtime(e)),
            }
        }
    };
    let anchor = VaultAnchor { path, data_key };
    let writer = AuditWriter::open(
        &dir(home),
        Some(key),
        Some(Box::new(anchor)),
        options(config),
    )
    .map_err(Failure::runtime)?;
    report_recovery(&writer);
    Ok(writer)
}

/// Opens the log without a key (a command that has no unlocked vault): entries are chained
/// but not signed until the next process with the key writes a head or checkpoint.
pub(crate) fn open_unkeyed(home: &Home) -> Result<AuditWriter, Failure> {
    let writer =
        AuditWriter::open(&dir(home), None, None, Options::default()).map_err(Failure::runtime)?;
    report_recovery(&writer);
    Ok(writer)
}

fn report_recovery(writer: &AuditWriter) {
    if let Some(r) = writer.recovered() {
        eprintln!(
            "moat: the audit log ended in an unfinished entry ({} bytes, from a crash); it was set aside in {} and the chain goes on",
            r.bytes,
            r.set_aside.display()
        );
    }
}

/// Records one entry from a command-line process and waits until it is on disk. A failure
/// is reported but does not undo what the command did.
pub(crate) fn record_now(home: &Home, record: Record) {
    record_all_now(home, vec![record]);
}

/// Makes a change with its audit record on both sides: the intent is on disk before the
/// change starts (or the change is not made), the outcome after. A crash in between
/// leaves an intent without an outcome in the log, never a change the log does not
/// mention. `record` makes the entry for an outcome (`intent`, `ok`, `failed`).
pub(crate) fn audited<T>(
    home: &Home,
    record: impl Fn(&str) -> Record,
    change: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let intent = record("intent");
    let action = intent.action.clone();
    try_record_now(home, intent).map_err(|f| {
        f.context(format!(
            "nothing was changed: the audit log could not record the intent of {action}"
        ))
    })?;
    let result = change();
    record_now(home, record(if result.is_ok() { "ok" } else { "failed" }));
    result
}

/// Records one entry and waits until it is on disk, or says why it could not: for the
/// intent of a change, which must be in the log before the change is made.
fn try_record_now(home: &Home, record: Record) -> Result<(), Failure> {
    let w = open_unkeyed(home)?;
    w.log().record(record).map_err(Failure::runtime)?;
    w.close().map_err(Failure::runtime)
}

/// Records entries from a command-line process with one opening of the log, and waits
/// until they are on disk; a failure is reported, naming the actions, and undoes nothing.
pub(crate) fn record_all_now(home: &Home, records: Vec<Record>) {
    if records.is_empty() {
        return;
    }
    let actions: Vec<String> = records.iter().map(|r| r.action.clone()).collect();
    let result = open_unkeyed(home).and_then(|w| {
        for record in records {
            w.log().record(record).map_err(Failure::runtime)?;
        }
        w.close().map_err(Failure::runtime)
    });
    if let Err(f) = result {
        eprintln!(
            "moat: warning: the audit log could not record {}: {:#}",
            actions.join(", "),
            f.error()
        );
    }
}

pub(crate) fn parse_key(value: &[u8]) -> Result<AuditKey, Failure> {
    let seed = moat_audit::entry::unhex(value).ok_or_else(|| {
        Failure::runtime(anyhow!(
            "the vault entry {KEY_ENTRY} is not an audit key; remove it with `moat vault remove {KEY_ENTRY}` (the log's existing checkpoints will then no longer verify)"
        ))
    })?;
    Ok(AuditKey::from_seed(&seed))
}

/// Keeps the latest checkpoint in the vault.
struct VaultAnchor {
    path: PathBuf,
    data_key: Zeroizing<[u8; 32]>,
}

impl Anchor for VaultAnchor {
    fn store(&mut self, checkpoint: &Statement) -> Result<(), AnchorError> {
        let json = serde_json::to_vec(checkpoint).map_err(AnchorError::new)?;
        Vault::update(&self.path, Unlock::DataKey(&self.data_key), |v| {
            v.replace(
                ANCHOR_ENTRY,
                json,
                Some("the audit log's latest checkpoint (kept by moat)".into()),
            )
        })
        .map_err(AnchorError::new)
    }
}
