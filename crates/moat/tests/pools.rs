//! Account pools end to end: the real `moat` binary in front of a scripted fake upstream
//! whose rate-limit headers, 429s and 401s drive headroom choice, stickiness, cooldown,
//! failover and exhaustion; and the analytics that count it all exactly. Keys are canaries
//! that must never show up in `/accounts`, `/analytics`, `/metrics`, logs or the audit log.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::time::{Duration, Instant};

use common::upstream::{FakeUpstream, Reply, a_event};
use common::{Moat, get, new_home, post_json, run_moat};
use serde_json::{Value, json};

const KEYS: [&str; 3] = [
    "sk-ant-api03-POOLcanaryONE111111111111",
    "sk-ant-api03-POOLcanaryTWO222222222222",
    "sk-ant-api03-POOLcanaryTHREE3333333333",
];

fn start(upstream: &FakeUpstream, strategy: &str, accounts: usize, extra: &str) -> Moat {
    let home = new_home();
    let mut config = format!(
        r#"
[llm.backends.ant]
kind = "anthropic"
base_url = "{}"
models = ["claude-*"]
strategy = "{strategy}"
"#,
        upstream.url()
    );
    for i in 0..accounts {
        config.push_str(&format!(
            "\n[[llm.backends.ant.accounts]]\nname = \"acct{i}\"\nkey = \"env:POOL_KEY_{i}\"\n"
        ));
    }
    config.push_str(extra);
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let env: Vec<(String, &str)> = KEYS
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("POOL_KEY_{i}"), *k))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    Moat::start_in(home, &[], &env, None)
}

fn message(conversation: &str) -> String {
    json!({"model": "claude-x", "max_tokens": 16,
           "messages": [{"role": "user", "content": conversation}]})
    .to_string()
}

fn ok_reply(input: u64, output: u64) -> Reply {
    Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
               "stop_sequence": null,
               "usage": {"input_tokens": input, "output_tokens": output}}),
    )
}

fn with_limits(reply: Reply, remaining: u64, limit: u64) -> Reply {
    reply
        .header("anthropic-ratelimit-requests-limit", &limit.to_string())
        .header(
            "anthropic-ratelimit-requests-remaining",
            &remaining.to_string(),
        )
        .header(
            "anthropic-ratelimit-requests-reset",
            &humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + Duration::from_secs(600),
            )
            .to_string(),
        )
}

/// Which account (by index) the upstream's `n`th request came from.
fn account_of(upstream: &FakeUpstream, n: usize) -> usize {
    let key = upstream.seen()[n].headers["x-api-key"]
        .to_str()
        .unwrap()
        .to_string();
    KEYS.iter().position(|k| *k == key).expect("a pool key")
}

fn control(moat: &Moat, path: &str) -> common::Resp {
    get(moat.main, path, &[("x-moat-control-token", &moat.token())])
}

fn accounts(moat: &Moat) -> Vec<Value> {
    let resp = control(moat, "/accounts");
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["backends"][0]["accounts"]
        .as_array()
        .unwrap()
        .clone()
}

fn assert_no_keys(text: &str, place: &str) {
    for k in KEYS {
        assert!(!text.contains(k), "a key leaked into {place}");
    }
}

#[test]
fn the_account_with_most_headroom_serves_and_a_conversation_stays_on_its_account() {
    let up = FakeUpstream::start();
    let moat = start(&up, "most-headroom", 3, "");
    // Three new conversations reach the three accounts (nothing known yet); each reply
    // tells its account's headroom.
    let remaining = [10, 90, 50];
    for (i, r) in remaining.iter().enumerate() {
        up.push(with_limits(ok_reply(1, 1), *r, 100));
        let resp = post_json(
            moat.main,
            "/v1/messages",
            &[],
            &message(&format!("warm-{i}")),
        );
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let mut by_account = [0u64; 3];
    let mut seen_accounts: Vec<usize> = (0..3).map(|n| account_of(&up, n)).collect();
    for (n, a) in seen_accounts.iter().enumerate() {
        by_account[*a] = remaining[n];
    }
    seen_accounts.sort_unstable();
    assert_eq!(seen_accounts, vec![0, 1, 2], "each account tried once");
    let richest = (0..3).max_by_key(|a| by_account[*a]).unwrap();

    // A new conversation goes to the account with the most left, and stays there.
    up.push(with_limits(ok_reply(1, 1), 60, 100));
    post_json(moat.main, "/v1/messages", &[], &message("talk"));
    assert_eq!(account_of(&up, 3), richest);
    // Its headroom is now below another account's, yet the conversation stays.
    let mut other = json!({"model": "claude-x", "max_tokens": 16, "messages": [
        {"role": "user", "content": "talk"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and more"}]});
    up.push(with_limits(ok_reply(1, 1), 0, 100));
    post_json(moat.main, "/v1/messages", &[], &other.to_string());
    assert_eq!(account_of(&up, 4), richest, "sticky while it has headroom");
    // Spent: the conversation moves on.
    other["messages"][2]["content"] = json!("even more");
    up.push(ok_reply(1, 1));
    post_json(moat.main, "/v1/messages", &[], &other.to_string());
    assert_ne!(account_of(&up, 5), richest, "moved off a spent account");

    let accts = accounts(&moat);
    let spent = &accts[richest];
    assert_eq!(spent["status"], "spent", "{spent}");
    assert_eq!(spent["limits"]["requests"]["remaining"], 0);
    assert_no_keys(&control(&moat, "/accounts").body, "/accounts");
}

#[test]
fn a_429_or_401_cools_the_account_and_the_request_retries_on_another() {
    let up = FakeUpstream::start();
    let mut moat = start(&up, "fill-first", 2, "");
    up.push(
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        )
        .header("retry-after", "30"),
    );
    up.push(ok_reply(3, 4));
    let resp = post_json(moat.main, "/v1/messages", &[], &message("a"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!((account_of(&up, 0), account_of(&up, 1)), (0, 1));
    // The cooling account is skipped without being asked.
    up.push(ok_reply(1, 1));
    post_json(moat.main, "/v1/messages", &[], &message("b"));
    assert_eq!(account_of(&up, 2), 1);
    let accts = accounts(&moat);
    assert_eq!(accts[0]["status"], "rate_limited");
    let cooldown = accts[0]["cooldown_secs"].as_f64().unwrap();
    assert!((25.0..=30.0).contains(&cooldown), "{cooldown}");
    assert_eq!(accts[0]["last_error"], "rate_limited");

    // A 401 on the second account: cooled for a minute, audited, and with the first
    // still cooling the client gets the upstream's refusal as a gateway error.
    up.push(Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error",
               "message": format!("invalid x-api-key {}", KEYS[1])}}),
    ));
    let resp = post_json(moat.main, "/v1/messages", &[], &message("c"));
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert!(resp.body.contains("moat account check"), "{}", resp.body);
    assert_no_keys(&resp.body, "an error body");
    let accts = accounts(&moat);
    assert_eq!(accts[1]["status"], "auth");
    let cooldown = accts[1]["cooldown_secs"].as_f64().unwrap();
    assert!((55.0..=60.0).contains(&cooldown), "{cooldown}");

    moat.terminate();
    assert_no_keys(&moat.output(), "the server log");
    let (_, audit, _) = run_moat(moat.home.path(), &["audit", "export"], &[]);
    assert!(audit.contains("account.auth_failed"), "{audit}");
    assert!(audit.contains("ant/acct1"), "{audit}");
    assert_no_keys(&audit, "the audit log");
}

#[test]
fn a_spent_pool_waits_for_the_earliest_reset_then_refuses_with_retry_after() {
    let up = FakeUpstream::start();
    let moat = start(
        &up,
        "most-headroom",
        1,
        "\n[llm.pools]\nexhausted_wait = \"3s\"\n",
    );
    // The upstream's own 429 goes to the client as it was.
    up.push(
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        )
        .header("retry-after", "1"),
    );
    let resp = post_json(moat.main, "/v1/messages", &[], &message("a"));
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("1"));
    // The next request finds the pool spent and waits for the reset, then is served.
    up.push(ok_reply(1, 1));
    let started = Instant::now();
    let resp = post_json(moat.main, "/v1/messages", &[], &message("b"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(up.seen().len(), 2);
    // A reset beyond the wait: 429 at once, Retry-After at the reset, upstream untouched.
    up.push(
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        )
        .header("retry-after", "120"),
    );
    post_json(moat.main, "/v1/messages", &[], &message("c"));
    let started = Instant::now();
    let resp = post_json(moat.main, "/v1/messages", &[], &message("d"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(resp.status, 429, "{}", resp.body);
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((115..=120).contains(&retry), "{retry}");
    assert_eq!(resp.json()["error"]["type"], "rate_limit_error");
    assert_eq!(
        up.seen().len(),
        3,
        "a spent pool does not reach the upstream"
    );
}

#[test]
fn analytics_count_every_request_exactly() {
    let up = FakeUpstream::start();
    let mut moat = start(&up, "round-robin", 2, "");
    let mut want_input = 0;
    let mut want_output = 0;
    for i in 0..5u64 {
        up.push(ok_reply(10 + i, 2));
        want_input += 10 + i;
        want_output += 2;
        let resp = post_json(moat.main, "/v1/messages", &[], &message(&format!("n{i}")));
        assert_eq!(resp.status, 200);
    }
    // A stream: its usage is read as it passes.
    up.push(Reply::sse(&[
        a_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "type": "message",
                   "role": "assistant", "model": "claude-x", "content": [],
                   "usage": {"input_tokens": 7, "output_tokens": 1}}}),
        ),
        a_event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                   "usage": {"output_tokens": 5}}),
        ),
        a_event("message_stop", json!({"type": "message_stop"})),
    ]));
    want_input += 7;
    want_output += 5;
    let stream = json!({"model": "claude-x", "max_tokens": 16, "stream": true,
                        "messages": [{"role": "user", "content": "s"}]});
    let resp = post_json(moat.main, "/v1/messages", &[], &stream.to_string());
    assert_eq!(resp.status, 200);
    // An upstream failure and a request for no model.
    up.push(Reply::json(
        500,
        json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
    ));
    assert_eq!(
        post_json(moat.main, "/v1/messages", &[], &message("e")).status,
        500
    );
    let nothing = json!({"model": "nobody-serves-this", "max_tokens": 1, "messages": []});
    assert_eq!(
        post_json(moat.main, "/v1/messages", &[], &nothing.to_string()).status,
        404
    );

    let resp = control(&moat, "/analytics");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let a = resp.json();
    for window in ["last_hour", "all_time"] {
        let t = &a[window]["total"];
        assert_eq!(t["requests"], 8, "{window}: {a}");
        assert_eq!(t["errors"], 2, "{window}");
        assert_eq!(t["input_tokens"], want_input, "{window}");
        assert_eq!(t["output_tokens"], want_output, "{window}");
    }
    let groups = a["all_time"]["groups"].as_array().unwrap();
    let per_account: u64 = groups
        .iter()
        .filter(|g| g["backend"] == "ant")
        .map(|g| g["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_account, 7);
    assert!(groups.iter().any(|g| g["account"] == "acct0"));
    assert!(groups.iter().any(|g| g["account"] == "acct1"));
    let burn: u64 = a["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["tokens_last_hour"].as_u64().unwrap())
        .sum();
    assert_eq!(burn, want_input + want_output);

    let metrics = control(&moat, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let requests: u64 = metrics
        .body
        .lines()
        .filter(|l| l.starts_with("moat_llm_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(requests, 8, "{}", metrics.body);
    assert!(
        metrics
            .body
            .contains("moat_llm_account_headroom_ratio{backend=\"ant\",account=\"acct0\"}")
    );
    // Control routes: not without the token.
    assert_eq!(get(moat.main, "/analytics", &[]).status, 403);
    for (place, text) in [("/analytics", &resp.body), ("/metrics", &metrics.body)] {
        assert_no_keys(text, place);
    }

    moat.terminate();
    let (code, out, err) = run_moat(
        moat.home.path(),
        &["usage", "--since", "all", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let u: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(u["total"]["requests"], 8);
    assert_eq!(u["total"]["input_tokens"], want_input);
    let (code, table, _) = run_moat(moat.home.path(), &["usage"], &[]);
    assert_eq!(code, 0);
    assert!(
        table.contains("acct0") && table.contains("REQUESTS"),
        "{table}"
    );
    let (code, _, err) = run_moat(moat.home.path(), &["usage", "--since", "soon"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--since"), "{err}");
}

#[test]
fn account_commands_edit_config_and_check_each_account() {
    let up = FakeUpstream::start();
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "# mine\n[llm.backends.ant]\nkind = \"anthropic\"\nbase_url = \"{}\"\nkey = \"env:POOL_KEY_0\"\n",
            up.url()
        ),
    )
    .unwrap();
    let env = [("POOL_KEY_0", KEYS[0]), ("POOL_KEY_1", KEYS[1])];
    let (code, _, err) = run_moat(home.path(), &["account", "add", "ant", "second"], &env);
    assert_eq!(code, 2, "a credential is required");
    assert!(
        err.contains("--key-secret") || err.contains("--oauth"),
        "{err}"
    );
    let (code, _, err) = run_moat(
        home.path(),
        &["account", "add", "nope", "x", "--key-secret", "k"],
        &env,
    );
    assert_eq!(code, 2);
    assert!(err.contains("no backend named \"nope\""), "{err}");
    let (code, _, err) = run_moat(
        home.path(),
        &["account", "add", "ant", "default", "--key-secret", "k"],
        &env,
    );
    assert_eq!(code, 2);
    assert!(err.contains("default"), "{err}");
    let (code, out, err) = run_moat(
        home.path(),
        &[
            "account",
            "add",
            "ant",
            "second",
            "--key-secret",
            "ant-second",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added"), "{out}");
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(config.starts_with("# mine"), "comments kept: {config}");
    assert!(config.contains("[[llm.backends.ant.accounts]]"), "{config}");
    assert!(config.contains("key = \"secret:ant-second\""), "{config}");
    let (code, _, _) = run_moat(
        home.path(),
        &["account", "add", "ant", "second", "--key-secret", "other"],
        &env,
    );
    assert_eq!(code, 2, "no silent overwrite");
    let (code, out, _) = run_moat(home.path(), &["account", "list"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("default") && out.contains("second"), "{out}");
    assert_no_keys(&out, "account list");
    let (code, out, _) = run_moat(home.path(), &["route", "ant:claude-x"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("accounts default, second"), "{out}");

    // `check` asks each account; the upstream's limits are shown.
    let (code, _, _) = run_moat(home.path(), &["account", "remove", "ant", "second"], &env);
    assert_eq!(code, 0);
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(!config.contains("second"), "{config}");
    up.push(with_limits(
        Reply::json(200, json!({"data": [{"id": "claude-x"}]})),
        41,
        50,
    ));
    let (code, out, err) = run_moat(home.path(), &["account", "check"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok    ant/default"), "{out}");
    assert!(out.contains("requests 41/50"), "{out}");
    assert_eq!(up.seen()[0].headers["x-api-key"], KEYS[0]);
    up.push(Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    ));
    let (code, out, _) = run_moat(home.path(), &["account", "check", "ant"], &env);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  ant/default: answered 401"), "{out}");
    assert_no_keys(&out, "account check");
}
