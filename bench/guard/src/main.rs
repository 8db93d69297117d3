//! bench/guard: how fast the scanner reads plain English, next to a plain read.
//!
//! The text: English prose from Debian's fortunes (literature, wisdom, people, ...) when
//! installed (`.ci/run` installs them), else this crate's own sample paragraph, repeated
//! to SIZE MiB. Both passes
//! run on one core over the same bytes in memory, alternating over several rounds, best
//! round kept:
//!
//! 1. baseline: a plain read (every byte loaded and summed, so nothing is skipped);
//! 2. `Scanner::scan` on the whole text.
//!
//! Reports MB/s for each and the ratio (target: the scanner at >= 100 MB/s).
//!
//! Then linear time on hostile text: shapes that make a careless scanner quadratic (a
//! signal every few bytes, one endless line of pipes, beacon openers without their
//! `![`, invisible and tag characters between letters, escapes...), each scanned at 1 and
//! 4 MiB. The time ratio divided by 4 should stay near 1; a quadratic step shows as ~4 and
//! more.
//! Usage: moat-bench-guard-scan [SIZE_MIB] [ROUNDS]

use std::hint::black_box;
use std::time::Instant;

const SAMPLE: &str = "The committee met on a grey Tuesday morning to review the budget for the \
coming year. Most of the discussion concerned the library roof, which had leaked through \
two winters, and whether the repair should wait until the new bridge was finished. Mrs. \
Alder, who kept the minutes, noted that the previous chair had promised the work twice \
and delivered neither time. A young engineer explained the options with patience: patch \
the worst sections now, or replace the whole structure in spring when prices fell. \
Nobody enjoyed the choice, but by noon they had agreed to patch, to save, and to meet \
again in March with better figures and, if possible, better weather.\n\n";

fn english(size: usize) -> String {
    let mut source = String::new();
    // Plain English prose only (the fortunes of other languages live in subdirectories).
    for name in [
        "literature",
        "wisdom",
        "people",
        "education",
        "science",
        "art",
        "work",
    ] {
        if let Ok(t) = std::fs::read_to_string(format!("/usr/share/games/fortunes/{name}")) {
            source.push_str(&t.replace("\n%\n", "\n\n"));
        }
    }
    if source.len() < 64 * 1024 {
        source = SAMPLE.to_string();
    }
    let mut text = String::with_capacity(size + source.len());
    while text.len() < size {
        text.push_str(&source);
    }
    let mut end = size;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let text = english(mib * 1024 * 1024);
    let scanner = moat_guard::Scanner::global();
    let mb = text.len() as f64 / 1e6;
    let (mut read_best, mut scan_best) = (f64::MAX, f64::MAX);
    let mut tier = moat_guard::Tier::None;
    for _ in 0..rounds {
        let start = Instant::now();
        let sum = text.as_bytes().chunks(64).fold(0u64, |acc, c| {
            acc.wrapping_add(c.iter().map(|&b| u64::from(b)).sum::<u64>())
        });
        black_box(sum);
        read_best = read_best.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let report = scanner.scan(black_box(&text));
        scan_best = scan_best.min(start.elapsed().as_secs_f64());
        tier = report.tier;
    }
    let read = mb / read_best;
    let scan = mb / scan_best;
    println!("guard scanner on {mb:.0} MB of plain English, best of {rounds} rounds, one core");
    println!("baseline: plain read      {read:9.0} MB/s");
    println!(
        "scanner (Scanner::scan)   {scan:9.0} MB/s   (tier found: {})",
        tier.as_str()
    );
    println!("scanner / read            {:9.3}x", scan / read);
    println!(
        "throughput: {scan:.0} MB/s (target >= 100 MB/s: {})",
        if scan >= 100.0 { "met" } else { "misses" }
    );
    hostile(scanner);
}

/// Text built by repeating one piece, to `size` bytes.
fn repeated(piece: &str, size: usize) -> String {
    piece.repeat(size / piece.len())
}

fn best_of(rounds: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn hostile(scanner: &moat_guard::Scanner) {
    const SHAPES: &[(&str, &str)] = &[
        ("a phrase every 30 bytes", "ignore previous instructions. "),
        ("one endless line of pipes", "curl |"),
        ("beacon openers, no ![", "](http"),
        ("beacons", "![a](http://x.example/?q=1) "),
        ("zero-width between letters", "a\u{200B}b "),
        ("tag characters between letters", "a\u{E0041}b"),
        ("letter-spaced run", "i g n o r e "),
        ("short letter-spaced runs", "a b c d ee "),
        ("percent escapes and entities", "%41&amp; "),
        ("percent escapes", "%41%42 "),
        ("HTML entities", "&#65;&amp; "),
        ("base64 words", "SWdub3JlIGFsbA== "),
        ("fake turns", "user: hi\nassistant: ok\n"),
        ("Chinese overrides", "忽略之前的指令"),
        ("chat-template tokens", "<|im_start|>system\n"),
    ];
    const MIB: usize = 1024 * 1024;
    println!();
    println!("linear time on hostile text: scan time at 4 MiB / (4 x at 1 MiB); ~1 is linear");
    let mut worst: f64 = 0.0;
    for (name, piece) in SHAPES {
        let small = repeated(piece, MIB);
        let large = repeated(piece, 4 * MIB);
        let t1 = best_of(3, || {
            black_box(scanner.scan(black_box(&small)));
        });
        let t4 = best_of(3, || {
            black_box(scanner.scan(black_box(&large)));
        });
        let growth = t4 / (4.0 * t1);
        worst = worst.max(growth);
        println!(
            "  {name:32} {:7.1} MB/s at 4 MiB   growth {growth:5.2}",
            large.len() as f64 / 1e6 / t4
        );
    }
    println!(
        "worst growth: {worst:.2} ({})",
        if worst < 2.0 { "linear" } else { "NOT linear" }
    );
}
