//! `moat audit`, and the binary's side of the audit log: the signing key and the latest
//! checkpoint live in the vault, under names of their own.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use moat_audit::verify::{self, Trust};
use moat_audit::{AuditKey, Statement, store};
use moat_core::home::Home;

use crate::app::audit::{ANCHOR_ENTRY, KEY_ENTRY, dir, parse_key};
use crate::cli::AuditCommand;
use crate::{Failure, app};

/// Runs `moat audit ...`.
pub(crate) fn run(home: &Home, command: &AuditCommand) -> Result<(), Failure> {
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
    let vault = app::vault::unlock(home).map_err(|f| {
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
        Some(path) => app::vault::write_new(path, &bytes),
    }
}
