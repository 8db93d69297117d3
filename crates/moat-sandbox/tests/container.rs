//! The `container` level against a real gVisor: escape attempts contained, limits held,
//! nothing left behind.
//!
//! These need root and `runsc` on PATH (Debian's package `runsc`; `.ci/run` installs it).
//! Without them they fail, saying what is missing, rather than pass silently.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use moat_sandbox::{Level, LimitMechanism, Outcome, Report, SandboxError, Spec, run};

fn require_runsc() {
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    assert!(
        uid == 0,
        "THE CONTAINER LEVEL NEEDS ROOT: run these tests as root, as CI does"
    );
    assert!(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|dir| dir.join("runsc").is_file()),
        "RUNSC IS NOT INSTALLED: apt-get install runsc (gVisor), as .ci/run does"
    );
}

fn spec(workspace: &Path, script: &str) -> Spec {
    require_runsc();
    let mut spec = Spec::new("/bin/sh", ["-c", script], workspace);
    spec.level = Level::Container;
    spec
}

fn run_ok(spec: &Spec) -> Report {
    match run(spec) {
        Ok(report) => report,
        Err(e) => panic!("the gVisor sandbox could not start: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What runsc left: its cgroups (in any hierarchy) and bundle folders (in /run or the
/// temporary folder), named `moat-runsc-<this test's pid>-<n>`.
fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let dirs = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path())
        .chain([
            Path::new("/sys/fs/cgroup").to_owned(),
            Path::new("/run").to_owned(),
            std::env::temp_dir(),
        ]);
    let prefix = format!("moat-runsc-{}-", std::process::id());
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_command_runs_in_gvisor_with_only_its_workspace_writable_and_secrets_out_of_sight() {
    let ws = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let canary = "moat-canary-5e1d2b7a";
    std::fs::write(home.path().join("vault.moat"), canary).unwrap();
    let env_canary = "moat-env-canary-0ddba11";
    // SAFETY: nextest runs each test in a process of its own; nothing else reads the
    // environment concurrently here.
    unsafe { std::env::set_var("MOAT_TEST_SECRET", env_canary) };
    let script = format!(
        "echo made > /workspace/out; echo x > /etc/x; echo x > /usr/x; echo x > /x; \
         cat /etc/shadow; ls /root; cat {home}/vault.moat; cat /proc/1/environ; env; id -u; \
         dmesg 2>&1 | head -1; exit 3",
        home = home.path().display()
    );
    let mut s = spec(ws.path(), &script);
    s.hidden.push(home.path().to_path_buf());
    s.env.push(("DECLARED".into(), "yes".into()));
    let report = run_ok(&s);
    let all = text(&report.stdout) + &text(&report.stderr);
    assert_eq!(report.outcome, Outcome::Exited(3), "{all}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out")).unwrap(),
        "made\n"
    );
    assert!(!all.contains(canary) && !all.contains(env_canary), "{all}");
    assert!(all.contains("DECLARED=yes"), "{all}");
    assert!(all.contains("/etc/shadow: No such file"), "{all}");
    assert!(
        all.contains("\n65534\n"),
        "the command runs as nobody: {all}"
    );
    for path in ["/etc/x", "/usr/x", "/x"] {
        assert!(
            all.contains(&format!("cannot create {path}")),
            "writing {path} must fail: {all}"
        );
    }
    assert!(
        dmesg_is_gvisor(&report),
        "the command did not run on gVisor's kernel: {all}"
    );
    assert_eq!(report.enforcement.level, Level::Container);
    assert_eq!(report.enforcement.limits, LimitMechanism::Runsc);
    assert!(!report.enforcement.network);
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

/// gVisor's `dmesg` is its own boot log, which names it.
fn dmesg_is_gvisor(report: &Report) -> bool {
    let out = text(&report.stdout);
    out.contains("gVisor") || out.contains("Starting gVisor")
}

#[test]
fn a_listener_on_the_host_loopback_sees_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = tempfile::tempdir().unwrap();
    let report = run_ok(&spec(
        ws.path(),
        &format!(
            "python3 -c 'import socket; s=socket.socket(); s.settimeout(2); s.connect((\"127.0.0.1\", {port}))' \
             && echo CONNECTED; exit 0"
        ),
    ));
    assert!(!text(&report.stdout).contains("CONNECTED"), "{report:?}");
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
}

#[test]
fn the_wall_time_kills_the_container_and_nothing_is_left() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), "echo started; sleep 60 & sleep 60");
    s.limits.wall_time = Duration::from_secs(2);
    let report = run_ok(&s);
    assert_eq!(report.outcome, Outcome::TimedOut, "{report:?}");
    assert!(text(&report.stdout).contains("started"));
    assert!(
        report.elapsed < Duration::from_secs(2 + 3),
        "killing took {:?}",
        report.elapsed
    );
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

#[test]
fn a_fork_bomb_is_bounded() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(
        ws.path(),
        "python3 -c '
import os, time
n = 0
try:
    while n < 500:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError as e:
    print(\"stopped after\", n, e.errno)
'",
    );
    s.limits.processes = 16;
    s.limits.wall_time = Duration::from_secs(20);
    let report = run_ok(&s);
    let out = text(&report.stdout);
    let started: usize = out
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the fork bomb was not stopped: {out} {report:?}"));
    assert!(started < 16, "{out}");
}

#[test]
fn a_memory_hog_is_killed() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(
        ws.path(),
        "python3 -c '
x = []
while True:
    x.append(bytearray(16 << 20))
'",
    );
    s.limits.memory_bytes = 64 * 1024 * 1024;
    let report = run_ok(&s);
    assert!(
        matches!(
            report.outcome,
            Outcome::Signaled(libc::SIGKILL) | Outcome::Exited(1)
        ),
        "{report:?}"
    );
}

#[test]
fn a_missing_program_is_an_exec_error_and_signals_are_read_back() {
    let ws = tempfile::tempdir().unwrap();
    let mut missing = spec(ws.path(), "true");
    missing.program = "no-such-tool".into();
    let err = run(&missing).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SandboxError::Exec { .. }), "{message}");
    assert!(message.contains("no-such-tool"), "{message}");
    assert!(!message.contains("running container"), "{message}");

    let report = run_ok(&spec(ws.path(), "kill -SEGV $$"));
    assert_eq!(report.outcome, Outcome::Signaled(libc::SIGSEGV));
}

#[test]
fn network_grants_are_refused_at_the_container_level() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), "true");
    s.network = Some(moat_sandbox::Network {
        grants: vec![moat_sandbox::NetGrant::parse("example.com").unwrap()],
        judge: std::sync::Arc::new(|_, _| Err("no".into())),
    });
    let message = run(&s).unwrap_err().to_string();
    assert!(message.contains("process level"), "{message}");
}

#[test]
fn an_attached_command_talks_over_the_callers_pipes_inside_gvisor() {
    use std::io::{BufRead, BufReader, Write};
    let workspace = tempfile::tempdir().unwrap();
    let spec = spec(
        workspace.path(),
        "while read -r line; do echo \"got $line\"; done",
    );
    let (io, talk) = moat_sandbox::attached_pipes().unwrap();
    let running = std::thread::spawn(move || moat_sandbox::run_attached(&spec, io));
    let mut to = std::fs::File::from(talk.to_command);
    let mut from = BufReader::new(std::fs::File::from(talk.from_command));
    writeln!(to, "hello").unwrap();
    let mut line = String::new();
    from.read_line(&mut line).unwrap();
    assert_eq!(line, "got hello\n");
    drop(talk.stop);
    let report = running.join().unwrap().unwrap();
    assert!(!report.outcome.success(), "{report:?}");
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}
