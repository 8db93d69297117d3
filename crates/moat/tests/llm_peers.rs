//! The gateway against real peers: the official `anthropic` and `openai` Python SDKs
//! drive moat, which forwards to a real llama.cpp `llama-server` (serving SmolLM2-135M)
//! through both backend kinds: llama.cpp speaks the OpenAI and the Anthropic API.
//!
//! Codex CLI itself (npm `@openai/codex`) runs a one-shot prompt through moat's
//! Responses API to the same llama.cpp server, and `moat account add --oauth` logs in
//! against a real OAuth 2.0 server (npm's `oauth2-mock-server`).
//!
//! `scripts/peers` builds and caches the peers; `scripts/test` exports where they are
//! (MOAT_PEER_PYTHON, MOAT_LLAMA_SERVER, MOAT_LLAMA_MODEL, MOAT_CODEX,
//! MOAT_OAUTH2_MOCK_SERVER). Without them these tests fail with a message saying so.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Moat, new_home, run_moat};

fn peer(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with ./scripts/test, or `eval \"$(scripts/peers)\"` first")
    })
}

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/chatml-tools.jinja"
);

/// A default grammar for servers that answer agents in text: one line of at most 200
/// characters. A 135M model sometimes rambles on until its context is full, and the
/// agent's follow-up then overflows it; requests with a grammar of their own (a JSON
/// schema, tools with a template that has them) are not bound by it.
/// Types lines into a program running in a pseudo-terminal.
const PTY_CHAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pty_chat.py");
const ONE_SHORT_LINE: &str = "root ::= [^\\n]{1,200}";

struct LlamaServer {
    child: Child,
    port: u16,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlamaServer {
    /// The server the SDK checks use: ChatML with tools, biased towards tool calls.
    fn start() -> Self {
        Self::start_with(&[
            "-c",
            "4096",
            "-np",
            "2",
            // SmolLM2's own template has no tools; this ChatML one adds Hermes-style
            // <tool_call> blocks, which llama.cpp recognises and grammar-constrains.
            "--chat-template-file",
            TEMPLATE,
            // A 135M model seldom chooses to call a tool even when one is required
            // (llama.cpp lets text come first). A bias on "<" (SmolLM2 token 44, how
            // `<tool_call>` starts) and on <|im_end|> (token 2, so it stops after one
            // call) makes the real model emit real tool calls; plain chat still answers
            // in text.
            "--logit-bias",
            "44+8",
            "--logit-bias",
            "2+10",
        ])
    }

    /// A server with room for Codex CLI's long prompt (one slot of 16k tokens, beyond
    /// SmolLM2's training length: the answer only has to arrive), answering in text.
    fn start_long() -> Self {
        Self::start_with(&["-c", "16384", "-np", "1", "--grammar", ONE_SHORT_LINE])
    }

    fn start_with(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("moat-llama-{port}.log"));
        let child = Command::new(peer("MOAT_LLAMA_SERVER"))
            .args(["-m", &peer("MOAT_LLAMA_MODEL")])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", "2", "--no-ui", "--jinja"])
            .args(args)
            // Greedy sampling by default: the Anthropic SDK no longer takes `temperature`,
            // and the checks must not depend on luck.
            .args(["--temp", "0", "--seed", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start llama-server");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "llama-server did not become healthy; its log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The client key every moat in these tests requires (`auth.api_key`).
const CLIENT_KEY: (&str, &str) = ("CLIENT_KEY", "moat-test-client-key");

/// Starts moat requiring the client key, with `llm` (TOML) as the rest of its config.
fn moat_with(llm: &str, env: &[(&str, &str)]) -> Moat {
    let home = new_home();
    let config = format!("[auth]\napi_key = \"env:CLIENT_KEY\"\n{llm}");
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let env: Vec<(&str, &str)> = std::iter::once(CLIENT_KEY)
        .chain(env.iter().copied())
        .collect();
    Moat::start_in(home, &[], &env, None)
}

/// Runs `sdk_check.py ARGS...`; fails with its output and the logs of `moats`. Returns
/// what it printed.
fn sdk_check(args: &[String], moats: &[&Moat]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/sdk_check.py");
    let out = Command::new(peer("MOAT_PEER_PYTHON"))
        .arg(script)
        .args(args)
        .output()
        .expect("run the SDK checks");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<String> = moats
        .iter()
        .map(|m| format!("moat at {}:\n{}", m.main, m.output()))
        .collect();
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}\n{}",
        logs.join("\n")
    );
    stdout
}

#[test]
fn official_sdks_through_moat_to_llama_cpp_on_both_backend_kinds() {
    let llama = LlamaServer::start();
    let moat = moat_with(
        &format!(
            r#"
[llm.backends.llama-openai]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"

[llm.backends.llama-anthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:{port}"

[[llm.routes]]
model = "smol-via-openai"
targets = ["llama-openai:smollm2"]

[[llm.routes]]
model = "smol-via-anthropic"
targets = ["llama-anthropic:smollm2"]
"#,
            port = llama.port
        ),
        &[],
    );
    let stdout = sdk_check(
        &[
            format!("http://{}", moat.main),
            "smol-via-openai".into(),
            "smol-via-anthropic".into(),
        ],
        &[&moat],
    );
    assert_eq!(stdout.matches("ok: ").count(), 6, "{stdout}");
}

/// A backend with native Responses gets the SDK's requests as they came. The Responses
/// server here is a second moat (translating to llama.cpp, proven above): the SDK talks
/// to moat B, whose backend `moat-a` is marked `responses = "native"`, so B passes every
/// request and event through, keeps what A answers, chains by `previous_response_id`
/// through A's own store, and forwards deletes to it.
#[test]
fn responses_pass_through_to_a_native_responses_server() {
    let llama = LlamaServer::start();
    // Debug logging puts each request's path in A's log.
    let moat_a = moat_with(
        &format!(
            r#"
[llm.backends.llama-openai]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"

[[llm.routes]]
model = "smol-via-openai"
targets = ["llama-openai:smollm2"]
"#,
            port = llama.port
        ),
        &[("MOAT_LOG", "debug")],
    );
    let moat_b = moat_with(
        &format!(
            r#"
[llm.backends.moat-a]
kind = "openai"
base_url = "http://{a}/v1"
key = "env:CLIENT_KEY"
responses = "native"

[[llm.routes]]
model = "smol-native"
targets = ["moat-a:smol-via-openai"]
"#,
            a = moat_a.main
        ),
        &[],
    );
    let stdout = sdk_check(
        &[
            "--responses-only".into(),
            format!("http://{}", moat_b.main),
            "smol-native".into(),
        ],
        &[&moat_b, &moat_a],
    );
    assert_eq!(stdout.matches("ok: ").count(), 1, "{stdout}");
    // B sent A only /v1/responses requests (and the delete), none translated.
    let a_log = moat_a.output();
    assert!(
        a_log.contains("path=\"/v1/responses\"") && a_log.contains("method=DELETE"),
        "{a_log}"
    );
    assert!(
        !a_log.contains("/v1/chat/completions"),
        "moat B translated instead of passing through:\n{a_log}"
    );
}

#[test]
fn codex_cli_completes_a_prompt_through_the_responses_api() {
    let llama = LlamaServer::start_long();
    let home = new_home();
    let config = format!(
        r#"
[llm.backends.local]
kind = "openai"
base_url = "http://127.0.0.1:{}/v1"
models = ["smol"]
"#,
        llama.port
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let moat = Moat::start_in(home, &[], &[], None);

    let out = run_codex(&moat, "smol", "Say hello.");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex exec failed:\n{stdout}\n{stderr}\nmoat log:\n{}",
        moat.output()
    );
    // `codex exec` prints the final message on stdout.
    assert!(!stdout.trim().is_empty(), "no answer:\n{stderr}");
    // Codex on its defaults asks for its hosted web search: left out, and said so.
    let log = moat.output();
    assert!(
        log.contains("left out tools this backend cannot run"),
        "no dropped tool in the log:\n{log}"
    );
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

/// npm's oauth2-mock-server, run by `tests/peers/oauth_server.mjs`.
struct OAuthServer {
    child: Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OAuthServer {
    fn start(login_ttl: u64, refresh_ttl: u64) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/oauth_server.mjs"
            ))
            .env("MOAT_OAUTH2_MOCK_SERVER", peer("MOAT_OAUTH2_MOCK_SERVER"))
            .env("LOGIN_TTL", login_ttl.to_string())
            .env("REFRESH_TTL", refresh_ttl.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OAuth server starts");
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Self {
            child,
            port,
            lines: rx,
        }
    }

    /// The token responses so far, as `GRANT STATUS`.
    fn token_lines(&self) -> Vec<String> {
        self.lines
            .try_iter()
            .filter_map(|l| l.strip_prefix("token ").map(str::to_string))
            .collect()
    }
}

/// Follows an authorize URL like a browser would: the server redirects to the
/// redirect_uri at once (the mock logs the user in); returns that Location.
fn authorize(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    let addr: std::net::SocketAddr = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
        .parse()
        .unwrap();
    let path = format!("{}?{}", u.path(), u.query().unwrap_or_default());
    let resp = common::get(addr, &path, &[]);
    assert_eq!(resp.status, 302, "{}", resp.body);
    resp.header("location").expect("a redirect").to_string()
}

/// Runs `moat account add ... --oauth` until it prints the authorize URL; returns the
/// child and that URL.
fn start_login(home: &std::path::Path, args: &[&str]) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = common::moat_cmd(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut url = None;
    while url.is_none() && Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        url = line.trim().strip_prefix("http").map(|u| format!("http{u}"));
    }
    match url {
        Some(url) => {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            (child, url)
        }
        None => {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "moat account add printed no authorize URL: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        }
    }
}

#[test]
fn oauth_login_with_pkce_against_a_real_server_then_one_refresh_for_many_requests() {
    // Refreshed tokens last 120 s, less than the default 300 s refresh margin: the margin
    // must shrink to half a token's life, or every request would refresh.
    let oauth = OAuthServer::start(1, 120);
    let up = common::upstream::FakeUpstream::start();
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            r#"
[llm.backends.prov]
kind = "openai"
base_url = "{}/v1"
models = ["m-*"]

[llm.backends.prov.oauth]
client_id = "moat-test-client"
authorize_url = "http://127.0.0.1:{port}/authorize"
token_url = "http://127.0.0.1:{port}/token"
scopes = ["openid", "offline_access"]
"#,
            up.url(),
            port = oauth.port
        ),
    )
    .unwrap();

    // The browser round trip: the code reaches moat's loopback callback.
    let (mut login, url) = start_login(
        home.path(),
        &[
            "account",
            "add",
            "prov",
            "me",
            "--oauth",
            "--no-browser",
            "--timeout",
            "30s",
        ],
    );
    let q: std::collections::HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "moat-test-client");
    assert!(q["redirect_uri"].starts_with("http://127.0.0.1:"));
    assert!(!url.contains("code_verifier"));
    let back = authorize(&url);
    assert!(back.starts_with(&q["redirect_uri"]), "{back}");
    // A forged redirect (wrong state) would end the login; the real one completes it.
    let callback = url::Url::parse(&back).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", callback.port().unwrap())
        .parse()
        .unwrap();
    let page = common::get(
        addr,
        &format!("/callback?{}", callback.query().unwrap()),
        &[],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let status = login.wait().unwrap();
    assert!(status.success(), "login failed");
    assert_eq!(oauth.token_lines(), vec!["authorization_code 200"]);
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(config.contains("oauth = true"), "{config}");

    // The login's token expires in a second: the first requests refresh it, once, and
    // all of them carry the new token.
    std::thread::sleep(Duration::from_millis(1100));
    let mut moat = Moat::start_in(home, &[], &[], None);
    let n = 8;
    for _ in 0..n + 2 {
        up.push(common::upstream::Reply::json(
            200,
            serde_json::json!({"id": "c", "object": "chat.completion", "model": "m-1",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        ));
    }
    let body = serde_json::json!({"model": "m-1", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let main = moat.main;
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || common::post_json(main, "/v1/chat/completions", &[], &body))
        })
        .collect();
    for h in handles {
        let resp = h.join().unwrap();
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    for _ in 0..2 {
        let resp = common::post_json(main, "/v1/chat/completions", &[], &body);
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let tokens = oauth.token_lines();
    assert_eq!(
        tokens,
        vec!["refresh_token 200"],
        "concurrent refreshes must coalesce"
    );
    let seen = up.seen();
    let bearer = seen[0].headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        bearer.starts_with("Bearer ey"),
        "a JWT from the OAuth server"
    );
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == bearer.as_str())
    );
    let token = bearer.trim_start_matches("Bearer ").to_string();

    let accounts = common::get(
        moat.main,
        "/accounts",
        &[("x-moat-control-token", &moat.token())],
    );
    let acct = &accounts.json()["backends"][0]["accounts"][0];
    assert_eq!(acct["credential"], "oauth");
    assert_eq!(acct["oauth"]["refreshes"], 1, "{acct}");
    assert!(acct["oauth"]["expires_in_secs"].as_i64().unwrap() > 100);
    assert!(!accounts.body.contains(&token));
    moat.terminate();
    assert!(!moat.output().contains(&token), "the token reached the log");
    let (_, audit, _) = common::run_moat(moat.home.path(), &["audit", "export"], &[]);
    assert!(audit.contains("account.oauth_login"), "{audit}");
    assert!(!audit.contains(&token));

    // The refreshed tokens were saved: a restart needs no refresh, and check passes.
    up.push(common::upstream::Reply::json(
        200,
        serde_json::json!({"data": [{"id": "m-1"}]}),
    ));
    let (code, out, err) = common::run_moat(moat.home.path(), &["account", "check", "prov"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok    prov/me") && out.contains("OAuth token expires in"),
        "{out}"
    );
    assert!(!out.contains(&token));
    assert_eq!(oauth.token_lines(), Vec::<String>::new());
    assert_eq!(
        up.seen().last().unwrap().headers["authorization"],
        bearer.as_str()
    );

    // Headless: --manual takes the pasted address, state and all.
    let (mut manual, url) = start_login(
        moat.home.path(),
        &["account", "add", "prov", "headless", "--oauth", "--manual"],
    );
    let back = authorize(&url);
    assert!(back.starts_with("http://127.0.0.1/callback?"), "{back}");
    {
        use std::io::Write;
        let mut stdin = manual.stdin.take().unwrap();
        writeln!(stdin, "{back}").unwrap();
    }
    assert!(manual.wait().unwrap().success());
    assert_eq!(oauth.token_lines(), vec!["authorization_code 200"]);

    // A pasted address from another login (wrong state) is refused.
    let (mut forged, url) = start_login(
        moat.home.path(),
        &["account", "add", "prov", "other", "--oauth", "--manual"],
    );
    let back = authorize(&url).replace("state=", "state=x");
    {
        use std::io::Write;
        let mut stdin = forged.stdin.take().unwrap();
        writeln!(stdin, "{back}").unwrap();
    }
    let out = forged.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("state"));
    let config = std::fs::read_to_string(moat.home.path().join("config.toml")).unwrap();
    assert!(
        config.contains("headless") && !config.contains("\"other\""),
        "{config}"
    );
}

/// The OpenAI Agents SDK runs an agent with a function tool through moat, over the
/// Responses API (its default) and over Chat Completions, to each backend kind: a
/// scripted backend calls the tool, then answers with its output.
#[test]
fn the_openai_agents_sdk_runs_a_tool_loop_through_moat() {
    for kind in ["openai", "anthropic"] {
        let fake = FakeLlm::start_tool("get_weather", r#"{"city": "Paris"}"#);
        let moat = fake.behind_moat(kind);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/agents_check.py");
        let out = Command::new(peer("MOAT_PEER_PYTHON"))
            .args([script, "gpt-4o"])
            .env("OPENAI_BASE_URL", format!("http://{}/v1", moat.main))
            .env("OPENAI_API_KEY", "moat-test-client-key")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}: {}\n{}\nbackend saw:\n{}\nmoat log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fake.requests(),
            moat.output()
        );
        // Each run's second request carried the tool's output back.
        assert_eq!(
            fake.requests().matches("It is sunny in Paris.").count(),
            2,
            "{kind}: {}",
            fake.requests()
        );
    }
}

/// Runs `codex exec PROMPT` on its defaults but the provider (moat) and `model`; fails
/// the test if it runs over 10 minutes.
fn run_codex(moat: &Moat, model: &str, prompt: &str) -> std::process::Output {
    let codex_home = tempfile::tempdir().unwrap();
    std::fs::write(
        codex_home.path().join("config.toml"),
        format!(
            r#"
model = "{model}"
model_provider = "moat"

[model_providers.moat]
name = "moat"
base_url = "http://{}/v1"
wire_api = "responses"
env_key = "MOAT_CODEX_TEST_KEY"
"#,
            moat.main
        ),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let child = Command::new(peer("MOAT_CODEX"))
        .args(["exec", "--skip-git-repo-check", prompt])
        .current_dir(work.path())
        .env("CODEX_HOME", codex_home.path())
        .env("MOAT_CODEX_TEST_KEY", "moat-test-client-key")
        // Tests reach nothing but loopback: whatever Codex would send elsewhere (update
        // checks, analytics) goes to a dead loopback proxy instead; moat is direct.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run codex");
    finish_within(child, Duration::from_secs(600), "codex exec", moat)
}

/// Codex CLI, on its defaults, runs a shell command the model asks for (its
/// `exec_command` tool) through moat to each backend kind, and the model gets the
/// command's output back.
#[test]
fn codex_cli_runs_a_shell_tool_call_through_both_backend_kinds() {
    use common::upstream::{FakeUpstream, Reply, a_event, o_event};
    use serde_json::json;
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let config = format!(
        "[llm.backends.ant]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"claude-*\"]\n\n[llm.backends.oai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodels = [\"gpt-*\"]\n",
        ant.url(),
        oai.url()
    );
    let home = new_home();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let moat = Moat::start_in(home, &[], &[], None);
    let command = json!({"cmd": "echo moat-shell-ok"}).to_string();
    oai.push(Reply::sse(&[
        o_event(json!({"id": "c1", "model": "gpt-x", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_sh", "type": "function", "function": {"name": "exec_command", "arguments": command}}]}, "finish_reason": null}]})),
        o_event(json!({"id": "c1", "model": "gpt-x", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})),
        "data: [DONE]\n\n".into(),
    ]));
    oai.push(Reply::sse(&[
        o_event(json!({"id": "c2", "model": "gpt-x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "The command printed moat-shell-ok."}, "finish_reason": null}]})),
        o_event(json!({"id": "c2", "model": "gpt-x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        "data: [DONE]\n\n".into(),
    ]));
    let message_start = |id: &str| {
        a_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "content": [], "model": "claude-x", "stop_reason": null, "usage": {"input_tokens": 10, "output_tokens": 0}}}),
        )
    };
    ant.push(Reply::sse(&[
        message_start("msg_1"),
        a_event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_sh", "name": "exec_command", "input": {}}})),
        a_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": command}})),
        a_event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        a_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 5}})),
        a_event("message_stop", json!({"type": "message_stop"})),
    ]));
    ant.push(Reply::sse(&[
        message_start("msg_2"),
        a_event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        a_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "The command printed moat-shell-ok."}})),
        a_event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        a_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 7}})),
        a_event("message_stop", json!({"type": "message_stop"})),
    ]));
    for (model, up) in [("gpt-x", &oai), ("claude-x", &ant)] {
        let out = run_codex(
            &moat,
            model,
            "Run echo moat-shell-ok and tell me what it printed.",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{model}: codex exec failed:\n{stdout}\n{stderr}\nmoat log:\n{}",
            moat.output()
        );
        assert!(
            stdout.contains("The command printed moat-shell-ok."),
            "{model}: {stdout}\n{stderr}"
        );
        // The second request carried the command's real output back to the model.
        let seen = up.seen();
        let second = seen.last().unwrap().body.to_string();
        assert!(
            seen.len() >= 2 && second.matches("moat-shell-ok").count() >= 2,
            "{model}: the command's output did not go back:\n{second}"
        );
    }
}

/// Waits for a client run to end, killing it past `limit` and failing with moat's log.
fn finish_within(
    mut child: Child,
    limit: Duration,
    what: &str,
    moat: &Moat,
) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{what} did not finish in {limit:?}; moat log:\n{}",
                moat.output()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

/// `fake_llm.py` on a free loopback port; killed when dropped.
struct FakeLlm {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeLlm {
    fn start(cmd: &str) -> FakeLlm {
        Self::spawn(&[("FAKE_CMD", cmd)])
    }

    /// The same, calling `tool` with `args` (JSON) instead of Bash.
    fn start_tool(tool: &str, args: &str) -> FakeLlm {
        Self::spawn(&[("FAKE_TOOL", tool), ("FAKE_ARGS", args)])
    }

    /// The same, answering `text` to requests without tools.
    fn start_with(cmd: &str, text: &str) -> FakeLlm {
        Self::spawn(&[("FAKE_CMD", cmd), ("FAKE_TEXT", text)])
    }

    fn spawn(env: &[(&str, &str)]) -> FakeLlm {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/fake_llm.py");
        let child = Command::new("python3")
            .args([script, &port.to_string(), log.to_str().unwrap()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fake_llm.py did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        FakeLlm {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// A moat whose one backend, of `kind`, is this fake, serving every model name.
    fn behind_moat(&self, kind: &str) -> Moat {
        let base = match kind {
            "openai" => format!("http://127.0.0.1:{}/v1", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        };
        let home = new_home();
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "[llm.backends.up]\nkind = \"{kind}\"\nbase_url = \"{base}\"\nmodels = [\"*\"]\n"
            ),
        )
        .unwrap();
        Moat::start_in(home, &[], &[], None)
    }

    /// The request bodies it received, as text.
    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Claude Code, on its defaults but the base URL and key, runs a tool loop through moat
/// to each backend kind: passed through to an Anthropic backend, translated to an
/// OpenAI one. The backend asks for a shell command; Claude Code runs it (permitted
/// with --allowedTools, as a one-shot run needs) and the output goes back.
#[test]
fn claude_code_runs_a_tool_loop_through_both_backend_kinds() {
    for kind in ["anthropic", "openai"] {
        let fake = FakeLlm::start("echo moat-cc-ok");
        let moat = fake.behind_moat(kind);
        let out = run_claude_code(
            &moat,
            &[
                "-p",
                "Run the shell command: echo moat-cc-ok",
                "--allowedTools",
                "Bash",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("The command printed: moat-cc-ok"),
            "{kind}: claude -p failed:\n{stdout}\n{stderr}\nbackend saw:\n{}\nmoat log:\n{}",
            fake.requests(),
            moat.output()
        );
    }
}

/// Runs Claude Code with `args` on its defaults but the base URL and key (moat); fails
/// the test if it runs over 5 minutes.
fn run_claude_code(moat: &Moat, args: &[&str]) -> std::process::Output {
    let cc_home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let child = Command::new(peer("MOAT_CLAUDE_CODE"))
        .args(args)
        .current_dir(work.path())
        .env("HOME", cc_home.path())
        .env("ANTHROPIC_BASE_URL", format!("http://{}", moat.main))
        .env("ANTHROPIC_API_KEY", "sk-ant-moat-test-client-key")
        .env("DISABLE_AUTOUPDATER", "1")
        // Tests reach nothing but loopback: anything Claude Code sends elsewhere
        // (telemetry, update checks) goes to a dead loopback proxy instead.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run claude");
    finish_within(child, Duration::from_secs(300), "claude -p", moat)
}

/// Claude Code's real first request (its system prompt, mid-conversation system
/// messages, tools, cache controls, thinking settings) translated to a real llama.cpp
/// server, whose answer comes back as Claude Code's reply.
#[test]
fn claude_code_answers_through_llama_cpp() {
    // SmolLM2's own template leaves the tools out of the prompt (3k tokens, not 23k).
    // A bias on <|im_end|> (token 2) usually ends its answer early, but not always: on
    // some prompts (the work dir's random name is in it, and the KV cache's reuse moves
    // the numbers) it rambles on towards Claude Code's 64k max_tokens until the 8k context
    // is full, and Claude Code's "continue" requests overflow it. A default grammar of one
    // line of at most 200 characters bounds every answer.
    let llama = LlamaServer::start_with(&[
        "-c",
        "8192",
        "-np",
        "1",
        "--logit-bias",
        "2+5",
        "--grammar",
        ONE_SHORT_LINE,
    ]);
    let home = new_home();
    let config = format!(
        "[llm.backends.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nmodels = [\"*\"]\n",
        llama.port
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let moat = Moat::start_in(home, &[], &[], None);
    let out = run_claude_code(&moat, &["-p", "Say hello."]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stdout.trim().is_empty(),
        "claude -p failed or answered nothing:\n{stdout}\n{stderr}\nmoat log:\n{}",
        moat.output()
    );
}

/// Aider, on its defaults but the OpenAI-compatible base URL, key and model name (and
/// `--yes-always`, which a one-shot run needs), edits a file in a scratch git repo
/// through moat to each backend kind, and commits it.
#[test]
fn aider_edits_a_file_through_both_backend_kinds() {
    let edit = "hello.py\n```python\nprint(\"hello from moat\")\n```\n";
    for kind in ["openai", "anthropic"] {
        let fake = FakeLlm::start_with("true", edit);
        let moat = fake.behind_moat(kind);
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(args)
                .current_dir(repo.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        git(&["init", "-q"]);
        std::fs::write(repo.path().join("hello.py"), "print(\"hello\")\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "init"]);
        let out = Command::new(peer("MOAT_AIDER_PYTHON"))
            .args([
                "-m",
                "aider",
                "--model",
                "openai/gpt-x",
                "--yes-always",
                "--message",
            ])
            .arg("Change the greeting to say hello from moat.")
            .arg("hello.py")
            .current_dir(repo.path())
            .env("HOME", repo.path().join(".home"))
            .env("OPENAI_API_BASE", format!("http://{}/v1", moat.main))
            .env("OPENAI_API_KEY", "moat-test-client-key")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            // Tests reach nothing but loopback: update checks and model-price lookups
            // go to a dead loopback proxy instead.
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = std::fs::read_to_string(repo.path().join("hello.py")).unwrap();
        assert!(
            out.status.success() && text.contains("hello from moat"),
            "{kind}: aider did not edit the file:\n{}\n{}\nbackend saw:\n{}\nmoat log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fake.requests(),
            moat.output()
        );
        assert_eq!(
            git(&["rev-list", "--count", "HEAD"]).trim(),
            "2",
            "{kind}: aider committed its edit"
        );
    }
}

/// A hosted web search, asked for by OpenAI clients (the SDK, and Codex on its
/// defaults), runs as an Anthropic backend's own server tool; the search and its
/// citations come back in OpenAI's shapes, whole and streamed. And back: Anthropic's
/// web search tool on an OpenAI search model, its citations as Anthropic's.
#[test]
fn hosted_web_search_runs_as_the_anthropic_backend_s_server_tool() {
    let query = "what is moat";
    let fake = FakeLlm::spawn(&[("FAKE_SEARCH", query)]);
    let moat = fake.behind_moat("anthropic");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/search_check.py");
    let out = Command::new(peer("MOAT_PEER_PYTHON"))
        .args([
            script,
            &format!("http://{}", moat.main),
            "gpt-4o",
            query,
            "https://example.com/moat",
            "Moat is a local-first AI gateway.",
        ])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nbackend saw:\n{}\nmoat log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fake.requests(),
        moat.output()
    );
    let seen = fake.requests();
    assert_eq!(
        seen.matches(r#""type": "web_search_20250305""#).count(),
        3,
        "{seen}"
    );

    let out = run_codex(&moat, "gpt-5", "What is moat? Search the web.");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("Moat is a local-first AI gateway."),
        "codex exec:\n{stdout}\n{stderr}\nmoat log:\n{}",
        moat.output()
    );
    // The other way: Claude's web search tool on an OpenAI search model.
    let openai = fake.behind_moat("openai");
    let out = Command::new(peer("MOAT_PEER_PYTHON"))
        .args([
            script,
            "--anthropic",
            &format!("http://{}", openai.main),
            "gpt-4o-search-preview",
            "https://example.com/moat",
            "Moat is a local-first AI gateway.",
        ])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nbackend saw:\n{}\nmoat log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fake.requests(),
        openai.output()
    );
    assert!(fake.requests().contains("web_search_options"));
    // Codex shows the search the backend ran.
    assert!(
        stderr.contains(&format!("web search: {query}")),
        "codex exec:\n{stdout}\n{stderr}"
    );
    assert!(
        !moat.output().contains("left out tools")
            && fake.requests().matches("web_search_20250305").count() >= 4,
        "Codex's search did not reach the backend as its server tool:\n{}\nmoat log:\n{}",
        fake.requests(),
        moat.output()
    );
}

/// The assistant on a real model: llama.cpp makes a tool call (the ChatML tools template
/// and the bias towards `<tool_call>`), moat translates it to the assistant's Messages
/// call, and the call passes the trust gate to a tool, end to end.
#[test]
fn the_assistant_runs_a_real_model_s_tool_call() {
    // The tools template and the bias towards `<tool_call>`, without the SDK server's
    // bias on <|im_end|>: with the tool choice left to the model (as the assistant
    // leaves it), that one ends the answer right after `<tool_call>`.
    let llama = LlamaServer::start_with(&[
        "-c",
        "4096",
        "-np",
        "1",
        "--chat-template-file",
        TEMPLATE,
        "--logit-bias",
        "44+8",
    ]);
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[llm.backends.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nmodels = [\"smol\"]\n\n[agent]\nmodel = \"smol\"\nmax_steps = 2\nmax_tokens = 128\n\n[agent.trust]\nfiles = 3\nweb = 0\nsystem = 0\n",
            llama.port
        ),
    )
    .unwrap();
    // One tool on offer (the other domains at 0, or 1 for the shell), which a model of
    // 135M parameters calls more surely than one among five. `moat chat` runs in a
    // pseudo-terminal, typed at as a person would (tests/peers/pty_chat.py).
    let moat = common::moat_cmd(home.path());
    let out = Command::new(peer("MOAT_PEER_PYTHON"))
        .arg(PTY_CHAT)
        .args([
            "120",
            "Use the files tool to list the files in your workspace.",
            "--",
        ])
        .arg(moat.get_program())
        .arg("chat")
        .env_clear()
        .envs(moat.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "moat chat in a terminal:\n{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The terminal showed the line typed, then a tool ran (✓) or the tool refused the
    // model's arguments (✗): either way the call went through the gate to a tool.
    assert!(shown.contains("> Use the files tool"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("✓ ") || l.starts_with("✗ ")),
        "no tool call reached a tool:\n{shown}"
    );
    let (code, tail, _) = run_moat(home.path(), &["audit", "tail", "-n", "50"], &[]);
    assert_eq!(code, 0);
    assert!(tail.contains("agent.tool."), "{tail}");
}
