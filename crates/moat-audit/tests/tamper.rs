//! Every kind of tampering the issue lists, each detected as the right kind; recovery after
//! a crash; many writers; canaries.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_audit::sign::Kind;
use moat_audit::{
    Anchor, AuditKey, AuditWriter, BreakKind, Options, Record, Report, Statement, Trust, store,
    verify,
};

/// The vault's part, in memory: the latest checkpoint.
#[derive(Clone, Default)]
struct MemoryAnchor(std::sync::Arc<std::sync::Mutex<Option<Statement>>>);

impl Anchor for MemoryAnchor {
    fn store(&mut self, checkpoint: &Statement) -> Result<(), moat_audit::AnchorError> {
        *self.0.lock().unwrap() = Some(checkpoint.clone());
        Ok(())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    seed: [u8; 32],
    anchor: MemoryAnchor,
}

impl Fixture {
    fn new() -> Self {
        let key = AuditKey::generate().unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            seed: key.seed(),
            anchor: MemoryAnchor::default(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn open(&self, options: Options) -> AuditWriter {
        AuditWriter::open(
            self.path(),
            Some(AuditKey::from_seed(&self.seed)),
            Some(Box::new(self.anchor.clone())),
            options,
        )
        .unwrap()
    }

    /// Writes `n` entries, with a checkpoint every `every`, and closes (a last checkpoint).
    fn write(&self, n: u64, every: u64) {
        let w = self.open(Options {
            checkpoint_every: every,
            ..Options::default()
        });
        let log = w.log();
        for i in 0..n {
            log.record(Record::new("system", "test.event", format!("t{i}"), "ok").detail("i", i))
                .unwrap();
            if i % 7 == 0 {
                log.flush().unwrap(); // several group commits, several heads
            }
        }
        w.close().unwrap();
    }

    fn verify(&self) -> Report {
        let public = AuditKey::from_seed(&self.seed).public();
        let anchor = self.anchor.0.lock().unwrap().clone();
        let trust = Trust {
            public: &public,
            anchor: anchor.as_ref(),
        };
        verify::verify(self.path(), &trust, None, &mut |_, _| {}).unwrap()
    }

    fn segment(&self) -> PathBuf {
        store::segments(self.path())
            .unwrap()
            .last()
            .unwrap()
            .1
            .clone()
    }

    fn lines(&self) -> Vec<Vec<u8>> {
        std::fs::read(self.segment())
            .unwrap()
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn set_lines(&self, lines: &[Vec<u8>]) {
        std::fs::write(self.segment(), lines.concat()).unwrap();
    }
}

fn kind(report: &Report) -> Option<BreakKind> {
    report.broken.as_ref().map(|b| b.kind)
}

#[test]
fn an_untouched_log_is_intact() {
    let f = Fixture::new();
    f.write(50, 10);
    let r = f.verify();
    assert_eq!(r.broken, None);
    assert_eq!(r.entries, 50);
    assert_eq!(r.last_checkpoint, Some(50));
    assert_eq!(r.head, Some(50));
}

#[test]
fn one_byte_changed_in_the_middle_is_modified() {
    let f = Fixture::new();
    f.write(50, 10);
    let mut bytes = std::fs::read(f.segment()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(f.segment(), bytes).unwrap();
    assert_eq!(kind(&f.verify()), Some(BreakKind::Modified));
}

#[test]
fn two_entries_swapped_are_reordered() {
    let f = Fixture::new();
    f.write(50, 10);
    let mut lines = f.lines();
    lines.swap(20, 21);
    f.set_lines(&lines);
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::Reordered), "{r:?}");
    assert_eq!(r.broken.unwrap().seq, Some(21));
}

#[test]
fn one_entry_deleted_in_the_middle_is_deleted() {
    let f = Fixture::new();
    f.write(50, 10);
    let mut lines = f.lines();
    lines.remove(30);
    f.set_lines(&lines);
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::Deleted), "{r:?}");
    assert_eq!(r.broken.unwrap().seq, Some(31));
}

#[test]
fn the_tail_cut_after_the_last_checkpoint_is_truncated() {
    let f = Fixture::new();
    // A checkpoint every 40: the last at 40 while the writer runs; then 41..50 are only
    // covered by the head. Keep the writer from checkpointing at close by reading the log
    // before close, as a crash would leave it.
    let w = f.open(Options {
        checkpoint_every: 40,
        ..Options::default()
    });
    for i in 0..50 {
        w.log()
            .record(Record::new("system", "test.event", format!("t{i}"), "ok"))
            .unwrap();
        w.log().flush().unwrap();
    }
    // A crash now: no closing checkpoint.
    let lines = f.lines();
    std::mem::forget(w);
    let cp = f.anchor.0.lock().unwrap().clone().unwrap();
    assert_eq!(cp.seq, 40);
    f.set_lines(&lines[..45]);
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::Truncated), "{r:?}");
    assert!(r.broken.unwrap().detail.contains("head"));
}

#[test]
fn the_tail_cut_before_the_last_checkpoint_is_truncated() {
    let f = Fixture::new();
    f.write(50, 10);
    let lines = f.lines();
    f.set_lines(&lines[..25]);
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::Truncated), "{r:?}");
    assert_eq!(r.broken.unwrap().seq, Some(26));
}

#[test]
fn a_self_consistent_forged_chain_is_caught() {
    let f = Fixture::new();
    f.write(50, 10);
    // The forger writes a whole new chain with a key of their own, checkpoints and head
    // included, over the real files.
    let forged = tempfile::tempdir().unwrap();
    let w = AuditWriter::open(
        forged.path(),
        Some(AuditKey::generate().unwrap()),
        None,
        Options {
            checkpoint_every: 10,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..50 {
        w.log()
            .record(Record::new(
                "system",
                "test.event",
                format!("forged{i}"),
                "ok",
            ))
            .unwrap();
    }
    w.close().unwrap();
    for f2 in std::fs::read_dir(f.path()).unwrap() {
        std::fs::remove_file(f2.unwrap().path()).unwrap();
    }
    for f2 in std::fs::read_dir(forged.path()).unwrap() {
        let p = f2.unwrap().path();
        std::fs::copy(&p, f.path().join(p.file_name().unwrap())).unwrap();
    }
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::BadSignature), "{r:?}");

    // Without any checkpoints or head at all, the vault's checkpoint is missing.
    std::fs::remove_file(f.path().join(store::CHECKPOINTS)).unwrap();
    std::fs::remove_file(f.path().join(store::HEAD)).unwrap();
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::MissingCheckpoint), "{r:?}");
}

#[test]
fn the_checkpoint_file_deleted_is_a_missing_checkpoint() {
    let f = Fixture::new();
    f.write(50, 10);
    std::fs::remove_file(f.path().join(store::CHECKPOINTS)).unwrap();
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::MissingCheckpoint), "{r:?}");
}

#[test]
fn a_rewritten_entry_with_a_fresh_hash_is_modified() {
    let f = Fixture::new();
    f.write(20, 100);
    // Re-encode entry 5 with other contents and a correct hash of its own.
    let mut lines = f.lines();
    let old = moat_audit::entry::parse(lines[4].strip_suffix(b"\n").unwrap()).unwrap();
    let mut out = Vec::new();
    moat_audit::entry::encode(
        &mut out,
        5,
        &old.time,
        &Record::new("system", "test.event", "innocent", "ok"),
        &moat_audit::entry::unhex(old.prev_hash.as_bytes()).unwrap(),
    );
    lines[4] = out;
    f.set_lines(&lines);
    let r = f.verify();
    assert_eq!(kind(&r), Some(BreakKind::Modified), "{r:?}");
    assert_eq!(r.broken.unwrap().seq, Some(5));
}

#[test]
fn segments_rotate_and_chain_across() {
    let f = Fixture::new();
    let w = f.open(Options {
        segment_max_bytes: 2048,
        ..Options::default()
    });
    for i in 0..100 {
        w.log()
            .record(Record::new("system", "test.event", format!("t{i}"), "ok"))
            .unwrap();
        w.log().flush().unwrap();
    }
    w.close().unwrap();
    let segments = store::segments(f.path()).unwrap();
    assert!(segments.len() > 5, "{segments:?}");
    assert_eq!(f.verify().broken, None);
    let public = AuditKey::from_seed(&f.seed).public();
    let trust = Trust {
        public: &public,
        anchor: None,
    };
    let r = verify::verify(f.path(), &trust, Some(60), &mut |_, _| {}).unwrap();
    assert_eq!(r.broken, None);
    assert_eq!(r.entries, 41);
}

#[test]
fn a_torn_last_line_is_set_aside_and_the_chain_goes_on() {
    let f = Fixture::new();
    f.write(10, 100);
    let mut bytes = std::fs::read(f.segment()).unwrap();
    bytes.extend_from_slice(b"{\"seq\":11,\"time\":\"2026-");
    std::fs::write(f.segment(), &bytes).unwrap();
    let r = f.verify();
    assert_eq!(r.broken, None, "a torn tail is not tampering");
    assert!(r.unfinished_tail.is_some());

    let w = f.open(Options::default());
    let recovered = w.recovered().cloned().unwrap();
    assert!(recovered.set_aside.exists());
    assert_eq!(recovered.bytes, 23);
    w.log()
        .record(Record::new("system", "after", "x", "ok"))
        .unwrap();
    w.close().unwrap();
    let r = f.verify();
    assert_eq!(r.broken, None, "{r:?}");
    assert_eq!(r.entries, 12, "10, the recovery entry, and one more");
    let text = String::from_utf8(std::fs::read(f.segment()).unwrap()).unwrap();
    assert!(text.contains("\"action\":\"audit.recovered\""), "{text}");
}

#[test]
fn many_producers_and_two_writers_keep_one_chain() {
    let f = Fixture::new();
    let a = f.open(Options::default());
    let b = f.open(Options::default());
    std::thread::scope(|s| {
        for t in 0..8 {
            let log = if t % 2 == 0 { a.log() } else { b.log() };
            s.spawn(move || {
                for i in 0..500 {
                    log.record(Record::new("system", "load", format!("{t}-{i}"), "ok"))
                        .unwrap();
                }
            });
        }
    });
    a.close().unwrap();
    b.close().unwrap();
    let r = f.verify();
    assert_eq!(r.broken, None, "{r:?}");
    assert_eq!(r.entries, 4000);
}

#[test]
fn a_full_queue_makes_producers_wait_rather_than_drop() {
    let f = Fixture::new();
    let w = f.open(Options {
        queue: 1,
        ..Options::default()
    });
    std::thread::scope(|s| {
        for t in 0..4 {
            let log = w.log();
            s.spawn(move || {
                for i in 0..300 {
                    log.record(Record::new("system", "load", format!("{t}-{i}"), "ok"))
                        .unwrap();
                }
            });
        }
    });
    w.close().unwrap();
    assert_eq!(f.verify().entries, 1200);
}

#[test]
fn canary_secrets_never_reach_the_log() {
    let canary = "sk-ant-api03-AUDITcanary0123456789abcdef";
    moat_core::redact::global().add_known_secret("vault-held-CANARY-value-42");
    let f = Fixture::new();
    let w = f.open(Options::default());
    w.log()
        .record(
            Record::new("api:127.0.0.1", "auth.denied", "/v1/messages", "denied")
                .detail("x-api-key", canary)
                .detail(
                    "note",
                    format!("client sent {canary} and vault-held-CANARY-value-42"),
                )
                .detail(
                    "headers",
                    serde_json::json!([{"Authorization": "Bearer abc"}]),
                ),
        )
        .unwrap();
    w.close().unwrap();
    let all: Vec<u8> = std::fs::read_dir(f.path())
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let text = String::from_utf8_lossy(&all);
    assert!(
        !text.contains("CANARY") && !text.contains("AUDITcanary"),
        "{text}"
    );
    assert!(text.contains("auth.denied"));
}

#[test]
fn a_forged_head_is_a_bad_signature() {
    let f = Fixture::new();
    f.write(10, 100);
    let other = AuditKey::generate().unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(f.path().join(store::HEAD))
        .unwrap();
    let s = other.sign(Kind::Head, 10, &[0; 32], "now");
    store::write_head(&file, 0, &s).unwrap();
    store::write_head(&file, 1, &s).unwrap();
    assert_eq!(kind(&f.verify()), Some(BreakKind::BadSignature));
}

/// The child side of the crash test: appends as fast as it can until killed.
#[test]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var("MOAT_AUDIT_CRASH_DIR") else {
        return; // only meaningful when the crash test runs this binary as its child
    };
    let seed: [u8; 32] = hex::decode(std::env::var("MOAT_AUDIT_CRASH_SEED").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let w = AuditWriter::open(
        Path::new(&dir),
        Some(AuditKey::from_seed(&seed)),
        None,
        Options {
            checkpoint_every: 500,
            segment_max_bytes: 256 * 1024,
            ..Options::default()
        },
    )
    .unwrap();
    let log = w.log();
    std::fs::write(Path::new(&dir).join("started"), b"").unwrap();
    for i in 0u64.. {
        log.record(Record::new("system", "load", "x", "ok").detail("i", i))
            .unwrap();
    }
}

#[test]
fn killed_during_heavy_appends_verifies_up_to_the_last_synced_entry() {
    let f = Fixture::new();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_appends_until_killed", "--nocapture"])
            .env("MOAT_AUDIT_CRASH_DIR", f.path())
            .env("MOAT_AUDIT_CRASH_SEED", hex::encode(f.seed))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = f.path().join("started");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !started.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300 + 100 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_file(&started).unwrap();
        let public = AuditKey::from_seed(&f.seed).public();
        let trust = Trust {
            public: &public,
            anchor: None,
        };
        let r = verify::verify(f.path(), &trust, None, &mut |_, _| {}).unwrap();
        assert_eq!(r.broken, None, "round {round}: {r:?}");
        assert!(r.entries > 0);
        assert!(r.head.unwrap() <= r.last_seq);
    }
}
