//! `write_atomic` under SIGKILL: a writer process is killed at random instants, many
//! times, and the file must always be one complete version, never a torn or empty one.
//!
//! The writer is this same test binary, re-run with `MOAT_ATOMIC_WRITER` set: the
//! `writer_process` test then loops forever writing versions.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_core::atomic::write_atomic;

const WRITER_ENV: &str = "MOAT_ATOMIC_WRITER";
const SIZE: usize = 256 * 1024;

/// Version `n` of the file: a header naming `n` and the length, then filler derived from `n`.
fn version(n: u64) -> Vec<u8> {
    let mut v = format!("version {n} length {SIZE}\n").into_bytes();
    let fill = b'a' + (n % 26) as u8;
    v.resize(SIZE, fill);
    v
}

fn is_whole_version(bytes: &[u8]) -> bool {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let header = String::from_utf8_lossy(&bytes[..end]);
    let Some(n) = header
        .strip_prefix("version ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
    else {
        return false;
    };
    bytes == version(n).as_slice()
}

/// In writer mode (set by the crash test), writes versions until killed. Run normally,
/// it checks one write and one overwrite.
#[test]
fn writer_process() {
    match std::env::var_os(WRITER_ENV) {
        Some(path) => {
            let path = Path::new(&path);
            let start: u64 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            for n in start.. {
                write_atomic(path, &version(n)).unwrap();
            }
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            write_atomic(&path, &version(1)).unwrap();
            write_atomic(&path, &version(2)).unwrap();
            assert!(is_whole_version(&std::fs::read(&path).unwrap()));
            assert_eq!(std::fs::read(&path).unwrap(), version(2));
        }
    }
}

#[test]
fn killed_writers_never_leave_a_torn_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.bin");
    write_atomic(&path, &version(0)).unwrap();
    let exe = std::env::current_exe().unwrap();

    // A cheap, seedless PRNG: the point is spread, not reproducibility.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };

    let rounds = 120;
    let mut changed = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let before = std::fs::read(&path).unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "writer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Process start-up takes a few ms; kill anywhere from before the first write to
        // deep into a stream of writes.
        std::thread::sleep(Duration::from_micros(next() % 40_000));
        child.kill().unwrap(); // SIGKILL: no destructors, no cleanup.
        child.wait().unwrap();

        let after = std::fs::read(&path).unwrap();
        assert!(
            is_whole_version(&after),
            "round {round}: torn file ({} bytes)",
            after.len()
        );
        if after != before {
            changed += 1;
        }
    }
    // The kills must have landed during writing, not only before it started.
    assert!(
        changed > rounds / 4,
        "only {changed} of {rounds} rounds wrote anything; the test is not exercising writes"
    );
    eprintln!(
        "{rounds} kills in {:?}; file changed in {changed} rounds, always whole",
        started.elapsed()
    );
}
