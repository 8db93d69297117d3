//! Response translation (whole responses), and the mappings the streams share.

use serde_json::{Map, Value, json};

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`, for a response that did or did not
/// call tools. Some servers (Ollama, llama.cpp with some templates) finish a tool call with
/// "stop"; an Anthropic client's tool loop waits for `tool_use`.
pub fn stop_reason_after(finish_reason: &str, called_tools: bool) -> &'static str {
    match stop_reason(finish_reason) {
        "end_turn" if called_tools => "tool_use",
        reason => reason,
    }
}

/// Anthropic's `stop_reason` and `stop_sequence` for an OpenAI finish: `stop_sequence`
/// with the sequence when the server names the one that matched (vLLM's `stop_reason`
/// string; OpenAI itself does not say, and then it reads `end_turn`).
pub fn stop_with_sequence(
    finish_reason: &str,
    called_tools: bool,
    matched: Option<&str>,
) -> (&'static str, Value) {
    match (stop_reason_after(finish_reason, called_tools), matched) {
        ("end_turn", Some(sequence)) => ("stop_sequence", json!(sequence)),
        (reason, _) => (reason, Value::Null),
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "tool_calls" | "function_call" => "tool_use",
        "length" => "max_tokens",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage → OpenAI usage (OpenAI's prompt count includes cached tokens).
pub fn openai_usage(usage: &Value) -> Value {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// OpenAI usage → Anthropic usage.
pub fn anthropic_usage(usage: &Value) -> Value {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("/prompt_tokens_details/cached_tokens");
    let mut u = json!({
        "input_tokens": n("/prompt_tokens").saturating_sub(cached),
        "output_tokens": n("/completion_tokens"),
    });
    if cached > 0 {
        u["cache_read_input_tokens"] = json!(cached);
    }
    u
}

/// An id in Anthropic's style for an upstream id.
pub fn message_id(upstream: &str) -> String {
    if upstream.starts_with("msg_") {
        upstream.to_string()
    } else if upstream.is_empty() {
        format!("msg_moat{}", fresh_suffix())
    } else {
        format!("msg_{upstream}")
    }
}

/// An id in OpenAI's style for an upstream id.
pub fn completion_id(upstream: &str) -> String {
    if upstream.starts_with("chatcmpl-") {
        upstream.to_string()
    } else if upstream.is_empty() {
        format!("chatcmpl-moat{}", fresh_suffix())
    } else {
        format!("chatcmpl-{upstream}")
    }
}

/// A fresh id suffix: 128 random bits in hex. Ids name stored conversations that
/// `GET /v1/responses/{id}` returns, so they must not be guessable from the time; were
/// the OS's random source ever to fail, the time and a counter keep them unique.
pub(crate) fn fresh_suffix() -> String {
    use std::fmt::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        let mut hex = String::with_capacity(32);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        return hex;
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", unix_nanos())
}

pub(crate) fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Seconds since the epoch, for OpenAI's `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An Anthropic message → an OpenAI chat completion.
pub fn anthropic_to_openai(msg: &Value) -> Value {
    anthropic_to_chat(msg, false)
}

/// The same, keeping the backend's own web searches in the private field
/// [`SEARCHES`] for the Responses translation, which shows them as `web_search_call`
/// items (Chat has no place for them).
pub fn anthropic_to_openai_keeping_searches(msg: &Value) -> Value {
    anthropic_to_chat(msg, true)
}

/// Where a translated chat message (or stream delta) carries the backend's web searches
/// on their way to a Responses client; never sent to a Chat client.
pub const SEARCHES: &str = "moat_web_searches";

/// An Anthropic text block's web citations as Chat `url_citation` annotations over the
/// characters `start..end` of the message's content.
pub(crate) fn url_citations(citations: &Value, start: usize, end: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for c in citations.as_array().into_iter().flatten() {
        let Some(url) = c["url"].as_str() else {
            continue;
        };
        if out.iter().any(|a| a["url_citation"]["url"] == url) {
            continue;
        }
        out.push(json!({"type": "url_citation", "url_citation": {
            "url": url,
            "title": c["title"].as_str().unwrap_or(url),
            "start_index": start,
            "end_index": end,
        }}));
    }
    out
}

/// A web search the backend ran: its id, its query, and the addresses it found.
pub(crate) fn search_call(block: &Value) -> Value {
    json!({
        "id": block["id"],
        "query": block["input"]["query"].as_str().unwrap_or_default(),
        "status": "completed",
        "sources": [],
    })
}

/// Completes `searches` with a `web_search_tool_result` block's findings.
pub(crate) fn search_result(searches: &mut [Value], block: &Value) {
    let Some(search) = searches
        .iter_mut()
        .find(|s| s["id"] == block["tool_use_id"])
    else {
        return;
    };
    match &block["content"] {
        Value::Array(results) => {
            search["sources"] = results
                .iter()
                .filter_map(|r| r["url"].as_str())
                .map(|url| json!({"type": "url", "url": url}))
                .collect();
        }
        _ => search["status"] = json!("failed"),
    }
}

fn anthropic_to_chat(msg: &Value, keep_searches: bool) -> Value {
    let mut text = String::new();
    let mut chars = 0;
    let mut annotations = Vec::new();
    let mut searches = Vec::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in msg["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => {
                let t = block["text"].as_str().unwrap_or_default();
                let start = chars;
                chars += t.chars().count();
                text.push_str(t);
                annotations.extend(url_citations(&block["citations"], start, chars));
            }
            Some("server_tool_use") if block["name"] == "web_search" => {
                let mut search = search_call(block);
                // Where in the text it happened, so a Responses client sees the text
                // before it and after it as the messages around the search.
                search["at"] = json!(chars);
                searches.push(search);
            }
            Some("web_search_tool_result") => search_result(&mut searches, block),
            Some("thinking") => reasoning.push_str(block["thinking"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {
                    "name": block["name"],
                    "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), json!(reasoning));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    message.insert("refusal".into(), Value::Null);
    if !annotations.is_empty() {
        message.insert("annotations".into(), Value::Array(annotations));
    }
    if keep_searches && !searches.is_empty() {
        message.insert(SEARCHES.into(), Value::Array(searches));
    }
    json!({
        "id": completion_id(msg["id"].as_str().unwrap_or_default()),
        "object": "chat.completion",
        "created": unix_now(),
        "model": msg["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(msg["stop_reason"].as_str().unwrap_or("end_turn")),
        }],
        "usage": openai_usage(&msg["usage"]),
    })
}

/// An OpenAI chat completion → an Anthropic message.
pub fn openai_to_anthropic(resp: &Value) -> Value {
    let choice = &resp["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(r) = message["reasoning_content"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = message["content"].as_str().filter(|s| !s.is_empty()) {
        content.extend(cited_blocks(
            t,
            message["annotations"].as_array().map_or(&[], Vec::as_slice),
        ));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": parse_arguments(call["function"]["arguments"].as_str().unwrap_or("")),
        }));
    }
    let finish = choice["finish_reason"].as_str().unwrap_or("stop");
    let called_tools = content.iter().any(|b| b["type"] == "tool_use");
    let (stop_reason, stop_sequence) =
        stop_with_sequence(finish, called_tools, choice["stop_reason"].as_str());
    json!({
        "id": message_id(resp["id"].as_str().unwrap_or_default()),
        "type": "message",
        "role": "assistant",
        "model": resp["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(&resp["usage"]),
    })
}

/// A Chat `url_citation` annotation as an Anthropic web search citation quoting the span
/// of `content` it covers (by character); None for another kind of annotation.
pub(crate) fn web_citation(annotation: &Value, content: &str) -> Option<Value> {
    let c = annotation.get("url_citation")?;
    let url = c["url"].as_str()?;
    let start = c["start_index"].as_u64().unwrap_or(0) as usize;
    let end = c["end_index"]
        .as_u64()
        .map_or(start, |e| e as usize)
        .max(start);
    let cited: String = content.chars().skip(start).take(end - start).collect();
    Some(json!({
        "type": "web_search_result_location",
        "url": url,
        "title": c["title"].as_str().unwrap_or(url),
        "cited_text": cited,
        // Anthropic's pointer into its own search results; there are none to point into.
        "encrypted_index": "",
    }))
}

/// A Chat answer's text as Anthropic text blocks: the spans a search model cited become
/// blocks of their own carrying their citations, as Anthropic gives them.
fn cited_blocks(text: &str, annotations: &[Value]) -> Vec<Value> {
    let mut spans: Vec<(usize, usize, Value)> = annotations
        .iter()
        .filter_map(|a| {
            let c = a.get("url_citation")?;
            let start = c["start_index"].as_u64()? as usize;
            let end = c["end_index"].as_u64()? as usize;
            if end <= start {
                return None;
            }
            Some((start, end, web_citation(a, text)?))
        })
        .collect();
    if spans.is_empty() {
        return vec![json!({"type": "text", "text": text})];
    }
    spans.sort_by_key(|(s, e, _)| (*s, *e));
    let chars: Vec<char> = text.chars().collect();
    let piece = |a: usize, b: usize| {
        chars[a.min(chars.len())..b.min(chars.len())]
            .iter()
            .collect::<String>()
    };
    let mut blocks = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, end, _) = spans[i];
        if start < at {
            i += 1; // overlaps a span already given: its text is in that block
            continue;
        }
        if start > at {
            blocks.push(json!({"type": "text", "text": piece(at, start)}));
        }
        let mut citations = Vec::new();
        while i < spans.len() && spans[i].0 == start && spans[i].1 == end {
            citations.push(spans[i].2.clone());
            i += 1;
        }
        blocks.push(json!({"type": "text", "text": piece(start, end), "citations": citations}));
        at = end;
    }
    if at < chars.len() {
        blocks.push(json!({"type": "text", "text": piece(at, chars.len())}));
    }
    blocks.retain(|b| b["text"].as_str().is_some_and(|t| !t.is_empty()));
    blocks
}

/// Tool-call arguments as an object: what a model wrote, or `{}` when it wrote something
/// that isn't a JSON object (small models do), so the client still gets a valid block.
pub fn parse_arguments(args: &str) -> Value {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            if !args.trim().is_empty() {
                tracing::debug!("a tool call's arguments are not a JSON object; passing {{}}");
            }
            json!({})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_ids_are_random_not_the_time() {
        let ids: Vec<String> = (0..64).map(|_| fresh_suffix()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        // Made in the same instant, they share no prefix a clock would give them.
        let mut firsts: Vec<&str> = ids.iter().map(|id| &id[..4]).collect();
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() > 32, "{ids:?}");
        assert!(message_id("").starts_with("msg_moat"));
        assert!(completion_id("").starts_with("chatcmpl-moat"));
    }

    #[test]
    fn a_tool_call_finished_with_stop_is_tool_use() {
        let resp = |calls: Value| {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": null, "tool_calls": calls}}]})
        };
        let call = json!([{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
        assert_eq!(openai_to_anthropic(&resp(call))["stop_reason"], "tool_use");
        assert_eq!(
            openai_to_anthropic(&resp(json!([])))["stop_reason"],
            "end_turn"
        );
        assert_eq!(stop_reason_after("length", true), "max_tokens");
    }

    #[test]
    fn a_named_stop_sequence_reads_as_one() {
        let resp = |stop: Value| {
            json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                "stop_reason": stop, "message": {"role": "assistant", "content": "x"}}]})
        };
        let a = openai_to_anthropic(&resp(json!("###")));
        assert_eq!(a["stop_reason"], "stop_sequence");
        assert_eq!(a["stop_sequence"], "###");
        // A token id (vLLM's EOS) or nothing: a natural end.
        for stop in [json!(2), Value::Null] {
            let a = openai_to_anthropic(&resp(stop));
            assert_eq!(a["stop_reason"], "end_turn");
            assert_eq!(a["stop_sequence"], Value::Null);
        }
    }
}
