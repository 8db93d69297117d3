//! The gateway against real peers: the official `anthropic` and `openai` Python SDKs
//! drive moat, which forwards to a real llama.cpp `llama-server` (serving SmolLM2-135M)
//! through both backend kinds: llama.cpp speaks the OpenAI and the Anthropic API.
//!
//! `scripts/peers` builds and caches the peers; `scripts/test` exports where they are
//! (MOAT_PEER_PYTHON, MOAT_LLAMA_SERVER, MOAT_LLAMA_MODEL). Without them these tests fail
//! with a message saying so.

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
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("moat-llama-{port}.log"));
        let child = Command::new(peer("MOAT_LLAMA_SERVER"))
            .args(["-m", &peer("MOAT_LLAMA_MODEL")])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "4096", "-np", "2", "-t", "2", "--no-ui", "--jinja"])
            // SmolLM2's own template has no tools; this ChatML one adds Hermes-style
            // <tool_call> blocks, which llama.cpp recognises and grammar-constrains.
            .args(["--chat-template-file", TEMPLATE])
            // A 135M model seldom chooses to call a tool even when one is required (llama.cpp
            // lets text come first). A bias on "<" (SmolLM2 token 44, how `<tool_call>`
            // starts) and on <|im_end|> (token 2, so it stops after one call) makes the real
            // model emit real tool calls; plain chat still answers in text.
            .args(["--logit-bias", "44+8", "--logit-bias", "2+10"])
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
