//! The web chat in a real headless Chromium (driven over the DevTools protocol by
//! `tests/peers/webchat_check.py`): send, stream, approve a waiting call; a WebSocket
//! from another origin is refused. Plus what a browser cannot show: the refusals of a
//! handshake without the token or from a foreign Origin, and the page's headers.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::process::Command;

use common::upstream::{FakeUpstream, a_message};
use common::*;
use serde_json::json;

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/webchat_check.py");

fn peer(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with ./scripts/test, or `eval \"$(scripts/peers)\"` first")
    })
}

/// A running server whose assistant's model is `up`; shell calls wait for approval.
fn serve_with(up: &FakeUpstream) -> Moat {
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[llm.backends.up]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"*\"]\n\n[agent]\nmodel = \"claude-x\"\n\n[agent.trust]\nshell = 2\n",
            up.url()
        ),
    )
    .unwrap();
    Moat::start_in(home, &[], &[], None)
}

fn handshake(moat: &Moat, origin: Option<&str>, protocols: &str) -> Resp {
    let mut req = format!(
        "GET /chat/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocols}\r\n",
        moat.main
    );
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    raw(moat.main, req.as_bytes())
}

#[test]
fn the_page_and_the_socket_admit_only_the_owner_s_own_origin_with_the_token() {
    let up = FakeUpstream::start();
    let moat = serve_with(&up);
    let page = get(moat.main, "/chat", &[]);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !page.body.contains(&moat.token()),
        "the page must hold no secret"
    );

    let own = format!("http://{}", moat.main);
    let token = format!("moat.chat.v1, moat.token.{}", moat.token());
    let refused = |origin: &str, protocols: &str| {
        let resp = handshake(&moat, Some(origin), protocols);
        assert_eq!(resp.status, 403, "{}", resp.body);
        assert!(!resp.body.contains(&moat.token()));
        resp.json()["error"]["code"].as_str().unwrap().to_string()
    };
    assert_eq!(refused(&own, "moat.chat.v1"), "control_token_required");
    assert_eq!(
        refused(&own, "moat.chat.v1, moat.token.wrong"),
        "control_token_required"
    );
    assert_eq!(refused("http://127.0.0.1:1", &token), "origin_not_allowed");
    assert_eq!(
        refused("https://evil.example", &token),
        "origin_not_allowed"
    );
    assert_eq!(refused("null", &token), "origin_not_allowed");
    // Nothing reached the model.
    assert!(up.seen().is_empty());
}

#[test]
fn chromium_sends_streams_approves_and_a_foreign_origin_is_refused() {
    let up = FakeUpstream::start();
    up.push(a_message(
        &json!([{"type": "tool_use", "id": "t1", "name": "shell",
                 "input": {"command": "echo approved-by-the-web"}}]),
        "tool_use",
    ));
    up.push(a_message(
        &json!([{"type": "text", "text": "The check passed. <img src=x>"}]),
        "end_turn",
    ));
    let moat = serve_with(&up);
    let (code, url, err) = run_moat(moat.home.path(), &["chat", "--web"], &[]);
    assert_eq!(code, 0, "{err}");
    let url = url.trim();
    assert!(
        url.starts_with(&format!("http://{}/chat#token=", moat.main)),
        "{url}"
    );

    let out = Command::new(peer("MOAT_PEER_PYTHON"))
        .args([CHECK, url, &format!("ws://{}/chat/ws", moat.main)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{stdout}\n{stderr}\nmoat log:\n{}",
        moat.output()
    );
    eprintln!("{stdout}");
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{stdout}");
    assert_eq!(seen[0].body["stream"], json!(true));
    // The approved call's output went back to the model.
    assert!(seen[1].body.to_string().contains("approved-by-the-web"));

    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "100"], &[]);
    assert!(tail.contains("agent.approval.approved"), "{tail}");
    assert!(tail.contains("channel:web:owner"), "{tail}");
    assert!(tail.contains("exposure.denied"), "{tail}");
    assert!(
        !tail.contains(&moat.token()),
        "the token leaked into the audit log"
    );
    assert!(
        !moat.output().contains(&moat.token()),
        "the token leaked into the log"
    );
}
