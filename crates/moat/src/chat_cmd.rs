//! `moat chat`: the assistant in this terminal, with its owner. Each line is a turn;
//! tool calls and their results are shown as they happen, and a call that waits for
//! approval is asked about inline (the next line answers it).

use crate::terminal::shown;
use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::anyhow;
use moat_agent::{Approver, Channel, Inbound, Pending, TurnEvents};
use moat_core::home::Home;
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
    let handles = app::agent::handles(&vault, config)?;
    drop(vault);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let result = runtime.block_on(async {
        let (gateway, recorder) = app::llm::gateway(home, config, credentials, &audit)?;
        let agent = app::agent::agent(home, config, gateway, audit.log(), handles)?;
        moat_agent::channel::serve(&agent, &Terminal::new()).await;
        // Its MCP servers end with the chat (a stdio server's tree is killed).
        agent.shutdown().await;
        recorder.flush();
        Ok::<_, Failure>(())
    });
    // A stopped turn's sandboxed command may still be running on a blocking thread: do
    // not wait for it (it dies with this process: the sandbox's parent-death signal).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let closed = audit
        .close()
        .map_err(|e| Failure::runtime(anyhow!("the audit log did not close cleanly: {e}")));
    result.and(closed)
}

/// `moat chat --web`: the running server's web chat address, with the control token in
/// its fragment.
pub(crate) fn web(home: &Home) -> Result<(), Failure> {
    let endpoint = crate::status::endpoint(home)?;
    let scheme = if endpoint.tls { "https" } else { "http" };
    println!("{scheme}://{}/chat#token={}", endpoint.addr, endpoint.token);
    Ok(())
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

/// The terminal as a channel: its one sender is the owner; each line is a message, a
/// call waiting for approval is answered by the next line, and Ctrl-C stops a turn.
struct Terminal {
    lines: Lines,
}

impl Terminal {
    fn new() -> Terminal {
        Terminal {
            lines: Lines::from_stdin(),
        }
    }
}

#[async_trait::async_trait]
impl Channel for Terminal {
    fn name(&self) -> &str {
        "chat"
    }

    fn standing(&self, _sender: &str) -> &str {
        "owner"
    }

    async fn next(&self) -> Option<Inbound> {
        loop {
            print!("> ");
            let _ = std::io::stdout().flush();
            // Ctrl-C at the prompt ends moat chat; during a turn it stops the turn.
            let line = tokio::select! {
                line = self.lines.next() => line,
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(line) = line else {
                println!();
                return None;
            };
            match line.trim() {
                "" => continue,
                "/quit" => return None,
                text => {
                    return Some(Inbound {
                        sender: app::agent::OWNER.into(),
                        text: text.into(),
                    });
                }
            }
        }
    }

    fn admits(&self, sender: &str) -> bool {
        sender == app::agent::OWNER
    }

    fn events(&self, _sender: &str) -> Box<dyn TurnEvents + '_> {
        Box::new(Shown::default())
    }

    fn approver(&self, _sender: &str) -> Box<dyn Approver + '_> {
        Box::new(Inline(self.lines.clone()))
    }

    async fn say(&self, _sender: &str, text: &str) {
        eprintln!("moat chat: {}", shown(text, true));
    }

    async fn stop(&self, _sender: &str) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Asks in the terminal; the next line answers.
struct Inline(Lines);

#[async_trait::async_trait]
impl Approver for Inline {
    async fn ask(&self, p: &Pending) -> bool {
        println!(
            "? {} {}\n  {} (risk {}; approval {}). Run it? [y/N]",
            shown(&p.tool, false),
            shown(&p.arguments, false),
            shown(&p.reason, false),
            p.risk,
            p.id
        );
        let _ = std::io::stdout().flush();
        matches!(
            self.0.next().await.as_deref().map(str::trim),
            Some("y" | "yes" | "Y")
        )
    }
}

/// What a turn shows in the terminal: the reply as it arrives, each call and its
/// result. Everything from the model or a tool passes through [`shown`]: no escape
/// sequence from a fetched page or a command reaches the terminal.
#[derive(Default)]
struct Shown {
    /// A streamed text block is being printed (its line is still open).
    streaming: bool,
}

impl TurnEvents for Shown {
    fn streams(&self) -> bool {
        true
    }

    fn text_delta(&mut self, delta: &str) {
        self.streaming = true;
        print!("{}", shown(delta, true));
        let _ = std::io::stdout().flush();
    }

    fn text(&mut self, text: &str) {
        if std::mem::take(&mut self.streaming) {
            println!();
        } else {
            println!("{}", shown(text, true));
        }
    }

    fn tool_call(&mut self, tool: &str, arguments: &Value) {
        println!(
            "· {} {}",
            shown(tool, false),
            shown(&arguments.to_string(), false)
        );
    }

    fn tool_result(&mut self, tool: &str, ok: bool, output: &str) {
        let first: String = output.lines().take(6).collect::<Vec<_>>().join("\n  ");
        println!(
            "{} {}: {}",
            if ok { "✓" } else { "✗" },
            shown(tool, false),
            shown(&first, true)
        );
    }

    fn notice(&mut self, text: &str) {
        println!("! {}", shown(text, true));
    }
}
