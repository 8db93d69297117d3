//! A command that talks while it runs: its stdin and stdout are the caller's pipes, at
//! each level, and dropping the stop pipe ends it and everything it started.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use moat_sandbox::{Level, Outcome, Spec, attached_pipes, run_attached};

/// A line-by-line echo server that also starts a background sleeper, so that ending it
/// must reach a whole tree.
const ECHO: &str = "sleep 600 & echo started >&2; while read -r line; do echo \"got $line\"; done";

fn converse(level: Level) {
    let workspace = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("/bin/sh", ["-c", ECHO], workspace.path());
    spec.level = level;
    spec.limits.wall_time = Duration::from_secs(120);
    let (io, talk) = attached_pipes().unwrap();
    let running = std::thread::spawn(move || run_attached(&spec, io));

    let mut to = std::fs::File::from(talk.to_command);
    let mut from = BufReader::new(std::fs::File::from(talk.from_command));
    for word in ["one", "two", "three"] {
        writeln!(to, "{word}").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        assert_eq!(line, format!("got {word}\n"), "at level {}", level.name());
    }

    // Still running, with its stdin open: only the stop pipe ends it.
    let started = Instant::now();
    drop(talk.stop);
    let report = running.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopping took {:?}",
        started.elapsed()
    );
    assert_eq!(
        report.outcome,
        Outcome::Signaled(libc::SIGKILL),
        "{report:?}"
    );
    assert!(report.stdout.is_empty(), "the caller read stdout itself");
    assert_eq!(String::from_utf8_lossy(&report.stderr), "started\n");
    // The reader sees the end: nothing in the sandbox holds the pipe any more.
    let mut rest = String::new();
    assert_eq!(from.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    drop(to);
}

#[test]
fn a_process_level_command_talks_over_the_callers_pipes_until_stopped() {
    converse(Level::Process);
}

#[test]
fn a_none_level_command_talks_over_the_callers_pipes_until_stopped() {
    converse(Level::None);
}

#[test]
fn a_command_that_exits_by_itself_reports_its_status() {
    let workspace = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("/bin/sh", ["-c", "read -r line; exit 3"], workspace.path());
    spec.level = Level::Process;
    let (io, talk) = attached_pipes().unwrap();
    let running = std::thread::spawn(move || run_attached(&spec, io));
    let mut to = std::fs::File::from(talk.to_command);
    writeln!(to, "bye").unwrap();
    let report = running.join().unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Exited(3));
    drop(talk.stop);
}

#[test]
fn the_wall_time_still_ends_an_attached_command() {
    let workspace = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("/bin/sh", ["-c", "cat"], workspace.path());
    spec.level = Level::Process;
    spec.limits.wall_time = Duration::from_millis(500);
    let (io, talk) = attached_pipes().unwrap();
    let report = std::thread::spawn(move || run_attached(&spec, io))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, Outcome::TimedOut);
    drop(talk);
}
