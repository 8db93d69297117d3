//! Request translation: OpenAI Chat Completions ⇄ Anthropic Messages.
//!
//! Both directions work on JSON values and carry over every field the other API has a
//! place for (see the crate docs for the list). A field that has no counterpart is
//! dropped; a request that can't be expressed at all (several choices, an unknown
//! content part) is refused with a 400 that says which field.

use moat_core::config::llm::SystemMessages;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// What an OpenAI client asked for that shapes the translated response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAiStreamOptions {
    /// `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
}

/// An OpenAI chat request → an Anthropic messages request for `model`.
pub fn openai_to_anthropic(req: &Value, model: &str, default_max_tokens: u32) -> Result<Value> {
    let obj = as_object(req, "request body")?;
    if let Some(n) = obj.get("n").and_then(Value::as_u64)
        && n != 1
    {
        return Err(ApiError::invalid(
            "`n` other than 1 is not supported by this model's backend",
        ));
    }
    // A schema the answer must follow cannot be promised by Messages: refused rather than
    // answered with free text the client then fails to parse. (`json_object` is a hint
    // the prompt must repeat anyway, so it is dropped.)
    if req.pointer("/response_format/type").and_then(Value::as_str) == Some("json_schema") {
        return Err(ApiError::invalid(
            "`response_format` json_schema (structured output; `text.format` in the Responses API) is not supported by this model's backend (Anthropic Messages); route the model to an OpenAI-compatible backend or ask for JSON in the prompt",
        ));
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("`messages` must be an array"))?;

    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("`messages[{i}].role` is missing")))?;
        match role {
            "system" | "developer" => {
                for block in openai_content_to_blocks(m.get("content"), i)? {
                    if block["type"] != "text" {
                        return Err(ApiError::invalid(format!(
                            "`messages[{i}]`: a system message may hold text only"
                        )));
                    }
                    system.push(block);
                }
            }
            "user" => {
                let blocks = openai_content_to_blocks(m.get("content"), i)?;
                push_message(&mut out, "user", blocks);
            }
            "assistant" => {
                let mut blocks = openai_content_to_blocks(m.get("content"), i)?;
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_call_to_tool_use(call, i, j)?);
                    }
                }
                push_message(&mut out, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("`messages[{i}].tool_call_id` is missing"))
                    })?;
                let content = openai_content_to_blocks(m.get("content"), i)?;
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": id,
                    "content": content,
                });
                push_message(&mut out, "user", vec![result]);
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "`messages[{i}].role` {other:?} is not supported; use system, developer, user, assistant or tool"
                )));
            }
        }
    }

    let mut r = Map::new();
    r.insert("model".into(), json!(model));
    r.insert("messages".into(), Value::Array(out));
    if !system.is_empty() {
        r.insert("system".into(), Value::Array(system));
    }
    let max_tokens = obj
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| obj.get("max_tokens").filter(|v| !v.is_null()))
        .cloned()
        .unwrap_or_else(|| json!(default_max_tokens));
    r.insert("max_tokens".into(), max_tokens);
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            r.insert(key.into(), v.clone());
        }
    }
    match obj.get("stop") {
        Some(Value::String(s)) => {
            r.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            r.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = obj.get("user").and_then(Value::as_str) {
        r.insert("metadata".into(), json!({ "user_id": user }));
    }
    let mut tools_out = Vec::new();
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let out = &mut tools_out;
        for (i, t) in tools.iter().enumerate() {
            let f = t.get("function").ok_or_else(|| {
                ApiError::invalid(format!("`tools[{i}]`: only function tools are supported"))
            })?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(format!("`tools[{i}].function.name` is missing"))
            })?;
            let mut tool = Map::new();
            tool.insert("name".into(), json!(name));
            if let Some(d) = f.get("description").filter(|v| !v.is_null()) {
                tool.insert("description".into(), d.clone());
            }
            let schema = f
                .get("parameters")
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tool.insert("input_schema".into(), schema);
            out.push(Value::Object(tool));
        }
    }
    if let Some(search) = obj.get("web_search_options").filter(|v| v.is_object()) {
        tools_out.push(web_search_tool(search));
    }
    if !tools_out.is_empty() {
        r.insert("tools".into(), Value::Array(tools_out));
    }
    let parallel_off = obj.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(ApiError::invalid(format!(
                    "`tool_choice` {other:?} is not one of auto, none, required"
                )));
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("`tool_choice.function.name` is missing"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    let choice = match (choice, parallel_off && r.contains_key("tools")) {
        (Some(mut c), true) if c["type"] != "none" => {
            c["disable_parallel_tool_use"] = json!(true);
            Some(c)
        }
        (None, true) => Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
        (c, _) => c,
    };
    if let Some(c) = choice {
        r.insert("tool_choice".into(), c);
    }
    Ok(Value::Object(r))
}

/// Chat's `web_search_options` → Anthropic's web search server tool, which the backend
/// runs itself. The location carries over; `search_context_size` has no counterpart
/// (Anthropic decides how much of each page to read). `filters.allowed_domains` is
/// where the Responses translation puts a web search tool's domain filter.
fn web_search_tool(search: &Value) -> Value {
    let mut tool = Map::new();
    tool.insert("type".into(), json!(WEB_SEARCH_TOOL));
    tool.insert("name".into(), json!("web_search"));
    if let Some(place) = search
        .pointer("/user_location/approximate")
        .and_then(Value::as_object)
    {
        let mut location = Map::new();
        location.insert("type".into(), json!("approximate"));
        for key in ["city", "region", "country", "timezone"] {
            if let Some(v) = place.get(key).filter(|v| v.is_string()) {
                location.insert(key.into(), v.clone());
            }
        }
        tool.insert("user_location".into(), Value::Object(location));
    }
    if let Some(domains) = search
        .pointer("/filters/allowed_domains")
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        tool.insert("allowed_domains".into(), domains.clone());
    }
    Value::Object(tool)
}

/// Whether an OpenAI model searches the web itself when a request carries
/// `web_search_options` (`gpt-4o-search-preview`, `gpt-5-search-api`...): the only Chat
/// Completions models that can, and the only ones that accept the field.
pub fn is_search_model(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    name.starts_with("gpt-") && name.contains("-search")
}

/// Anthropic's web search tool → Chat's `web_search_options`: the user's location
/// carries over; the domain lists and `max_uses` have no counterpart there.
fn web_search_options(tool: &Value) -> Value {
    let mut search = Map::new();
    if let Some(place) = tool.get("user_location").and_then(Value::as_object) {
        let mut approximate = Map::new();
        for key in ["city", "region", "country", "timezone"] {
            if let Some(v) = place.get(key).filter(|v| v.is_string()) {
                approximate.insert(key.into(), v.clone());
            }
        }
        search.insert(
            "user_location".into(),
            json!({"type": "approximate", "approximate": approximate}),
        );
    }
    Value::Object(search)
}

/// The version of Anthropic's web search tool that OpenAI clients' searches map to:
/// the oldest, which every Anthropic model with web search accepts.
pub const WEB_SEARCH_TOOL: &str = "web_search_20250305";

/// Options of an OpenAI request that the response translation needs.
pub fn openai_stream_options(req: &Value) -> OpenAiStreamOptions {
    OpenAiStreamOptions {
        include_usage: req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// Appends a message, merging into the last one when the role repeats (several tool
/// results in a row become one user turn, as Anthropic expects).
fn push_message(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = out.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    out.push(json!({ "role": role, "content": blocks }));
}

fn openai_content_to_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| openai_part_to_block(p, i, j))
            .collect(),
        Some(_) => Err(ApiError::invalid(format!(
            "`messages[{i}].content` must be a string or an array of parts"
        ))),
    }
}

fn openai_part_to_block(part: &Value, i: usize, j: usize) -> Result<Value> {
    let at = || format!("`messages[{i}].content[{j}]`");
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(format!("{} has no text", at())))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .or_else(|| part.get("image_url").filter(|v| v.is_string()))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(format!("{} has no image_url.url", at())))?;
            Ok(image_block(url).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{}: an image must be an https URL or a base64 data URL",
                    at()
                ))
            })?)
        }
        Some(other) => Err(ApiError::invalid(format!(
            "{}: content part type {other:?} is not supported by this model's backend",
            at()
        ))),
        None => Err(ApiError::invalid(format!("{} has no type", at()))),
    }
}

/// An Anthropic image block from an OpenAI image URL (`data:` or http(s)).
fn image_block(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        return Some(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Some(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    None
}

fn tool_call_to_tool_use(call: &Value, i: usize, j: usize) -> Result<Value> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("`{at}` has no id")))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("`{at}.function.name` is missing")))?;
    let input = match call.pointer("/function/arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(ApiError::invalid(format!(
                    "`{at}.function.arguments` must be a JSON object"
                )));
            }
        },
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "`{at}.function.arguments` must be a JSON object"
            )));
        }
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// An Anthropic messages request → an OpenAI chat request for `model`; server tools are
/// refused (see [`anthropic_to_openai_with`] for the per-backend choice).
pub fn anthropic_to_openai(req: &Value, model: &str) -> Result<Value> {
    let opts = super::Options {
        unsupported_tools: moat_core::config::llm::UnsupportedTools::Refuse,
        ..Default::default()
    };
    anthropic_to_openai_with(req, model, &opts, &mut Vec::new())
}

/// An Anthropic messages request → an OpenAI chat request for `model`, with server
/// tools (web search, code execution...) dropped into `dropped` or refused, and
/// mid-conversation system messages placed, as `opts` say.
pub fn anthropic_to_openai_with(
    req: &Value,
    model: &str,
    opts: &super::Options,
    dropped: &mut super::Dropped,
) -> Result<Value> {
    let obj = as_object(req, "request body")?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("`messages` must be an array"))?;
    let mut out: Vec<Value> = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = join_text(blocks, "system")?;
            out.push(json!({"role": "system", "content": text}));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`system` must be a string or text blocks",
            ));
        }
    }
    // System text waiting for the next user turn (`system_messages = "merge"`).
    let mut held_system: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("`messages[{i}].role` is missing")))?;
        let blocks = match m.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(a)) => a.clone(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "`messages[{i}].content` must be a string or an array of blocks"
                )));
            }
        };
        match role {
            "user" => {
                let start = out.len();
                user_blocks_to_openai(&blocks, i, &mut out)?;
                if !held_system.is_empty() {
                    merge_system_into_user(&mut out, start, &held_system.join("\n\n"));
                    held_system.clear();
                }
            }
            "assistant" => out.push(assistant_blocks_to_openai(&blocks, i)?),
            // A system message mid-conversation (the Messages API takes them; current
            // Claude Code sends them): in place, or held for the next user turn.
            "system" => {
                let text = join_text(&blocks, &format!("messages[{i}].content"))?;
                match opts.system_messages {
                    SystemMessages::InPlace => {
                        out.push(json!({"role": "system", "content": text}));
                    }
                    SystemMessages::Merge if out.is_empty() => {
                        out.push(json!({"role": "system", "content": text}));
                    }
                    SystemMessages::Merge => held_system.push(text),
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "`messages[{i}].role` {other:?} is not user, assistant or system"
                )));
            }
        }
    }
    // System text after the last user turn (Claude Code's first request) joins that
    // turn, after what the user said; with no user turn at all it stays a system message.
    if !held_system.is_empty() {
        let text = held_system.join("\n\n");
        match out.iter().rposition(|m| m["role"] == "user") {
            Some(last) => append_system_to_user(&mut out[last], &text),
            None => out.push(json!({"role": "system", "content": text})),
        }
    }

    let mut r = Map::new();
    r.insert("model".into(), json!(model));
    r.insert("messages".into(), Value::Array(out));
    if let Some(v) = obj.get("max_tokens").filter(|v| !v.is_null()) {
        // Claude Code asks for 64,000; a server that refuses prompt + max_tokens past its
        // context (vLLM) takes the backend's cap instead.
        let capped = match (v.as_u64(), opts.max_output_tokens) {
            (Some(n), Some(cap)) if n > u64::from(cap) => json!(cap),
            _ => v.clone(),
        };
        r.insert(openai_max_tokens_key(model).into(), capped);
    }
    // Structured output (Claude Code's titles): Anthropic's `output_config.format` is
    // OpenAI's `response_format`.
    if let Some(format) = req.pointer("/output_config/format")
        && format["type"] == "json_schema"
    {
        let schema = format
            .get("schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        r.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
        );
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            r.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = obj.get("stop_sequences").and_then(Value::as_array)
        && !stop.is_empty()
    {
        r.insert("stop".into(), Value::Array(stop.clone()));
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        r.insert("stream".into(), json!(true));
        // Anthropic streams always end with the usage; ask for it.
        r.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = req.pointer("/metadata/user_id").and_then(Value::as_str) {
        r.insert("user".into(), json!(user));
    }
    // Names of the server tools left out, so a `tool_choice` forcing one can let go.
    let mut dropped_names: Vec<String> = Vec::new();
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let mut out = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            // Server tools (web search, code execution...) carry a `type` other than
            // "custom" and have no function equivalent.
            if let Some(kind) = t.get("type").and_then(Value::as_str)
                && kind != "custom"
            {
                // OpenAI's search models search on every request when asked to with
                // `web_search_options`: Anthropic's web search maps onto that.
                if kind.starts_with("web_search_") && is_search_model(model) {
                    r.insert("web_search_options".into(), web_search_options(t));
                    if let Some(name) = t.get("name").and_then(Value::as_str) {
                        dropped_names.push(name.to_string());
                    }
                    continue;
                }
                super::unsupported_tool(opts, dropped, kind, || {
                    format!(
                        "`tools[{i}]`: tool type {kind:?} is not supported by this model's backend"
                    )
                })?;
                if let Some(name) = t.get("name").and_then(Value::as_str) {
                    dropped_names.push(name.to_string());
                }
                continue;
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(format!("`tools[{i}].name` is missing")))?;
            let mut f = Map::new();
            f.insert("name".into(), json!(name));
            if let Some(d) = t.get("description").filter(|v| !v.is_null()) {
                f.insert("description".into(), d.clone());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            out.push(json!({"type": "function", "function": f}));
        }
        if !out.is_empty() {
            r.insert("tools".into(), Value::Array(out));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| v.is_object()) {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid("`tool_choice.name` is missing"))?;
                if dropped_names.iter().any(|d| d == name) {
                    // The tool it names was dropped: the model chooses among the rest.
                    json!("auto")
                } else {
                    json!({"type": "function", "function": {"name": name}})
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    "`tool_choice.type` is not auto, any, tool or none",
                ));
            }
        };
        r.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            r.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    without_tool_settings_if_no_tools(&mut r);
    Ok(Value::Object(r))
}

/// A chat request left with no tools (all of them dropped) takes no tool settings:
/// OpenAI refuses `tool_choice` or `parallel_tool_calls` without `tools`.
pub(crate) fn without_tool_settings_if_no_tools(r: &mut Map<String, Value>) {
    let has_tools = r
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !has_tools {
        r.remove("tools");
        r.remove("tool_choice");
        r.remove("parallel_tool_calls");
    }
}

/// Puts `system` text in front of the user message that starts at `out[start]` (after
/// any tool results), marked as such, for chat templates that take no system message
/// after the first.
fn merge_system_into_user(out: &mut Vec<Value>, start: usize, system: &str) {
    let marked = format!("<system>\n{system}\n</system>\n\n");
    let Some(user) = out[start..].iter_mut().find(|m| m["role"] == "user") else {
        // A turn of tool results only: the text becomes a user message of its own.
        out.push(json!({"role": "user", "content": marked}));
        return;
    };
    match &mut user["content"] {
        Value::String(text) => text.insert_str(0, &marked),
        Value::Array(parts) => parts.insert(0, json!({"type": "text", "text": marked})),
        other => *other = json!(marked),
    }
}

/// Appends `system` text, marked as such, to a user message.
fn append_system_to_user(user: &mut Value, system: &str) {
    let marked = format!("\n\n<system>\n{system}\n</system>");
    match &mut user["content"] {
        Value::String(text) => text.push_str(&marked),
        Value::Array(parts) => parts.push(json!({"type": "text", "text": marked})),
        other => *other = json!(marked),
    }
}

fn join_text(blocks: &[Value], at: &str) -> Result<String> {
    let mut text = String::new();
    for b in blocks {
        match (
            b.get("type").and_then(Value::as_str),
            b.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "`{at}` may hold text blocks only"
                )));
            }
        }
    }
    Ok(text)
}

/// User blocks: tool results become `tool` messages (first, in order), the rest one user
/// message.
fn user_blocks_to_openai(blocks: &[Value], i: usize, out: &mut Vec<Value>) -> Result<()> {
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = || format!("`messages[{i}].content[{j}]`");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{} has no text", at())))?;
                parts.push(json!({"type": "text", "text": t}));
            }
            Some("image") => {
                parts.push(image_part(b).ok_or_else(|| {
                    ApiError::invalid(format!("{}: unsupported image source", at()))
                })?)
            }
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{} has no tool_use_id", at())))?;
                let (text, images) = match b.get("content") {
                    None | Some(Value::Null) => (String::new(), Vec::new()),
                    Some(Value::String(s)) => (s.clone(), Vec::new()),
                    Some(Value::Array(items)) => {
                        let mut text = String::new();
                        let mut images = Vec::new();
                        for item in items {
                            match item.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    if !text.is_empty() {
                                        text.push('\n');
                                    }
                                    text.push_str(item["text"].as_str().unwrap_or_default());
                                }
                                Some("image") => images.extend(image_part(item)),
                                _ => {
                                    return Err(ApiError::invalid(format!(
                                        "{}: tool results may hold text and images only",
                                        at()
                                    )));
                                }
                            }
                        }
                        (text, images)
                    }
                    Some(_) => {
                        return Err(ApiError::invalid(format!("{}.content is not valid", at())));
                    }
                };
                // OpenAI has no error flag on tool results; say it in the content.
                let text = if b.get("is_error") == Some(&Value::Bool(true)) {
                    format!("Error: {text}")
                } else {
                    text
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                // Tool messages carry text only; images follow as user content.
                parts.extend(images);
            }
            Some("document") => match b.pointer("/source/type").and_then(Value::as_str) {
                Some("text") => {
                    let t = b
                        .pointer("/source/data")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    parts.push(json!({"type": "text", "text": t}));
                }
                // A PDF (Claude Code's Read on one): OpenAI's file part carries it.
                Some("base64") => {
                    let media = b
                        .pointer("/source/media_type")
                        .and_then(Value::as_str)
                        .unwrap_or("application/pdf");
                    let data = b
                        .pointer("/source/data")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let name = b
                        .get("title")
                        .and_then(Value::as_str)
                        .unwrap_or("document.pdf");
                    parts.push(json!({"type": "file", "file": {
                        "filename": name,
                        "file_data": format!("data:{media};base64,{data}"),
                    }}));
                }
                _ => {
                    return Err(ApiError::invalid(format!(
                        "{}: only text and base64 documents can be sent to this model's backend (a URL or file id cannot)",
                        at()
                    )));
                }
            },
            // Thinking the client echoes back has no OpenAI counterpart.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "{}: block type {other:?} is not supported by this model's backend",
                    at()
                )));
            }
            None => return Err(ApiError::invalid(format!("{} has no type", at()))),
        }
    }
    if !parts.is_empty() {
        let only_text = parts.len() == 1 && parts[0]["type"] == "text";
        let content = if only_text {
            parts[0]["text"].clone()
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn image_part(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    let url = match source.get("type")?.as_str()? {
        "base64" => format!(
            "data:{};base64,{}",
            source.get("media_type")?.as_str()?,
            source.get("data")?.as_str()?
        ),
        "url" => source.get("url")?.as_str()?.to_string(),
        _ => return None,
    };
    Some(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn assistant_blocks_to_openai(blocks: &[Value], i: usize) -> Result<Value> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => {
                let id = b["id"].as_str().unwrap_or_default();
                let name = b["name"].as_str().unwrap_or_default();
                let args = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": args.to_string()},
                }));
            }
            // The model's reasoning goes back as it came (`reasoning_content`): servers
            // with a thinking mode and tools require it (DeepSeek).
            Some("thinking") => reasoning.push_str(b["thinking"].as_str().unwrap_or_default()),
            Some("redacted_thinking") => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "`messages[{i}].content[{j}]`: an assistant turn may hold text, tool_use and thinking blocks"
                )));
            }
        }
    }
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    m.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    if !reasoning.is_empty() {
        m.insert("reasoning_content".into(), json!(reasoning));
    }
    Ok(Value::Object(m))
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| ApiError::invalid(format!("{what} must be a JSON object")))
}

/// The field an OpenAI upstream takes the output limit in. OpenAI's reasoning models
/// (o1, o3, o4, gpt-5 and their variants) refuse `max_tokens` and take only
/// `max_completion_tokens`, which other OpenAI-compatible servers (llama.cpp, Ollama,
/// older vLLM) may not know: so the newer name goes only to those models, by their bare
/// OpenAI names (a router's `vendor/model` names take `max_tokens` and map it).
pub(crate) fn openai_max_tokens_key(model: &str) -> &'static str {
    let reasoning = ["o1", "o3", "o4", "gpt-5"].iter().any(|family| {
        model
            .strip_prefix(family)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.']))
    });
    if reasoning {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_schema_answer_format_is_refused_for_anthropic() {
        let req = |format: Value| json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": format});
        let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
        let err = openai_to_anthropic(&req(schema), "claude-x", 1024).unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("json_schema"), "{}", err.message);
        assert!(
            openai_to_anthropic(&req(json!({"type": "json_object"})), "claude-x", 1024).is_ok()
        );
        assert!(openai_to_anthropic(&req(json!({"type": "text"})), "claude-x", 1024).is_ok());
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        for model in [
            "o1",
            "o3-mini",
            "o4-mini-2025-04-16",
            "gpt-5",
            "gpt-5.1",
            "gpt-5-mini",
        ] {
            assert_eq!(
                openai_max_tokens_key(model),
                "max_completion_tokens",
                "{model}"
            );
        }
        for model in [
            "gpt-4o",
            "gpt-4.1",
            "openai/o3-mini",
            "o1x",
            "gpt-50",
            "llama3",
            "qwen3:8b",
        ] {
            assert_eq!(openai_max_tokens_key(model), "max_tokens", "{model}");
        }
        let req = json!({"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
        let out = anthropic_to_openai(&req, "o3-mini").unwrap();
        assert_eq!(out["max_completion_tokens"], 64);
        assert!(out.get("max_tokens").is_none());
        assert_eq!(
            anthropic_to_openai(&req, "gpt-4o").unwrap()["max_tokens"],
            64
        );
    }

    #[test]
    fn mid_conversation_system_text_merges_into_the_next_user_turn() {
        let req = json!({"max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "system", "content": "note"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}]},
            {"role": "system", "content": "after"},
        ]});
        let opts = crate::translate::Options {
            system_messages: SystemMessages::Merge,
            ..Default::default()
        };
        let out = anthropic_to_openai_with(&req, "m", &opts, &mut Vec::new()).unwrap();
        let roles: Vec<&str> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        // A turn of tool results gets the held text as a user message of its own; text
        // after the last user turn joins it.
        assert_eq!(roles, ["user", "assistant", "tool", "user"], "{out}");
        let last = out["messages"][3]["content"].as_str().unwrap();
        assert!(
            last.contains("note") && last.ends_with("after\n</system>"),
            "{out}"
        );
        let mut dropped = Vec::new();
        let with_tools = json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "code_execution_20250522", "name": "code_execution"}],
            "tool_choice": {"type": "tool", "name": "code_execution"}});
        let out =
            anthropic_to_openai_with(&with_tools, "m", &Default::default(), &mut dropped).unwrap();
        assert_eq!(dropped, ["code_execution_20250522"]);
        assert!(out.get("tools").is_none(), "{out}");
        assert!(
            out.get("tool_choice").is_none(),
            "no tools, no tool settings: {out}"
        );
    }
}
