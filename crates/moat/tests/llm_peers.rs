//! The gateway against real peers: the official `anthropic` and `openai` Python SDKs
//! drive moat, which forwards to a real llama.cpp `llama-server` (serving SmolLM2-135M)
//! through both backend kinds: llama.cpp speaks the OpenAI and the Anthropic API.
//!
//! Codex CLI itself (npm `@openai/codex`) runs a one-shot prompt through moat's
//! Responses API to the same llama.cpp server.
//!
//! `scripts/peers` builds and caches the peers; `scripts/test` exports where they are
//! (MOAT_PEER_PYTHON, MOAT_LLAMA_SERVER, MOAT_LLAMA_MODEL, MOAT_CODEX). Without them these
//! tests fail with a message saying so.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Moat, new_home};

fn peer(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with ./scripts/test, or `eval \"$(scripts/peers)\"` first")
    })
}

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/chatml-tools.jinja"
);

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
        Self::start_with(&["-c", "16384", "-np", "1"])
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

#[test]
fn official_sdks_through_moat_to_llama_cpp_on_both_backend_kinds() {
    let llama = LlamaServer::start();
    let home = new_home();
    let config = format!(
        r#"
[auth]
api_key = "env:CLIENT_KEY"

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
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let moat = Moat::start_in(home, &[], &[("CLIENT_KEY", "moat-test-client-key")], None);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/sdk_check.py");
    let out = Command::new(peer("MOAT_PEER_PYTHON"))
        .arg(script)
        .arg(format!("http://{}", moat.main))
        .args(["smol-via-openai", "smol-via-anthropic"])
        .output()
        .expect("run the SDK checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}\nmoat log:\n{}",
        moat.output()
    );
    assert_eq!(stdout.matches("ok: ").count(), 6, "{stdout}");
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

    let codex_home = tempfile::tempdir().unwrap();
    std::fs::write(
        codex_home.path().join("config.toml"),
        format!(
            r#"
model = "smol"
model_provider = "moat"
# A web search tool cannot run on a local model: moat would refuse the request.
web_search = "disabled"

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
    let mut child = Command::new(peer("MOAT_CODEX"))
        .args(["exec", "--skip-git-repo-check", "Say hello."])
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
    let deadline = Instant::now() + Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "codex exec did not finish in 10 minutes; moat log:\n{}",
                moat.output()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex exec failed:\n{stdout}\n{stderr}\nmoat log:\n{}",
        moat.output()
    );
    // `codex exec` prints the final message on stdout.
    assert!(!stdout.trim().is_empty(), "no answer:\n{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
