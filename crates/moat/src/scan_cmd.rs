//! `moat scan FILE|-`: the prompt-injection scanner on a file or standard input.

use std::io::{Read, Write};
use std::ops::Range;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use moat_guard::{Report, Scanner, Tier};

use crate::Failure;

/// The most `moat scan` reads.
const MAX_INPUT: u64 = 256 * 1024 * 1024;

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
pub(crate) fn run(file: &Path, json: bool) -> Result<ExitCode, Failure> {
    let mut bytes = Vec::new();
    // Pipes are welcome (`moat scan <(curl ...)`); an endless source is cut off.
    let read = if file == Path::new("-") {
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)
            .context("cannot read standard input")
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", file.display()))
    };
    read.map_err(Failure::runtime)?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(Failure::usage(anyhow::anyhow!(
            "the input is larger than {} MiB, more than moat scan reads at once: split it",
            MAX_INPUT >> 20
        )));
    }
    let input = Input::decode(&bytes);
    let report = Scanner::global().scan(&input.text);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if json {
        // Spans as byte offsets into the input, as in the text report.
        let mut shown = report.clone();
        for s in &mut shown.signals {
            s.span = input.original(s.span.clone());
        }
        serde_json::to_writer_pretty(&mut out, &shown)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &input, &report)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(exit_code(report.tier)),
        // A reader that stopped early (`| head`) has what it wanted: the tier still counts.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit_code(report.tier)),
        Err(e) => Err(Failure::runtime(
            anyhow::Error::from(e).context("cannot write the report"),
        )),
    }
}

/// The input as the scanner reads it (invalid UTF-8 as U+FFFD), and the way back to the
/// input's own byte offsets, so that spans point into the file even where it is not text.
struct Input {
    text: String,
    /// For each U+FFFD put in for invalid bytes: its offset in `text`, and what to add to
    /// a text offset after it (up to the next one) to get the input offset. One pair per
    /// replacement, so binary input costs a bounded multiple of its size.
    replaced: Vec<(usize, isize)>,
}

impl Input {
    fn decode(bytes: &[u8]) -> Input {
        let mut text = String::with_capacity(bytes.len());
        let mut replaced = Vec::new();
        let mut at = 0;
        for chunk in bytes.utf8_chunks() {
            text.push_str(chunk.valid());
            at += chunk.valid().len();
            if !chunk.invalid().is_empty() {
                let replacement = text.len();
                text.push(char::REPLACEMENT_CHARACTER);
                at += chunk.invalid().len();
                replaced.push((replacement, at as isize - text.len() as isize));
            }
        }
        Input { text, replaced }
    }

    /// The input bytes that `span` of the text came from.
    fn original(&self, span: Range<usize>) -> Range<usize> {
        self.offset(span.start)..self.offset(span.end)
    }

    /// Spans fall on character boundaries: after a replacement the offset shifts by what
    /// it replaced; a replacement character itself starts where its invalid bytes do.
    fn offset(&self, t: usize) -> usize {
        let i = self.replaced.partition_point(|&(at, _)| at <= t);
        let shift = |i: usize| i.checked_sub(1).map_or(0, |i| self.replaced[i].1);
        let shift = match i.checked_sub(1).map(|k| self.replaced[k].0) {
            // On (or inside) a replacement character: the shift before it.
            Some(at) if t < at + char::REPLACEMENT_CHARACTER.len_utf8() => shift(i - 1),
            _ => shift(i),
        };
        t.saturating_add_signed(shift)
    }
}

/// The report for people: the tier, then each signal with its span (in input bytes),
/// line and excerpt.
fn write_text(out: &mut impl Write, input: &Input, report: &Report) -> std::io::Result<()> {
    let text = input.text.as_str();
    writeln!(
        out,
        "tier: {} (score {:.2})",
        report.tier.as_str(),
        report.score
    )?;
    let redactor = moat_core::redact::global();
    // Signals come in text order: lines are counted as the spans move on, not from the
    // start for each (hostile text can carry a signal every few bytes).
    let (mut counted_to, mut line) = (0, 1);
    for s in &report.signals {
        if s.span.start > counted_to {
            line += text.as_bytes()[counted_to..s.span.start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = s.span.start;
        }
        let excerpt: String = text[s.span.clone()].chars().take(80).collect();
        // Debug formatting escapes control characters: scanned text may be hostile.
        let excerpt = format!("{:?}", redactor.redact(&excerpt));
        let hidden = s
            .encoding
            .as_deref()
            .map(|e| format!(" (hidden: {e})"))
            .unwrap_or_default();
        let span = input.original(s.span.clone());
        writeln!(
            out,
            "  {}..{} line {line}: {} {excerpt}{hidden} [{}]",
            span.start,
            span.end,
            s.family.as_str(),
            s.rule
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_map_back_to_the_input_bytes_around_invalid_utf8() {
        let input = Input::decode(b"ab\xff\xfecd\xe2\x82");
        assert_eq!(input.text, "ab\u{FFFD}\u{FFFD}cd\u{FFFD}");
        // "ab" | U+FFFD (\xff) | U+FFFD (\xfe) | "cd" | U+FFFD (\xe2\x82, cut short)
        assert_eq!(input.original(0..2), 0..2);
        assert_eq!(input.original(2..5), 2..3);
        assert_eq!(input.original(2..8), 2..4);
        assert_eq!(input.original(8..10), 4..6);
        assert_eq!(input.original(8..13), 4..8);
        assert_eq!(input.original(13..13), 8..8);
        let valid = Input::decode("héllo".as_bytes());
        assert_eq!(valid.original(1..3), 1..3);
        assert_eq!(valid.original(0..6), 0..6);
        assert_eq!(Input::decode(b"").original(0..0), 0..0);
    }
}
