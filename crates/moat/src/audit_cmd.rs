//! `moat audit`, and the binary's side of the audit log: the signing key and the latest
//! checkpoint live in the vault, under names of their own.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use moat_audit::verify::{self, Trust};
use moat_audit::{Anchor, AuditKey, AuditWriter, Options, Record, Statement, store};
use moat_core::config::AuditConfig;
use moat_core::home::Home;
use moat_vault::{Unlock, Vault, VaultError};
use zeroize::Zeroizing;

use crate::Failure;
use crate::cli::AuditCommand;

/// The vault entry holding the audit log's Ed25519 seed (hex).
pub const KEY_ENTRY: &str = "moat.audit.signing-key";
/// The vault entry holding the latest checkpoint (JSON).
pub const ANCHOR_ENTRY: &str = "moat.audit.checkpoint";

/// The audit directory of `home`.
pub fn dir(home: &Home) -> PathBuf {
    home.root().join("audit")
}

/// The actor for things a person did on the command line.
pub fn cli_actor() -> String {
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
pub fn open_keyed(
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
pub fn open_unkeyed(home: &Home) -> Result<AuditWriter, Failure> {
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
pub fn record_now(home: &Home, record: Record) {
    record_all_now(home, vec![record]);
}

/// Records entries from a command-line process with one opening of the log, and waits
/// until they are on disk; a failure is reported, naming the actions, and undoes nothing.
pub fn record_all_now(home: &Home, records: Vec<Record>) {
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

fn parse_key(value: &[u8]) -> Result<AuditKey, Failure> {
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
    fn store(&mut self, checkpoint: &Statement) -> Result<(), String> {
        let json = serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?;
        Vault::update(&self.path, Unlock::DataKey(&self.data_key), |v| {
            match v.remove(ANCHOR_ENTRY) {
                Ok(()) | Err(VaultError::NoEntry(_)) => {}
                Err(e) => return Err(e),
            }
            v.add(
                ANCHOR_ENTRY,
                json,
                Some("the audit log's latest checkpoint (kept by moat)".into()),
                None,
            )
        })
        .map_err(|e| e.to_string())
    }
}

/// Runs `moat audit ...`.
pub fn run(home: &Home, command: &AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify { from } => verify_cmd(home, *from),
        AuditCommand::Tail {
            follow,
            action,
            lines,
        } => tail(home, *follow, action.as_deref(), *lines),
        AuditCommand::Export { since, out } => export(home, since.as_deref(), out.as_deref()),
    }
}

fn verify_cmd(home: &Home, from: Option<u64>) -> Result<(), Failure> {
    let dir = dir(home);
    let vault = crate::vault_cmd::unlock(home).map_err(|f| {
        f.context("verifying the audit log needs the vault (it holds the audit key)".into())
    })?;
    let key_missing = vault.get(KEY_ENTRY).is_none();
    // Without a key in the vault nothing can be trusted as signed: a throwaway key makes
    // every statement found fail as unsigned, which is the truth.
    let public = match vault.get(KEY_ENTRY) {
        Some(e) => parse_key(e.value())?.public(),
        None => AuditKey::generate()
            .map_err(|e| Failure::runtime(anyhow!("{e}")))?
            .public(),
    };
    let anchor: Option<Statement> = match vault.get(ANCHOR_ENTRY) {
        Some(e) => Some(serde_json::from_slice(e.value()).map_err(|_| {
            Failure::runtime(anyhow!(
                "the vault entry {ANCHOR_ENTRY} is damaged; the log cannot be checked against it"
            ))
        })?),
        None => None,
    };
    drop(vault);
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("a valid template"),
    );
    let trust = Trust {
        public: &public,
        anchor: anchor.as_ref(),
    };
    let report = verify::verify(&dir, &trust, from, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(Failure::runtime)?;
    bar.finish_and_clear();
    if let Some(b) = &report.broken {
        let at = b
            .seq
            .map(|s| format!("entry {s}"))
            .unwrap_or("the log".into());
        println!("broken at {at}: {} ({})", b.kind.name(), b.detail);
        if key_missing {
            println!("note: the vault holds no audit key ({KEY_ENTRY}), so no signature can check");
        }
        return Err(Failure::runtime(anyhow!(
            "the audit log does not verify: {}",
            b.kind.name()
        )));
    }
    let checkpoint = report
        .last_checkpoint
        .map_or("none yet".to_string(), |s| s.to_string());
    println!(
        "chain intact: {} entries, last checkpoint at {checkpoint}",
        report.entries
    );
    if let Some(bytes) = report.unfinished_tail {
        println!(
            "an unfinished last entry ({bytes} bytes, from a crash) will be set aside at the next start"
        );
    }
    Ok(())
}

fn glob(pattern: Option<&str>) -> Result<Option<glob::Pattern>, Failure> {
    pattern
        .map(|p| {
            glob::Pattern::new(p)
                .map_err(|e| Failure::usage(anyhow!("--action {p:?} is not a glob: {e}")))
        })
        .transpose()
}

/// One entry as `tail` prints it.
fn show(line: &[u8], action: Option<&glob::Pattern>) -> Option<String> {
    if line.trim_ascii().is_empty() {
        return None;
    }
    let Some(e) = moat_audit::entry::parse(line) else {
        // Never skipped in silence: a damaged line is what tail's reader most needs to see.
        return Some(
            "     ? an entry that cannot be read (damaged?): run `moat audit verify`".into(),
        );
    };
    if action.is_some_and(|p| !p.matches(&e.action)) {
        return None;
    }
    let details = if e.details.is_empty() {
        String::new()
    } else {
        format!(" {}", serde_json::Value::Object(e.details))
    };
    // Fields can carry what a client sent (a target, an actor's name): shown, never
    // interpreted by the terminal.
    let line = format!(
        "{:>6} {} {} {} {} {}{details}",
        e.seq, e.time, e.action, e.outcome, e.actor, e.target
    );
    Some(crate::terminal::shown(&line, false))
}

fn tail(home: &Home, follow: bool, action: Option<&str>, count: usize) -> Result<(), Failure> {
    let dir = dir(home);
    let pattern = glob(action)?;
    let segments = store::segments(&dir).map_err(Failure::runtime)?;
    // Walk back from the newest segment until enough entries match.
    let mut shown: Vec<String> = Vec::new();
    for (_, path) in segments.iter().rev() {
        let bytes = moat_core::atomic::read_regular(path, store::MAX_FILE_BYTES)
            .map_err(Failure::runtime)?;
        // Whole lines only: one being written as this reads is not damage.
        let mut here: Vec<String> = bytes
            .split_inclusive(|b| *b == b'\n')
            .filter_map(|l| l.strip_suffix(b"\n"))
            .filter_map(|l| show(l, pattern.as_ref()))
            .collect();
        here.append(&mut shown);
        shown = here;
        if shown.len() >= count {
            break;
        }
    }
    let start = shown.len().saturating_sub(count);
    let mut out = std::io::stdout().lock();
    for line in &shown[start..] {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    if !follow {
        return Ok(());
    }
    // Follow: poll for lines added to the newest segment, and for new segments.
    let mut at: Option<(PathBuf, u64)> = segments
        .last()
        .and_then(|(_, p)| Some((p.clone(), std::fs::metadata(p).ok()?.len())));
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let segments = store::segments(&dir).map_err(Failure::runtime)?;
        let start_index = match &at {
            Some((p, _)) => segments.iter().position(|(_, s)| s == p).unwrap_or(0),
            None => 0,
        };
        for (_, path) in &segments[start_index.min(segments.len())..] {
            let offset = match &at {
                Some((p, off)) if p == path => *off,
                _ => 0,
            };
            let offset = follow_segment(path, offset, pattern.as_ref())?;
            at = Some((path.clone(), offset));
        }
    }
}

/// Prints the complete lines of `path` after `offset`; returns where it stopped.
fn follow_segment(
    path: &Path,
    offset: u64,
    pattern: Option<&glob::Pattern>,
) -> Result<u64, Failure> {
    use std::io::{Seek, SeekFrom};
    // A FIFO or device put in the folder while this follows must not hang it.
    let mut file = moat_core::atomic::open_regular(path)
        .map_err(|e| Failure::runtime(anyhow!("{}: {e}", path.display())))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(Failure::runtime)?;
    let mut reader = std::io::BufReader::new(file);
    let mut position = offset;
    let mut line = Vec::new();
    let mut out = std::io::stdout().lock();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(Failure::runtime)?;
        if n == 0 || !line.ends_with(b"\n") {
            break; // an unfinished line is read again once it is whole
        }
        position += n as u64;
        if let Some(text) = show(&line[..n - 1], pattern) {
            let _ = writeln!(out, "{text}");
        }
    }
    let _ = out.flush();
    Ok(position)
}

/// Normalizes `--since` to the form entries carry, so that times compare as text.
fn since_time(since: &str) -> Result<String, Failure> {
    let full = if since.len() == 10 {
        format!("{since}T00:00:00Z")
    } else {
        since.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|_| {
        Failure::usage(anyhow!(
            "--since {since:?} is not a time: use RFC 3339 like 2026-11-23T10:00:00Z, or a date like 2026-11-23"
        ))
    })?;
    Ok(humantime::format_rfc3339_micros(t).to_string())
}

fn export(home: &Home, since: Option<&str>, out: Option<&Path>) -> Result<(), Failure> {
    let since = since.map(since_time).transpose()?;
    let dir = dir(home);
    let mut bytes = Vec::new();
    for (_, path) in store::segments(&dir).map_err(Failure::runtime)? {
        let segment = moat_core::atomic::read_regular(&path, store::MAX_FILE_BYTES)
            .map_err(Failure::runtime)?;
        for line in segment.split_inclusive(|b| *b == b'\n') {
            if !line.ends_with(b"\n") {
                continue; // an unfinished last line is not an entry
            }
            let keep = match &since {
                None => true,
                Some(t) => moat_audit::entry::parse(&line[..line.len() - 1])
                    .is_some_and(|e| e.time.as_str() >= t.as_str()),
            };
            if keep {
                bytes.extend_from_slice(line);
            }
        }
    }
    match out {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(Failure::runtime)
        }
        Some(path) => crate::vault_cmd::write_new(path, &bytes),
    }
}
