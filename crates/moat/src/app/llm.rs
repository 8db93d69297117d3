//! The LLM gateway as every command that calls models builds it: `serve` for clients,
//! `chat` for the assistant.

use std::sync::Arc;

use moat_core::config::Config;
use moat_core::home::Home;
use moat_state::StateStore;

use crate::Failure;
use crate::app;

/// The LLM gateway with its usage recorder, response store and account events.
pub(crate) fn gateway(
    home: &Home,
    config: &Config,
    credentials: moat_llm::Credentials,
    audit: &moat_audit::AuditWriter,
) -> Result<(Arc<moat_llm::Gateway>, moat_llm::Recorder), Failure> {
    let mut gateway =
        moat_llm::Gateway::new(&config.llm, credentials).map_err(|e| Failure::usage(e.into()))?;
    let open = || StateStore::open(&home.state_db()).map_err(Failure::runtime);
    // Usage: one connection writes (off the request path), another reads for /analytics.
    let (usage_db, analytics_db) = if config.llm.usage_retention.is_zero() {
        (None, None)
    } else {
        (Some(open()?), Some(open()?))
    };
    let recorder = moat_llm::Recorder::start(usage_db, config.llm.usage_retention);
    gateway = gateway
        .with_usage(recorder.clone(), analytics_db)
        .with_events(Arc::new(app::accounts::AuditAccountEvents(audit.log())));
    if !config.llm.responses_retention.is_zero() {
        // Its own connection to state.db: the Responses API keeps answers there.
        let store = moat_llm::ResponseStore::new(open()?, config.llm.responses_retention);
        gateway = gateway.with_response_store(store);
    }
    Ok((Arc::new(gateway), recorder))
}
