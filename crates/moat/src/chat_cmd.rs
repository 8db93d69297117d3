//! `moat chat`: the assistant in this terminal, with its owner. Each line is a turn;
//! tool calls and their results are shown as they happen, and a call that waits for
//! approval is asked about inline (the next line answers it).

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::anyhow;
use moat_agent::{Agent, Approver, Handles, Pending, TurnEvents};
use moat_core::home::Home;
use moat_core::secret::SecretString;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

use crate::{Failure, app, load_config};

pub(crate) fn run(home: &Home) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let config = &loaded.config;
    let vault = app::vault::unlock_or_create(home).map_err(|f| {
        f.context("moat chat needs the vault (the model accounts' keys and the audit log's signing key are in it)".into())
    })?;
    let credentials = app::accounts::credentials(home, &vault, &config.llm)?;
    let audit = app::audit::open_keyed(home, &vault, &config.audit)?;
    let mut handles = Handles::new();
    for (name, usage) in &config.agent.secrets {
        let entry = vault.get(name).ok_or_else(|| {
            Failure::usage(anyhow!(
                "agent.secrets names {name:?}, which is not in the vault; add it with `moat vault add {name}`"
            ))
        })?;
        let value = String::from_utf8(entry.value().to_vec())
            .map_err(|_| Failure::usage(anyhow!("the secret {name:?} is not UTF-8 text")))?;
        handles.insert(
            name,
            SecretString::new(value),
            usage.tools.clone(),
            usage.hosts.clone(),
        );
    }
    drop(vault);
    let store = app::agent::store(home)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let result = runtime.block_on(async {
        let (gateway, recorder) = app::llm::gateway(home, config, credentials, &audit)?;
        let agent = Agent::new(
            gateway,
            &config.egress,
            config.agent.clone(),
            store,
            app::agent::workspaces(home),
            vec![home.root().to_path_buf()],
        )
        .map_err(|e| Failure::usage(anyhow!("{e}")))?
        .with_audit(audit.log())
        .with_handles(handles);
        let lines = Lines::from_stdin();
        let approver = Inline(lines.clone());
        let mut events = Terminal;
        loop {
            print!("> ");
            let _ = std::io::stdout().flush();
            let Some(line) = lines.next().await else {
                println!();
                break;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line == "/quit" {
                break;
            }
            if let Err(e) = agent
                .turn("chat", app::agent::OWNER, line, &mut events, &approver)
                .await
            {
                eprintln!("moat chat: {e}");
            }
        }
        recorder.flush();
        Ok::<_, Failure>(())
    });
    let closed = audit
        .close()
        .map_err(|e| Failure::runtime(anyhow!("the audit log did not close cleanly: {e}")));
    result.and(closed)
}

/// Lines typed by the owner, read on a thread of their own and shared by the turn loop
/// and the approver.
#[derive(Clone)]
struct Lines(Arc<Mutex<mpsc::Receiver<String>>>);

impl Lines {
    fn from_stdin() -> Lines {
        let (tx, rx) = mpsc::channel(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Lines(Arc::new(Mutex::new(rx)))
    }

    async fn next(&self) -> Option<String> {
        self.0.lock().await.recv().await
    }
}

/// Asks in the terminal; the next line answers.
struct Inline(Lines);

#[async_trait::async_trait]
impl Approver for Inline {
    async fn ask(&self, p: &Pending) -> bool {
        println!(
            "? {} {}\n  {} (risk {}; approval {}). Run it? [y/N]",
            p.tool, p.arguments, p.reason, p.risk, p.id
        );
        let _ = std::io::stdout().flush();
        matches!(
            self.0.next().await.as_deref().map(str::trim),
            Some("y" | "yes" | "Y")
        )
    }
}

/// What a turn shows in the terminal.
struct Terminal;

impl TurnEvents for Terminal {
    fn text(&mut self, text: &str) {
        println!("{text}");
    }

    fn tool_call(&mut self, tool: &str, arguments: &Value) {
        println!("· {tool} {arguments}");
    }

    fn tool_result(&mut self, tool: &str, ok: bool, output: &str) {
        let first: String = output.lines().take(6).collect::<Vec<_>>().join("\n  ");
        println!("{} {tool}: {first}", if ok { "✓" } else { "✗" });
    }

    fn notice(&mut self, text: &str) {
        println!("! {text}");
    }
}
