//! What the commands share: opening the vault, the audit log, secret references, edits of
//! config.toml and the gateway's credentials. Command modules use these and never each
//! other, so that a new command (or the assistant to come) finds one place for each job.

pub(crate) mod accounts;
pub(crate) mod agent;
pub(crate) mod audit;
pub(crate) mod channels;
pub(crate) mod config_edit;
pub(crate) mod files;
pub(crate) mod llm;
pub(crate) mod page;
pub(crate) mod progress;
pub(crate) mod prompt;
pub(crate) mod radio;
pub(crate) mod secrets;
pub(crate) mod vault;
