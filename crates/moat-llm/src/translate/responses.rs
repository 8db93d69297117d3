//! The OpenAI Responses API (`POST /v1/responses`) in front of Chat Completions.
//!
//! A Responses request becomes a Chat Completions request ([`to_chat`]); for an Anthropic
//! backend the result goes on through [`super::request::openai_to_anthropic`]. The
//! answer comes back the same way: a chat completion becomes a response object
//! ([`from_chat`]), and a stream of chat chunks becomes the Responses event sequence
//! ([`ChatToResponses`]), event by event, never buffered.
//!
//! What carries over: `instructions`; `input` as a string or items (messages with
//! `input_text`, `input_image`, `output_text` parts, `function_call`,
//! `function_call_output`); function `tools`, `tool_choice`, `parallel_tool_calls`;
//! `max_output_tokens`, `temperature`, `top_p`, `text.format` (JSON schema / object);
//! `user`; `metadata` is echoed. Reasoning items are dropped (with a debug line). Built-in
//! tools and `background` are refused with a 400 that names them. (The proxy expands
//! `previous_response_id` from moat's store before translating; one it does not hold
//! never reaches here.)

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::response::{self, fresh_suffix, unix_now};
use super::stream::StreamTranslator;
use crate::errors::ApiError;
use crate::sse::{SseEvent, SseParser, encode};

type Result<T> = std::result::Result<T, ApiError>;

fn unique(prefix: &str) -> String {
    format!("{prefix}_moat{}", fresh_suffix())
}

/// A Responses request → a Chat Completions request for `model`; built-in (hosted)
/// tools are refused (see [`to_chat_with`] for the per-backend choice).
pub fn to_chat(req: &Value, model: &str) -> Result<Value> {
    let opts = super::Options {
        unsupported_tools: moat_core::config::llm::UnsupportedTools::Refuse,
        ..Default::default()
    };
    to_chat_with(req, model, &opts, &mut Vec::new())
}

/// A Responses request → a Chat Completions request for `model`, with built-in tools
/// (web search, file search, code interpreter...) and their calls in `input` dropped
/// into `dropped` or refused, as `opts` say.
pub fn to_chat_with(
    req: &Value,
    model: &str,
    opts: &super::Options,
    dropped: &mut super::Dropped,
) -> Result<Value> {
    let obj = req
        .as_object()
        .ok_or_else(|| ApiError::invalid("request body must be a JSON object"))?;
    if obj
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::invalid(
            "`previous_response_id` names no response moat keeps; send the whole conversation in `input`",
        ));
    }
    if obj.get("background") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid("`background: true` is not supported"));
    }
    let mut messages = Vec::new();
    if let Some(instructions) = obj.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match obj.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => input_items(items, &mut messages, opts, dropped)?,
        Some(Value::Null) | None => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "`input` must be a string or a list of items",
            ));
        }
    }
    if messages.is_empty() {
        return Err(ApiError::invalid("`input` is empty"));
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let (tools, web_search) = tools_to_chat(tools, opts, dropped)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
        if let Some(search) = web_search {
            out.insert("web_search_options".into(), search);
        }
    }
    if let Some(choice) = obj.get("tool_choice") {
        let choice = tool_choice_to_chat(choice, opts, dropped)?;
        out.insert("tool_choice".into(), choice);
    }
    for (from, to) in [
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        (
            "max_output_tokens",
            super::request::openai_max_tokens_key(model),
        ),
        ("user", "user"),
    ] {
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format")) {
        match format["type"].as_str() {
            Some("json_schema") => {
                let mut schema = Map::new();
                for key in ["name", "schema", "strict", "description"] {
                    if let Some(v) = format.get(key) {
                        schema.insert(key.into(), v.clone());
                    }
                }
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
        // The usage arrives in a last chunk only when asked for.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    super::request::without_tool_settings_if_no_tools(&mut out);
    Ok(Value::Object(out))
}

fn input_items(
    items: &[Value],
    messages: &mut Vec<Value>,
    opts: &super::Options,
    dropped: &mut super::Dropped,
) -> Result<()> {
    for (i, item) in items.iter().enumerate() {
        let kind = item["type"].as_str().unwrap_or("message");
        match kind {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("developer" | "system") => "system",
                    Some("assistant") => "assistant",
                    Some("user") => "user",
                    other => {
                        return Err(ApiError::invalid(format!(
                            "input[{i}].role {other:?} is not one of user, assistant, system, developer"
                        )));
                    }
                };
                let content = match &item["content"] {
                    Value::String(s) => Value::String(s.clone()),
                    Value::Array(parts) => Value::Array(parts_to_chat(parts, i, role)?),
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "input[{i}].content must be a string or a list of parts"
                        )));
                    }
                };
                messages.push(json!({"role": role, "content": content}));
            }
            "function_call" | "custom_tool_call" => {
                // A custom (free-form) tool is a function with one string argument.
                let arguments = if kind == "custom_tool_call" {
                    json!({"input": item["input"].as_str().unwrap_or_default()}).to_string()
                } else {
                    item["arguments"].as_str().unwrap_or("{}").to_string()
                };
                let call = json!({
                    "id": item["call_id"].as_str().unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": item["name"].as_str().unwrap_or_default(),
                        "arguments": arguments,
                    }
                });
                // Calls in a row are one assistant turn (parallel tool calls).
                match messages.last_mut() {
                    Some(last)
                        if last["role"] == "assistant" && last.get("tool_calls").is_some() =>
                    {
                        if let Some(calls) = last["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                    other => other.to_string(),
                };
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": item["call_id"].as_str().unwrap_or_default(),
                    "content": output,
                }));
            }
            "reasoning" => tracing::debug!("a reasoning input item was dropped"),
            // An earlier turn's search: the backend searched itself, and its results
            // (sealed by the provider) are not in the item; the answer that used them
            // reads on in the next message.
            "web_search_call" if opts.web_search => {}
            // A hosted tool's call from an earlier turn (`web_search_call`...): the
            // backend never ran it, and the conversation reads on without it.
            other if other.ends_with("_call") || other.ends_with("_call_output") => {
                super::unsupported_tool(opts, dropped, other, || {
                    format!("input[{i}] of type {other:?} is not supported")
                })?;
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "input[{i}] of type {other:?} is not supported"
                )));
            }
        }
    }
    Ok(())
}

fn parts_to_chat(parts: &[Value], i: usize, role: &str) -> Result<Vec<Value>> {
    parts
        .iter()
        .map(|p| match p["type"].as_str() {
            Some("input_text" | "output_text" | "text") => {
                Ok(json!({"type": "text", "text": p["text"].as_str().unwrap_or_default()}))
            }
            Some("input_image") if role == "user" => {
                let url = p["image_url"].as_str().ok_or_else(|| {
                    ApiError::invalid(format!(
                        "input[{i}]: an input_image needs `image_url` (file ids are not supported)"
                    ))
                })?;
                let mut image = json!({"url": url});
                if let Some(detail) = p["detail"].as_str() {
                    image["detail"] = json!(detail);
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            other => Err(ApiError::invalid(format!(
                "input[{i}]: content part {:?} is not supported",
                other.unwrap_or("?")
            ))),
        })
        .collect()
}

/// The client's tools as Chat function tools, and its hosted web search as Chat's
/// `web_search_options` when the backend searches itself.
fn tools_to_chat(
    tools: &[Value],
    opts: &super::Options,
    dropped: &mut super::Dropped,
) -> Result<(Vec<Value>, Option<Value>)> {
    // A namespace groups client tools; the model sees its tools one by one.
    let flat: Vec<&Value> = tools
        .iter()
        .flat_map(|t| match t["type"].as_str() {
            Some("namespace") => t["tools"]
                .as_array()
                .map_or_else(Vec::new, |inner| inner.iter().collect()),
            _ => vec![t],
        })
        .collect();
    let mut out = Vec::with_capacity(flat.len());
    let mut web_search = None;
    for t in flat {
        let chat = match t["type"].as_str() {
            Some(kind) if opts.web_search && super::is_web_search(kind) => {
                web_search = Some(web_search_options(t));
                continue;
            }
            Some("custom") => {
                let mut description = t["description"].as_str().unwrap_or_default().to_string();
                if let Some(def) = t["format"]["definition"].as_str() {
                    description.push_str("\n\nThe input must follow this grammar:\n");
                    description.push_str(def);
                }
                Ok(json!({"type": "function", "function": {
                    "name": t["name"],
                    "description": description,
                    "parameters": {
                        "type": "object",
                        "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
                        "required": ["input"],
                    }
                }}))
            }
            Some("function") => {
                let mut function = Map::new();
                for key in ["name", "description", "parameters", "strict"] {
                    if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                        function.insert(key.into(), v.clone());
                    }
                }
                Ok(json!({"type": "function", "function": function}))
            }
            other => {
                let kind = other.unwrap_or("?");
                super::unsupported_tool(opts, dropped, kind, || {
                    format!(
                        "the built-in tool {kind:?} cannot run on this backend; only function and custom tools are supported"
                    )
                })?;
                continue;
            }
        };
        out.push(chat?);
    }
    Ok((out, web_search))
}

/// A Responses web search tool → Chat's `web_search_options` (with the domain filter,
/// which Chat lacks, kept under `filters` for the Anthropic translation).
fn web_search_options(tool: &Value) -> Value {
    let mut search = Map::new();
    if let Some(size) = tool.get("search_context_size").filter(|v| v.is_string()) {
        search.insert("search_context_size".into(), size.clone());
    }
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
    if let Some(domains) = tool.pointer("/filters/allowed_domains") {
        search.insert("filters".into(), json!({"allowed_domains": domains}));
    }
    Value::Object(search)
}

fn tool_choice_to_chat(
    choice: &Value,
    opts: &super::Options,
    dropped: &mut super::Dropped,
) -> Result<Value> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type") == Some(&json!("function")) => Ok(json!({
            "type": "function",
            "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}
        })),
        // A built-in tool forced by type (`{"type": "web_search_preview"}`): with the tool
        // dropped, the model chooses among the rest.
        Value::Object(o)
            if o.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "function" && t != "custom" && t != "allowed_tools") =>
        {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("?");
            if opts.web_search && super::is_web_search(kind) {
                // Anthropic cannot force its server tool; the model decides to search.
                return Ok(json!("auto"));
            }
            super::unsupported_tool(opts, dropped, kind, || {
                format!(
                    "`tool_choice` forces the built-in tool {kind:?}, which cannot run on this backend"
                )
            })?;
            Ok(json!("auto"))
        }
        _ => Err(ApiError::invalid(
            "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"name\": ...}",
        )),
    }
}

/// The parts of a response object that come from the request (echoed back).
#[derive(Debug, Clone)]
pub struct Echo {
    /// The model name the client asked for.
    pub model: String,
    fields: Map<String, Value>,
    /// Names of the request's custom (free-form) tools.
    custom: HashSet<String>,
    /// Tools inside a namespace: tool name → namespace.
    namespaced: HashMap<String, String>,
}

impl Echo {
    /// What `req` asked for, under the client's model name.
    pub fn new(req: &Value, model: &str) -> Self {
        let mut fields = Map::new();
        let get = |k: &str| req.get(k).cloned().unwrap_or(Value::Null);
        fields.insert("instructions".into(), get("instructions"));
        fields.insert("max_output_tokens".into(), get("max_output_tokens"));
        fields.insert(
            "metadata".into(),
            req.get("metadata").cloned().unwrap_or_else(|| json!({})),
        );
        fields.insert(
            "parallel_tool_calls".into(),
            req.get("parallel_tool_calls")
                .cloned()
                .unwrap_or(Value::Bool(true)),
        );
        fields.insert(
            "temperature".into(),
            req.get("temperature").cloned().unwrap_or(json!(1.0)),
        );
        fields.insert(
            "top_p".into(),
            req.get("top_p").cloned().unwrap_or(json!(1.0)),
        );
        fields.insert(
            "tool_choice".into(),
            req.get("tool_choice")
                .cloned()
                .unwrap_or_else(|| json!("auto")),
        );
        fields.insert(
            "tools".into(),
            req.get("tools").cloned().unwrap_or_else(|| json!([])),
        );
        fields.insert(
            "text".into(),
            req.get("text")
                .cloned()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        );
        fields.insert("user".into(), get("user"));
        let custom = req["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["type"] == "custom")
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        let mut namespaced = HashMap::new();
        for ns in req["tools"].as_array().into_iter().flatten() {
            if ns["type"] == "namespace"
                && let Some(name) = ns["name"].as_str()
            {
                for t in ns["tools"].as_array().into_iter().flatten() {
                    if let Some(inner) = t["name"].as_str() {
                        // The first namespace that names a tool is its own.
                        namespaced
                            .entry(inner.to_string())
                            .or_insert_with(|| name.to_string());
                    }
                }
            }
        }
        Self {
            model: model.to_string(),
            fields,
            custom,
            namespaced,
        }
    }

    fn is_custom(&self, name: &str) -> bool {
        self.custom.contains(name)
    }

    /// A tool call item, marked with the namespace of its tool when it has one.
    fn tool_item(
        &self,
        id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        status: &str,
    ) -> Value {
        let mut item = if self.is_custom(name) {
            custom_item(id, call_id, name, arguments, status)
        } else {
            call_item(id, call_id, name, arguments, status)
        };
        if let Some(ns) = self.namespaced.get(name) {
            item["namespace"] = json!(ns);
        }
        item
    }

    /// Marks the response as stored (or not) and as following `previous`.
    pub fn stored(mut self, store: bool, previous: Option<&str>) -> Self {
        self.fields.insert("store".into(), Value::Bool(store));
        self.fields.insert(
            "previous_response_id".into(),
            previous.map_or(Value::Null, |p| json!(p)),
        );
        self
    }

    /// A response object with these fields.
    fn response(&self, id: &str, created: u64, status: &str, output: Vec<Value>) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), json!(id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(created));
        r.insert("status".into(), json!(status));
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert("model".into(), json!(self.model));
        r.insert("output".into(), Value::Array(output));
        r.insert("previous_response_id".into(), Value::Null);
        r.insert("reasoning".into(), json!({"effort": null, "summary": null}));
        r.insert("store".into(), Value::Bool(false));
        r.insert("truncation".into(), json!("disabled"));
        r.insert("usage".into(), Value::Null);
        for (k, v) in &self.fields {
            r.insert(k.clone(), v.clone());
        }
        Value::Object(r)
    }
}

/// Chat usage → Responses usage.
fn usage(chat: &Value) -> Value {
    let input = chat["prompt_tokens"].as_u64().unwrap_or(0);
    let output = chat["completion_tokens"].as_u64().unwrap_or(0);
    let cached = chat["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    let reasoning = chat["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    })
}

/// The status and `incomplete_details` a finish reason means.
fn ending(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn message_item(id: &str, text: &str, status: &str, annotations: &[Value]) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}],
    })
}

/// A Chat `url_citation` annotation → a Responses one (flat, not nested).
fn annotation(chat: &Value) -> Value {
    let c = &chat["url_citation"];
    json!({
        "type": "url_citation",
        "url": c["url"],
        "title": c["title"],
        "start_index": c["start_index"],
        "end_index": c["end_index"],
    })
}

/// A web search the backend ran (see [`response::SEARCHES`]) → a `web_search_call` item.
fn search_item(search: &Value, status: &str) -> Value {
    let mut action = json!({"type": "search", "query": search["query"]});
    if search["sources"].as_array().is_some_and(|s| !s.is_empty()) {
        action["sources"] = search["sources"].clone();
    }
    json!({
        "type": "web_search_call",
        "id": search_item_id(search),
        "status": if status == "completed" { search["status"].as_str().unwrap_or("completed") } else { status },
        "action": action,
    })
}

/// A search item's id, derived from the backend's so that both forms of a response name
/// it alike.
fn search_item_id(search: &Value) -> String {
    let id = search["id"].as_str().unwrap_or_default();
    format!("ws_{}", id.strip_prefix("srvtoolu_").unwrap_or(id))
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// The free-form input of a custom tool call, from the `{"input": ...}` arguments it was
/// asked for as a function (the raw arguments when the model did not follow that).
fn custom_input(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|v| v["input"].as_str().map(str::to_string))
        .unwrap_or_else(|| arguments.to_string())
}

fn custom_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "custom_tool_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "input": custom_input(arguments),
        "status": status,
    })
}

/// A reasoning item: the thinking as one summary part.
fn reasoning_item(id: &str, text: &str) -> Value {
    json!({
        "type": "reasoning",
        "id": id,
        "summary": [{"type": "summary_text", "text": text}],
    })
}

/// A chat completion → a response object.
pub fn from_chat(chat: &Value, echo: &Echo) -> Value {
    let choice = &chat["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    if let Some(reasoning) = message["reasoning_content"]
        .as_str()
        .filter(|r| !r.is_empty())
    {
        output.push(reasoning_item(&unique("rs"), reasoning));
    }
    let text = message["content"].as_str().unwrap_or_default();
    let annotations: Vec<Value> = message["annotations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(annotation)
        .collect();
    // The backend's searches split the text into the messages before and after each.
    let mut start = 0;
    for search in message[response::SEARCHES].as_array().into_iter().flatten() {
        let at = search["at"]
            .as_u64()
            .map_or(start, |a| a as usize)
            .max(start);
        push_text(&mut output, text, start..at, &annotations);
        output.push(search_item(search, "completed"));
        start = at;
    }
    push_text(&mut output, text, start..usize::MAX, &annotations);
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let name = call["function"]["name"].as_str().unwrap_or_default();
        output.push(echo.tool_item(
            &unique(if echo.is_custom(name) { "ctc" } else { "fc" }),
            call["id"].as_str().unwrap_or_default(),
            name,
            call["function"]["arguments"].as_str().unwrap_or("{}"),
            "completed",
        ));
    }
    let (status, details) = ending(choice["finish_reason"].as_str());
    let created = chat["created"].as_u64().unwrap_or_else(unix_now);
    let mut r = echo.response(&unique("resp"), created, status, output);
    r["incomplete_details"] = details;
    r["usage"] = usage(&chat["usage"]);
    r
}

/// The characters `span` of `text`, if any, as a message item, with the annotations that
/// fall inside it (their offsets made relative to it).
fn push_text(
    output: &mut Vec<Value>,
    text: &str,
    span: std::ops::Range<usize>,
    annotations: &[Value],
) {
    let part: String = text
        .chars()
        .skip(span.start)
        .take(span.end.saturating_sub(span.start))
        .collect();
    if part.is_empty() {
        return;
    }
    let end = span.start + part.chars().count();
    let inside: Vec<Value> = annotations
        .iter()
        .filter_map(|a| {
            let (s, e) = (
                a["start_index"].as_u64()? as usize,
                a["end_index"].as_u64()? as usize,
            );
            (s >= span.start && e <= end).then(|| {
                let mut a = a.clone();
                a["start_index"] = json!(s - span.start);
                a["end_index"] = json!(e - span.start);
                a
            })
        })
        .collect();
    output.push(message_item(&unique("msg"), &part, "completed", &inside));
}

/// One output item of a stream in progress.
#[derive(Debug)]
enum Item {
    /// A reasoning model's thinking, given as a summary (as a whole response gives it).
    Reasoning { id: String, text: String },
    Message {
        id: String,
        text: String,
        /// Responses `url_citation` annotations, as they arrived.
        annotations: Vec<Value>,
        /// Where its text begins in the chat content (which annotations count in).
        start: usize,
    },
    /// A web search the backend ran (done when it arrives).
    Search(Value),
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        /// A custom (free-form) tool: its input is sent whole when the call ends.
        custom: bool,
    },
}

/// Called once with a stream's final response object.
pub type OnFinish = Box<dyn FnOnce(&Value) + Send>;

/// Chat Completions chunks → the Responses event sequence, each numbered.
pub struct ChatToResponses {
    echo: Echo,
    id: String,
    created: u64,
    seq: u64,
    started: bool,
    /// Output items in order, and which are still open.
    items: Vec<(Item, bool)>,
    /// Chat tool-call index → position in `items`.
    calls: HashMap<u64, usize>,
    /// Characters of chat content so far.
    chars: usize,
    /// The reasoning or message item text is streaming into: a new item of another kind
    /// (or a tool call) closes it, so items finish in order.
    open_text: Option<usize>,
    /// The tool call whose arguments are streaming; at most one, so that parallel calls
    /// are sibling items.
    open_call: Option<usize>,
    /// Calls that began while another's arguments were still incomplete (a server that
    /// interleaves parallel calls): announced whole, in order, once that one is done.
    held_calls: Vec<usize>,
    finish: Option<String>,
    usage: Value,
    done: bool,
    on_finish: Option<OnFinish>,
}

impl ChatToResponses {
    /// Calls `f` with the final response object (completed or incomplete, not failed).
    pub fn on_finish(mut self, f: OnFinish) -> Self {
        self.on_finish = Some(f);
        self
    }

    /// A translator answering as `echo` describes.
    pub fn new(echo: Echo) -> Self {
        Self {
            echo,
            id: unique("resp"),
            created: unix_now(),
            seq: 0,
            started: false,
            items: Vec::new(),
            calls: HashMap::new(),
            chars: 0,
            open_text: None,
            open_call: None,
            held_calls: Vec::new(),
            finish: None,
            usage: Value::Null,
            done: false,
            on_finish: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<Bytes>, kind: &str, mut body: Value) {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(encode(Some(kind), &body.to_string()));
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self
            .echo
            .response(&self.id, self.created, "in_progress", Vec::new());
        self.emit(out, "response.created", json!({"response": r}));
        let r = self
            .echo
            .response(&self.id, self.created, "in_progress", Vec::new());
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn item_json(&self, item: &Item, status: &str) -> Value {
        match item {
            Item::Reasoning { id, text } => reasoning_item(id, text),
            Item::Message {
                id,
                text,
                annotations,
                ..
            } => message_item(id, text, status, annotations),
            Item::Search(search) => search_item(search, status),
            Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => self.echo.tool_item(id, call_id, name, arguments, status),
        }
    }

    /// The open text item if it is `reasoning` (or a message, if not), else a new one
    /// after closing whatever was open: announced with `output_item.added` and its first
    /// part's `.added` event.
    fn open_text_item(&mut self, reasoning: bool, out: &mut Vec<Bytes>) -> usize {
        if let Some(i) = self.open_text {
            if matches!(self.items[i].0, Item::Reasoning { .. }) == reasoning {
                return i;
            }
            self.close(i, out);
        }
        let index = self.items.len();
        self.open_text = Some(index);
        let (item, added, part_event, part) = if reasoning {
            let id = unique("rs");
            let mut added = reasoning_item(&id, "");
            added["summary"] = json!([]);
            let part = json!({"item_id": id, "output_index": index, "summary_index": 0,
                              "part": {"type": "summary_text", "text": ""}});
            let item = Item::Reasoning {
                id,
                text: String::new(),
            };
            (item, added, "response.reasoning_summary_part.added", part)
        } else {
            let id = unique("msg");
            let mut added = message_item(&id, "", "in_progress", &[]);
            added["content"] = json!([]);
            let part = json!({"item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}});
            let item = Item::Message {
                id,
                text: String::new(),
                annotations: Vec::new(),
                start: self.chars,
            };
            (item, added, "response.content_part.added", part)
        };
        self.items.push((item, true));
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        self.emit(out, part_event, part);
        index
    }

    fn reasoning_delta(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        let index = self.open_text_item(true, out);
        let Item::Reasoning { id, text } = &mut self.items[index].0 else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            "response.reasoning_summary_text.delta",
            json!({
                "item_id": id, "output_index": index, "summary_index": 0, "delta": delta,
            }),
        );
    }

    fn text_delta(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        let index = self.open_text_item(false, out);
        self.chars += delta.chars().count();
        let id = match &mut self.items[index].0 {
            Item::Message { id, text, .. } => {
                text.push_str(delta);
                id.clone()
            }
            Item::Call { .. } | Item::Reasoning { .. } | Item::Search(_) => return,
        };
        self.emit(out, "response.output_text.delta", json!({
            "item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": [],
        }));
    }

    fn call_delta(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        let key = call["index"].as_u64().unwrap_or(0);
        let index = match self.calls.get(&key) {
            Some(&i) => i,
            None => {
                // A tool call after text or thinking: they are finished.
                if let Some(open) = self.open_text.take() {
                    self.close(open, out);
                }
                let call_id = call["id"].as_str().unwrap_or_default().to_string();
                let name = call["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let custom = self.echo.is_custom(&name);
                let item = Item::Call {
                    id: unique(if custom { "ctc" } else { "fc" }),
                    call_id,
                    name,
                    arguments: String::new(),
                    custom,
                };
                let json = self.item_json(&item, "in_progress");
                self.items.push((item, true));
                let index = self.items.len() - 1;
                self.calls.insert(key, index);
                // The call before it is done once its arguments are whole JSON; until
                // then this one waits, so that items never nest.
                match self.open_call {
                    Some(prev) if !self.arguments_whole(prev) => self.held_calls.push(index),
                    prev => {
                        if let Some(prev) = prev {
                            self.close(prev, out);
                        }
                        self.release_held("completed", out);
                        self.open_call = Some(index);
                        self.emit(
                            out,
                            "response.output_item.added",
                            json!({"output_index": index, "item": json}),
                        );
                    }
                }
                index
            }
        };
        let Some(fragment) = call["function"]["arguments"]
            .as_str()
            .filter(|f| !f.is_empty())
        else {
            return;
        };
        let streaming = self.open_call == Some(index) && self.items[index].1;
        let id = match &mut self.items[index].0 {
            Item::Call {
                id,
                arguments,
                custom,
                ..
            } => {
                arguments.push_str(fragment);
                // A custom call's input is JSON-escaped inside the fragments: sent whole
                // at the end; a held call's arguments are sent when it is announced.
                if *custom || !streaming {
                    return;
                }
                id.clone()
            }
            Item::Message { .. } | Item::Reasoning { .. } | Item::Search(_) => return,
        };
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({
                "item_id": id, "output_index": index, "delta": fragment,
            }),
        );
    }

    fn close(&mut self, index: usize, out: &mut Vec<Bytes>) {
        self.close_as(index, "completed", out);
    }

    /// A citation of the text so far, on the message it is in.
    fn annotation_added(&mut self, chat: &Value, out: &mut Vec<Bytes>) {
        let Some(index) = self.open_text else {
            return;
        };
        let Item::Message {
            id,
            annotations,
            start,
            ..
        } = &mut self.items[index].0
        else {
            return;
        };
        let mut a = annotation(chat);
        for key in ["start_index", "end_index"] {
            if let Some(i) = a[key].as_u64() {
                a[key] = json!((i as usize).saturating_sub(*start));
            }
        }
        annotations.push(a.clone());
        let (id, at) = (id.clone(), annotations.len() - 1);
        self.emit(
            out,
            "response.output_text.annotation.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "annotation_index": at, "annotation": a}),
        );
    }

    /// A web search the backend ran: an item of its own, between the text before it and
    /// the text after it.
    fn search(&mut self, search: &Value, out: &mut Vec<Bytes>) {
        if let Some(open) = self.open_text.take() {
            self.close(open, out);
        }
        let index = self.items.len();
        let id = search_item_id(search);
        self.items.push((Item::Search(search.clone()), true));
        let mut added = search_item(search, "in_progress");
        added["action"] = json!({"type": "search"});
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        for kind in [
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
        ] {
            self.emit(out, kind, json!({"item_id": id, "output_index": index}));
        }
        self.close(index, out);
    }

    /// Whether a call's arguments so far are a whole JSON value.
    fn arguments_whole(&self, index: usize) -> bool {
        match &self.items[index].0 {
            Item::Call { arguments, .. } => {
                serde_json::from_str::<serde::de::IgnoredAny>(arguments).is_ok()
            }
            _ => true,
        }
    }

    /// Announces the held calls, each whole (added, its arguments, done), in order.
    fn release_held(&mut self, status: &str, out: &mut Vec<Bytes>) {
        for index in std::mem::take(&mut self.held_calls) {
            // Announced empty, as a streamed call is: its arguments follow as a delta.
            let mut json = self.item_json(&self.items[index].0, "in_progress");
            for field in ["arguments", "input"] {
                if json.get(field).is_some() {
                    json[field] = json!("");
                }
            }
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": json}),
            );
            if let Item::Call {
                id,
                arguments,
                custom: false,
                ..
            } = &self.items[index].0
                && !arguments.is_empty()
            {
                let (id, arguments) = (id.clone(), arguments.clone());
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": arguments}),
                );
            }
            self.close_as(index, status, out);
        }
    }

    fn close_as(&mut self, index: usize, status: &str, out: &mut Vec<Bytes>) {
        if !self.items[index].1 {
            return;
        }
        self.items[index].1 = false;
        match &self.items[index].0 {
            Item::Reasoning { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({
                        "item_id": id, "output_index": index, "summary_index": 0, "text": text,
                    }),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({
                        "item_id": id, "output_index": index, "summary_index": 0,
                        "part": {"type": "summary_text", "text": text},
                    }),
                );
            }
            Item::Message {
                id,
                text,
                annotations,
                ..
            } => {
                let (id, text, annotations) = (id.clone(), text.clone(), annotations.clone());
                self.emit(out, "response.output_text.done", json!({
                    "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": [],
                }));
                self.emit(out, "response.content_part.done", json!({
                    "item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []},
                }));
            }
            Item::Search(search) => {
                let id = search_item_id(search);
                self.emit(
                    out,
                    "response.web_search_call.completed",
                    json!({"item_id": id, "output_index": index}),
                );
            }
            Item::Call {
                id,
                arguments,
                custom: true,
                ..
            } => {
                let (id, input) = (id.clone(), custom_input(arguments));
                self.emit(
                    out,
                    "response.custom_tool_call_input.delta",
                    json!({"item_id": id, "output_index": index, "delta": input}),
                );
                self.emit(
                    out,
                    "response.custom_tool_call_input.done",
                    json!({"item_id": id, "output_index": index, "input": input}),
                );
            }
            Item::Call { id, arguments, .. } => {
                let (id, arguments) = (id.clone(), arguments.clone());
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({
                        "item_id": id, "output_index": index, "arguments": arguments,
                    }),
                );
            }
        }
        let item = self.item_json(&self.items[index].0, status);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.done {
            return;
        }
        self.start(out);
        let (status, details) = ending(self.finish.as_deref());
        // An item still open when the answer was cut (max_output_tokens) is incomplete.
        let cut: Vec<bool> = self
            .items
            .iter()
            .map(|(_, open)| *open && status != "completed")
            .collect();
        let held: Vec<usize> = self.held_calls.clone();
        for (i, cut) in cut.iter().enumerate() {
            if !held.contains(&i) {
                self.close_as(i, if *cut { "incomplete" } else { "completed" }, out);
            }
        }
        self.release_held(
            if status == "completed" {
                "completed"
            } else {
                "incomplete"
            },
            out,
        );
        let output: Vec<Value> = self
            .items
            .iter()
            .zip(&cut)
            .map(|((item, _), cut)| {
                self.item_json(item, if *cut { "incomplete" } else { "completed" })
            })
            .collect();
        let mut r = self.echo.response(&self.id, self.created, status, output);
        r["incomplete_details"] = details;
        r["usage"] = usage(&self.usage);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        if let Some(f) = self.on_finish.take() {
            f(&r);
        }
        self.emit(out, kind, json!({"response": r}));
        self.done = true;
    }
}

impl StreamTranslator for ChatToResponses {
    fn event(&mut self, ev: SseEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if ev.data.trim() == "[DONE]" {
            self.finish(&mut out);
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            return out;
        };
        // An upstream error mid-stream (vLLM sends one, then `[DONE]`; an Anthropic
        // upstream's error event arrives here as one): the response failed.
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return self.fail(&super::stream::upstream_error(&ev.data));
        }
        self.start(&mut out);
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            self.usage = chunk["usage"].clone();
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            if let Some(r) = delta["reasoning_content"]
                .as_str()
                .filter(|r| !r.is_empty())
            {
                self.reasoning_delta(r, &mut out);
            }
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.text_delta(text, &mut out);
            }
            for a in delta["annotations"].as_array().into_iter().flatten() {
                self.annotation_added(a, &mut out);
            }
            for search in delta[response::SEARCHES].as_array().into_iter().flatten() {
                self.search(search, &mut out);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                self.call_delta(call, &mut out);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish = Some(f.to_string());
            }
        }
        out
    }

    fn end(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finish.is_none() && !self.done {
            return self.fail(&ApiError::upstream(
                "the model's backend ended the stream early",
            ));
        }
        self.finish(&mut out);
        out
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&mut out);
        let code = crate::errors::openai_error_type(err.status);
        self.emit(
            &mut out,
            "error",
            json!({"code": code, "message": err.message, "param": null}),
        );
        // What was produced before the failure, as it stood.
        let output: Vec<Value> = self
            .items
            .iter()
            .map(|(item, open)| {
                self.item_json(item, if *open { "incomplete" } else { "completed" })
            })
            .collect();
        let mut r = self.echo.response(&self.id, self.created, "failed", output);
        r["error"] = json!({"code": "server_error", "message": err.message});
        self.emit(&mut out, "response.failed", json!({"response": r}));
        self.done = true;
        out
    }

    fn done(&self) -> bool {
        self.done
    }
}

/// Two translators in a row: the first one's output events feed the second (an
/// Anthropic upstream → chat chunks → Responses events).
pub struct Chain {
    first: Box<dyn StreamTranslator>,
    parser: SseParser,
    second: Box<dyn StreamTranslator>,
}

impl Chain {
    /// `first`, then `second`.
    pub fn new(first: Box<dyn StreamTranslator>, second: Box<dyn StreamTranslator>) -> Self {
        Self {
            first,
            parser: SseParser::new(),
            second,
        }
    }

    fn pass(&mut self, bytes: Vec<Bytes>) -> Vec<Bytes> {
        let mut out = Vec::new();
        for b in bytes {
            match self.parser.feed(&b) {
                Ok(events) => {
                    for ev in events {
                        out.extend(self.second.event(ev));
                    }
                }
                Err(e) => out.extend(self.second.fail(&ApiError::upstream(e.to_string()))),
            }
        }
        out
    }
}

impl StreamTranslator for Chain {
    fn event(&mut self, ev: SseEvent) -> Vec<Bytes> {
        let bytes = self.first.event(ev);
        self.pass(bytes)
    }

    fn end(&mut self) -> Vec<Bytes> {
        let bytes = self.first.end();
        let mut out = self.pass(bytes);
        if !self.second.done() {
            out.extend(self.second.end());
        }
        out
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        self.second.fail(err)
    }

    fn done(&self) -> bool {
        self.second.done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_items_become_chat_messages() {
        let req = json!({
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{\"q\":1}"},
                {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "and"},
                    {"type": "input_image", "image_url": "https://x.example/a.png"}
                ]},
                {"type": "reasoning", "summary": []}
            ],
            "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get"},
            "max_output_tokens": 50,
            "stream": true
        });
        let chat = to_chat(&req, "up").unwrap();
        assert_eq!(chat["model"], "up");
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"].as_array().unwrap().len(),
            2
        );
        assert_eq!(chat["messages"][3]["role"], "tool");
        assert_eq!(chat["messages"][4]["content"][1]["type"], "image_url");
        assert_eq!(chat["messages"].as_array().unwrap().len(), 5);
        assert_eq!(chat["tools"][0]["function"]["name"], "get");
        assert_eq!(chat["tool_choice"]["function"]["name"], "get");
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["stream_options"]["include_usage"], true);
    }

    #[test]
    fn custom_tools_are_functions_with_one_string_argument() {
        let req = json!({
            "input": [
                {"role": "user", "content": "patch it"},
                {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"}
            ],
            "tools": [{"type": "custom", "name": "apply_patch", "description": "Patch files",
                       "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}]
        });
        let chat = to_chat(&req, "m").unwrap();
        assert_eq!(
            chat["tools"][0]["function"]["parameters"]["required"],
            json!(["input"])
        );
        assert!(
            chat["tools"][0]["function"]["description"]
                .as_str()
                .unwrap()
                .contains("start: /.+/")
        );
        let args = chat["messages"][1]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"input": "*** Begin Patch"})
        );

        let echo = Echo::new(&req, "m");
        let chat_answer = json!({"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"a\\nb\"}"}}]}}]});
        let r = from_chat(&chat_answer, &echo);
        assert_eq!(r["output"][0]["type"], "custom_tool_call");
        assert_eq!(r["output"][0]["input"], "a\nb");

        let mut t = ChatToResponses::new(echo);
        let mut out = Vec::new();
        for data in [
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c3", "function": {"name": "apply_patch", "arguments": "{\"input\":\"x"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "y\"}"}}]}, "finish_reason": "tool_calls"}]}),
        ] {
            out.extend(t.event(SseEvent {
                event: None,
                data: data.to_string(),
            }));
        }
        out.extend(t.event(SseEvent {
            event: None,
            data: "[DONE]".into(),
        }));
        let evs = events(&out);
        let done = evs
            .iter()
            .find(|e| e["type"] == "response.custom_tool_call_input.done")
            .unwrap();
        assert_eq!(done["input"], "xy");
        assert_eq!(
            evs.last().unwrap()["response"]["output"][0]["type"],
            "custom_tool_call"
        );
    }

    #[test]
    fn refusals_name_what_is_unsupported() {
        for (req, needle) in [
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "web_search",
            ),
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"input": [{"type": "computer_call"}]}),
                "computer_call",
            ),
            (json!({"input": 5}), "input"),
        ] {
            let e = to_chat(&req, "m").unwrap_err();
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    fn events(bytes: &[Bytes]) -> Vec<Value> {
        let mut p = SseParser::new();
        bytes
            .iter()
            .flat_map(|b| p.feed(b).unwrap())
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    #[test]
    fn chat_chunks_become_the_responses_event_sequence() {
        let echo = Echo::new(&json!({"model": "m"}), "m");
        let mut t = ChatToResponses::new(echo);
        let chunk = |v: Value| SseEvent {
            event: None,
            data: v.to_string(),
        };
        let mut out = Vec::new();
        out.extend(t.event(chunk(
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}),
        )));
        out.extend(t.event(chunk(
            json!({"choices": [{"index": 0, "delta": {"content": " there"}}]}),
        )));
        out.extend(t.event(chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get", "arguments": "{\"a\""}}]}}]}))));
        out.extend(t.event(chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}))));
        out.extend(t.event(chunk(
            json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
        )));
        out.extend(t.event(SseEvent {
            event: None,
            data: "[DONE]".into(),
        }));
        assert!(t.done());
        let evs = events(&out);
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let done = &evs.last().unwrap()["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 8);
    }

    fn feed(t: &mut ChatToResponses, chunks: &[Value]) -> Vec<Value> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(t.event(SseEvent {
                event: None,
                data: c.to_string(),
            }));
        }
        out.extend(t.event(SseEvent {
            event: None,
            data: "[DONE]".into(),
        }));
        events(&out)
    }

    #[test]
    fn streamed_thinking_is_a_reasoning_item_before_the_text() {
        let mut t = ChatToResponses::new(Echo::new(&json!({"model": "m"}), "m"));
        let evs = feed(
            &mut t,
            &[
                json!({"choices": [{"index": 0, "delta": {"reasoning_content": "Let me "}}]}),
                json!({"choices": [{"index": 0, "delta": {"reasoning_content": "think."}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": "Four."}, "finish_reason": "stop"}]}),
            ],
        );
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[2..9],
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
            ]
        );
        let done = &evs.last().unwrap()["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["type"], "reasoning");
        assert_eq!(done["output"][0]["summary"][0]["text"], "Let me think.");
        assert_eq!(done["output"][1]["content"][0]["text"], "Four.");
        // As a whole response gives it.
        let whole = from_chat(
            &json!({"choices": [{"finish_reason": "stop", "message": {"role": "assistant",
                "reasoning_content": "Let me think.", "content": "Four."}}]}),
            &Echo::new(&json!({"model": "m"}), "m"),
        );
        assert_eq!(whole["output"][0]["summary"], done["output"][0]["summary"]);
    }

    #[test]
    fn an_upstream_error_mid_stream_fails_the_response_with_its_message() {
        let mut t = ChatToResponses::new(Echo::new(&json!({"model": "m"}), "m"));
        // vLLM's shape: an error chunk, then [DONE].
        let evs = feed(
            &mut t,
            &[
                json!({"choices": [{"index": 0, "delta": {"content": "par"}}]}),
                json!({"error": {"message": "CUDA out of memory", "type": "internal_error", "code": 500}}),
            ],
        );
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[kinds.len() - 2..],
            ["error", "response.failed"],
            "{kinds:?}"
        );
        assert!(!kinds.contains(&"response.completed"));
        let failed = &evs.last().unwrap()["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["message"], "CUDA out of memory");
    }

    #[test]
    fn a_cut_stream_ends_with_error_and_failed() {
        let mut t = ChatToResponses::new(Echo::new(&json!({}), "m"));
        let kinds: Vec<String> = events(&t.end())
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "error",
                "response.failed"
            ]
        );
    }

    /// An Anthropic answer that searched: text, the search, its results, cited text.
    fn searched_message() -> Value {
        json!({"id": "msg_1", "model": "claude", "stop_reason": "end_turn", "content": [
            {"type": "text", "text": "Looking. "},
            {"type": "server_tool_use", "id": "srvtoolu_9", "name": "web_search", "input": {"query": "moat"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_9", "content": [
                {"type": "web_search_result", "url": "https://a.test/", "title": "A", "encrypted_content": "x"}]},
            {"type": "text", "text": "Moat é fine.", "citations": [
                {"type": "web_search_result_location", "url": "https://a.test/", "title": "A", "encrypted_index": "y", "cited_text": "Moat"}]},
        ], "usage": {"input_tokens": 5, "output_tokens": 3}})
    }

    #[test]
    fn a_backend_s_web_search_becomes_a_search_item_between_messages_whole_and_streamed() {
        let echo = Echo::new(&json!({"model": "m"}), "m");
        let msg = searched_message();
        let whole = from_chat(
            &crate::translate::response::anthropic_to_openai_keeping_searches(&msg),
            &echo,
        );

        let mut upstream = vec![(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 5}}}),
        )];
        for (i, b) in msg["content"].as_array().unwrap().iter().enumerate() {
            match b["type"].as_str().unwrap() {
                "text" => {
                    upstream.push(("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})));
                    for c in b["citations"].as_array().into_iter().flatten() {
                        upstream.push(("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "citations_delta", "citation": c}})));
                    }
                    upstream.push(("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": b["text"]}})));
                }
                "server_tool_use" => {
                    upstream.push(("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "server_tool_use", "id": b["id"], "name": "web_search", "input": {}}})));
                    upstream.push(("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"mo"}})));
                    upstream.push(("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": "at\"}"}})));
                }
                _ => upstream.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": b}),
                )),
            }
            upstream.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
        upstream.push(("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}})));
        upstream.push(("message_stop", json!({"type": "message_stop"})));
        let mut chain = Chain::new(
            Box::new(
                crate::translate::stream::AnthropicToOpenAi::new("m", true).keeping_searches(),
            ),
            Box::new(ChatToResponses::new(echo)),
        );
        let mut out = Vec::new();
        for (name, data) in upstream {
            out.extend(chain.event(SseEvent {
                event: Some(name.into()),
                data: data.to_string(),
            }));
        }
        let evs = events(&out);
        let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
        for kind in [
            "response.web_search_call.searching",
            "response.web_search_call.completed",
            "response.output_text.annotation.added",
        ] {
            assert!(kinds.contains(&kind), "{kinds:?}");
        }
        let streamed = &evs.last().unwrap()["response"];

        for r in [&whole, streamed] {
            let output = r["output"].as_array().unwrap();
            let types: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
            assert_eq!(types, ["message", "web_search_call", "message"], "{r}");
            assert_eq!(output[0]["content"][0]["text"], "Looking. ");
            assert_eq!(output[1]["id"], "ws_9");
            assert_eq!(
                output[1]["action"],
                json!({"type": "search", "query": "moat", "sources": [{"type": "url", "url": "https://a.test/"}]})
            );
            let part = &output[2]["content"][0];
            assert_eq!(part["text"], "Moat é fine.");
            // Offsets count characters of this message, not bytes of the whole answer.
            assert_eq!(
                part["annotations"],
                json!([{"type": "url_citation", "url": "https://a.test/", "title": "A", "start_index": 0, "end_index": 12}]),
                "{r}"
            );
        }
        // A Chat client gets the citations, and nothing of moat's own.
        let chat = crate::translate::response::anthropic_to_openai(&msg);
        assert_eq!(
            chat["choices"][0]["message"]["annotations"][0]["url_citation"]["start_index"],
            9
        );
        assert!(
            chat["choices"][0]["message"]
                .get(crate::translate::response::SEARCHES)
                .is_none()
        );
    }

    #[test]
    fn a_hosted_web_search_is_anthropic_s_server_tool_on_anthropic_backends() {
        let req = json!({"input": [
                {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
                {"role": "user", "content": "and now?"}],
            "tools": [{"type": "web_search", "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
                       "filters": {"allowed_domains": ["a.test"]}},
                      {"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "web_search"}});
        let opts = crate::translate::Options {
            web_search: true,
            ..Default::default()
        };
        let mut dropped = Vec::new();
        let chat = to_chat_with(&req, "claude", &opts, &mut dropped).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(chat["tool_choice"], "auto");
        assert_eq!(chat["messages"].as_array().unwrap().len(), 1);
        let ant = crate::translate::request::openai_to_anthropic(&chat, "claude", 100).unwrap();
        assert_eq!(
            ant["tools"][1],
            json!({"type": "web_search_20250305", "name": "web_search",
            "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
            "allowed_domains": ["a.test"]})
        );

        // Elsewhere the search is left out, with notice, as before.
        let chat = to_chat_with(
            &req,
            "gpt",
            &crate::translate::Options::default(),
            &mut dropped,
        )
        .unwrap();
        assert!(chat.get("web_search_options").is_none());
        assert_eq!(dropped, ["web_search_call", "web_search"]);
    }
}
