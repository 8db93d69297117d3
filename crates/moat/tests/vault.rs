//! `moat vault` as a user drives it: password file, stdin values, bad input.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::path::Path;

use common::*;

const CANARY: &str = "sk-ant-api03-CANARYvaultCli0000000000";

fn password_file(dir: &Path, password: &str) -> String {
    let p = dir.join(format!("pw-{}", password.len()));
    std::fs::write(&p, format!("{password}\n")).unwrap();
    // 0600, as users are told to keep it (and as doctor checks inside MOAT_HOME).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A fresh home with a vault created under `password`, and the password file's path.
fn initialized_home(password: &str) -> (tempfile::TempDir, String) {
    let home = new_home();
    let pw = password_file(home.path(), password);
    let (code, _, err) = vault(home.path(), &pw, &["init"], None);
    assert_eq!(code, 0, "vault init: {err}");
    (home, pw)
}

/// Runs `moat vault ARGS` with the password file and optional stdin.
fn vault(home: &Path, pw: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_vault(home, args, stdin, &[("MOAT_VAULT_PASSWORD_FILE", pw)])
}

/// Runs `moat vault ARGS` with `env`, feeding `stdin` (none: an empty, closed stdin).
fn run_vault(
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = moat_cmd(home)
        .arg("vault")
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_vault_lifecycle_never_shows_values_unless_revealed() {
    let home = new_home();
    let pw = password_file(home.path(), "first-password-123");
    assert_eq!(vault(home.path(), &pw, &["init"], None).0, 0);
    let (code, _, err) = vault(home.path(), &pw, &["init"], None);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = vault(
        home.path(),
        &pw,
        &["add", "anthropic", "--stdin", "--scope", "anthropic"],
        Some(&format!("{CANARY}\n")),
    );
    assert_eq!(code, 0, "{err}");
    let mut seen = format!("{out}{err}");
    let (code, out, err) = vault(home.path(), &pw, &["list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("anthropic") && out.contains("scope anthropic"),
        "{out}"
    );
    seen.push_str(&out);
    seen.push_str(&err);

    let (code, _, err) = vault(home.path(), &pw, &["get", "anthropic"], None);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = vault(home.path(), &pw, &["get", "anthropic", "--reveal"], None);
    assert_eq!(code, 2, "not a terminal: {err}");
    seen.push_str(&err);
    let (code, out, _) = vault(
        home.path(),
        &pw,
        &["get", "anthropic", "--reveal", "--force"],
        None,
    );
    assert_eq!((code, out.trim_end()), (0, CANARY));

    assert_eq!(
        vault(home.path(), &pw, &["rename", "anthropic", "claude"], None).0,
        0
    );
    // moat's own names are neither renamed nor made by renaming.
    for (old, new) in [
        ("claude", "moat.audit.checkpoint"),
        ("moat.audit.signing-key", "x"),
    ] {
        let (code, _, err) = vault(home.path(), &pw, &["rename", old, new], None);
        assert_eq!(code, 2, "{old} -> {new}: {err}");
        assert!(err.contains("moat's own names"), "{err}");
    }
    // Free text is listed, never interpreted by the terminal.
    let hostile = "\u{1b}]0;PWN\u{7}\u{1b}[2J\nfake line";
    let (code, _, err) = vault(
        home.path(),
        &pw,
        &["add", "odd", "--stdin", "--description", hostile],
        Some("value-of-odd-123"),
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = vault(home.path(), &pw, &["list"], None);
    assert!(out.contains("^[]0;PWN^G^[[2J^Jfake line"), "{out}");
    assert!(!out.contains('\u{1b}'));
    // A value past what a vault entry holds is refused, and not read whole.
    let big = "k".repeat(moat_vault::MAX_VALUE_BYTES + 1);
    let (code, _, err) = vault(home.path(), &pw, &["add", "big", "--stdin"], Some(&big));
    assert_ne!(code, 0);
    assert!(err.contains("larger than the 65536 bytes"), "{err}");
    assert!(!err.contains("kkkkkkkk"));
    // A key pasted as the name is refused before the value is asked for, and not echoed.
    let pasted = format!("{}-{}-{}", "sk", "ant", "api03-0123456789abcdefghij");
    let (code, out, err) = vault(home.path(), &pw, &["add", &pasted], None);
    assert_eq!(code, 2, "{err}");
    // Whole: the redactor must not take any of the hint for a secret.
    assert!(err.contains("looks like an API key, not a name; call the secret something like anthropic-key and give the key as its value"), "{err}");
    assert!(!err.contains(&pasted) && !out.contains(&pasted));
    let (code, _, err) = vault(home.path(), &pw, &["passwd"], None);
    assert_eq!(code, 2, "the new password needs its own source: {err}");
    let pw2 = password_file(home.path(), "second-password-4567");
    let out = moat_cmd(home.path())
        .args(["vault", "passwd"])
        .env("MOAT_VAULT_PASSWORD_FILE", &pw)
        .env("MOAT_VAULT_NEW_PASSWORD_FILE", &pw2)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        vault(home.path(), &pw, &["list"], None).0,
        1,
        "the old password is refused"
    );
    let (code, out, _) = vault(
        home.path(),
        &pw2,
        &["get", "claude", "--reveal", "--force"],
        None,
    );
    assert_eq!((code, out.trim_end()), (0, CANARY));
    assert_eq!(vault(home.path(), &pw2, &["remove", "claude"], None).0, 0);
    let (code, _, err) = vault(home.path(), &pw2, &["remove", "claude"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no secret named"), "{err}");

    let bytes = std::fs::read(home.path().join("vault.moat")).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("CANARY"));
    assert!(
        !seen.contains("CANARY"),
        "value shown outside get --reveal: {seen}"
    );
}

#[test]
fn wrong_passwords_are_refused_slower_each_time_and_change_nothing() {
    let (home, pw) = initialized_home("right-password-123");
    vault(
        home.path(),
        &pw,
        &["add", "k", "--stdin"],
        Some("value-1234567"),
    );
    let before = std::fs::read(home.path().join("vault.moat")).unwrap();
    let wrong = password_file(home.path(), "wrong");
    let t = std::time::Instant::now();
    let (code, _, err) = vault(home.path(), &wrong, &["remove", "k"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wrong vault password (attempt 1)"), "{err}");
    let (_, _, err) = vault(home.path(), &wrong, &["list"], None);
    assert!(err.contains("attempt 2"), "{err}");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1500),
        "no delay against guessing"
    );
    assert_eq!(
        std::fs::read(home.path().join("vault.moat")).unwrap(),
        before
    );
    // The right password resets the count.
    assert_eq!(vault(home.path(), &pw, &["list"], None).0, 0);
    assert!(!home.path().join("vault.attempts").exists());
}

#[test]
fn a_damaged_vault_is_refused_and_left_alone() {
    let (home, pw) = initialized_home("right-password-123");
    let path = home.path().join("vault.moat");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (code, _, err) = vault(
        home.path(),
        &pw,
        &["add", "k", "--stdin"],
        Some("value-1234567"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    std::fs::write(&path, &bytes[..40]).unwrap();
    let (code, out, err) = vault(home.path(), &pw, &["status"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_password_in_the_environment_needs_an_opt_in() {
    let home = new_home();
    let run = |extra: &[(&str, &str)]| {
        let out = moat_cmd(home.path())
            .args(["vault", "init"])
            .env("MOAT_VAULT_PASSWORD", "env-password-123")
            .envs(extra.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("MOAT_VAULT_PASSWORD_FILE") && err.contains("MOAT_ALLOW_PASSWORD_ENV"),
        "{err}"
    );
    let (code, err) = run(&[("MOAT_ALLOW_PASSWORD_ENV", "1")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning"), "{err}");
    assert!(!err.contains("env-password-123"), "{err}");
}

#[test]
fn serve_resolves_secret_references_through_the_vault() {
    let (home, pw) = initialized_home("serve-password-123");
    let key = "gw-key-CANARY-0123456789abcdef";
    vault(
        home.path(),
        &pw,
        &["add", "gateway-key", "--stdin"],
        Some(key),
    );
    std::fs::write(
        home.path().join("config.toml"),
        "[auth]\napi_key = \"secret:gateway-key\"\n",
    )
    .unwrap();

    let mut moat = Moat::start_in(home, &["-vv"], &[("MOAT_VAULT_PASSWORD_FILE", &pw)], None);
    let status = get(
        moat.main,
        "/status",
        &[("X-Moat-Control-Token", &moat.token())],
    );
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["config"]["api_key"], "secret:gateway-key");
    // The value is a known secret now: echoing it anywhere gets it redacted.
    let r = get(moat.main, &format!("/no-route?q={key}"), &[("X-Echo", key)]);
    assert_eq!(r.status, 403);
    assert_eq!(moat.terminate(), Some(0));
    let out = format!("{}{}", moat.output(), status.body);
    assert!(!out.contains("CANARY"), "{out}");

    // A reference to a missing entry stops the start with the command that fixes it.
    let home = new_home();
    vault(home.path(), &pw, &["init"], None);
    std::fs::write(
        home.path().join("config.toml"),
        "[auth]\napi_key = \"secret:absent\"\n",
    )
    .unwrap();
    let (code, _, err) = run_moat(
        home.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("MOAT_VAULT_PASSWORD_FILE", &pw)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("moat vault add absent"), "{err}");
}

/// `moat vault ARGS` with no password source but `extra`: only a seal can unlock.
fn vault_unattended(home: &Path, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    run_vault(home, args, None, extra)
}

#[test]
fn first_serve_creates_a_sealed_vault_that_opens_here_only() {
    let home = new_home();
    let mut moat = Moat::start_in(home, &[], &[], None);
    let out = moat.output();
    assert!(
        out.contains("created a vault sealed to this machine") && out.contains("moat vault passwd"),
        "{out}"
    );
    assert_eq!(moat.terminate(), Some(0));
    let home = moat.home.path().to_path_buf();

    let (code, out, err) = vault_unattended(&home, &["status"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sealed to this machine"), "{out}");
    let (code, _, err) = vault_unattended(&home, &["add", "k", "--stdin"], &[]);
    assert_eq!(code, 2, "stdin is the value here, and empty: {err}");
    let (code, out, err) = vault_unattended(&home, &["list"], &[]);
    assert_eq!(code, 0, "the seal unlocks without a password: {err}");
    assert!(out.contains("empty"), "{out}");

    // Unsealing a vault whose password nobody knows would lose it: refused.
    let (code, _, err) = vault_unattended(&home, &["unseal"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("moat vault passwd"), "{err}");
    assert_eq!(vault_unattended(&home, &["list"], &[]).0, 0, "still sealed");

    // A master password can be set through the seal.
    let pw = password_file(&home, "chosen-master-password");
    let (code, _, err) =
        vault_unattended(&home, &["passwd"], &[("MOAT_VAULT_NEW_PASSWORD_FILE", &pw)]);
    assert_eq!(code, 0, "{err}");

    // A copy of the home elsewhere does not unseal; the password still opens it.
    let copy = new_home();
    for f in ["vault.moat", "vault.seal"] {
        std::fs::copy(home.join(f), copy.path().join(f)).unwrap();
    }
    let (code, _, err) = vault_unattended(copy.path(), &["list"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another machine or at another path"), "{err}");
    let (code, _, err) =
        vault_unattended(copy.path(), &["list"], &[("MOAT_VAULT_PASSWORD_FILE", &pw)]);
    assert_eq!(code, 0, "{err}");

    // Unsealing brings the password back.
    assert_eq!(vault_unattended(&home, &["unseal"], &[]).0, 0);
    assert_eq!(vault_unattended(&home, &["list"], &[]).0, 2);
}

#[test]
fn a_pin_sealed_vault_needs_the_pin() {
    let (home, pw) = initialized_home("pin-test-password");
    let pin = home.path().join("pin");
    std::fs::write(&pin, "2468\n").unwrap();
    let pin = pin.display().to_string();
    let (code, _, err) = vault_unattended(
        home.path(),
        &["seal", "--pin"],
        &[
            ("MOAT_VAULT_PASSWORD_FILE", &pw),
            ("MOAT_VAULT_PIN_FILE", &pin),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        vault_unattended(home.path(), &["list"], &[("MOAT_VAULT_PIN_FILE", &pin)]).0,
        0
    );
    let wrong = home.path().join("wrong-pin");
    std::fs::write(&wrong, "1111\n").unwrap();
    let (code, _, err) = vault_unattended(
        home.path(),
        &["list"],
        &[("MOAT_VAULT_PIN_FILE", wrong.to_str().unwrap())],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("wrong PIN"), "{err}");
    assert_eq!(
        vault_unattended(home.path(), &["list"], &[]).0,
        2,
        "no PIN, no password"
    );
}

#[test]
fn the_seal_secret_must_live_outside_the_home() {
    let (home, pw) = initialized_home("inside-test-password");
    let inside = home.path().join("seal");
    let (code, _, err) = vault_unattended(
        home.path(),
        &["seal"],
        &[
            ("MOAT_VAULT_PASSWORD_FILE", &pw),
            ("MOAT_SEAL_DIR", inside.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("inside MOAT_HOME"), "{err}");
}

#[test]
fn export_writes_a_new_private_file_and_events_are_emitted() {
    let (home, pw) = initialized_home("export-password-1");
    vault(
        home.path(),
        &pw,
        &["add", "k1", "--stdin", "--description", "d"],
        Some("value-one-123"),
    );
    let out = home.path().join("export.json");
    let out_s = out.to_str().unwrap();
    let (code, stdout, err) = vault(home.path(), &pw, &["-v", "export", "--out", out_s], None);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("in clear"), "{stdout}");
    assert!(
        err.contains("vault.reveal"),
        "the export is an audit event: {err}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["entries"][0]["name"], "k1");
    assert_eq!(json["entries"][0]["value"], "value-one-123");
    let (code, _, err) = vault(home.path(), &pw, &["export", "--out", out_s], None);
    assert_eq!(code, 2, "never overwrites: {err}");
    let (_, _, err) = vault(
        home.path(),
        &pw,
        &["-v", "add", "k2", "--stdin"],
        Some("value-two-456"),
    );
    assert!(
        err.contains("vault.add") && err.contains("k2") && !err.contains("value-two"),
        "{err}"
    );
}

#[test]
fn killed_vault_writers_never_lose_the_vault() {
    let (home, pw) = initialized_home("kill-test-password");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut added = 0;
    for round in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = moat_cmd(home.path())
            .args(["vault", "add", &format!("k{round}"), "--stdin"])
            .env("MOAT_VAULT_PASSWORD_FILE", &pw)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            input.write_all(b"value-abcdef").unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(seed % 700));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            added += 1;
        }
        let (code, out, err) = vault(home.path(), &pw, &["list"], None);
        assert_eq!(code, 0, "round {round}: the vault no longer opens: {err}");
        let names = out.lines().filter(|l| l.starts_with('k')).count();
        assert!(
            names >= added,
            "round {round}: a completed add was lost ({names} < {added})"
        );
    }
}

#[test]
fn a_seal_from_an_earlier_vault_falls_back_to_the_password() {
    let (home, pw) = initialized_home("stale-seal-password");
    let (code, out, _) = vault(home.path(), &pw, &["seal"], None);
    assert_eq!(code, 0);
    let outside = out
        .split("The other half of the seal is ")
        .nth(1)
        .unwrap()
        .split(". ")
        .next()
        .unwrap()
        .to_string();
    let outside_bytes = std::fs::read(&outside).unwrap();
    // The vault is replaced behind the seal's back; the old seal is put back in place.
    let seal = std::fs::read(home.path().join("vault.seal")).unwrap();
    std::fs::remove_file(home.path().join("vault.moat")).unwrap();
    vault(home.path(), &pw, &["init"], None);
    assert!(
        !home.path().join("vault.seal").exists(),
        "init clears a stale seal"
    );
    std::fs::write(home.path().join("vault.seal"), &seal).unwrap();
    std::fs::write(&outside, &outside_bytes).unwrap();
    let (code, _, err) = vault(home.path(), &pw, &["list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("does not belong to this vault"), "{err}");
}

#[test]
fn a_tampered_header_fails_even_when_the_seal_opens() {
    let (home, pw) = initialized_home("tamper-seal-password");
    assert_eq!(vault(home.path(), &pw, &["seal"], None).0, 0);
    let path = home.path().join("vault.moat");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[30] ^= 1; // inside the salt
    std::fs::write(&path, &bytes).unwrap();
    let (code, _, err) = vault_unattended(home.path(), &["list"], &[]);
    assert_ne!(
        code, 0,
        "a tampered header must not pass through a sealed unlock: {err}"
    );
}

#[test]
fn a_sealed_vault_lets_serve_resolve_secrets_unattended() {
    // First start on a fresh home creates the sealed vault.
    let mut first = Moat::start(&[], &[]);
    assert_eq!(first.terminate(), Some(0));
    let home = first.home.path().to_path_buf();
    let key = "sealed-gw-key-CANARY-0123456789";
    let (code, _, err) = run_moat_stdin(&home, &["vault", "add", "gw", "--stdin"], key);
    assert_eq!(code, 0, "added through the seal, no password: {err}");
    std::fs::write(
        home.join("config.toml"),
        "[auth]\napi_key = \"secret:gw\"\n",
    )
    .unwrap();

    // Second start: no password source at all, and secret:gw resolves through the seal.
    let home_dir = std::mem::replace(&mut first.home, new_home());
    drop(first);
    let mut second = Moat::start_in(home_dir, &["-vv"], &[], None);
    let status = get(
        second.main,
        "/status",
        &[("X-Moat-Control-Token", &second.token())],
    );
    assert_eq!(status.json()["config"]["api_key"], "secret:gw");
    assert_eq!(second.terminate(), Some(0));
    assert!(!second.output().contains("CANARY"));
}

#[test]
fn doctor_checks_vault_references_without_asking_for_anything() {
    let home = new_home();
    let config = home.path().join("config.toml");
    std::fs::write(&config, "[auth]\napi_key = \"secret:gw\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let doctor = |home: &Path| run_moat(home, &["doctor"], &[]);

    let (code, out, _) = doctor(home.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("moat vault add gw (it creates a vault"),
        "{out}"
    );

    let pw = password_file(home.path(), "doctor-password-1");
    assert_eq!(vault(home.path(), &pw, &["init"], None).0, 0);
    let (code, out, _) = doctor(home.path());
    assert_eq!(code, 0, "a locked vault is not a failure: {out}");
    assert!(out.contains("checked when `moat serve` unlocks"), "{out}");

    assert_eq!(vault(home.path(), &pw, &["seal"], None).0, 0);
    let (code, out, _) = doctor(home.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fix: moat vault add gw"), "{out}");

    vault(
        home.path(),
        &pw,
        &["add", "gw", "--stdin"],
        Some("gw-value-123456"),
    );
    let (code, out, _) = doctor(home.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("secret:gw is in the vault") && !out.contains("gw-value"),
        "{out}"
    );
}

/// A private D-Bus session bus with GNOME Keyring's Secret Service on it, unlocked, all in a
/// temporary directory: the OS keyring as a desktop login would have it.
struct SessionKeyring {
    dir: tempfile::TempDir,
    bus: std::process::Child,
    keyring: std::process::Child,
    address: String,
}

impl SessionKeyring {
    fn start() -> SessionKeyring {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for tool in ["dbus-daemon", "dbus-send", "gnome-keyring-daemon"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success(),
                "{tool} is missing: apt-get install dbus-daemon dbus-bin gnome-keyring (.ci/run does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("moat-keyring-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let isolate = |c: &mut Command| {
            c.env("HOME", dir.path())
                .env("XDG_RUNTIME_DIR", &run)
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("DBUS_SESSION_BUS_ADDRESS", &address);
        };
        let mut bus = Command::new("dbus-daemon");
        bus.args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        isolate(&mut bus);
        let bus = bus.spawn().unwrap();
        wait_for("the session bus", || socket.exists());
        let mut keyring = Command::new("gnome-keyring-daemon");
        keyring
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        isolate(&mut keyring);
        let mut keyring = keyring.spawn().unwrap();
        // The login keyring's password, typed at "login": it is created unlocked.
        let mut stdin = keyring.stdin.take().unwrap();
        stdin.write_all(b"keyring-login-password").unwrap();
        drop(stdin);
        let this = SessionKeyring {
            dir,
            bus,
            keyring,
            address,
        };
        wait_for("the Secret Service", || {
            let out = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &this.address)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("boolean true")
        });
        this
    }

    /// The environment a `moat` command needs to find this keyring.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", self.address.clone()),
            (
                "XDG_RUNTIME_DIR",
                self.dir.path().join("run").display().to_string(),
            ),
        ]
    }

    /// An environment with no session bus at all.
    fn none(&self) -> Vec<(&'static str, String)> {
        let empty = self.dir.path().join("no-bus");
        std::fs::create_dir_all(&empty).unwrap();
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", String::new()),
            ("XDG_RUNTIME_DIR", empty.display().to_string()),
        ]
    }
}

impl Drop for SessionKeyring {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_seal_can_live_in_the_os_keyring() {
    let keyring = SessionKeyring::start();
    let with_bus = keyring.env();
    let no_bus = keyring.none();
    let env = |extra: &[(&'static str, String)], more: &[(&'static str, &str)]| {
        let mut all: Vec<(&str, String)> = extra.to_vec();
        all.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
        all
    };
    let run = |home: &Path, args: &[&str], e: &[(&str, String)], stdin: Option<&str>| {
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_vault(home, args, stdin, &e)
    };
    let (home, pw) = initialized_home("keyring-test-password");
    let home = home.path();
    let pw_env = [("MOAT_VAULT_PASSWORD_FILE", pw.as_str())];
    let (code, _, err) = run(
        home,
        &["add", "k", "--stdin"],
        &env(&[], &pw_env),
        Some(CANARY),
    );
    assert_eq!(code, 0, "{err}");

    // `auto` with a Secret Service on the bus: the secret goes to the keyring, not a file.
    let auto = env(&with_bus, &[("MOAT_SEAL_STORE", "auto")]);
    let auto_pw = env(&auto, &pw_env);
    let (code, out, err) = run(home, &["seal"], &auto_pw, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the OS keyring entry moat/seal-"), "{out}");
    let (code, out, err) = run(home, &["status"], &auto, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("other half is the OS keyring entry"), "{out}");

    // It unlocks with no password, through the keyring.
    let (code, out, err) = run(home, &["list"], &auto, None);
    assert_eq!(code, 0, "unsealed through the keyring: {err}");
    assert!(out.contains('k'), "{out}");

    // With no keyring reachable the seal does not open, and says why.
    let (code, _, err) = run(home, &["list"], &no_bus, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no OS keyring is reachable") && err.contains("asking for the password"),
        "{err}"
    );

    // A copy of the home elsewhere finds no entry of its own in the keyring.
    let copy = new_home();
    for f in ["vault.moat", "vault.seal"] {
        std::fs::copy(home.join(f), copy.path().join(f)).unwrap();
    }
    let (code, _, err) = run(copy.path(), &["list"], &auto, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another machine or at another path"), "{err}");

    // Asking for the keyring where there is none fails and keeps the seal that was there.
    let (code, _, err) = run(
        home,
        &["seal", "--store", "keyring"],
        &env(&no_bus, &pw_env),
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no OS keyring is reachable"), "{err}");
    assert_eq!(
        run(home, &["list"], &auto, None).0,
        0,
        "the old seal stands"
    );

    // `auto` without a keyring falls back to a file; the old keyring entry is deleted.
    let (code, out, err) = run(
        home,
        &["seal"],
        &env(&no_bus, &[("MOAT_SEAL_STORE", "auto"), pw_env[0]]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".key"), "a file seal: {out}");
    assert!(
        err.contains("previous seal's secret, the OS keyring entry")
            && err.contains("could not be deleted"),
        "the keyring entry left behind is reported: {err}"
    );
    assert_eq!(
        run(home, &["list"], &no_bus, None).0,
        0,
        "opens without a bus"
    );

    // Unsealing a keyring seal deletes its entry: the old seal file, put back, opens nothing.
    let (code, _, err) = run(home, &["seal", "--store", "keyring"], &auto_pw, None);
    assert_eq!(code, 0, "{err}");
    let keyring_seal = std::fs::read(home.join("vault.seal")).unwrap();
    let (code, _, err) = run(home, &["unseal"], &auto_pw, None);
    assert_eq!(code, 0, "{err}");
    std::fs::write(home.join("vault.seal"), keyring_seal).unwrap();
    let (code, _, err) = run(home, &["list"], &auto, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is missing"), "{err}");
}

/// `vault add` killed at any moment: whatever the vault holds afterwards, the audit log
/// mentions (the intent is on disk before the change is made).
#[test]
fn a_killed_vault_change_is_never_missing_from_the_audit_log() {
    use std::io::Write;
    let home = new_home();
    // A fresh home: the first add makes the sealed vault, no password involved.
    let (code, out, err) = run_vault(
        home.path(),
        &["add", "first", "--stdin"],
        Some("value-0"),
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("created a vault sealed to this machine"),
        "{out}"
    );
    let mut rng = 0x9e37_79b9_u64;
    for i in 0..24 {
        let mut child = moat_cmd(home.path())
            .args(["vault", "add", &format!("k{i}"), "--stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(format!("value-{i}").as_bytes()).unwrap();
        drop(input);
        // A different moment each time, across the whole command (tens of ms).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(std::time::Duration::from_micros(rng % 60_000));
        let _ = child.kill();
        let _ = child.wait();
    }
    let (code, listed, err) = vault_unattended(home.path(), &["list"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, audit, err) = run_moat(home.path(), &["audit", "export"], &[]);
    assert_eq!(code, 0, "{err}");
    let mut kept = 0;
    for i in 0..24 {
        let name = format!("k{i}");
        if listed.lines().any(|l| l.starts_with(&format!("{name} "))) {
            kept += 1;
            assert!(
                audit.contains(&format!("\"target\":\"{name}\"")),
                "{name} is in the vault but not in the audit log:\n{audit}"
            );
        }
    }
    eprintln!("{kept} of 24 killed adds were committed");
}
