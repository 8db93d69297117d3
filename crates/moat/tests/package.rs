//! The Debian package, for real: built by `scripts/package-deb` from the binary under test,
//! installed with `dpkg -i`, run from `/usr/bin`, and removed again with nothing left.
//! Needs root and dpkg; refuses to run where a moat package is already installed (it
//! would be replaced).
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
    let built = Command::new(SCRIPT)
        .arg(BIN)
        .arg(out_dir.path())
        .env("MOAT_DEB_COMPRESS", "none")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
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
