//! `moat scan FILE|-`: the prompt-injection scanner on a file or standard input.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use moat_guard::{Scanner, Tier};

use crate::Failure;

/// The exit status of each tier.
fn exit_code(tier: Tier) -> ExitCode {
    ExitCode::from(match tier {
        Tier::None => 0,
        Tier::Low => 3,
        Tier::Medium => 4,
        Tier::High => 5,
    })
}

/// Scans `file` (`-` for stdin) and prints the report.
pub fn run(file: &Path, json: bool) -> Result<ExitCode, Failure> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")
            .map_err(Failure::runtime)?;
    } else {
        bytes = std::fs::read(file)
            .with_context(|| format!("cannot read {}", file.display()))
            .map_err(Failure::runtime)?;
    }
    // Spans are byte offsets into the text as decoded; invalid UTF-8 becomes U+FFFD.
    let text = String::from_utf8_lossy(&bytes);
    let report = Scanner::global().scan(&text);
    if json {
        let out = serde_json::to_string_pretty(&report).expect("a report serializes");
        println!("{out}");
        return Ok(exit_code(report.tier));
    }
    println!("tier: {} (score {:.2})", report.tier.as_str(), report.score);
    let redactor = moat_core::redact::global();
    for s in &report.signals {
        let line = text[..s.span.start].matches('\n').count() + 1;
        let excerpt: String = text[s.span.clone()].chars().take(80).collect();
        // Debug formatting escapes control characters: scanned text may be hostile.
        let excerpt = format!("{:?}", redactor.redact(&excerpt));
        let hidden = s
            .encoding
            .as_deref()
            .map(|e| format!(" (hidden: {e})"))
            .unwrap_or_default();
        println!(
            "  {}..{} line {line}: {} {excerpt}{hidden} [{}]",
            s.span.start,
            s.span.end,
            s.family.as_str(),
            s.rule
        );
    }
    Ok(exit_code(report.tier))
}
