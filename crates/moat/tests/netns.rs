//! Exposure from a real non-loopback peer: two network namespaces joined by a veth pair.
//! moat runs in one, curl in the other. Needs root and iproute2; without them these tests
//! fail loudly rather than pass.
//!
//! Only addresses inside the namespaces this test creates are ever contacted.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;

/// Two namespaces `a` (moat) and `b` (the client) with `a_ip` and `b_ip` on a veth pair.
struct NetPair {
    a: String,
    b: String,
    a_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("NETNS TEST NOT RUNNABLE: cannot run `ip` ({e}); install iproute2 and run as root")
    });
    assert!(
        out.status.success(),
        "NETNS TEST NOT RUNNABLE: `ip {}` failed: {} (these tests need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetPair {
    fn new() -> NetPair {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let subnet = (std::process::id() % 60) * 4 + n; // distinct per test in this process
        let (a, b) = (format!("moat-a-{id}"), format!("moat-b-{id}"));
        let (va, vb) = (format!("mva{id}"), format!("mvb{id}"));
        let a_ip = format!("10.231.{subnet}.1");
        let b_ip = format!("10.231.{subnet}.2");
        let pair = NetPair {
            a: a.clone(),
            b: b.clone(),
            a_ip: a_ip.clone(),
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        ip(&["-n", &a, "addr", "add", &format!("{a_ip}/30"), "dev", &va]);
        ip(&["-n", &b, "addr", "add", &format!("{b_ip}/30"), "dev", &vb]);
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// curl from namespace `b`; returns (status, body).
    fn curl(&self, url: &str, extra: &[&str]) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.b,
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl is installed (see .ci/run)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn remote_peer_reaches_control_only_with_credentials_and_lan_only_health() {
    let net = NetPair::new();
    let home = new_home();
    let (cert, key) = self_signed(home.path(), &[&net.a_ip]);
    let main_addr = format!("{}:7411", net.a_ip);
    let lan_addr = format!("{}:7412", net.a_ip);
    let api_key = "remote-api-key-0123456789abcdef";
    let moat = Moat::start_in(
        home,
        &[
            "--listen",
            &main_addr,
            "--lan-listen",
            &lan_addr,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("MOAT_API_KEY", api_key)],
        Some(&["ip", "netns", "exec", &net.a]),
    );
    let token = moat.token();
    let tls = ["--cacert", cert.to_str().unwrap()];
    let status_url = format!("https://{main_addr}/status");
    let with = |h: &str| [tls[0], tls[1], "-H", h].map(str::to_string);

    let (code, body) = net.curl(&status_url, &tls);
    assert_eq!(code, 403, "no credentials: {body}");
    let key_header = format!("x-api-key: {api_key}");
    let (code, _) = net.curl(
        &status_url,
        &with(&key_header)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 403, "the API key is not the control token");
    let token_header = format!("X-Moat-Control-Token: {token}");
    let (code, body) = net.curl(
        &status_url,
        &with(&token_header)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 200, "with the control token: {body}");
    assert!(body.contains("\"version\""), "{body}");
    let evil = [
        tls[0],
        tls[1],
        "-H",
        &token_header,
        "-H",
        "Origin: https://evil.example",
    ];
    assert_eq!(
        net.curl(&status_url, &evil).0,
        403,
        "cross-site origin from a remote peer"
    );

    let (code, body) = net.curl(&format!("https://{main_addr}/health"), &tls);
    assert_eq!((code, body.as_str()), (200, "{\"status\":\"ok\"}"));

    let (code, body) = net.curl(&format!("http://{lan_addr}/health"), &[]);
    assert_eq!((code, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let lan_status = format!("http://{lan_addr}/status");
    let (code, body) = net.curl(&lan_status, &["-H", &token_header]);
    assert_eq!(
        code, 403,
        "control route must not exist on the LAN listener: {body}"
    );
    assert!(body.contains("no such route"), "{body}");
}

#[test]
fn loopback_main_listener_is_unreachable_from_the_lan() {
    let net = NetPair::new();
    let lan_addr = format!("{}:7412", net.a_ip);
    let _moat = Moat::start_in(
        new_home(),
        &["--listen", "127.0.0.1:7411", "--lan-listen", &lan_addr],
        &[],
        Some(&["ip", "netns", "exec", &net.a]),
    );
    assert_eq!(net.curl(&format!("http://{lan_addr}/health"), &[]).0, 200);
    // Nothing listens on the veth address's main port: connection refused, status 000.
    assert_eq!(
        net.curl(&format!("http://{}:7411/health", net.a_ip), &[]).0,
        0
    );
}

#[test]
fn public_bind_without_auth_is_refused_inside_a_namespace_too() {
    let net = NetPair::new();
    let home = new_home();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.a,
            BIN,
            "serve",
            "--listen",
            &format!("{}:7411", net.a_ip),
        ])
        .env("MOAT_HOME", home.path())
        .env("MOAT_SEAL_DIR", seal_dir())
        .env_remove("MOAT_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MOAT_API_KEY") && err.contains(&net.a_ip),
        "{err}"
    );
}

#[test]
fn wildcard_listener_checks_host_against_the_address_the_client_used() {
    let net = NetPair::new();
    let api_key = "wildcard-api-key-0123456789abcdef";
    let moat = Moat::start_in(
        new_home(),
        &["--listen", "0.0.0.0:7411", "--allow-insecure-remote"],
        &[("MOAT_API_KEY", api_key)],
        Some(&["ip", "netns", "exec", &net.a]),
    );
    let token_header = format!("X-Moat-Control-Token: {}", moat.token());
    let url = format!("http://{}:7411/status", net.a_ip);
    let (code, body) = net.curl(&url, &["-H", &token_header]);
    assert_eq!(code, 200, "Host naming the interface used: {body}");
    let (code, _) = net.curl(&url, &["-H", &token_header, "-H", "Host: 0.0.0.0:7411"]);
    assert_eq!(code, 403, "the wildcard address is no host name");
}
