//! `moat sessions`, `moat trust`, `moat approvals`, `moat notes`: what the owner sees and
//! decides of the assistant from the command line. Every change is audited.

use anyhow::anyhow;
use moat_agent::trust::Level;
use moat_audit::Record;
use moat_core::home::Home;

use crate::app;
use crate::cli::{ApprovalsCommand, NotesCommand, SessionsCommand, TrustCommand};
use crate::terminal::shown;
use crate::{Failure, load_config};

fn store_error(e: moat_agent::StoreError) -> Failure {
    match e {
        moat_agent::StoreError::NotFound(_) => Failure::usage(anyhow!("{e}")),
        _ => Failure::runtime(anyhow!("{e}")),
    }
}

/// `moat sessions`.
pub(crate) fn sessions(home: &Home, command: &SessionsCommand) -> Result<(), Failure> {
    let store = app::agent::store(home)?;
    match command {
        SessionsCommand::List => {
            let sessions = store.sessions().map_err(store_error)?;
            if sessions.is_empty() {
                println!("no sessions yet; `moat chat` starts one");
            }
            for s in sessions {
                println!(
                    "{}  {}:{}  last active {}  {} messages  {} tokens",
                    s.id,
                    shown(&s.channel, false),
                    shown(&s.sender, false),
                    app::agent::time(s.active_at),
                    s.transcript.len(),
                    s.tokens
                );
            }
        }
        SessionsCommand::Show { id } => {
            let sessions = store.sessions().map_err(store_error)?;
            let s = sessions.iter().find(|s| &s.id == id).ok_or_else(|| {
                Failure::usage(anyhow!("no session {id}; `moat sessions list` shows them"))
            })?;
            for m in &s.transcript {
                let role = m["role"].as_str().unwrap_or("?");
                match &m["content"] {
                    serde_json::Value::String(t) => println!("{role}: {}", shown(t, true)),
                    serde_json::Value::Array(blocks) => {
                        for b in blocks {
                            match b["type"].as_str() {
                                Some("text") => {
                                    println!(
                                        "{role}: {}",
                                        shown(b["text"].as_str().unwrap_or_default(), true)
                                    )
                                }
                                Some("tool_use") => println!(
                                    "{role} calls {} {}",
                                    shown(b["name"].as_str().unwrap_or("?"), false),
                                    shown(&b["input"].to_string(), false)
                                ),
                                Some("tool_result") => println!(
                                    "{role} (tool result): {}",
                                    shown(b["content"].as_str().unwrap_or_default(), true)
                                ),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        SessionsCommand::Forget { id } => {
            let record = |outcome: &str| {
                Record::new(app::audit::cli_actor(), "agent.session.forget", id, outcome)
            };
            let found =
                app::audit::audited(home, record, || store.forget(id).map_err(store_error))?;
            if !found {
                return Err(Failure::usage(anyhow!(
                    "no session {id}; `moat sessions list` shows them"
                )));
            }
            let workspace = app::agent::workspaces(home).join(id);
            if workspace.exists() && std::fs::remove_dir_all(&workspace).is_err() {
                eprintln!(
                    "moat: could not remove {}; remove it by hand",
                    workspace.display()
                );
            }
            println!("forgot session {id}");
        }
    }
    Ok(())
}

/// `moat trust`.
pub(crate) fn trust(home: &Home, command: &TrustCommand) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let store = app::agent::store(home)?;
    let mut levels = app::agent::levels(&store, &loaded.config)?;
    match command {
        TrustCommand::Show => {
            for (domain, level, ceiling) in levels.all() {
                println!(
                    "{domain:<13} {} {:<11} (ceiling {} {})",
                    level.get(),
                    level.name(),
                    ceiling.get(),
                    ceiling.name()
                );
            }
        }
        TrustCommand::Set { domain, level } => {
            let to = Level::new(*level).ok_or_else(|| {
                Failure::usage(anyhow!(
                    "{level} is not a level: use 0 (none) to 4 (autonomous)"
                ))
            })?;
            let from = levels.level(domain);
            levels
                .set(domain, to)
                .map_err(|e| Failure::usage(anyhow!("{e}")))?;
            let reason = format!("set by {}", app::audit::cli_actor());
            let record = |outcome: &str| {
                Record::new(app::audit::cli_actor(), "agent.trust.set", domain, outcome)
                    .detail("from", from.get())
                    .detail("to", to.get())
            };
            app::audit::audited(home, record, || {
                store
                    .set_level(domain, from, to, &reason)
                    .map_err(store_error)
            })?;
            println!(
                "{domain}: {} ({}) → {} ({})",
                from.get(),
                from.name(),
                to.get(),
                to.name()
            );
        }
        TrustCommand::History { domain } => {
            let changes = store.history(domain.as_deref()).map_err(store_error)?;
            if changes.is_empty() {
                println!("no changes yet");
            }
            for c in changes {
                println!(
                    "{}  {:<13} {} → {}  {}",
                    app::agent::time(c.at),
                    c.domain,
                    c.from,
                    c.to,
                    c.reason
                );
            }
        }
        TrustCommand::Rollback { domain } => {
            let previous = store
                .previous_level(domain)
                .map_err(store_error)?
                .ok_or_else(|| {
                    Failure::usage(anyhow!(
                        "{domain} has no change to roll back (`moat trust history {domain}`)"
                    ))
                })?;
            let to = Level::new(previous).unwrap_or(Level::NONE);
            let from = levels.level(domain);
            levels
                .set(domain, to)
                .map_err(|e| Failure::usage(anyhow!("{e}")))?;
            let record = |outcome: &str| {
                Record::new(
                    app::audit::cli_actor(),
                    "agent.trust.rollback",
                    domain,
                    outcome,
                )
                .detail("from", from.get())
                .detail("to", to.get())
            };
            app::audit::audited(home, record, || {
                store
                    .set_level(domain, from, to, "rolled back by the owner")
                    .map_err(store_error)
            })?;
            println!(
                "{domain}: {} ({}) → {} ({})",
                from.get(),
                from.name(),
                to.get(),
                to.name()
            );
        }
    }
    Ok(())
}

/// `moat approvals`.
pub(crate) fn approvals(home: &Home, command: &ApprovalsCommand) -> Result<(), Failure> {
    let store = app::agent::store(home)?;
    match command {
        ApprovalsCommand::List => {
            let pending = store.pending().map_err(store_error)?;
            if pending.is_empty() {
                println!("nothing is waiting");
            }
            for p in pending {
                println!(
                    "{}  {} {}\n    why: {}  risk: {}  expires {}",
                    p.id,
                    shown(&p.tool, false),
                    shown(&p.arguments, false),
                    shown(&p.reason, false),
                    p.risk,
                    app::agent::time(p.expires_at)
                );
            }
        }
        ApprovalsCommand::Approve { id } | ApprovalsCommand::Deny { id } => {
            let approve = matches!(command, ApprovalsCommand::Approve { .. });
            let action = if approve {
                "agent.approval.approve"
            } else {
                "agent.approval.deny"
            };
            let record = |outcome: &str| Record::new(app::audit::cli_actor(), action, id, outcome);
            let p = app::audit::audited(home, record, || {
                store.answer(id, approve).map_err(store_error)
            })?;
            println!(
                "{} {} {}",
                p.state,
                shown(&p.tool, false),
                shown(&p.arguments, false)
            );
        }
    }
    Ok(())
}

/// `moat notes`.
pub(crate) fn notes(home: &Home, command: &NotesCommand) -> Result<(), Failure> {
    let store = app::agent::store(home)?;
    let owner = app::agent::OWNER;
    match command {
        NotesCommand::List => {
            let notes = store.notes(owner).map_err(store_error)?;
            if notes.is_empty() {
                println!("no notes");
            }
            for (id, text) in notes {
                println!("#{id}  {}", shown(&text, true));
            }
        }
        NotesCommand::Delete { id } => {
            let record = |outcome: &str| {
                Record::new(
                    app::audit::cli_actor(),
                    "agent.note.delete",
                    id.to_string(),
                    outcome,
                )
            };
            let found = app::audit::audited(home, record, || {
                store.delete_note(owner, *id).map_err(store_error)
            })?;
            if !found {
                return Err(Failure::usage(anyhow!(
                    "no note #{id}; `moat notes list` shows them"
                )));
            }
            println!("deleted note #{id}");
        }
    }
    Ok(())
}
