//! Streaming translation, event by event: each upstream event is turned into the client
//! format's events as soon as it is parsed; nothing waits for the end of the response.
//!
//! A translator is fed parsed upstream events and returns bytes to send. When the
//! upstream fails mid-stream (an `error` event, a broken connection, an oversized event)
//! the client gets one well-formed error in its own format and the stream ends.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::response::{
    SEARCHES, anthropic_usage, completion_id, finish_reason, message_id, openai_usage, search_call,
    search_result, unix_now, url_citations,
};
use crate::errors::{ApiError, ApiFormat};
use crate::sse::{SseEvent, encode};

/// Turns one upstream event stream into a client's.
pub trait StreamTranslator: Send {
    /// Bytes for the client for one upstream event.
    fn event(&mut self, ev: SseEvent) -> Vec<Bytes>;
    /// The upstream stream ended (EOF); closes the client's stream.
    fn end(&mut self) -> Vec<Bytes>;
    /// The upstream failed; an error in the client's format ends the stream.
    fn fail(&mut self, err: &ApiError) -> Vec<Bytes>;
    /// Whether the client's stream is complete (nothing more may be sent).
    fn done(&self) -> bool;
}

/// How a client's stream ends: at most once, with an error in its format if it must.
struct Ending {
    format: ApiFormat,
    done: bool,
}

impl Ending {
    fn new(format: ApiFormat) -> Self {
        Self {
            format,
            done: false,
        }
    }

    /// The error event that ends the stream, unless it already ended.
    fn fail(&mut self, err: &ApiError) -> Option<Bytes> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        Some(err.stream_event(self.format))
    }
}

/// The error for an upstream stream that stopped before its last event.
fn ended_early() -> ApiError {
    ApiError::upstream("the model's backend ended the stream early")
}

/// The `ApiError` an upstream error event stands for.
pub(crate) fn upstream_error(data: &str) -> ApiError {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let e = &v["error"];
    let message = crate::errors::for_the_client(
        e["message"]
            .as_str()
            .or(e.as_str())
            .unwrap_or("the upstream reported an error"),
    );
    let status = match e["type"].as_str().unwrap_or_default() {
        "overloaded_error" => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        "rate_limit_error" => StatusCode::TOO_MANY_REQUESTS,
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        "authentication_error" => StatusCode::UNAUTHORIZED,
        "permission_error" => StatusCode::FORBIDDEN,
        "not_found_error" => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, message)
}

// ---------------------------------------------------------------------------------------
// Anthropic upstream → OpenAI client

/// Anthropic Messages events → OpenAI chat completion chunks.
pub struct AnthropicToOpenAi {
    id: String,
    model: Value,
    created: u64,
    include_usage: bool,
    /// Anthropic block index → OpenAI tool call index.
    tools: BTreeMap<u64, u64>,
    /// The backend's own web searches: block index → the call, its query streaming in.
    searches: BTreeMap<u64, (Value, String)>,
    /// Searches whose query is whole, waiting for their results.
    searched: Vec<Value>,
    /// Whether searches go to the client (under [`SEARCHES`]): only on the way to a
    /// Responses client.
    keep_searches: bool,
    /// Characters of content sent so far: where a citation's text begins and ends.
    chars: usize,
    /// Text blocks in progress: block index → where the text began, and its citations.
    texts: BTreeMap<u64, (usize, Value)>,
    usage: Value,
    finished: bool,
    ending: Ending,
}

impl AnthropicToOpenAi {
    /// A translator; `include_usage` is the client's `stream_options.include_usage`.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            id: completion_id(""),
            model: json!(model),
            created: unix_now(),
            include_usage,
            tools: BTreeMap::new(),
            searches: BTreeMap::new(),
            searched: Vec::new(),
            keep_searches: false,
            chars: 0,
            texts: BTreeMap::new(),
            usage: json!({}),
            finished: false,
            ending: Ending::new(ApiFormat::OpenAi),
        }
    }

    /// The same, passing the backend's web searches on for a Responses client.
    pub fn keeping_searches(mut self) -> Self {
        self.keep_searches = true;
        self
    }

    fn text(&mut self, text: &Value) -> Vec<Bytes> {
        match text.as_str().filter(|t| !t.is_empty()) {
            Some(t) => {
                self.chars += t.chars().count();
                vec![self.chunk(json!({"content": t}), None)]
            }
            None => Vec::new(),
        }
    }

    /// A block ended: a cited text block's citations follow it as annotations; a
    /// search's query is whole.
    fn block_stop(&mut self, index: u64) -> Vec<Bytes> {
        if let Some((start, citations)) = self.texts.remove(&index) {
            let annotations = url_citations(&citations, start, self.chars);
            if !annotations.is_empty() {
                return vec![self.chunk(json!({"annotations": annotations}), None)];
            }
        }
        if let Some((mut call, query)) = self.searches.remove(&index) {
            if let Some(q) = serde_json::from_str::<Value>(&query)
                .ok()
                .and_then(|v| v["query"].as_str().map(str::to_string))
            {
                call["query"] = json!(q);
            }
            self.searched.push(call);
        }
        Vec::new()
    }

    /// A search's results arrived: the search is done.
    fn search_done(&mut self, block: &Value) -> Vec<Bytes> {
        search_result(&mut self.searched, block);
        let Some(at) = self
            .searched
            .iter()
            .position(|s| s["id"] == block["tool_use_id"])
        else {
            return Vec::new();
        };
        let call = self.searched.remove(at);
        if !self.keep_searches {
            return Vec::new();
        }
        let mut delta = serde_json::Map::new();
        delta.insert(SEARCHES.into(), json!([call]));
        vec![self.chunk(Value::Object(delta), None)]
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        encode(None, &c.to_string())
    }

    fn close(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.include_usage {
            let c = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": openai_usage(&self.usage),
            });
            out.push(encode(None, &c.to_string()));
        }
        out.push(encode(None, "[DONE]"));
        self.ending.done = true;
        out
    }
}

impl StreamTranslator for AnthropicToOpenAi {
    fn event(&mut self, ev: SseEvent) -> Vec<Bytes> {
        if self.ending.done {
            return Vec::new();
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return self.fail(&ApiError::upstream(
                "the model's backend sent an unreadable event",
            ));
        };
        let kind = ev
            .event
            .as_deref()
            .or(data["type"].as_str())
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "message_start" => {
                let m = &data["message"];
                if let Some(id) = m["id"].as_str() {
                    self.id = completion_id(id);
                }
                if m["model"].is_string() {
                    self.model = m["model"].clone();
                }
                merge(&mut self.usage, &m["usage"]);
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let b = &data["content_block"];
                let index = data["index"].as_u64().unwrap_or(0);
                match b["type"].as_str() {
                    Some("tool_use") => {
                        let n = self.tools.len() as u64;
                        self.tools.insert(index, n);
                        vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": n,
                                "id": b["id"],
                                "type": "function",
                                "function": {"name": b["name"], "arguments": ""},
                            }]}),
                            None,
                        )]
                    }
                    Some("text") => {
                        let citations = b["citations"].clone();
                        let citations = if citations.is_array() {
                            citations
                        } else {
                            json!([])
                        };
                        self.texts.insert(index, (self.chars, citations));
                        self.text(&b["text"])
                    }
                    Some("server_tool_use") if b["name"] == "web_search" => {
                        self.searches.insert(index, (search_call(b), String::new()));
                        Vec::new()
                    }
                    Some("web_search_tool_result") => self.search_done(b),
                    _ => Vec::new(),
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().unwrap_or(0);
                self.block_stop(index)
            }
            "content_block_delta" => {
                let d = &data["delta"];
                let index = data["index"].as_u64().unwrap_or(0);
                match d["type"].as_str() {
                    Some("text_delta") => self.text(&d["text"]),
                    Some("citations_delta") => {
                        if let Some((_, Value::Array(c))) = self.texts.get_mut(&index) {
                            c.push(d["citation"].clone());
                        }
                        Vec::new()
                    }
                    Some("input_json_delta") if self.searches.contains_key(&index) => {
                        if let Some((_, query)) = self.searches.get_mut(&index) {
                            query.push_str(d["partial_json"].as_str().unwrap_or_default());
                        }
                        Vec::new()
                    }
                    Some("thinking_delta") => {
                        vec![self.chunk(json!({"reasoning_content": d["thinking"]}), None)]
                    }
                    Some("input_json_delta") => match self.tools.get(&index) {
                        Some(&n) => vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": n,
                                "function": {"arguments": d["partial_json"]},
                            }]}),
                            None,
                        )],
                        None => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                merge(&mut self.usage, &data["usage"]);
                match data["delta"]["stop_reason"].as_str() {
                    Some(r) if !self.finished => {
                        self.finished = true;
                        vec![self.chunk(json!({}), Some(finish_reason(r)))]
                    }
                    _ => Vec::new(),
                }
            }
            "message_stop" => {
                let mut out = Vec::new();
                if !self.finished {
                    self.finished = true;
                    out.push(self.chunk(json!({}), Some("stop")));
                }
                out.extend(self.close());
                out
            }
            "ping" => vec![Bytes::from_static(b": ping\n\n")],
            "error" => self.fail(&upstream_error(&ev.data)),
            _ => Vec::new(),
        }
    }

    fn end(&mut self) -> Vec<Bytes> {
        if self.ending.done {
            return Vec::new();
        }
        self.fail(&ended_early())
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        self.ending.fail(err).into_iter().collect()
    }

    fn done(&self) -> bool {
        self.ending.done
    }
}

/// Copies the numeric fields of `from` into `into`.
fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            if v.is_number() {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// OpenAI upstream → Anthropic client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Thinking(u64),
}

/// OpenAI chat completion chunks → Anthropic Messages events.
pub struct OpenAiToAnthropic {
    model: String,
    started: bool,
    next_block: u64,
    open: Option<Open>,
    /// OpenAI tool call index → Anthropic block index, for calls whose block is open.
    tools: BTreeMap<u64, u64>,
    finish: Option<String>,
    /// The stop sequence that ended the answer, where the server says (vLLM's
    /// `stop_reason`).
    matched_stop: Option<String>,
    usage: Value,
    /// `message_start`'s input tokens before the upstream counts them (at the end).
    input_estimate: u64,
    /// The answer's text so far: what a citation's offsets point into.
    content: String,
    ending: Ending,
}

impl OpenAiToAnthropic {
    /// A translator for a response to a request for `model`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            started: false,
            next_block: 0,
            open: None,
            tools: BTreeMap::new(),
            finish: None,
            matched_stop: None,
            usage: Value::Null,
            input_estimate: 0,
            content: String::new(),
            ending: Ending::new(ApiFormat::Anthropic),
        }
    }

    /// A search model's citations (`url_citation` annotations) as `citations_delta`s on
    /// the text block open now, each quoting the text it covers.
    fn citations(&mut self, annotations: &[Value], out: &mut Vec<Bytes>) {
        let Some(Open::Text(index)) = self.open else {
            return;
        };
        for a in annotations {
            if let Some(citation) = super::response::web_citation(a, &self.content) {
                out.push(Self::delta(
                    index,
                    json!({"type": "citations_delta", "citation": citation}),
                ));
            }
        }
    }

    /// The same, with `message_start` carrying an estimate of the request's input
    /// tokens (corrected by `message_delta` when the upstream's count arrives): clients
    /// that budget their context read it there.
    pub fn with_input_estimate(mut self, tokens: u64) -> Self {
        self.input_estimate = tokens;
        self
    }

    fn ev(name: &str, data: Value) -> Bytes {
        encode(Some(name), &data.to_string())
    }

    fn start(&mut self, id: &str, model: Option<&str>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            self.model = m.to_string();
        }
        out.push(Self::ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id(id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": self.input_estimate, "output_tokens": 0},
            }}),
        ));
    }

    fn close_open(&mut self, out: &mut Vec<Bytes>) {
        if let Some(Open::Text(i) | Open::Thinking(i)) = self.open.take() {
            out.push(Self::ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<Bytes>) -> u64 {
        let index = self.next_block;
        self.next_block += 1;
        out.push(Self::ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn delta(index: u64, delta: Value) -> Bytes {
        Self::ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    fn finish_stream(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start("", None, &mut out);
        self.close_open(&mut out);
        let tools = std::mem::take(&mut self.tools);
        for &index in tools.values() {
            out.push(Self::ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        let finish = self.finish.as_deref().unwrap_or("stop");
        let (reason, sequence) = super::response::stop_with_sequence(
            finish,
            !tools.is_empty(),
            self.matched_stop.as_deref(),
        );
        let usage = if self.usage.is_null() {
            json!({"input_tokens": self.input_estimate, "output_tokens": 0})
        } else {
            anthropic_usage(&self.usage)
        };
        out.push(Self::ev(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": reason, "stop_sequence": sequence},
                   "usage": usage}),
        ));
        out.push(Self::ev("message_stop", json!({"type": "message_stop"})));
        self.ending.done = true;
        out
    }

    fn text(&mut self, text: &str, thinking: bool, out: &mut Vec<Bytes>) {
        let index = match (self.open, thinking) {
            (Some(Open::Text(i)), false) | (Some(Open::Thinking(i)), true) => i,
            _ => {
                self.close_open(out);
                let (block, open): (Value, fn(u64) -> Open) = if thinking {
                    (
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                        Open::Thinking,
                    )
                } else {
                    (json!({"type": "text", "text": ""}), Open::Text)
                };
                let i = self.open_block(block, out);
                self.open = Some(open(i));
                i
            }
        };
        out.push(Self::delta(
            index,
            if thinking {
                json!({"type": "thinking_delta", "thinking": text})
            } else {
                json!({"type": "text_delta", "text": text})
            },
        ));
    }
}

impl StreamTranslator for OpenAiToAnthropic {
    fn event(&mut self, ev: SseEvent) -> Vec<Bytes> {
        if self.ending.done {
            return Vec::new();
        }
        if ev.data.trim() == "[DONE]" {
            return self.finish_stream();
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            return self.fail(&ApiError::upstream(
                "the model's backend sent an unreadable event",
            ));
        };
        if !chunk["error"].is_null() {
            return self.fail(&upstream_error(&ev.data));
        }
        let mut out = Vec::new();
        self.start(
            chunk["id"].as_str().unwrap_or_default(),
            chunk["model"].as_str(),
            &mut out,
        );
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(r) = delta["reasoning_content"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            self.text(r, true, &mut out);
        }
        if let Some(t) = delta["content"].as_str().filter(|s| !s.is_empty()) {
            self.content.push_str(t);
            self.text(t, false, &mut out);
        }
        if let Some(annotations) = delta["annotations"].as_array() {
            self.citations(annotations, &mut out);
        }
        for (pos, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = call["index"].as_u64().unwrap_or(pos as u64);
            let index = match self.tools.get(&key) {
                Some(&i) => i,
                None => {
                    self.close_open(&mut out);
                    let id = call["id"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("toolu_moat{key}"));
                    let i = self.open_block(
                        json!({"type": "tool_use", "id": id,
                               "name": call["function"]["name"].as_str().unwrap_or_default(),
                               "input": {}}),
                        &mut out,
                    );
                    self.tools.insert(key, i);
                    i
                }
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                out.push(Self::delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": args}),
                ));
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
        if let Some(stop) = choice["stop_reason"].as_str() {
            self.matched_stop = Some(stop.to_string());
        }
        out
    }

    fn end(&mut self) -> Vec<Bytes> {
        if self.ending.done {
            return Vec::new();
        }
        // Some servers omit `[DONE]`; a finish reason is as good an ending.
        if self.finish.is_some() {
            return self.finish_stream();
        }
        self.fail(&ended_early())
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        self.ending.fail(err).into_iter().collect()
    }

    fn done(&self) -> bool {
        self.ending.done
    }
}

/// Same-format streams: bytes pass through untouched; this only watches for the end and
/// turns a broken upstream into a well-formed error.
pub struct PassThrough {
    /// An OpenAI chunk carried a finish reason (some servers then omit `[DONE]`).
    finished: bool,
    /// The upstream ended the stream with an error event.
    errored: bool,
    ending: Ending,
}

impl PassThrough {
    /// A pass-through for a client speaking `format`.
    pub fn new(format: ApiFormat) -> Self {
        Self {
            finished: false,
            errored: false,
            ending: Ending::new(format),
        }
    }

    /// Whether the upstream ended the stream with an error event.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// Looks at one event; true when it ends the stream.
    pub fn observe(&mut self, ev: &SseEvent) -> bool {
        let last = match self.ending.format {
            ApiFormat::Anthropic => match ev.event.as_deref() {
                Some("message_stop") => true,
                Some("error") => {
                    self.errored = true;
                    true
                }
                // The legacy Text Completions stream (`/v1/complete`) has no
                // `message_stop`: its last `completion` event carries a stop reason and
                // the upstream then closes.
                Some("completion") => {
                    if has_string_field(&ev.data, "stop_reason") {
                        self.finished = true;
                    }
                    false
                }
                _ => false,
            },
            ApiFormat::OpenAi => {
                if has_string_field(&ev.data, "finish_reason") {
                    self.finished = true;
                }
                if is_openai_error(&ev.data) {
                    self.errored = true;
                    true
                } else {
                    ev.data.trim() == "[DONE]"
                }
            }
        };
        self.ending.done |= last;
        last
    }

    /// The upstream ended: an error unless the stream was complete.
    pub fn end(&mut self) -> Option<Bytes> {
        if self.finished {
            self.ending.done = true;
        }
        self.fail(&ended_early())
    }

    /// The error that ends a broken stream, unless it already ended. (The proxy holds
    /// back a half-sent upstream event, so the client is at an event boundary.)
    pub fn fail(&mut self, err: &ApiError) -> Option<Bytes> {
        self.ending.fail(err)
    }
}

/// Whether a JSON event carries `key` with a string value (`"finish_reason": "stop"`, not
/// `null`), found by a scan: the pass-through path must not parse every chunk. Text inside
/// a JSON string cannot fake it: its quotes are escaped.
fn has_string_field(data: &str, key: &str) -> bool {
    value_starts_after_key(data, key).any(|value| value.starts_with('"'))
}

/// Where the values of `"key":` begin in `data`, whitespace skipped. A `"key"` not followed
/// by a colon is a string value (a chunk whose content is the word), not a key.
fn value_starts_after_key<'a>(data: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> {
    data.match_indices(key).filter_map(move |(i, _)| {
        let quoted = data[..i].ends_with('"') && data[i + key.len()..].starts_with('"');
        if !quoted {
            return None;
        }
        let rest = data[i + key.len() + 1..].trim_start();
        rest.strip_prefix(':').map(str::trim_start)
    })
}

/// Whether an OpenAI stream event is an error (`{"error": {...}}` at the top level) rather
/// than a chunk. The scan finds candidates cheaply; only a candidate is parsed, since a
/// tool's arguments or a vendor field may hold an `"error"` key deeper down.
fn is_openai_error(data: &str) -> bool {
    value_starts_after_key(data, "error").any(|value| !value.starts_with("null"))
        && serde_json::from_str::<serde_json::Value>(data)
            .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A search model's answer: Anthropic's web search sent to it as
    /// `web_search_options`, its citations back as Anthropic citations, whole and
    /// streamed.
    #[test]
    fn a_search_model_s_citations_become_anthropic_citations() {
        let req = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "news?"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2,
                       "user_location": {"type": "approximate", "city": "Lyon"}}],
            "tool_choice": {"type": "tool", "name": "web_search"}});
        let opts = crate::translate::Options::default();
        let mut dropped = Vec::new();
        let chat = crate::translate::request::anthropic_to_openai_with(
            &req,
            "gpt-4o-search-preview",
            &opts,
            &mut dropped,
        )
        .unwrap();
        assert!(dropped.is_empty());
        assert_eq!(
            chat["web_search_options"],
            json!({"user_location": {"type": "approximate", "approximate": {"city": "Lyon"}}})
        );
        assert!(
            chat.get("tools").is_none() && chat.get("tool_choice").is_none(),
            "{chat}"
        );
        let other = crate::translate::request::anthropic_to_openai_with(
            &req,
            "gpt-4o",
            &opts,
            &mut dropped,
        )
        .unwrap();
        assert!(other.get("web_search_options").is_none());
        assert_eq!(dropped, ["web_search_20250305"]);

        let text = "Hello. Lyon won é today.";
        let ann = json!([{"type": "url_citation", "url_citation": {"url": "https://n.test/a", "title": "N", "start_index": 7, "end_index": 24}}]);
        let whole = crate::translate::response::openai_to_anthropic(
            &json!({"id": "c", "model": "gpt-4o-search-preview",
            "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": text, "annotations": ann}}]}),
        );
        assert_eq!(
            whole["content"][0],
            json!({"type": "text", "text": "Hello. "})
        );
        assert_eq!(whole["content"][1]["text"], "Lyon won é today.");
        assert_eq!(
            whole["content"][1]["citations"][0]["cited_text"],
            "Lyon won é today."
        );
        assert_eq!(
            whole["content"][1]["citations"][0]["url"],
            "https://n.test/a"
        );

        let mut t = OpenAiToAnthropic::new("claude");
        let mut out = Vec::new();
        for chunk in [
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": text}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"annotations": ann}, "finish_reason": "stop"}]}),
        ] {
            out.extend(t.event(SseEvent {
                event: None,
                data: chunk.to_string(),
            }));
        }
        out.extend(t.event(SseEvent {
            event: None,
            data: "[DONE]".into(),
        }));
        let all: String = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(
            all.contains(r#""type":"citations_delta""#)
                && all.contains(r#""cited_text":"Lyon won é today.""#),
            "{all}"
        );
    }

    #[test]
    fn finish_reason_scan() {
        let has = |data: &str| has_string_field(data, "finish_reason");
        assert!(has(r#"{"choices":[{"finish_reason":"stop"}]}"#));
        assert!(has(r#"{"choices":[{"finish_reason" :  "length"}]}"#));
        assert!(!has(r#"{"choices":[{"finish_reason":null}]}"#));
        assert!(!has(
            r#"{"choices":[{"delta":{"content":"finish_reason"}}]}"#
        ));
        assert!(!has(
            r#"{"choices":[{"delta":{"content":"\"finish_reason\": \"stop\""}}]}"#
        ));
    }

    #[test]
    fn only_a_top_level_error_object_is_an_openai_error() {
        assert!(is_openai_error(
            r#"{"error":{"message":"Overloaded","type":"server_error"}}"#
        ));
        assert!(is_openai_error(r#"{ "error" : "rate limited" }"#));
        // The word in content, a quoted key in content, a tool named so, a null field,
        // and an "error" key inside tool arguments' object are all ordinary chunks.
        for chunk in [
            r#"{"choices":[{"index":0,"delta":{"content":"error"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"{\"error\": 1}"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"error","arguments":""}}]}}]}"#,
            r#"{"id":"c","error":null,"choices":[]}"#,
            r#"{"choices":[{"delta":{},"logprobs":{"content":[{"token":"error","x":{"error":0}}]}}]}"#,
            "[DONE]",
        ] {
            assert!(!is_openai_error(chunk), "{chunk}");
        }
    }

    #[test]
    fn a_streamed_tool_call_finished_with_stop_is_tool_use() {
        let mut t = OpenAiToAnthropic::new("m");
        let chunk = |v: Value| SseEvent {
            event: None,
            data: v.to_string(),
        };
        t.event(chunk(
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": null}]}),
        ));
        t.event(chunk(
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ));
        let out: Vec<u8> = t.event(chunk_done()).concat();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");
    }

    fn chunk_done() -> SseEvent {
        SseEvent {
            event: None,
            data: "[DONE]".into(),
        }
    }

    #[test]
    fn a_legacy_completion_stream_ends_cleanly_on_its_stop_reason() {
        let ev = |name: &str, data: &str| SseEvent {
            event: Some(name.into()),
            data: data.into(),
        };
        let mut p = PassThrough::new(ApiFormat::Anthropic);
        assert!(!p.observe(&ev(
            "completion",
            r#"{"type":"completion","completion":" Hi","stop_reason":null}"#
        )));
        assert!(!p.observe(&ev("ping", r#"{"type":"ping"}"#)));
        assert!(!p.observe(&ev(
            "completion",
            r#"{"type":"completion","completion":"","stop_reason":"stop_sequence"}"#
        )));
        assert_eq!(
            p.end(),
            None,
            "a finished completion stream is not an early end"
        );
        let mut cut = PassThrough::new(ApiFormat::Anthropic);
        cut.observe(&ev(
            "completion",
            r#"{"type":"completion","completion":" Hi","stop_reason":null}"#,
        ));
        assert!(
            cut.end().is_some(),
            "a completion stream cut short still is"
        );
    }
}
