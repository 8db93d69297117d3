//! Records what `moat --version` tells about the build: the commit it was built from
//! (from git when building in a checkout, else `MOAT_BUILD_COMMIT`, else "unknown"),
//! the target and the profile.

use std::process::Command;

fn main() {
    let commit = std::env::var("MOAT_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MOAT_BUILD_COMMIT={commit}");
    println!(
        "cargo:rustc-env=MOAT_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=MOAT_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!("cargo:rerun-if-env-changed=MOAT_BUILD_COMMIT");
    // A new commit is a new version string; nothing else here changes between builds.
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        && out.status.success()
    {
        let dir = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        // Only paths that exist: cargo reruns a build script on every build while one of
        // its paths is missing (a repository whose refs were never packed has no
        // packed-refs), which rebuilt and relinked the binary each time. A later
        // `git pack-refs` changes `refs`, which is watched.
        for path in ["HEAD", "refs", "packed-refs"].map(|p| dir.join(p)) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
