//! Escape attempts against the `process` level, each contained with the right outcome.
//!
//! These run real commands (sh, bash, coreutils, python3 from the host's /usr) in real
//! namespaces. They need root, as in CI, or unprivileged user namespaces; a kernel without
//! a feature the sandbox relies on fails them loudly rather than passing silently.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use moat_sandbox::{Access, Grant, LimitMechanism, Outcome, Report, SandboxError, Spec, run};

fn spec(workspace: &Path, script: &str) -> Spec {
    Spec::new("/bin/sh", ["-c", script], workspace)
}

fn run_ok(spec: &Spec) -> Report {
    match run(spec) {
        Ok(report) => report,
        Err(e) => panic!("the sandbox could not start: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_kernel_gives_every_layer() {
    let ws = tempfile::tempdir().unwrap();
    let report = run_ok(&spec(
        ws.path(),
        "grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status; id -u; hostname",
    ));
    let out = text(&report.stdout);
    assert!(report.outcome.success(), "{report:?}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("\n1000\nmoat-sandbox"), "{out}");
    let abi = report.enforcement.landlock_abi;
    assert!(
        abi.is_some(),
        "LANDLOCK IS NOT AVAILABLE on this kernel (CONFIG_SECURITY_LANDLOCK and lsm=landlock): the filesystem rules were not applied"
    );
    if is_root() {
        assert_eq!(
            report.enforcement.host_uid, 65534,
            "root's sandbox must be nobody on the host"
        );
    }
    assert!(!report.enforcement.network);
}

#[test]
fn host_secrets_are_out_of_sight() {
    let ws = tempfile::tempdir().unwrap();
    // Not under /tmp: the private /tmp would hide it whatever the root holds.
    let home = tempfile::tempdir_in("/var/tmp").unwrap();
    let canary = "moat-canary-7f3a9c1e";
    std::fs::write(home.path().join("vault.moat"), canary).unwrap();
    let script = format!(
        "cat /etc/shadow; ls /root; cat /root/.bashrc; cat {home}/vault.moat; ls {home}; \
         ls /home; cat /proc/1/environ; ls /sys; cat /proc/kcore | head -c 10; true",
        home = home.path().display()
    );
    let mut s = spec(ws.path(), &script);
    s.hidden.push(home.path().to_path_buf());
    let report = run_ok(&s);
    let all = text(&report.stdout) + &text(&report.stderr);
    assert!(!all.contains(canary), "{all}");
    assert!(
        all.contains(&format!(
            "{}/vault.moat: No such file",
            home.path().display()
        )),
        "{all}"
    );
    assert!(all.contains("/etc/shadow: No such file"), "{all}");
    assert!(all.contains("/root"), "{all}");

    // Granting a folder that holds moat's home is refused before anything runs.
    let mut s = spec(ws.path(), "true");
    s.hidden.push(home.path().join("vault.moat"));
    s.grants.push(Grant {
        path: home.path().to_path_buf(),
        access: Access::ReadOnly,
    });
    assert!(matches!(run(&s), Err(SandboxError::ExposesHidden { .. })));
}

#[test]
fn only_the_workspace_is_writable() {
    let ws = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("kept"), "original").unwrap();
    let script = format!(
        "for f in /usr/x /etc/x /x /dev/x /proc/x {ro}/kept {ro}/new; do \
           if echo pwned > $f; then echo WROTE $f; fi; done; \
         echo ok > /tmp/scratch && cat /tmp/scratch; echo result > /workspace/out.txt",
        ro = ro.path().display()
    );
    let mut s = spec(ws.path(), &script);
    s.grants.push(Grant {
        path: ro.path().to_path_buf(),
        access: Access::ReadOnly,
    });
    let report = run_ok(&s);
    let out = text(&report.stdout);
    assert!(!out.contains("WROTE"), "{out}\n{}", text(&report.stderr));
    assert!(out.contains("ok"), "{out}");
    assert_eq!(
        std::fs::read_to_string(ro.path().join("kept")).unwrap(),
        "original"
    );
    assert!(!ro.path().join("new").exists());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out.txt")).unwrap(),
        "result\n"
    );
    // The sandbox's /tmp was its own.
    assert!(
        !Path::new("/tmp/scratch").exists()
            || std::fs::read_to_string("/tmp/scratch").unwrap() != "ok\n"
    );
}

#[test]
fn a_read_write_grant_is_writable_at_its_host_path() {
    let ws = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("in.txt"), "input").unwrap();
    if is_root() {
        // The command is `nobody` on the host: the owner grants it the folder.
        std::os::unix::fs::chown(project.path(), Some(65534), Some(65534)).unwrap();
    }
    let script = format!(
        "cat {p}/in.txt && echo done > {p}/out.txt",
        p = project.path().display()
    );
    let mut s = spec(ws.path(), &script);
    s.grants.push(Grant {
        path: project.path().to_path_buf(),
        access: Access::ReadWrite,
    });
    let report = run_ok(&s);
    assert!(report.outcome.success(), "{}", text(&report.stderr));
    assert_eq!(text(&report.stdout), "input");
    assert_eq!(
        std::fs::read_to_string(project.path().join("out.txt")).unwrap(),
        "done\n"
    );
}

#[test]
fn a_listener_on_the_host_loopback_sees_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = tempfile::tempdir().unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED; \
         exec 4<>/dev/tcp/localhost/{port} && echo CONNECTED; true"
    );
    let report = run_ok(&Spec::new("/bin/bash", ["-c", &script], ws.path()));
    assert!(!text(&report.stdout).contains("CONNECTED"), "{report:?}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener was reached: {other:?}"),
    }
}

#[test]
fn a_fork_bomb_is_bounded_and_killed() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = Spec::new(
        "/bin/bash",
        ["-c", "b() { b | b & }; b; sleep 30"],
        ws.path(),
    );
    s.limits.wall_time = Duration::from_secs(3);
    let report = run_ok(&s);
    assert!(!report.outcome.success(), "{report:?}");
    assert!(
        report.elapsed < Duration::from_secs(10),
        "{:?}",
        report.elapsed
    );
    // Nothing of it survives: every process of the sandbox's PID namespace is gone.
    std::thread::sleep(Duration::from_millis(200));
    let survivors = count_processes_of(report.enforcement.host_uid);
    if is_root() {
        assert_eq!(
            survivors, 0,
            "processes of uid {} remain",
            report.enforcement.host_uid
        );
    }
}

fn count_processes_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cmdline")).is_ok_and(|c| c.contains("bash"))
        })
        .count()
}

#[test]
fn the_process_limit_holds() {
    let ws = tempfile::tempdir().unwrap();
    let script = "import os, time\nn = 0\ntry:\n    while n < 200:\n        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('STOPPED', n, e.errno)\n";
    let mut s = Spec::new("/usr/bin/python3", ["-c", script], ws.path());
    s.limits.processes = 16;
    let report = run_ok(&s);
    let out = text(&report.stdout);
    // The first process counts too: 15 children, then EAGAIN.
    assert_eq!(
        out.trim(),
        format!("STOPPED 15 {}", libc::EAGAIN),
        "{report:?}"
    );
}

#[test]
fn orphans_are_reaped() {
    let ws = tempfile::tempdir().unwrap();
    // Each round leaves an orphan that exits at once; the command never waits for it.
    // Without a reaper each would stay a zombie (of the command, were it PID 1) until
    // the sandbox ended, holding a PID and, under rlimits, a place in the process limit.
    let script = "import os, time\nfor i in range(40):\n    pid = os.fork()\n    if pid == 0:\n        if os.fork() == 0:\n            os._exit(0)\n        os._exit(0)\n    os.waitpid(pid, 0)\n    time.sleep(0.01)\ntime.sleep(0.2)\nz = 0\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n            z += ') Z ' in open('/proc/' + p + '/stat').read()\n        except OSError:\n            pass\nprint('ZOMBIES', z)\n";
    let s = Spec::new("/usr/bin/python3", ["-c", script], ws.path());
    let report = run_ok(&s);
    assert!(
        report.outcome.success(),
        "{report:?}\n{}",
        text(&report.stderr)
    );
    assert_eq!(text(&report.stdout).trim(), "ZOMBIES 0", "{report:?}");
}

#[test]
fn the_command_s_own_status_comes_through_its_init() {
    let ws = tempfile::tempdir().unwrap();
    let report = run_ok(&spec(ws.path(), "exit 7"));
    assert_eq!(report.outcome, Outcome::Exited(7));
    let report = run_ok(&spec(ws.path(), "kill -TERM $$"));
    assert_eq!(report.outcome, Outcome::Signaled(libc::SIGTERM));
}

/// Whether a cgroup holds the limits; as root it must (a host where root cannot make one
/// fails loudly rather than testing the weaker rlimits silently).
fn cgroup_limits(report: &Report) -> bool {
    let cgroup = matches!(
        report.enforcement.limits,
        LimitMechanism::CgroupV2 { .. } | LimitMechanism::CgroupV1 { .. }
    );
    if is_root() {
        assert!(
            cgroup,
            "NO CGROUP FOR THE SANDBOX as root: {:?}",
            report.enforcement.limits
        );
    }
    cgroup
}

const HOG: &str = "b = bytearray(512 * 1024 * 1024); print('ALLOCATED', len(b))";

#[test]
fn a_memory_hog_gets_no_more_than_the_limit() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = Spec::new("/usr/bin/python3", ["-c", HOG], ws.path());
    s.limits.memory_bytes = 128 * 1024 * 1024;
    let report = run_ok(&s);
    assert!(!report.outcome.success(), "{report:?}");
    assert!(!text(&report.stdout).contains("ALLOCATED"));
    if cgroup_limits(&report) {
        // The kernel's out-of-memory kill, counted in the sandbox's group.
        assert_eq!(report.outcome, Outcome::OutOfMemory, "{report:?}");
        assert_eq!(report.outcome.exit_status(), 137);
    } else {
        assert!(
            text(&report.stderr).contains("MemoryError"),
            "{}",
            text(&report.stderr)
        );
    }
    // Resident pages include the interpreter's shared files, which the group did not
    // pay for (they were in the page cache already): the bound is the 512 MiB asked for.
    assert!(report.peak_rss_bytes < 192 * 1024 * 1024, "{report:?}");
}

#[test]
fn a_memory_hog_below_a_shell_is_out_of_memory_too() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(
        ws.path(),
        &format!("python3 -c \"{HOG}\"; echo \"STATUS $?\"; exit 1"),
    );
    s.limits.memory_bytes = 128 * 1024 * 1024;
    let report = run_ok(&s);
    if cgroup_limits(&report) {
        assert_eq!(report.outcome, Outcome::OutOfMemory, "{report:?}");
        match report.enforcement.limits {
            // memory.oom.group: the kernel ends the whole sandbox, shell included.
            LimitMechanism::CgroupV2 { .. } => assert_eq!(text(&report.stdout), ""),
            // v1 has no group kill: only the hog died; the shell went on and saw it.
            _ => assert_eq!(text(&report.stdout), "STATUS 137\n"),
        }
    }
}

#[test]
fn the_sandbox_sees_its_own_cgroup_as_the_root() {
    let ws = tempfile::tempdir().unwrap();
    let report = run_ok(&spec(
        ws.path(),
        "cat /proc/self/cgroup; readlink /proc/self/ns/cgroup",
    ));
    let out = text(&report.stdout);
    let host_ns = std::fs::read_link("/proc/self/ns/cgroup").unwrap();
    assert!(
        !out.contains(&*host_ns.to_string_lossy()),
        "the host's cgroup namespace: {out}"
    );
    if cgroup_limits(&report) {
        // Neither moat's groups nor the sandbox's name (with moat's pid) show.
        assert!(
            out.lines()
                .take_while(|l| !l.starts_with("cgroup:"))
                .all(|l| l.ends_with(":/")),
            "{out}"
        );
    }
}

#[test]
fn a_cgroup_counts_memory_used_not_address_space_reserved() {
    // 1 GiB reserved, 8 MiB touched: fine under a memory limit of 128 MiB that counts use
    // (runtimes such as Go, the JVM and V8 reserve this way); RLIMIT_AS refuses it.
    let ws = tempfile::tempdir().unwrap();
    let script = "import mmap\nm = mmap.mmap(-1, 1 << 30)\nm[: 8 << 20] = b'x' * (8 << 20)\nprint('RESERVED')\n";
    let mut s = Spec::new("/usr/bin/python3", ["-c", script], ws.path());
    s.limits.memory_bytes = 128 * 1024 * 1024;
    let report = run_ok(&s);
    if cgroup_limits(&report) {
        assert!(report.outcome.success(), "{report:?}");
        assert_eq!(text(&report.stdout), "RESERVED\n");
        let (LimitMechanism::CgroupV2 { path } | LimitMechanism::CgroupV1 { path }) =
            &report.enforcement.limits
        else {
            unreachable!()
        };
        assert!(!path.exists(), "{} was left behind", path.display());
        // Nor does a sandbox that failed to start leave its group.
        assert!(
            run(&Spec::new(
                "/nonexistent/tool",
                Vec::<String>::new(),
                ws.path()
            ))
            .is_err()
        );
        let ours = format!("moat-sandbox-{}-", std::process::id());
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&ours))
            .map(|e| e.path())
            .collect();
        // Other tests of this binary may be running at this moment: wait out theirs.
        for dir in &left {
            let until = std::time::Instant::now() + Duration::from_secs(35);
            while dir.exists() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(!dir.exists(), "{} was left behind", dir.display());
        }
    } else {
        assert!(!report.outcome.success(), "{report:?}");
    }
}

#[test]
fn a_cpu_spin_is_killed_at_the_wall_time_with_its_children() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), "sleep 100 & while :; do :; done");
    s.limits.wall_time = Duration::from_secs(2);
    let report = run_ok(&s);
    assert_eq!(report.outcome, Outcome::TimedOut);
    assert_eq!(report.outcome.exit_status(), 124);
    assert!(report.elapsed >= Duration::from_secs(2));
    assert!(
        report.elapsed < Duration::from_secs(8),
        "{:?}",
        report.elapsed
    );
    // One CPU: by quota (the threads may run anywhere), or pinned to one.
    match report.enforcement.cpu_quota {
        Some(n) => assert_eq!(n, 1),
        None => assert_eq!(report.enforcement.cpus.len(), 1),
    }
}

#[test]
fn busy_processes_together_get_no_more_than_their_cpus_of_time() {
    let ws = tempfile::tempdir().unwrap();
    // Three spinning processes for about two seconds, then the shell ends them; their CPU
    // time is counted when it reaps them.
    let s = spec(
        ws.path(),
        "p=; for i in 1 2 3; do (while :; do :; done) & p=\"$p $!\"; done; sleep 2; kill $p; wait",
    );
    let report = run_ok(&s);
    assert!(report.outcome.success(), "{report:?}");
    let ratio = report.cpu_time.as_secs_f64() / report.elapsed.as_secs_f64();
    // A quota (or pinning) of one CPU: at most one CPU's worth, plus the period's slack.
    assert!(ratio < 1.2, "{ratio:.2} CPUs of time: {report:?}");
    if report.enforcement.cpu_quota.is_some() {
        // Under a quota the processes were free to run on every CPU.
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(report.enforcement.cpus.len(), online, "{report:?}");
    }
}

#[test]
fn ptrace_of_a_host_process_is_a_policy_violation() {
    let ws = tempfile::tempdir().unwrap();
    let host_pid = std::process::id();
    let script = format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         print('ATTACHED', libc.ptrace(16, {host_pid}, None, None), flush=True)\n"
    );
    let report = run_ok(&Spec::new("/usr/bin/python3", ["-c", &script], ws.path()));
    assert_eq!(report.outcome, Outcome::PolicyViolation, "{report:?}");
    assert_eq!(report.violation.map(|v| v.syscall), Some("ptrace"));
    assert!(!text(&report.stdout).contains("ATTACHED"));
}

#[test]
fn mount_and_new_namespaces_are_policy_violations() {
    let ws = tempfile::tempdir().unwrap();
    let mount = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n";
    let report = run_ok(&Spec::new("/usr/bin/python3", ["-c", mount], ws.path()));
    assert_eq!(report.outcome, Outcome::PolicyViolation, "{report:?}");

    for args in [["-U", "true"], ["-r", "true"], ["-n", "true"]] {
        let report = run_ok(&Spec::new("/usr/bin/unshare", args, ws.path()));
        assert_eq!(
            report.outcome,
            Outcome::PolicyViolation,
            "unshare {args:?}: {report:?}"
        );
    }
    // From anywhere in the tree: a child of the shell makes the call, the whole sandbox
    // dies before the shell goes on, and the report names the call.
    for (script, call) in [
        ("mount -t tmpfs x /tmp; echo AFTER", "mount"),
        ("/usr/sbin/chroot / true; echo AFTER", "chroot"),
        ("unshare -U true; echo AFTER", "unshare"),
    ] {
        let report = run_ok(&spec(ws.path(), script));
        assert_eq!(
            report.outcome,
            Outcome::PolicyViolation,
            "{script}: {report:?}"
        );
        assert_eq!(report.violation.map(|v| v.syscall), Some(call), "{script}");
        assert!(!text(&report.stdout).contains("AFTER"), "{script}");
    }
}

#[test]
fn a_setuid_binary_gives_no_privilege() {
    let ws = tempfile::tempdir().unwrap();
    let report = run_ok(&spec(ws.path(), "/usr/bin/su -c id root </dev/null; id -u"));
    assert!(!text(&report.stdout).contains("uid=0"), "{report:?}");

    if is_root() {
        // A setuid-root copy of `id` in a granted folder still runs as the sandbox user.
        let bin = tempfile::tempdir().unwrap();
        let suid = bin.path().join("id");
        std::fs::copy("/usr/bin/id", &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let mut s = Spec::new(&suid, ["-u"], ws.path());
        s.grants.push(Grant {
            path: bin.path().to_path_buf(),
            access: Access::ReadOnly,
        });
        let report = run_ok(&s);
        assert_eq!(text(&report.stdout).trim(), "1000", "{report:?}");
    } else {
        eprintln!("NOT ROOT: the setuid-root copy check needs root and was not run");
    }
}

#[test]
fn moat_s_own_environment_never_reaches_the_command() {
    let canary = "moat-env-canary-41c0ffee";
    // SAFETY: nextest runs each test in its own process; no other thread reads the env.
    unsafe { std::env::set_var("MOAT_TEST_SECRET", canary) };
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(
        ws.path(),
        "env; cat /proc/1/environ /proc/self/environ; for p in /proc/[0-9]*; do cat $p/environ; done; true",
    );
    s.set_env("DECLARED", "visible");
    let report = run_ok(&s);
    let all = text(&report.stdout) + &text(&report.stderr);
    assert!(!all.contains(canary), "{all}");
    assert!(all.contains("DECLARED=visible"), "{all}");
    let stdout = text(&report.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["PATH", "HOME", "DECLARED", "PWD", "SHLVL", "_"].contains(n)),
        "{names:?}"
    );
}

#[test]
fn output_is_capped_with_a_marker() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), "head -c 3000000 /dev/zero; echo tail >&2");
    s.limits.output_bytes = 1024 * 1024;
    let report = run_ok(&s);
    assert!(report.outcome.success());
    assert!(report.stdout_truncated);
    let marker = moat_sandbox::truncation_marker(1024 * 1024);
    assert_eq!(report.stdout.len(), 1024 * 1024 + marker.len());
    assert!(report.stdout.ends_with(marker.as_bytes()));
    assert!(!report.stderr_truncated);
    assert_eq!(text(&report.stderr), "tail\n");
}

#[test]
fn stdin_reaches_the_command() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = Spec::new("/usr/bin/wc", ["-c"], ws.path());
    s.stdin = vec![b'x'; 300_000];
    let report = run_ok(&s);
    assert_eq!(text(&report.stdout).trim(), "300000");
}

#[test]
fn a_missing_command_is_an_error_not_an_outcome() {
    let ws = tempfile::tempdir().unwrap();
    let err = run(&Spec::new("no-such-tool", Vec::<String>::new(), ws.path())).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SandboxError::Exec { .. }), "{message}");
    assert!(
        message.contains("no-such-tool") && message.contains("PATH="),
        "{message}"
    );
}

#[test]
fn the_vm_level_is_refused_with_what_to_choose_instead() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), "true");
    s.level = moat_sandbox::Level::Vm;
    let message = run(&s).unwrap_err().to_string();
    assert!(
        message.contains("firecracker") && message.contains("level = \"container\""),
        "{message}"
    );
}

#[test]
fn the_none_level_s_wall_time_kill_reaches_descendants_in_sessions_of_their_own() {
    let ws = tempfile::tempdir().unwrap();
    // A descendant that leaves the process group (setsid) and records its pid.
    let mut s = spec(
        ws.path(),
        "setsid sh -c 'echo $$ > escaped.pid; exec sleep 60' & sleep 60",
    );
    s.level = moat_sandbox::Level::None;
    s.limits.wall_time = Duration::from_secs(1);
    let report = run_ok(&s);
    assert_eq!(report.outcome, Outcome::TimedOut);
    let pid = std::fs::read_to_string(ws.path().join("escaped.pid")).unwrap();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(),
        "the setsid descendant {} outlived the call",
        pid.trim()
    );
}

#[test]
fn the_none_level_still_clears_the_environment_and_keeps_time() {
    let ws = tempfile::tempdir().unwrap();
    let mut s = spec(ws.path(), "env; sleep 30 & sleep 30");
    s.level = moat_sandbox::Level::None;
    s.limits.wall_time = Duration::from_secs(1);
    let report = run_ok(&s);
    assert_eq!(report.outcome, Outcome::TimedOut);
    assert!(
        !text(&report.stdout).contains("MOAT"),
        "{}",
        text(&report.stdout)
    ); // HOME=/workspace means the workspace, which at this level is the host folder.
    let home = format!("HOME={}\n", ws.path().display());
    assert!(
        text(&report.stdout).contains(&home),
        "{}",
        text(&report.stdout)
    );
}

#[test]
fn signals_start_at_their_defaults() {
    // moat (like every Rust program) ignores SIGPIPE; the command must not inherit that.
    let ws = tempfile::tempdir().unwrap();
    let report = run_ok(&Spec::new(
        "/usr/bin/grep",
        ["-E", "^Sig(Ign|Blk)", "/proc/self/status"],
        ws.path(),
    ));
    let out = text(&report.stdout);
    assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
    assert!(out.contains("SigIgn:\t0000000000000000"), "{out}");
    let report = run_ok(&spec(ws.path(), "yes | head -c 3"));
    assert!(report.outcome.success(), "{report:?}");
    assert_eq!(text(&report.stderr), "", "yes must die of SIGPIPE quietly");
}

#[test]
fn sockets_outside_the_network_namespace_s_families_are_refused() {
    let ws = tempfile::tempdir().unwrap();
    let script = "import socket\nfor fam in (socket.AF_VSOCK, socket.AF_PACKET):\n    try:\n        socket.socket(fam, socket.SOCK_STREAM if fam == socket.AF_VSOCK else socket.SOCK_RAW)\n        print('OPENED', fam)\n    except OSError as e:\n        print('refused', e.errno)\nsocket.socket(socket.AF_UNIX).close()\nprint('unix ok')\n";
    let report = run_ok(&Spec::new("/usr/bin/python3", ["-c", script], ws.path()));
    let out = text(&report.stdout);
    assert!(!out.contains("OPENED"), "{out}");
    assert!(out.contains("unix ok"), "{out}{}", text(&report.stderr));
}
