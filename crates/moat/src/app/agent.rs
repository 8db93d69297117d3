//! The assistant's store and levels, as `chat` and the commands that inspect it open them.

use anyhow::anyhow;
use moat_agent::AgentStore;
use moat_agent::trust::Levels;
use moat_core::config::Config;
use moat_core::home::Home;
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
