//! bench/audit: the audit log against the baselines that bound it.
//!
//! 1. Appends: N entries recorded by P producer threads through the writer (redaction,
//!    encoding, hashing, group commit, signed head), then the same bytes written by a raw
//!    loop in the same number of write+fdatasync rounds. Ratio = audit rate / raw rate.
//! 2. Verify: the resulting log verified, against SHA-256 alone over the same bytes read
//!    the same way. Ratio = verify time / SHA-256 time (target: below 2).
//!
//! Usage: moat-bench-audit-log [ENTRIES] [PRODUCERS]

use std::io::Write;
use std::time::Instant;

use moat_audit::{AuditKey, AuditWriter, Options, Record, Trust, store, verify};
use sha2::Digest;

fn main() {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let producers: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = AuditKey::generate().expect("randomness");
    let public = key.public();

    // 1. Appends through the writer.
    let writer = AuditWriter::open(dir.path(), Some(key), None, Options::default()).unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for p in 0..producers {
            let log = writer.log();
            s.spawn(move || {
                for i in 0..entries / producers {
                    log.record(
                        Record::new("api:127.0.0.1", "auth.denied", "/v1/messages", "refused")
                            .detail("code", "invalid_api_key")
                            .detail("producer", p)
                            .detail("i", i),
                    )
                    .unwrap();
                }
            });
        }
    });
    let stats = writer.log().flush().unwrap();
    let audit_secs = start.elapsed().as_secs_f64();
    writer.close().unwrap();

    // The same bytes, written raw in the same number of synced rounds.
    let mut all = Vec::new();
    for (_, path) in store::segments(dir.path()).unwrap() {
        all.extend(std::fs::read(path).unwrap());
    }
    let raw_path = dir.path().join("raw.bin");
    let mut raw = std::fs::File::create(&raw_path).unwrap();
    let chunk = (all.len() as u64).div_ceil(stats.commits.max(1)) as usize;
    let start = Instant::now();
    for piece in all.chunks(chunk.max(1)) {
        raw.write_all(piece).unwrap();
        raw.sync_data().unwrap();
    }
    let raw_secs = start.elapsed().as_secs_f64();
    drop(raw);
    std::fs::remove_file(&raw_path).unwrap();

    let audit_rate = stats.entries as f64 / audit_secs;
    let raw_rate = stats.entries as f64 / raw_secs;
    println!(
        "appends: {} entries, {producers} producers, {} group commits, {:.1} MiB",
        stats.entries,
        stats.commits,
        all.len() as f64 / 1048576.0
    );
    println!("  audit log   {audit_rate:>12.0} entries/s");
    println!("  raw loop    {raw_rate:>12.0} entries/s (same bytes, same fsyncs)");
    println!(
        "  ratio audit/raw {:.2}   target: >= 100000 entries/s sustained -> {}",
        audit_rate / raw_rate,
        if audit_rate >= 100_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    // 2. Verify against SHA-256 over the same bytes, best of 3 each.
    let trust = Trust {
        public: &public,
        anchor: None,
    };
    let mut verify_best = f64::MAX;
    let mut sha_best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let report = verify::verify(dir.path(), &trust, None, &mut |_, _| {}).unwrap();
        verify_best = verify_best.min(start.elapsed().as_secs_f64());
        assert!(report.broken.is_none(), "{report:?}");
        assert_eq!(report.entries, stats.entries);

        let start = Instant::now();
        let mut h = sha2::Sha256::new();
        for (_, path) in store::segments(dir.path()).unwrap() {
            h.update(std::fs::read(path).unwrap());
        }
        std::hint::black_box(h.finalize());
        sha_best = sha_best.min(start.elapsed().as_secs_f64());
    }
    println!("verify: {} entries", stats.entries);
    println!("  moat audit verify {:>8.1} ms", verify_best * 1000.0);
    println!(
        "  SHA-256 alone     {:>8.1} ms (same bytes, read the same way)",
        sha_best * 1000.0
    );
    println!(
        "  ratio verify/sha256 {:.2}   target: < 2 -> {}",
        verify_best / sha_best,
        if verify_best / sha_best < 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
