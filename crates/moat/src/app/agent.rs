//! The assistant's store and levels, as `chat` and the commands that inspect it open them.

use anyhow::anyhow;
use moat_agent::trust::Levels;
use moat_agent::{Agent, AgentStore, Handles};
use moat_core::config::Config;
use moat_core::home::Home;
use moat_core::secret::SecretString;
use moat_state::StateStore;

use crate::Failure;

/// The sender name of the owner on the terminal chat (whose notes `moat notes` shows).
pub(crate) const OWNER: &str = "owner";

/// The assistant's tables in MOAT_HOME's state store.
pub(crate) fn store(home: &Home) -> Result<AgentStore, Failure> {
    home.ensure().map_err(Failure::runtime)?;
    let db = StateStore::open(&home.state_db()).map_err(Failure::runtime)?;
    Ok(AgentStore::new(db))
}

/// The levels in force: the config's, with the changes recorded since.
pub(crate) fn levels(store: &AgentStore, config: &Config) -> Result<Levels, Failure> {
    store
        .levels(Levels::from_config(&config.agent))
        .map_err(|e| Failure::runtime(anyhow!("{e}")))
}

/// Where the assistant's sessions keep their files.
pub(crate) fn workspaces(home: &Home) -> std::path::PathBuf {
    home.root().join("agent").join("workspaces")
}

/// A time in unix milliseconds, as commands print it.
pub(crate) fn time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The secrets `[agent.secrets]` lets the assistant use by handle, and those its MCP
/// servers get (`env_secrets`, `bearer_secret`), read from the vault.
pub(crate) fn handles(vault: &moat_vault::Vault, config: &Config) -> Result<Handles, Failure> {
    let read = |name: &str, key: &str| {
        let entry = vault.get(name).ok_or_else(|| {
            Failure::usage(anyhow!(
                "{key} names {name:?}, which is not in the vault; add it with `moat vault add {name}`"
            ))
        })?;
        String::from_utf8(entry.value().to_vec())
            .map(SecretString::new)
            .map_err(|_| Failure::usage(anyhow!("the secret {name:?} is not UTF-8 text")))
    };
    let mut handles = Handles::new();
    for (name, usage) in &config.agent.secrets {
        handles.insert(
            name,
            read(name, "agent.secrets")?,
            usage.tools.clone(),
            usage.hosts.clone(),
        );
    }
    for (server, mcp) in &config.agent.mcp {
        let names = mcp
            .env_secrets
            .values()
            .map(|n| (n, "env_secrets"))
            .chain(mcp.bearer_secret.iter().map(|n| (n, "bearer_secret")));
        for (name, key) in names {
            handles.insert_for_servers(name, read(name, &format!("agent.mcp.{server}.{key}"))?);
        }
    }
    Ok(handles)
}

/// The assistant on `gateway`, as `moat chat` and `moat serve` (the web chat) run it.
pub(crate) fn agent(
    home: &Home,
    config: &Config,
    gateway: std::sync::Arc<moat_llm::Gateway>,
    audit: moat_audit::AuditLog,
    handles: Handles,
) -> Result<Agent, Failure> {
    Agent::new(
        gateway,
        &config.egress,
        config.agent.clone(),
        store(home)?,
        workspaces(home),
        vec![home.root().to_path_buf()],
    )
    .map_err(|e| Failure::usage(anyhow!("{e}")))?
    .with_audit(audit)
    .with_handles(handles)
    .with_sandbox(config.sandbox.clone())
    .with_mcp(home.root().join("agent").join("mcp"))
    .map_err(|e| Failure::usage(anyhow!("{e}")))
}
