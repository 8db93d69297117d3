//! `moat audit` as a user drives it: the server's refusals and vault commands land in the
//! log, sampled under flood, never with a secret; verify, tail and export; tampering found.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use common::*;

const CANARY_KEY: &str = "sk-ant-api03-AUDITcliCanary000000000000";

fn audit(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    run_moat(home, &[&["audit"], args].concat(), &[])
}

#[test]
fn refusals_and_vault_events_are_recorded_and_verify() {
    let mut moat = Moat::start(&[], &[]);
    // A flood of refused requests carrying a key-shaped secret: sampled, never written.
    for _ in 0..40 {
        let r = get(
            moat.main,
            "/status",
            &[("X-Moat-Control-Token", CANARY_KEY)],
        );
        assert_eq!(r.status, 403);
    }
    let r = get(moat.main, "/status", &[("Host", "evil.example")]);
    assert_eq!(r.status, 403);
    assert_eq!(moat.terminate(), Some(0));
    let home = moat.home.path().to_path_buf();

    let (code, out, err) = audit(&home, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("chain intact: "), "{out}");
    assert!(out.contains("last checkpoint at"), "{out}");

    let (code, out, err) = audit(&home, &["tail", "-n", "100"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("server.started") && out.contains("server.stopped"),
        "{out}"
    );
    let denied: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("exposure.denied"))
        .collect();
    assert!(
        !denied.is_empty() && denied.len() < 5,
        "41 refusals are sampled: {out}"
    );
    assert!(
        out.contains("similar_since_last_entry"),
        "with counts: {out}"
    );

    let (_, only, _) = audit(&home, &["tail", "--action", "server.*"]);
    assert!(only.lines().all(|l| l.contains(" server.")), "{only}");
    let (code, _, err) = audit(&home, &["tail", "--action", "[bad"]);
    assert_eq!(code, 2, "{err}");

    // A vault command records its event: the name, not the value.
    let (code, _, err) = run_moat_stdin(
        &home,
        &["vault", "add", "gh", "--stdin"],
        "vault-value-CANARY-7",
    );
    assert_eq!(code, 0, "{err}");
    let (_, tail, _) = audit(&home, &["tail", "--action", "vault.*"]);
    assert!(tail.contains("vault.add") && tail.contains(" gh"), "{tail}");

    let (code, exported, _) = audit(&home, &["export"]);
    assert_eq!(code, 0);
    assert!(
        exported.lines().all(|l| l.starts_with("{\"seq\":")),
        "{exported}"
    );
    let (_, none, _) = audit(&home, &["export", "--since", "2999-01-01"]);
    assert!(none.is_empty(), "{none}");
    let (code, _, err) = audit(&home, &["export", "--since", "yesterday-ish"]);
    assert_eq!(code, 2, "{err}");
    let existing = home.join("config.toml");
    std::fs::write(&existing, "").unwrap();
    let (code, _, err) = audit(&home, &["export", "--out", existing.to_str().unwrap()]);
    assert_eq!(code, 2, "an existing file is kept: {err}");

    // Nothing secret anywhere under audit/.
    for f in std::fs::read_dir(home.join("audit")).unwrap() {
        let text = String::from_utf8_lossy(&std::fs::read(f.unwrap().path()).unwrap()).into_owned();
        assert!(
            !text.contains("CANARY") && !text.contains("AUDITcli"),
            "{text}"
        );
    }
    let (code, out, err) = audit(&home, &["verify"]);
    assert_eq!(code, 0, "still intact after a vault command: {out}{err}");
}

#[test]
fn verify_names_the_break_and_exits_1() {
    let mut moat = Moat::start(&[], &[]);
    for _ in 0..3 {
        get(moat.main, "/status", &[]);
    }
    assert_eq!(moat.terminate(), Some(0));
    let home = moat.home.path().to_path_buf();
    let segment = home.join("audit/0000000000000001.jsonl");
    let original = std::fs::read(&segment).unwrap();

    let mut bytes = original.clone();
    let at = bytes.iter().position(|b| *b == b'\n').unwrap() + 30;
    bytes[at] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();
    let (code, out, _) = audit(&home, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at entry 2: modified"), "{out}");

    std::fs::write(&segment, &original).unwrap();
    std::fs::remove_file(home.join("audit/checkpoints.jsonl")).unwrap();
    let (code, out, _) = audit(&home, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing checkpoint"), "{out}");
}
