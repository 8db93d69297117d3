//! `moat sandbox run` as a user meets it: exit statuses, injected secrets, moat's own
//! environment and home kept out, the workspace cleaned up. Needs what the sandbox needs
//! (root in CI, or unprivileged user namespaces).
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

fn sandbox(home: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec!["sandbox", "run"];
    all.extend_from_slice(args);
    run_moat(home, &all, env)
}

#[test]
fn exit_statuses_say_how_the_command_ended() {
    let home = new_home();
    let (code, out, err) = sandbox(
        home.path(),
        &["--", "sh", "-c", "echo out; echo err >&2; exit 7"],
        &[],
    );
    assert_eq!(code, 7, "{err}");
    assert_eq!(out, "out\n");
    assert!(
        err.starts_with("err\nmoat sandbox: exited with status 7"),
        "{err}"
    );
    assert!(
        err.contains("process level") && err.contains("no network"),
        "{err}"
    );

    let (code, _, err) = sandbox(
        home.path(),
        &["--wall-time", "1s", "--", "sleep", "20"],
        &[],
    );
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timed out"), "{err}");

    // Out of memory, where a cgroup holds the limit (as root it must; the report says
    // which mechanism it was either way).
    let (code, out, err) = sandbox(
        home.path(),
        &[
            "--memory",
            "64",
            "--json",
            "--",
            "python3",
            "-c",
            "b = bytearray(256 << 20)",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect(&err);
    let limits = report["enforcement"]["limits"]
        .as_str()
        .unwrap()
        .to_string();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if limits.starts_with("cgroup") || root {
        assert!(limits.starts_with("cgroup_v"), "{report}");
        assert_eq!(code, 137, "{report}");
        assert_eq!(report["outcome"]["kind"], "out_of_memory", "{report}");
    } else {
        assert_eq!(limits, "rlimits");
        assert!(
            report["enforcement"]["why_not_cgroup"].is_string(),
            "{report}"
        );
        assert_eq!(code, 1, "{report}");
    }

    let (code, _, err) = sandbox(home.path(), &["--", "unshare", "-U", "true"], &[]);
    assert_eq!(code, 159, "{err}");
    assert!(err.contains("policy violation: unshare (by pid"), "{err}");

    let (code, _, err) = sandbox(home.path(), &["--", "no-such-tool"], &[]);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("no-such-tool") && err.contains("PATH="),
        "{err}"
    );

    for bad in [
        &["--grant", "/srv", "--", "true"][..],
        &["--grant", "rw:/usr", "--", "true"],
        &["--env", "=x", "--", "true"],
        &["--profile", "nope", "--", "true"],
    ] {
        let (code, _, err) = sandbox(home.path(), bad, &[]);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("moat"), "{err}");
    }
    // A command that locks its own folders does not keep them from being removed (as
    // root this passes either way; run unprivileged it needs the permissions given back).
    let (code, _, err) = sandbox(
        home.path(),
        &[
            "--",
            "sh",
            "-c",
            "mkdir -p d/e && touch d/e/f && chmod 0 d/e d",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("could not remove"), "{err}");
    // Nothing is left behind in the home.
    let left: Vec<_> = std::fs::read_dir(home.path().join("sandbox"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_home_and_moat_s_environment_stay_outside() {
    // Not under /tmp: the private /tmp would hide it whatever the root holds.
    let home = tempfile::Builder::new()
        .prefix("moat-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "# sk-ant-home-canary-0451\n",
    )
    .unwrap();
    let script = format!(
        "env; cat /proc/1/environ; ls -a {h}; cat {h}/config.toml; grep -rs canary /etc /tmp /workspace /proc/self/environ; true",
        h = home.path().display()
    );
    let (code, out, err) = sandbox(
        home.path(),
        &["--", "sh", "-c", &script],
        &[
            ("MOAT_TEST_CANARY", "sk-ant-env-canary-9981"),
            ("OPENAI_API_KEY", "sk-env-canary-1234"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{}/config.toml: No such file",
            home.path().display()
        )),
        "{err}"
    );
    for canary in ["env-canary", "home-canary"] {
        assert!(
            !out.contains(canary) && !err.contains(canary),
            "{canary}: {out}{err}"
        );
    }
    // Granting the home (or a folder holding it) is refused.
    let parent = home.path().parent().unwrap().display().to_string();
    let (code, _, err) = sandbox(
        home.path(),
        &["--grant", &format!("ro:{parent}"), "--", "true"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("would expose"), "{err}");
}

#[test]
fn a_vault_secret_is_injected_for_one_call_and_profiles_apply() {
    let home = new_home();
    let pw = home.path().join("pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pw = pw.display().to_string();
    let env = [("MOAT_VAULT_PASSWORD_FILE", pw.as_str())];
    assert_eq!(run_moat(home.path(), &["vault", "init"], &env).0, 0);
    let mut child = moat_cmd(home.path())
        .args(["vault", "add", "gh", "--stdin"])
        .env("MOAT_VAULT_PASSWORD_FILE", &pw)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ghp_vault_canary_5150")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        home.path().join("config.toml"),
        "[sandbox.profiles.tiny]\nwall_time = \"1s\"\nenv = { GREETING = \"hi\" }\n",
    )
    .unwrap();
    let (code, out, err) = sandbox(
        home.path(),
        &[
            "--profile",
            "tiny",
            "--secret",
            "TOKEN=gh",
            "--",
            "sh",
            "-c",
            "echo $GREETING ${#TOKEN} $TOKEN; sleep 5",
        ],
        &env,
    );
    assert_eq!(code, 124, "{err}");
    assert_eq!(out, "hi 21 ghp_vault_canary_5150\n");
    assert!(!err.contains("ghp_vault_canary"), "{err}");

    let (code, _, err) = sandbox(
        home.path(),
        &["--secret", "TOKEN=missing", "--", "true"],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no secret \"missing\""), "{err}");

    std::fs::write(
        home.path().join("config.toml"),
        "[sandbox.profiles.bad]\nlevel = \"docker\"\n",
    )
    .unwrap();
    let (code, _, err) = sandbox(home.path(), &["--", "true"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("sandbox.profiles.bad.level"), "{err}");
}

#[test]
fn a_tool_runs_with_the_profile_its_trust_level_chooses() {
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        r#"
[sandbox.profiles.build]
env = { WHO = "build" }
[sandbox.profiles.locked]
env = { WHO = "locked" }
wall_time = "1s"
[sandbox.profiles.host]
level = "none"
[sandbox.tools.shell]
profile = "locked"
trust = { owner = "build" }
"#,
    )
    .unwrap();
    let script = ["--", "sh", "-c", "echo $WHO"];
    let with = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend_from_slice(&script);
        sandbox(home.path(), &args, &[])
    };
    let (code, out, err) = with(&["--tool", "shell"]);
    assert_eq!((code, out.as_str()), (0, "build\n"), "{err}");
    assert!(err.contains("profile build, process level"), "{err}");
    let (code, out, err) = with(&["--tool", "shell", "--trust", "guest"]);
    assert_eq!((code, out.as_str()), (0, "locked\n"), "{err}");
    let (code, out, _) = with(&["--tool", "unlisted", "--trust", "guest"]);
    assert_eq!((code, out.as_str()), (0, "\n"));
    // --trust needs --tool, and --profile and --tool exclude each other.
    for bad in [
        &["--trust", "guest"][..],
        &["--tool", "shell", "--profile", "build"],
    ] {
        let (code, _, err) = with(bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }

    // No isolation is for the owner only: the config saying otherwise is refused.
    std::fs::write(
        home.path().join("config.toml"),
        "[sandbox.profiles.host]\nlevel = \"none\"\n[sandbox.tools.shell]\ntrust = { guest = \"host\" }\n",
    )
    .unwrap();
    let (code, _, err) = with(&["--tool", "shell", "--trust", "guest"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sandbox.tools.shell.trust.guest") && err.contains("only the owner"),
        "{err}"
    );
}

#[test]
fn json_reports_the_outcome_and_the_enforcement() {
    let home = new_home();
    let (code, out, err) = sandbox(
        home.path(),
        &["--json", "--", "sh", "-c", "echo hi; exit 3"],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"]["kind"], "exited");
    assert_eq!(v["outcome"]["code"], 3);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["enforcement"]["level"], "process");
    assert_eq!(v["enforcement"]["network"], false);
    assert!(v["enforcement"]["landlock_abi"].as_u64().is_some(), "{out}");
}

#[test]
fn a_container_profile_runs_on_gvisor_and_says_so() {
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        "[sandbox.profiles.gv]\nlevel = \"container\"\n",
    )
    .unwrap();
    let (code, out, err) = sandbox(
        home.path(),
        &[
            "--profile",
            "gv",
            "--json",
            "--",
            "sh",
            "-c",
            "dmesg | head -1; exit 5",
        ],
        &[],
    );
    assert_eq!(code, 5, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect(&err);
    assert!(v["stdout"].as_str().unwrap().contains("gVisor"), "{out}");
    assert_eq!(v["enforcement"]["level"], "container");
    assert_eq!(v["enforcement"]["limits"], "runsc");

    let (code, _, err) = sandbox(
        home.path(),
        &["--profile", "gv", "--", "sh", "-c", "exit 2"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("container level, gVisor (runsc)"), "{err}");
}

/// A host service on 127.0.0.1 that answers one HTTP request per connection.
fn http_service() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nhello\n",
            );
        }
    });
    port
}

#[test]
fn network_grants_pass_moat_s_egress_policy_too() {
    let port = http_service();
    let home = new_home();
    // Through a CONNECT tunnel (python's http.client, as any HTTPS client would).
    let client = format!(
        "import http.client\n\
         c = http.client.HTTPConnection('127.0.0.1', 3128, timeout=10)\n\
         c.set_tunnel('127.0.0.1', {port})\n\
         try:\n c.request('GET', '/'); print('got', c.getresponse().read().decode().strip())\n\
         except OSError as e:\n print('failed', e)"
    );
    let grant = format!("net:127.0.0.1:{port}");
    let run = |home: &std::path::Path| {
        sandbox(
            home,
            &["--grant", &grant, "--", "python3", "-c", &client],
            &[],
        )
    };
    // Granted, but the default egress policy refuses the port and loopback.
    let (code, out, err) = run(home.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("failed") && out.contains("403"), "{out}");
    assert!(
        err.contains(&format!(
            "network 127.0.0.1:{port} refused: port {port} is refused"
        )),
        "{err}"
    );
    std::fs::write(
        home.path().join("config.toml"),
        format!("[egress]\nallowed_ports = [443, {port}]\n"),
    )
    .unwrap();
    let (_, out, err) = run(home.path());
    assert!(out.contains("failed"), "{out}");
    assert!(
        err.contains("refused: ") && err.contains("127.0.0.1"),
        "{err}"
    );
    // The owner opens loopback on purpose: the tunnel works.
    std::fs::write(
        home.path().join("config.toml"),
        format!("[egress]\nallowed_ports = [443, {port}]\nallow_cidrs = [\"127.0.0.1/32\"]\n"),
    )
    .unwrap();
    let (code, out, err) = run(home.path());
    assert_eq!((code, out.as_str()), (0, "got hello\n"), "{err}");
    assert!(
        err.contains("network only through moat's egress proxy"),
        "{err}"
    );
    assert!(
        err.contains(&format!("network 127.0.0.1:{port} tunnelled")),
        "{err}"
    );
    // Not granted: refused whatever the policy says.
    let (_, out, err) = sandbox(
        home.path(),
        &["--grant", "net:example.com", "--", "python3", "-c", &client],
        &[],
    );
    assert!(out.contains("failed"), "{out}");
    assert!(err.contains("refused: not granted"), "{err}");
    let (code, _, err) = sandbox(home.path(), &["--grant", "net:a b", "--", "true"], &[]);
    assert_eq!(code, 2, "{err}");

    // Each run and each refused destination is in the audit log; arguments are not.
    let (code, out, err) = run_moat(
        home.path(),
        &["audit", "tail", "-n", "100", "--action", "sandbox.*"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("sandbox.egress.refused"))
        .collect();
    assert_eq!(refused.len(), 3, "{out}");
    assert!(refused.iter().any(|l| l.contains("not granted")), "{out}");
    assert!(refused.iter().all(|l| l.contains("127.0.0.1:")), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("sandbox.run")).count(),
        4,
        "{out}"
    );
    assert!(
        out.contains("python3") && !out.contains("set_tunnel"),
        "{out}"
    );
}
