//! A MOAT_HOME made by an earlier moat (`tests/fixtures/home-0.1.0`, kept as it was
//! written) opened by this one: every secret, audit entry and usage row is still there, an
//! older state schema is migrated with a copy kept aside, and a home from a newer moat is
//! refused with a message that says so.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::path::Path;

use common::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/home-0.1.0");
const FIXTURE_SCHEMA: u32 = 7;

/// A copy of the fixture as a home (git keeps no modes: they are set as moat makes them).
fn fixture_home() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let home = new_home();
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else if e.file_name() != "README.md" {
                std::fs::copy(e.path(), &dest).unwrap();
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    copy(Path::new(FIXTURE), home.path());
    let pw = home.path().with_extension("pw");
    std::fs::write(&pw, "fixture-password-0.1.0").unwrap();
    (home, pw)
}

#[test]
fn a_home_from_moat_0_1_0_opens_with_every_secret_entry_and_row() {
    let (home, pw) = fixture_home();
    let env = [("MOAT_VAULT_PASSWORD_FILE", pw.to_str().unwrap())];
    let moat = |args: &[&str]| {
        let (code, out, err) = run_moat(home.path(), args, &env);
        assert_eq!(code, 0, "moat {args:?}: {err}");
        out
    };
    assert_eq!(
        moat(&["vault", "get", "github-token", "--reveal", "--force"]).trim(),
        "ghp_fixtureSecretValue010"
    );
    assert_eq!(
        moat(&["vault", "get", "anthropic-key", "--reveal", "--force"]).trim(),
        "sk-ant-fixture-key-010"
    );
    let verified = moat(&["audit", "verify"]);
    let entries: u64 = verified
        .split("chain intact: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{verified}"));
    assert!(entries >= 6, "{verified}");
    let usage: serde_json::Value =
        serde_json::from_str(&moat(&["usage", "--since", "all", "--json"])).unwrap();
    assert!(usage.to_string().contains("claude-haiku-4-5"), "{usage}");
    assert!(usage.to_string().contains("\"requests\":3"), "{usage}");
    // Opening the state store for writing migrates it to this moat's schema.
    moat(&["sessions", "list"]);
    let db = home.path().join("state.db");
    assert_eq!(
        moat_state::StateStore::schema_version_at(&db),
        Some(moat_state::SCHEMA_VERSION)
    );
    let kept = home.path().join(format!("state.db.v{FIXTURE_SCHEMA}.bak"));
    assert_eq!(
        kept.exists(),
        moat_state::SCHEMA_VERSION > FIXTURE_SCHEMA,
        "a copy is kept exactly when a migration ran"
    );
    let doctor = run_moat(home.path(), &["doctor"], &env).1;
    assert!(
        doctor.contains(&format!(
            "state schema {0} (this moat: {0})",
            moat_state::SCHEMA_VERSION
        )) && doctor.contains("vault format 1"),
        "{doctor}"
    );
}

#[test]
fn a_home_from_a_newer_moat_is_refused_with_a_reason() {
    let (home, pw) = fixture_home();
    let env = [("MOAT_VAULT_PASSWORD_FILE", pw.to_str().unwrap())];
    let config = home.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("format = 1", "format = 9")).unwrap();
    let (code, _, err) = run_moat(home.path(), &["usage", "--since", "all"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("config format 9, newer than this moat knows"),
        "{err}"
    );
    std::fs::write(&config, text).unwrap();
    // A state store from the future: refused, not guessed at.
    let db = home.path().join("state.db");
    {
        let c = moat_state::StateStore::open(&db).unwrap();
        c.connection()
            .pragma_update(None, "user_version", moat_state::SCHEMA_VERSION + 3)
            .unwrap();
    }
    let (code, _, err) = run_moat(home.path(), &["sessions", "list"], &env);
    assert_ne!(code, 0);
    assert!(err.contains("newer than this moat knows"), "{err}");
    let (_, doctor, _) = run_moat(home.path(), &["doctor"], &env);
    assert!(doctor.contains("written by a newer moat"), "{doctor}");
}
