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

pub mod native_responses;
pub mod request;
pub mod response;
pub mod responses;
pub mod stream;
