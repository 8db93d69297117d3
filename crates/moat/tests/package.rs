//! The Debian package, for real: built by `scripts/package-deb` from the binary under test,
//! installed with `dpkg -i`, run from `/usr/bin`, and removed again with nothing left.
//! Needs root and dpkg; refuses to run where a moat package is already installed (it
//! would be replaced). Then the same package in a Debian tree booted with systemd as its
//! init (systemd-nspawn, its own network namespace): installed, run by `moat service
//! install` as a user, it survives that user's logout and login and a reboot, and unlocks
//! its vault unattended each time.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/package-deb");

fn dpkg(args: &[&str]) -> (bool, String) {
    let out = Command::new("dpkg")
        .args(args)
        .output()
        .expect("PACKAGE TEST NOT RUNNABLE: dpkg is missing");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn installed() -> bool {
    dpkg(&["-s", "moat"])
        .1
        .contains("Status: install ok installed")
}

/// Builds the package from the binary under test into `dir`; returns its path.
fn build_deb(dir: &Path) -> String {
    let built = Command::new(SCRIPT)
        .arg(BIN)
        .arg(dir)
        .env("MOAT_DEB_COMPRESS", "none")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    String::from_utf8_lossy(&built.stdout).trim().to_string()
}

/// Removes the package however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = dpkg(&["-r", "moat"]);
    }
}

#[test]
fn the_debian_package_installs_runs_from_usr_bin_and_removes_cleanly() {
    assert!(
        !installed(),
        "PACKAGE TEST NOT RUNNABLE: a moat package is installed here and this test would replace it"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let deb = build_deb(out_dir.path());
    assert!(
        deb.ends_with("_amd64.deb") || deb.ends_with(".deb"),
        "{deb}"
    );
    // Nothing runs at install time: no maintainer scripts at all.
    let (_, control) = dpkg(&["-I", &deb]);
    for script in ["postinst", "preinst", "prerm", "postrm"] {
        assert!(!control.contains(script), "{control}");
    }

    let (ok, said) = dpkg(&["-i", &deb]);
    let _remove = Installed;
    assert!(ok, "PACKAGE TEST NOT RUNNABLE (dpkg -i needs root): {said}");
    let run = |args: &[&str]| {
        let home = tempfile::tempdir().unwrap();
        let out = Command::new("/usr/bin/moat")
            .args(args)
            .env("MOAT_HOME", home.path().join("home"))
            .env("MOAT_SEAL_DIR", home.path().join("seal"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, version) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(
        version.starts_with(&format!("moat {} (commit", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let (code, doctor) = run(&["doctor"]);
    assert!(matches!(code, Some(0 | 1)), "{doctor}");
    assert!(
        doctor.contains("exposure") && doctor.contains("loopback only"),
        "{doctor}"
    );
    for file in [
        "/usr/share/man/man1/moat.1.gz",
        "/usr/share/man/man1/moat-service-install.1.gz",
        "/usr/share/bash-completion/completions/moat",
        "/usr/share/zsh/vendor-completions/_moat",
        "/usr/share/fish/vendor_completions.d/moat.fish",
        "/usr/lib/systemd/user/moat.service",
        "/usr/share/doc/moat/copyright",
    ] {
        assert!(Path::new(file).exists(), "{file} is not installed");
    }
    let unit = std::fs::read_to_string("/usr/lib/systemd/user/moat.service").unwrap();
    assert!(unit.contains("ExecStart=\"/usr/bin/moat\" serve"), "{unit}");
    let runtime = tempfile::tempdir().unwrap();
    let verify = Command::new("systemd-analyze")
        .args([
            "--user",
            "verify",
            "--man=no",
            "/usr/lib/systemd/user/moat.service",
        ])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .expect("systemd-analyze is installed (scripts/test installs systemd)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");

    // Removed: nothing of it left.
    let (ok, said) = dpkg(&["-r", "moat"]);
    assert!(ok, "{said}");
    assert!(!installed());
    assert!(!Path::new("/usr/bin/moat").exists());
    assert!(!Path::new("/usr/lib/systemd/user/moat.service").exists());
    assert!(!Path::new("/usr/share/man/man1/moat.1.gz").exists());
}

const SECRET: &str = "svc-secret-CANARY-77e1a0";

/// A Debian tree booted with systemd-nspawn (private network), and its init's pid.
struct Booted {
    dir: std::path::PathBuf,
    nspawn: std::process::Child,
    init: u32,
}

impl Booted {
    fn boot(dir: &Path) -> Booted {
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "-q",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "-b",
            ])
            .args([
                "--console=pipe",
                "-M",
                &format!("moat-test-{}", std::process::id()),
            ])
            .arg("-D")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("SERVICE TEST NOT RUNNABLE: systemd-nspawn (Debian systemd-container)");
        let started = std::time::Instant::now();
        let init = loop {
            assert!(
                started.elapsed().as_secs() < 30,
                "the tree's systemd did not start"
            );
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nspawn.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let booted = Booted {
            dir: dir.to_path_buf(),
            nspawn,
            init,
        };
        booted.wait_for("the system to boot", || {
            let state = booted.root(&["systemctl", "is-system-running"]).1;
            matches!(state.trim(), "running" | "degraded")
        });
        booted
    }

    /// Runs `args` as root inside; (success, stdout and stderr).
    fn root(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Runs a shell command as the user `alice` inside, in her session's environment.
    fn alice(&self, script: &str) -> (bool, String) {
        self.root(&[
            "runuser",
            "-u",
            "alice",
            "--",
            "env",
            "XDG_RUNTIME_DIR=/run/user/1000",
            "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus",
            "HOME=/home/alice",
            "USER=alice",
            "sh",
            "-c",
            &format!("cd ~ && {script}"),
        ])
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !ok() {
            assert!(
                started.elapsed().as_secs() < 60,
                "waited a minute for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// moat answers as alice's service, and has been up for less than `fresh` seconds.
    fn serving(&self, what: &str, fresh: u64) {
        self.wait_for(what, || {
            let (ok, out) = self.alice("moat status");
            ok && out
                .split("\"uptime_secs\": ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|up| up < fresh)
        });
    }

    fn power_off(mut self) {
        let _ = self.root(&["systemctl", "poweroff"]);
        let started = std::time::Instant::now();
        while self.nspawn.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed().as_secs() < 60,
                "the tree did not power off"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if self.nspawn.try_wait().ok().flatten().is_none() {
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        let _ = &self.dir;
    }
}

#[test]
fn as_a_user_service_it_survives_logout_and_reboot_and_unlocks_unattended() {
    let tree = std::env::var("MOAT_NSPAWN_ROOT").unwrap_or_else(|_| {
        panic!("SERVICE TEST NOT RUNNABLE: MOAT_NSPAWN_ROOT is not set: run the suite with ./scripts/test as root")
    });
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("root");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&tree)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copied.success());
    let deb = build_deb(&dir.join("var/tmp"));
    let deb_inside = format!(
        "/var/tmp/{}",
        Path::new(&deb).file_name().unwrap().to_string_lossy()
    );

    let booted = Booted::boot(&dir);
    for step in [
        &["useradd", "-m", "alice"][..],
        &["loginctl", "enable-linger", "alice"][..],
        &["dpkg", "-i", &deb_inside][..],
    ] {
        let (ok, out) = booted.root(step);
        assert!(ok, "{step:?}: {out}");
    }
    booted.wait_for("alice's user manager", || {
        booted
            .root(&["systemctl", "is-active", "user@1000"])
            .1
            .trim()
            == "active"
    });
    let (ok, out) = booted.alice(&format!("printf %s {SECRET} | moat vault add demo --stdin"));
    assert!(ok, "{out}");
    let (ok, out) = booted.alice("moat service install");
    assert!(ok && out.contains("journalctl --user -u moat"), "{out}");
    // Serving means unlocked: moat serve opens the vault (its audit key) before it listens.
    booted.serving("the service to start", 60);

    // Logged out and in again: the user manager restarts, and moat with it.
    let (ok, out) = booted.root(&["systemctl", "restart", "user@1000"]);
    assert!(ok, "{out}");
    booted.serving("the service after a new login", 20);

    // A reboot: the lingering user's manager starts at boot, and moat unseals unattended.
    booted.power_off();
    let booted = Booted::boot(&dir);
    booted.serving("the service after a reboot", 30);
    let (ok, out) = booted.alice("moat vault list");
    assert!(ok && out.contains("demo"), "{out}");
    let (_, journal) = booted.alice("journalctl --user -u moat --no-pager");
    assert!(journal.contains("moat: main listener on"), "{journal}");
    assert!(!journal.contains(SECRET), "the secret is in the journal");
    booted.power_off();
}
