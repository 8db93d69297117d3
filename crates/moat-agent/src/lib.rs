//! moat's assistant: an agent loop that calls models in process through moat's router,
//! with every tool call gated by the owner's trust levels.
//!
//! - [`channel`]: the `Channel` trait the terminal (and the channels to come) plug in
//!   through, and the loop that serves one.
//! - [`trust`]: levels per domain (none, inform, suggest, act, autonomous), ceilings, and
//!   the gate a call passes; levels only go down within a turn.
//! - [`turn`]: one turn, message to reply: guard scan and spotlighting, model calls,
//!   the gate, approvals, tools, output masking and scanning, bounded steps and tool time.
//! - [`tools`]: the built-in tools (`files`, `notes`, `shell`, `run_code`, `web_fetch`,
//!   `http_request`), each with a domain.
//! - [`mcp`]: tools from Model Context Protocol servers (stdio in the sandbox, HTTP through
//!   the egress policy), in the domain the owner gives each.
//! - [`secrets`]: secrets by handle; values reach only the tools allowed them.
//! - [`store`]: sessions, trust, approvals and notes in the state store.
//! - [`sandboxing`]: a sandbox profile made into the spec of one call (tools and
//!   `moat sandbox run` alike).
//! - [`limits`]: messages per sender, tokens per conversation, turns at once.
//!
//! Every decision (a call refused, asked, approved, denied, run; a level changed; a
//! guard flag) is an audit record.

pub mod channel;
pub mod limits;
pub mod mcp;
pub mod sandboxing;
pub mod secrets;
pub mod store;
pub mod tools;
pub mod trust;
pub mod turn;

pub use channel::{Channel, Inbound};
pub use secrets::Handles;
pub use store::{AgentStore, Pending, Session, StoreError, TrustChange};
pub use turn::{Agent, Approver, TurnError, TurnEvents, TurnStats};
