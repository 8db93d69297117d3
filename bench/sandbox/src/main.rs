//! bench/sandbox: what isolation costs to start, measured as start-to-exit of `true`.
//!
//! Three ways, interleaved in rotating order so machine noise hits each alike:
//!
//! 1. baseline: plain fork/exec of `/usr/bin/true` (std::process::Command);
//! 2. moat: `moat_sandbox::run` at the `process` level (namespaces, new root, Landlock,
//!    seccomp, capture), twice: limits held by a cgroup of the call's own where moat can
//!    make one (the default; bwrap sets no limits at all), and by rlimits only;
//! 3. peer: Debian's bubblewrap with the same namespaces and a comparable root
//!    (`--unshare-all`, read-only /usr, /proc, /dev, tmpfs /tmp, a bound workspace,
//!    cleared environment, no capabilities, uid 1000), spawned the same way as the
//!    baseline. bwrap installs no seccomp filter or Landlock rules here: moat does more.
//!
//! Reports median and p90 per way, each moat way's median added over the baseline (target:
//! <= 5 ms) and moat / bwrap (target: <= 1). Usage: moat-bench-sandbox-start [RUNS]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn plain() -> Duration {
    let start = Instant::now();
    let status = Command::new("/usr/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("true runs");
    assert!(status.success());
    start.elapsed()
}

/// One sandboxed `true`, and which mechanism held its limits.
fn moat(workspace: &std::path::Path, use_cgroup: bool) -> (Duration, &'static str) {
    let mut spec = moat_sandbox::Spec::new("/usr/bin/true", Vec::<String>::new(), workspace);
    spec.limits.use_cgroup = use_cgroup;
    let start = Instant::now();
    let report = moat_sandbox::run(&spec).expect("the sandbox starts");
    let took = start.elapsed();
    assert!(report.outcome.success(), "{report:?}");
    (took, report.enforcement.limits.name())
}

fn bwrap_args(workspace: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    .map(String::from)
    .to_vec();
    for dir in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        let host = std::path::Path::new("/").join(dir);
        match std::fs::read_link(&host) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) if host.is_dir() => args.extend([
                "--ro-bind".into(),
                host.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) => {}
        }
    }
    args.extend(
        [
            "--ro-bind-try",
            "/etc/ld.so.cache",
            "/etc/ld.so.cache",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--bind",
            &workspace.display().to_string(),
            "/workspace",
            "--chdir",
            "/workspace",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/workspace",
            "--cap-drop",
            "ALL",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--",
            "/usr/bin/true",
        ]
        .map(String::from),
    );
    args
}

fn bwrap(args: &[String]) -> Duration {
    let start = Instant::now();
    let status = Command::new("bwrap")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("bwrap runs");
    assert!(status.success(), "bwrap failed");
    start.elapsed()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[v.len() * 9 / 10]), ms(v[0]))
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let workspace = tempfile::tempdir().expect("a temp dir");
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let args = bwrap_args(workspace.path());

    // Warm up: page cache, binaries, the allocator.
    for _ in 0..20 {
        plain();
        moat(workspace.path(), true);
        moat(workspace.path(), false);
        if have_bwrap {
            bwrap(&args);
        }
    }
    let (mut p, mut m, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut mechanism = "";
    for i in 0..runs {
        for way in 0..4 {
            match (i + way) % 4 {
                0 => p.push(plain()),
                1 => {
                    let (took, by) = moat(workspace.path(), true);
                    m.push(took);
                    mechanism = by;
                }
                2 => r.push(moat(workspace.path(), false).0),
                _ if have_bwrap => b.push(bwrap(&args)),
                _ => {}
            }
        }
    }

    let support = moat_sandbox::kernel_support();
    println!("# bench/sandbox: start-to-exit of /usr/bin/true, {runs} runs each, interleaved");
    println!(
        "# kernel {}, {} CPUs, landlock ABI {:?}, sandbox host uid {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        support.landlock_abi,
        support.host_uid,
    );
    println!("| way | median ms | p90 ms | best ms |");
    println!("|---|---|---|---|");
    let (pm, pp, pb) = stats(p);
    println!("| fork/exec (baseline) | {pm:.2} | {pp:.2} | {pb:.2} |");
    let (mm, mp, mb) = stats(m);
    println!("| moat process level, limits by {mechanism} | {mm:.2} | {mp:.2} | {mb:.2} |");
    let (rm, rp, rb) = stats(r);
    println!("| moat process level, limits by rlimits | {rm:.2} | {rp:.2} | {rb:.2} |");
    let bm = if have_bwrap {
        let (bm, bp, bb) = stats(b);
        println!("| bwrap, same namespaces | {bm:.2} | {bp:.2} | {bb:.2} |");
        Some(bm)
    } else {
        println!("| bwrap | not installed (apt-get install bubblewrap) | | |");
        None
    };
    println!();
    for (label, median) in [(mechanism, mm), ("rlimits", rm)] {
        let added = median - pm;
        println!(
            "moat ({label}) adds {added:.2} ms median over fork/exec (target <= 5 ms: {})",
            if added <= 5.0 { "met" } else { "MISSED" }
        );
        if let Some(bm) = bm {
            println!(
                "moat ({label}) / bwrap median = {:.2} (target <= 1: {})",
                median / bm,
                if median <= bm { "met" } else { "MISSED" }
            );
        }
    }
}
