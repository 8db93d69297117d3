//! Translation between the OpenAI Chat Completions and Anthropic Messages wire formats:
//! requests ([`request`]), whole responses ([`response`]) and streams ([`stream`]).
//!
//! What carries over, both ways: system prompts; multi-turn history; text and image
//! content (base64 and URL); tools and `tool_choice`; assistant tool calls ⇄ `tool_use`
//! blocks; tool results ⇄ `tool` messages; parallel tool calls; stop sequences;
//! temperature, top_p and max_tokens (with a default where Anthropic requires one);
//! finish reasons (`tool_use` ⇄ `tool_calls`, `max_tokens` ⇄ `length`,
//! `end_turn`/`stop_sequence` → `stop`); usage with cached tokens; ids, model names and
//! errors. Responses API clients are served through Chat Completions
//! ([`responses`]), or passed through to backends that speak it ([`native_responses`]).

use moat_core::config::llm::{SystemMessages, UnsupportedTools};

/// What a request translation does with what the backend cannot take as it is, set per
/// backend (`unsupported_tools`, `system_messages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Hosted tools (web search, code execution...): dropped or refused.
    pub unsupported_tools: UnsupportedTools,
    /// Mid-conversation system messages: in place or merged into the next user turn.
    pub system_messages: SystemMessages,
    /// The most output tokens a translated request may ask for (`max_output_tokens`).
    pub max_output_tokens: Option<u32>,
    /// The backend runs web searches itself (Anthropic's server tool): a client's hosted
    /// web search tool maps to it instead of being dropped.
    pub web_search: bool,
}

/// Whether a Responses tool type is OpenAI's hosted web search, by any of its names.
pub(crate) fn is_web_search(kind: &str) -> bool {
    kind == "web_search"
        || kind.starts_with("web_search_preview")
        || kind.starts_with("web_search_20")
}

/// The kinds of tool a translation left out, to name them to the client.
pub type Dropped = Vec<String>;

/// Drops or refuses a tool of `kind` that the backend cannot run, as `opts` say.
fn unsupported_tool(
    opts: &Options,
    dropped: &mut Dropped,
    kind: &str,
    refusal: impl FnOnce() -> String,
) -> Result<(), crate::errors::ApiError> {
    match opts.unsupported_tools {
        UnsupportedTools::Refuse => Err(crate::errors::ApiError::invalid(format!(
            "{} (set llm.backends.NAME.unsupported_tools = \"drop\" to leave such tools out)",
            refusal()
        ))),
        UnsupportedTools::Drop => {
            if !dropped.iter().any(|d| d == kind) {
                dropped.push(kind.to_string());
            }
            Ok(())
        }
    }
}

pub mod native_responses;
pub mod request;
pub mod response;
pub mod responses;
pub mod stream;
