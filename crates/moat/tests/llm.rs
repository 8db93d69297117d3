//! The LLM gateway end to end: the real `moat` binary between a raw HTTP client and a
//! scripted fake upstream, for exact translation, failover, limits and faults. (The
//! official SDKs against a real llama.cpp server are in `llm_peers.rs`.)
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::upstream::{FakeUpstream, Reply, a_event, o_event};
use common::{Moat, get, new_home, post_json, raw, run_moat, sse_events};
use serde_json::{Value, json};

const CANARY: &str = "sk-ant-api03-CANARYcanaryCANARY0123456789";

/// Starts moat with `config` (TOML) and the canary key in FAKE_KEY.
fn start(config: &str) -> Moat {
    let home = new_home();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    Moat::start_in(home, &[], &[("FAKE_KEY", CANARY)], None)
}

fn backends(anthropic: &FakeUpstream, openai: &FakeUpstream) -> String {
    format!(
        r#"
[llm.backends.ant]
kind = "anthropic"
base_url = "{}"
key = "env:FAKE_KEY"
models = ["claude-*"]

[llm.backends.oai]
kind = "openai"
base_url = "{}/v1"
key = "env:FAKE_KEY"
models = ["gpt-*"]
"#,
        anthropic.url(),
        openai.url()
    )
}

fn anthropic_message() -> Value {
    json!({
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"tz": "CET"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 30}
    })
}

fn openai_request_with_everything() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather and time in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "14:00"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
        ],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stop": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-1"
    })
}

#[test]
fn openai_client_to_anthropic_backend_translates_request_and_response() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    ant.push(Reply::json(200, anthropic_message()).header("request-id", "req_upstream"));
    let moat = start(&backends(&ant, &oai));
    let resp = post_json(
        moat.main,
        "/v1/chat/completions",
        &[("authorization", "Bearer client-key-not-forwarded")],
        &openai_request_with_everything().to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);

    let seen = &ant.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], CANARY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(
        seen.headers.get("authorization").is_none(),
        "client credential forwarded"
    );
    let b = &seen.body;
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["system"], json!([{"type": "text", "text": "Be brief."}]));
    assert_eq!(b["max_tokens"], 4096);
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["temperature"], 0.5);
    assert_eq!(b["top_p"], 0.9);
    assert_eq!(b["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(
        b["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        b["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(b["tools"][0]["description"], "Weather");
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[0]["content"][1]["source"]["type"], "base64");
    assert_eq!(msgs[0]["content"][1]["source"]["media_type"], "image/png");
    assert_eq!(
        msgs[0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/a.png"})
    );
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][1]["input"], json!({"tz": "CET"}));
    // Both tool results in one user turn.
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "call_1");
    assert_eq!(msgs[2]["content"][1]["tool_use_id"], "call_2");

    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-msg_01abc");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_eq!(v["usage"]["prompt_tokens"], 130);
    assert_eq!(v["usage"]["completion_tokens"], 20);
    assert_eq!(v["usage"]["total_tokens"], 150);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    assert!(!resp.body.contains(CANARY));
}

#[test]
fn anthropic_client_to_openai_backend_translates_request_and_response() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    oai.push(Reply::json(200, json!({
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "Partial",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]
        }}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57, "prompt_tokens_details": {"cached_tokens": 10}}
    })));
    let moat = start(&backends(&ant, &oai));
    let req = json!({
        "model": "gpt-4o",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Sys A"}, {"type": "text", "text": "Sys B"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "one"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": [{"type": "text", "text": "two"}]},
                {"type": "text", "text": "go on"}
            ]}
        ],
        "tools": [{"name": "f", "description": "F", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
        "stop_sequences": ["X"],
        "temperature": 0.2,
        "metadata": {"user_id": "u-2"}
    });
    let resp = post_json(
        moat.main,
        "/v1/messages",
        &[
            ("x-api-key", "client-key"),
            ("anthropic-version", "2023-06-01"),
        ],
        &req.to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = &oai.seen()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], format!("Bearer {CANARY}"));
    assert!(seen.headers.get("x-api-key").is_none());
    let b = &seen.body;
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(
        msgs[0],
        json!({"role": "system", "content": "Sys A\nSys B"})
    );
    assert_eq!(
        msgs[1]["content"][1]["image_url"]["url"],
        "data:image/jpeg;base64,/9j/"
    );
    assert_eq!(msgs[2]["content"], "calling");
    assert_eq!(msgs[2]["tool_calls"][1]["id"], "toolu_b");
    assert_eq!(
        msgs[3],
        json!({"role": "tool", "tool_call_id": "toolu_a", "content": "one"})
    );
    assert_eq!(
        msgs[4],
        json!({"role": "tool", "tool_call_id": "toolu_b", "content": "two"})
    );
    assert_eq!(msgs[5], json!({"role": "user", "content": "go on"}));
    assert_eq!(b["max_tokens"], 100);
    assert_eq!(b["stop"], json!(["X"]));
    assert_eq!(b["user"], "u-2");
    assert_eq!(
        b["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(b["parallel_tool_calls"], false);
    assert_eq!(
        b["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );

    let v = resp.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["id"], "msg_chatcmpl-9");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "Partial"}));
    assert_eq!(
        v["content"][1],
        json!({"type": "tool_use", "id": "call_9", "name": "f", "input": {"x": 1}})
    );
    assert_eq!(v["usage"]["input_tokens"], 40);
    assert_eq!(v["usage"]["output_tokens"], 7);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 10);
}

fn anthropic_stream_with_tools() -> Vec<String> {
    vec![
        a_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        a_event("ping", json!({"type": "ping"})),
        a_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        a_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ),
        a_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        ),
        a_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        a_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}}),
        ),
        a_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
        ),
        a_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        ),
        a_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        a_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_y", "name": "g", "input": {}}}),
        ),
        a_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ),
        a_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        a_event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        ),
        a_event("message_stop", json!({"type": "message_stop"})),
    ]
}

#[test]
fn anthropic_stream_becomes_openai_chunks() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    // Split the stream at awkward places: the translation must not depend on framing.
    let joined: String = anthropic_stream_with_tools().concat();
    let mut reply = Reply::sse(&[]);
    reply.chunks = joined
        .as_bytes()
        .chunks(7)
        .map(|c| (Duration::ZERO, String::from_utf8_lossy(c).to_string()))
        .collect();
    ant.push(reply);
    let moat = start(&backends(&ant, &oai));
    let resp = post_json(
        moat.main,
        "/v1/chat/completions",
        &[],
        &json!({"model": "claude-sonnet-4-5", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(ant.seen()[0].body["stream"], true);
    let events = sse_events(&resp.body);
    let chunks: Vec<Value> = events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-msg_s"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    let tool_deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(tool_deltas[0]["index"], 0);
    assert_eq!(tool_deltas[0]["id"], "toolu_x");
    assert_eq!(tool_deltas[0]["function"]["name"], "f");
    let args0: String = tool_deltas
        .iter()
        .filter(|d| d["index"] == 0)
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args0, "{\"a\":1}");
    assert!(
        tool_deltas
            .iter()
            .any(|d| d["index"] == 1 && d["id"] == "toolu_y")
    );
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 12);
    assert_eq!(usage["usage"]["completion_tokens"], 9);
}

#[test]
fn openai_stream_becomes_anthropic_events_with_parallel_tools() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let c = |delta: Value, finish: Value| {
        o_event(
            json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    oai.push(Reply::sse(&[
        c(json!({"role": "assistant", "content": ""}), Value::Null),
        c(json!({"content": "Hi "}), Value::Null),
        c(json!({"content": "there"}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"q\""}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"p\":2}"}}]}), Value::Null),
        c(json!({"tool_calls": [{"index": 1, "function": {"arguments": ":3}"}}]}), Value::Null),
        c(json!({}), json!("tool_calls")),
        o_event(json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
                       "usage": {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29}})),
        "data: [DONE]\n\n".to_string(),
    ]));
    let moat = start(&backends(&ant, &oai));
    let resp = post_json(
        moat.main,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &json!({"model": "gpt-4o", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        oai.seen()[0].body["stream_options"],
        json!({"include_usage": true})
    );
    let events = sse_events(&resp.body);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 2..],
        &["message_delta", "message_stop"]
    );
    for (e, d) in &events {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(
            v["type"].as_str(),
            e.as_deref(),
            "event name and type agree"
        );
    }
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data[0]["message"]["id"], "msg_chatcmpl-7");
    // Every started block is stopped once, and deltas only go to open blocks.
    let mut open = std::collections::BTreeSet::new();
    let mut text = String::new();
    let mut args: std::collections::BTreeMap<u64, String> = Default::default();
    let mut tools = Vec::new();
    for v in &data {
        let i = v["index"].as_u64();
        match v["type"].as_str().unwrap() {
            "content_block_start" => {
                assert!(open.insert(i.unwrap()));
                if v["content_block"]["type"] == "tool_use" {
                    tools.push((
                        i.unwrap(),
                        v["content_block"]["id"].clone(),
                        v["content_block"]["name"].clone(),
                    ));
                }
            }
            "content_block_delta" => {
                assert!(open.contains(&i.unwrap()), "delta to a closed block: {v}");
                match v["delta"]["type"].as_str().unwrap() {
                    "text_delta" => text.push_str(v["delta"]["text"].as_str().unwrap()),
                    "input_json_delta" => args
                        .entry(i.unwrap())
                        .or_default()
                        .push_str(v["delta"]["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => assert!(open.remove(&i.unwrap())),
            _ => {}
        }
    }
    assert!(open.is_empty());
    assert_eq!(text, "Hi there");
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0].1, "call_a");
    assert_eq!(tools[1].2, "g");
    assert_eq!(args[&tools[0].0], "{\"p\":2}");
    assert_eq!(args[&tools[1].0], "{\"q\":3}");
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 8);
    assert_eq!(delta["usage"]["input_tokens"], 21);
}

#[test]
fn mid_stream_errors_reach_the_client_in_its_format() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    // Anthropic upstream sends an error event mid-stream to an OpenAI client.
    ant.push(Reply::sse(&[
        a_event("message_start", json!({"type": "message_start", "message": {"id": "msg_e", "model": "claude-x", "usage": {"input_tokens": 1}}})),
        a_event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
    ]));
    // OpenAI upstream breaks the connection mid-stream under an Anthropic client.
    let mut broken = Reply::sse(&[o_event(
        json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": null}]}),
    )]);
    broken.break_after = true;
    oai.push(broken);
    let moat = start(&backends(&ant, &oai));

    let resp = post_json(moat.main, "/v1/chat/completions", &[],
        &json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string());
    let events = sse_events(&resp.body);
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["message"], "Overloaded", "{}", resp.body);
    assert!(!resp.body.contains("[DONE]"));

    let resp = post_json(moat.main, "/v1/messages", &[],
        &json!({"model": "gpt-4o", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string());
    let events = sse_events(&resp.body);
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"), "{}", resp.body);
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        !resp.body.contains("127.0.0.1"),
        "no upstream address: {}",
        resp.body
    );
}

#[test]
fn same_format_streams_pass_whole_whatever_their_text_says() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    // Code output is full of the word "error": content, a tool named so, a logprob token.
    let chunks = [
        json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "error"}, "finish_reason": null}]}),
        json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": " console.error(\"error\": x)"}, "logprobs": {"content": [{"token": "error", "logprob": 0.0}]}, "finish_reason": null}]}),
        json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "error", "arguments": "{\"error\":1}"}}]}, "finish_reason": null}]}),
        json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ];
    let mut events: Vec<String> = chunks.iter().map(|c| o_event(c.clone())).collect();
    events.push("data: [DONE]\n\n".into());
    oai.push(Reply::sse(&events));
    // The legacy Text Completions stream ends on a stop reason, with no message_stop.
    ant.push(Reply::sse(&[
        a_event("completion", json!({"type": "completion", "completion": " Hello", "stop_reason": null, "model": "claude-2.1"})),
        a_event("ping", json!({"type": "ping"})),
        a_event("completion", json!({"type": "completion", "completion": "!", "stop_reason": "stop_sequence", "model": "claude-2.1"})),
    ]));
    let moat = start(&backends(&ant, &oai));

    let resp = post_json(moat.main, "/v1/chat/completions", &[],
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string());
    assert_eq!(resp.status, 200);
    let expected: String = events.concat();
    assert_eq!(
        resp.body, expected,
        "passed through byte for byte, to [DONE]"
    );

    let resp = post_json(moat.main, "/v1/complete", &[("anthropic-version", "2023-06-01")],
        &json!({"model": "claude-2.1", "stream": true, "max_tokens_to_sample": 5, "prompt": "\n\nHuman: hi\n\nAssistant:"}).to_string());
    assert_eq!(resp.status, 200);
    let names: Vec<_> = sse_events(&resp.body).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            Some("completion".into()),
            Some("ping".into()),
            Some("completion".into())
        ],
        "no error appended to a finished completion stream: {}",
        resp.body
    );
    assert_eq!(ant.seen()[0].path, "/v1/complete");
}

#[test]
fn failover_on_5xx_429_and_dead_backends_but_not_after_bytes() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let config = format!(
        r#"{}
[llm.backends.dead]
kind = "openai"
base_url = "{dead_url}/v1"
connect_timeout = "2s"

[[llm.routes]]
model = "pool"
targets = ["dead:m0", "ant:m1", "oai:m2"]
"#,
        backends(&ant, &oai)
    );
    let moat = start(&config);
    // dead: refused; ant: 529 overloaded; oai: answers.
    ant.push(Reply::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
    ));
    oai.push(Reply::json(200, json!({"id": "x", "model": "m2", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})));
    let body =
        json!({"model": "pool", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let resp = post_json(moat.main, "/v1/chat/completions", &[], &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "ok");
    assert_eq!(ant.seen()[0].body["model"], "m1");
    assert_eq!(oai.seen()[0].body["model"], "m2");

    // All fail: the last error reaches the client, in its format, with Retry-After kept.
    ant.push(Reply::json(
        500,
        json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
    ));
    oai.push(
        Reply::json(
            429,
            json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
        )
        .header("retry-after", "7"),
    );
    let resp = post_json(
        moat.main,
        "/v1/messages",
        &[],
        &json!({"model": "pool", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!(resp.json()["error"]["type"], "rate_limit_error");
    assert_eq!(resp.json()["error"]["message"], "slow down");

    // A stream that broke after its first bytes is not retried elsewhere.
    let mut broken = Reply::sse(&[a_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "m", "model": "m1"}}),
    )]);
    broken.break_after = true;
    ant.push(broken);
    let before = oai.seen().len();
    let resp = post_json(moat.main, "/v1/messages", &[], &json!({"model": "pool", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string());
    assert_eq!(resp.status, 200);
    assert_eq!(
        sse_events(&resp.body).last().unwrap().0.as_deref(),
        Some("error")
    );
    assert_eq!(
        oai.seen().len(),
        before,
        "a started stream must not fail over"
    );
}

#[test]
fn bad_requests_get_errors_in_the_client_format() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    // A body that would take a hundred times its size once parsed for translation.
    let tiny_objects = vec![r#"{"a":0}"#; 150_000].join(",");
    let translated_to_openai = format!(
        r#"{{"model":"gpt-4o","max_tokens":1,"messages":[{{"role":"user","content":"hi"}}],"metadata":{{"x":[{tiny_objects}]}}}}"#
    );
    let translated_to_anthropic = format!(
        r#"{{"model":"claude-a","messages":[{{"role":"user","content":"hi"}}],"x":[{tiny_objects}]}}"#
    );
    let stream_of_objects =
        format!(r#"{{"model":"gpt-4o","stream":[{tiny_objects}],"messages":[]}}"#);
    let deep = format!(
        r#"{{"model":"gpt-4o","max_tokens":1,"messages":[{{"role":"user","content":"hi"}}],"metadata":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    // Forwarded untranslated, so never parsed by moat: still refused, for the sake of an
    // upstream whose parser recurses.
    let very_deep = |model: &str| {
        format!(
            r#"{{"model":"{model}","max_tokens":1,"messages":[{{"role":"user","content":{}"hi"{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
    };
    let (deep_openai, deep_anthropic) = (very_deep("gpt-4o"), very_deep("claude-a"));
    let cases = [
        ("/v1/messages", "{not json", 400, "invalid_request_error"),
        ("/v1/messages", deep.as_str(), 400, "invalid_request_error"),
        (
            "/v1/chat/completions",
            deep_openai.as_str(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/messages",
            deep_anthropic.as_str(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/messages",
            translated_to_openai.as_str(),
            413,
            "request_too_large",
        ),
        (
            "/v1/chat/completions",
            translated_to_anthropic.as_str(),
            413,
            "invalid_request_error",
        ),
        (
            "/v1/messages",
            r#"{"model":"claude x","max_tokens":1,"messages":[]}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/messages",
            r#"{"model":"nothing-routes-here","max_tokens":1,"messages":[]}"#,
            404,
            "not_found_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[]}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"claude-a","stream":"true","messages":[]}"#,
            400,
            "invalid_request_error",
        ),
        // Same format, not translated: routing's own fields are still read as text only.
        (
            "/v1/chat/completions",
            stream_of_objects.as_str(),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"claude-a","messages":[{"role":"wizard","content":"x"}]}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            &format!(r#"{{"model":"{}","messages":[]}}"#, "a".repeat(300)),
            400,
            "invalid_request_error",
        ),
        (
            "/v1/complete",
            r#"{"model":"gpt-4o","prompt":"x","max_tokens_to_sample":1}"#,
            400,
            "invalid_request_error",
        ),
    ];
    for (path, body, status, kind) in cases {
        let resp = post_json(moat.main, path, &[], body);
        assert_eq!(resp.status, status, "{path} {body}: {}", resp.body);
        if [&deep, &deep_openai, &deep_anthropic].contains(&&body.to_string()) {
            assert!(resp.body.contains("127 levels"), "{}", resp.body);
        }
        let v = resp.json();
        if path == "/v1/chat/completions" {
            assert_eq!(v["error"]["type"], kind, "{}", resp.body);
            assert!(v.get("type").is_none());
        } else {
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{}", resp.body);
        }
        resp.assert_security_headers();
    }
    assert!(ant.seen().is_empty() && oai.seen().is_empty());
    // Wrong method: 405.
    let resp = common::get(moat.main, "/v1/messages", &[]);
    assert_eq!(resp.status, 405);
}

/// moat with a backend of one slot and `max_queue` places, and a stream holding the slot.
fn one_slot_taken(max_queue: u32) -> ((FakeUpstream, FakeUpstream), Moat, String, TcpStream) {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let config = backends(&ant, &oai).replace(
        "models = [\"claude-*\"]",
        &format!("models = [\"claude-*\"]\nmax_concurrency = 1\nmax_queue = {max_queue}"),
    );
    let mut hold = Reply::sse(&[a_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "m", "model": "claude-a"}}),
    )]);
    hold.hold_open = true;
    ant.push(hold);
    let moat = start(&config);
    let body = json!({"model": "claude-a", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut first = open_stream(moat.main, "/v1/messages", &body);
    let mut buf = [0u8; 512];
    assert!(
        first.read(&mut buf).unwrap() > 0,
        "the first stream started"
    );
    ((ant, oai), moat, body, first)
}

#[test]
fn full_queue_is_refused_with_retry_after() {
    let (_upstreams, moat, body, _first) = one_slot_taken(0);
    let resp = post_json(moat.main, "/v1/messages", &[], &body);
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.json()["error"]["type"], "overloaded_error");
}

#[test]
fn a_client_that_leaves_the_queue_gives_its_place_back() {
    let (_upstreams, moat, body, _first) = one_slot_taken(1);
    let mut buf = [0u8; 512];
    // Several clients in turn take the one queue place and leave: none may find it taken.
    for round in 0..3 {
        let mut queued = open_stream(moat.main, "/v1/messages", &body);
        queued
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let waited = queued.read(&mut buf);
        assert!(
            waited.is_err(),
            "round {round}: expected to wait in the queue, got {:?}",
            waited.map(|n| String::from_utf8_lossy(&buf[..n]).to_string())
        );
        // While it waits, the queue is full.
        let resp = post_json(moat.main, "/v1/messages", &[], &body);
        assert_eq!(resp.status, 503, "round {round}: {}", resp.body);
        drop(queued);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn open_stream(addr: std::net::SocketAddr, path: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

#[test]
fn a_client_disconnect_closes_the_upstream_at_once() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let mut hold = Reply::sse(&[a_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "m", "model": "claude-a"}}),
    )]);
    hold.hold_open = true;
    ant.push(hold.clone());
    let mut hold_o = Reply::sse(&[o_event(
        json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "x"}}]}),
    )]);
    hold_o.hold_open = true;
    oai.push(hold_o);
    let moat = start(&backends(&ant, &oai));
    for (up, path, model) in [
        (&ant, "/v1/messages", "claude-a"),
        (&oai, "/v1/messages", "gpt-4o"),
    ] {
        let body = json!({"model": model, "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let mut s = open_stream(moat.main, path, &body);
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).unwrap() > 0);
        std::thread::sleep(Duration::from_millis(100));
        assert!(up.closed().is_empty());
        s.shutdown(std::net::Shutdown::Both).unwrap();
        drop(s);
        let closed_at = Instant::now();
        let deadline = closed_at + Duration::from_secs(5);
        while up.closed().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let seen = up.closed();
        assert_eq!(seen.len(), 1, "the upstream never saw the close");
        let lag = seen[0].saturating_duration_since(closed_at);
        assert!(
            lag < Duration::from_millis(100),
            "upstream saw the close after {lag:?}"
        );
    }
}

#[test]
fn models_status_and_count_tokens() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let config = format!(
        "{}\n[llm.aliases]\nsonnet = \"claude-sonnet-4-5\"\n[[llm.routes]]\nmodel = \"fast\"\ntargets = [\"oai:gpt-4o-mini\"]\n",
        backends(&ant, &oai)
    );
    let moat = start(&config);
    let r = common::get(moat.main, "/v1/models", &[]);
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["fast", "sonnet"]);
    assert_eq!(r.json()["object"], "list");
    let r = common::get(
        moat.main,
        "/v1/models",
        &[("anthropic-version", "2023-06-01")],
    );
    assert_eq!(r.json()["data"][0]["type"], "model");
    assert_eq!(r.json()["has_more"], false);
    // One model by name: also those served by a glob or as BACKEND:MODEL, which no list
    // can show; an SDK escapes the colon or a slash.
    for (path, id) in [
        ("/v1/models/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("/v1/models/oai%3Agpt-4o", "oai:gpt-4o"),
        ("/v1/models/sonnet", "sonnet"),
    ] {
        let r = common::get(moat.main, path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["id"], id);
        assert_eq!(r.json()["object"], "model");
    }
    let r = common::get(
        moat.main,
        "/v1/models/claude-haiku-4-5",
        &[("anthropic-version", "2023-06-01")],
    );
    assert_eq!(r.json()["type"], "model", "{}", r.body);
    for headers in [&[][..], &[("anthropic-version", "2023-06-01")][..]] {
        let r = common::get(moat.main, "/v1/models/llama-unknown", headers);
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(r.json()["error"]["type"], "not_found_error", "{}", r.body);
        assert_eq!(
            r.json().get("type").is_some(),
            !headers.is_empty(),
            "{}",
            r.body
        );
    }

    ant.push(Reply::json(200, json!({"input_tokens": 42})));
    let r = post_json(
        moat.main,
        "/v1/messages/count_tokens",
        &[],
        &json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    assert_eq!(r.json()["input_tokens"], 42);
    // (Before it: the model list asked for by /v1/models.)
    let seen = ant.seen();
    let counted = seen.last().unwrap();
    assert_eq!(counted.path, "/v1/messages/count_tokens");
    assert_eq!(counted.body["model"], "claude-sonnet-4-5");
    let r = post_json(
        moat.main,
        "/v1/messages/count_tokens",
        &[],
        &json!({"model": "fast", "messages": [{"role": "user", "content": "hello there"}]})
            .to_string(),
    );
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);

    let status = common::get(
        moat.main,
        "/status",
        &[("x-moat-control-token", &moat.token())],
    );
    let b = status.json()["backends"].clone();
    assert_eq!(b.as_array().unwrap().len(), 2, "{b}");
    assert_eq!(b[0]["name"], "ant");
    assert_eq!(b[0]["state"], "ok");
    assert!(!status.body.contains(CANARY));
}

#[test]
fn the_backend_key_never_leaves_in_logs_or_errors() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    // An upstream that echoes the key back in its error message.
    ant.push(Reply::json(400, json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("bad key {CANARY}")}})));
    let mut moat = start(&backends(&ant, &oai));
    let resp = post_json(
        moat.main,
        "/v1/chat/completions",
        &[],
        &json!({"model": "claude-a", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    assert_eq!(resp.status, 400);
    assert!(!resp.body.contains(CANARY), "{}", resp.body);
    // Nor what stands behind the backend: an OpenAI-compatible proxy naming its upstream.
    oai.push(Reply::json(502, json!({"error": {"message": "OllamaException: Connection refused: http://10.1.2.3:11434/api/chat", "type": "server_error"}})));
    let resp = post_json(
        moat.main,
        "/v1/messages",
        &[],
        &json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert_eq!(
        resp.json()["error"]["message"],
        "OllamaException: Connection refused: [address]",
        "{}",
        resp.body
    );
    moat.terminate();
    let log = moat.output();
    assert!(!log.contains(CANARY), "key in the log");
    let (_, audit, _) = run_moat(moat.home.path(), &["audit", "export"], &[]);
    assert!(!audit.contains(CANARY));
}

#[test]
fn backend_commands_edit_config_and_route_explains() {
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        "# my settings\n[log]\nlevel = \"info\"\n",
    )
    .unwrap();
    let up = FakeUpstream::start();
    up.push(Reply::json(
        200,
        json!({"object": "list", "data": [{"id": "smol"}, {"id": "big"}]}),
    ));
    let url = format!("{}/v1", up.url());
    let (code, out, err) = run_moat(
        home.path(),
        &[
            "backend",
            "add",
            "local",
            "--kind",
            "openai",
            "--base-url",
            &url,
            "--models",
            "smol*",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(text.starts_with("# my settings"), "comments kept: {text}");
    let (code, _, err) = run_moat(
        home.path(),
        &[
            "backend",
            "add",
            "local",
            "--kind",
            "openai",
            "--base-url",
            &url,
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--replace"), "{err}");
    let (code, _, err) = run_moat(
        home.path(),
        &[
            "backend",
            "add",
            "x",
            "--kind",
            "openai",
            "--base-url",
            "ftp://nope",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("base_url"), "{err}");
    let (code, _, _) = run_moat(
        home.path(),
        &[
            "backend",
            "add",
            "k",
            "--kind",
            "anthropic",
            "--base-url",
            "https://api.anthropic.com",
            "--key-secret",
            "ant-key",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let (_, out, _) = run_moat(home.path(), &["backend", "list"], &[]);
    assert!(out.contains("local") && out.contains("***"), "{out}");
    assert!(!out.contains("ant-key"), "{out}");
    let (code, out, _) = run_moat(home.path(), &["route", "smol-135m"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("backend \"local\""), "{out}");
    let (code, _, err) = run_moat(home.path(), &["route", "unknown"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not served"), "{err}");
    let (code, out, err) = run_moat(home.path(), &["backend", "test", "local"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 model(s)") && out.contains("smol"), "{out}");
    assert_eq!(up.seen()[0].path, "/v1/models");
    let (code, _, _) = run_moat(home.path(), &["backend", "remove", "local"], &[]);
    assert_eq!(code, 0);
    let (code, _, err) = run_moat(home.path(), &["backend", "remove", "local"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn responses_api_through_both_backend_kinds() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    let request = json!({
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"}
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "max_output_tokens": 99,
        "metadata": {"k": "v"}
    });

    // A Chat Completions backend, whole response.
    oai.push(Reply::json(200, json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]
        }}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}
    })));
    let resp = post_json(moat.main, "/v1/responses", &[], &request.to_string());
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = &oai.seen()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(seen.body["messages"][2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(seen.body["messages"][3]["role"], "tool");
    assert_eq!(seen.body["max_tokens"], 99);
    let v = resp.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "Checking.");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "call_2");
    assert_eq!(v["usage"]["input_tokens"], 10);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 15);

    // An Anthropic backend, streamed: Anthropic events → Responses events.
    ant.push(Reply::sse(&anthropic_stream_with_tools()));
    let mut streamed = request.clone();
    streamed["model"] = json!("claude-sonnet-4-5");
    streamed["stream"] = json!(true);
    let resp = post_json(moat.main, "/v1/responses", &[], &streamed.to_string());
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = &ant.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(
        seen.body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(seen.body["max_tokens"], 99);
    let events = sse_events(&resp.body);
    for (name, data) in &events {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(name.as_deref(), v["type"].as_str(), "{data}");
    }
    let kinds: Vec<&str> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    let out = &last["response"]["output"];
    assert_eq!(out[0]["content"][0]["text"], "Hello");
    assert_eq!(out[1]["call_id"], "toolu_x");
    assert_eq!(out[1]["arguments"], "{\"a\":1}");
    assert_eq!(out[2]["call_id"], "toolu_y");
    assert_eq!(last["response"]["usage"]["output_tokens"], 9);

    // Built-in tools a Chat Completions backend cannot run are left out by default, and
    // the answer says so; their calls from earlier turns too.
    for (body, needle) in [
        (
            json!({"model": "gpt-4o", "input": "x", "tools": [{"type": "web_search_preview"}, {"type": "function", "name": "f", "parameters": {"type": "object"}}], "tool_choice": {"type": "web_search_preview"}}),
            "web_search_preview",
        ),
        (
            json!({"model": "gpt-4o", "input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}, {"role": "user", "content": "x"}]}),
            "web_search_call",
        ),
    ] {
        oai.push(Reply::json(200, json!({"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})));
        let resp = post_json(moat.main, "/v1/responses", &[], &body.to_string());
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.header("moat-dropped-tools"), Some(needle), "{needle}");
        let sent = oai.seen().last().unwrap().body.clone();
        assert!(!sent.to_string().contains(needle), "{sent}");
    }
    let seen = oai.seen();
    let last = &seen[seen.len() - 1].body;
    assert_eq!(last["messages"].as_array().unwrap().len(), 1, "{last}");
    let sent = &seen[seen.len() - 2].body;
    assert_eq!(
        sent["tools"].as_array().unwrap().len(),
        1,
        "the function tool stays: {sent}"
    );
    assert_eq!(sent["tool_choice"], "auto", "{sent}");
    let metrics = get(
        moat.main,
        "/metrics",
        &[("X-Moat-Control-Token", moat.token().as_str())],
    );
    assert!(
        metrics.body.contains(
            "moat_llm_dropped_tools_total{backend=\"oai\",tool=\"web_search_preview\"} 1"
        ),
        "{}",
        metrics.body
    );
    assert!(!moat.output().contains(CANARY));
}

#[test]
fn stored_responses_chain_with_previous_response_id_and_can_be_read_and_deleted() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    let completion = |text: &str| {
        Reply::json(
            200,
            json!({
                "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1}
            }),
        )
    };
    oai.push(completion("Paris."));
    let first = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "input": "Capital of France?"}).to_string(),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["store"], true);
    let id = first["id"].as_str().unwrap().to_string();

    let got = get(moat.main, &format!("/v1/responses/{id}"), &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json(), first);

    oai.push(completion("About 2 million."));
    let second = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "previous_response_id": id, "input": "Its population?"})
            .to_string(),
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["previous_response_id"], id.as_str());
    let messages = oai.seen()[1].body["messages"].clone();
    assert_eq!(
        messages,
        json!([
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
            {"role": "user", "content": "Its population?"}
        ])
    );
    // The second response's input items: the whole conversation it was given, newest first.
    let second_id = second.json()["id"].as_str().unwrap().to_string();
    let items = get(
        moat.main,
        &format!("/v1/responses/{second_id}/input_items?limit=2"),
        &[],
    );
    assert_eq!(items.status, 200, "{}", items.body);
    let page = items.json();
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["content"][0]["text"], "Its population?");
    assert_eq!(page["data"][0]["type"], "message");
    assert_eq!(page["data"][1]["role"], "assistant");
    let rest = get(
        moat.main,
        &format!(
            "/v1/responses/{second_id}/input_items?after={}",
            page["last_id"].as_str().unwrap()
        ),
        &[],
    );
    assert_eq!(
        rest.json()["data"][0]["content"][0]["text"],
        "Capital of France?"
    );
    assert_eq!(rest.json()["has_more"], false);
    let asc = get(
        moat.main,
        &format!("/v1/responses/{second_id}/input_items?order=asc"),
        &[],
    );
    assert_eq!(
        asc.json()["data"][0]["content"][0]["text"],
        "Capital of France?"
    );
    let bad = get(
        moat.main,
        &format!("/v1/responses/{second_id}/input_items?limit=500"),
        &[],
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        get(moat.main, "/v1/responses/resp_nope/input_items", &[]).status,
        404
    );

    let deleted = raw(
        moat.main,
        format!(
            "DELETE /v1/responses/{id} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            moat.host()
        )
        .as_bytes(),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.json()["deleted"], true);
    assert_eq!(
        get(moat.main, &format!("/v1/responses/{id}"), &[]).status,
        404
    );
    let chained = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "previous_response_id": id, "input": "?"}).to_string(),
    );
    // As OpenAI answers an unknown id: 400, with the code and param SDK users check.
    assert_eq!(chained.status, 400, "{}", chained.body);
    assert!(chained.body.contains("not found"), "{}", chained.body);
    assert_eq!(
        chained.json()["error"]["code"],
        "previous_response_not_found"
    );
    assert_eq!(chained.json()["error"]["param"], "previous_response_id");

    oai.push(completion("ok"));
    let unstored = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "input": "x", "store": false}).to_string(),
    );
    let unstored = unstored.json();
    assert_eq!(unstored["store"], false);
    let id = unstored["id"].as_str().unwrap();
    assert_eq!(
        get(moat.main, &format!("/v1/responses/{id}"), &[]).status,
        404
    );

    // Each turn within bounds, the chain past them: refused before anything is sent or
    // stored, so a conversation cannot grow without end.
    let turn = |previous: Option<&str>| {
        let items: Vec<Value> = (0..30_000)
            .map(|i| json!({"role": "user", "content": format!("{i}")}))
            .collect();
        let mut body = json!({"model": "gpt-4o", "input": items});
        if let Some(id) = previous {
            body["previous_response_id"] = json!(id);
        }
        post_json(moat.main, "/v1/responses", &[], &body.to_string())
    };
    let sent_before = oai.seen().len();
    oai.push(completion("ok"));
    let big = turn(None);
    assert_eq!(big.status, 200, "{}", big.body);
    let big_id = big.json()["id"].as_str().unwrap().to_string();
    oai.push(completion("ok"));
    let bigger = turn(Some(&big_id));
    assert_eq!(bigger.status, 413, "{}", bigger.body);
    assert!(
        bigger.body.contains("start a new conversation"),
        "{}",
        bigger.body
    );
    assert_eq!(oai.seen().len(), sent_before + 1);
}

#[test]
fn a_chained_turn_keeps_the_custom_tool_call_its_output_answers() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    // Codex's apply_patch is a custom (free-form) tool: the chat upstream calls it.
    oai.push(Reply::json(200, json!({
        "id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}
    })));
    let tools = json!([{"type": "custom", "name": "apply_patch", "description": "Edit files"}]);
    let first = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "input": "Fix the bug", "tools": tools}).to_string(),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.json()["output"][0]["type"],
        "custom_tool_call",
        "{}",
        first.body
    );
    let id = first.json()["id"].as_str().unwrap().to_string();

    oai.push(Reply::json(200, json!({
        "id": "chatcmpl-u", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Done."}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}
    })));
    let second = post_json(moat.main, "/v1/responses", &[],
        &json!({"model": "gpt-4o", "previous_response_id": id, "tools": tools,
                "input": [{"type": "custom_tool_call_output", "call_id": "call_p", "output": "applied"}]}).to_string());
    assert_eq!(second.status, 200, "{}", second.body);
    // The upstream saw the call the output answers, then the output.
    let messages = oai.seen()[1].body["messages"].clone();
    let n = messages.as_array().unwrap().len();
    assert_eq!(
        messages[n - 2]["tool_calls"][0]["id"],
        "call_p",
        "{messages}"
    );
    assert_eq!(messages[n - 1]["role"], "tool", "{messages}");
    assert_eq!(messages[n - 1]["tool_call_id"], "call_p", "{messages}");
}

/// A Responses API event as OpenAI sends it: named, typed, numbered.
fn r_event(seq: u64, kind: &str, mut data: Value) -> String {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(seq);
    format!("event: {kind}\ndata: {data}\n\n")
}

#[test]
fn native_responses_pass_through_untouched_and_are_kept() {
    let (ant, native) = (FakeUpstream::start(), FakeUpstream::start());
    let config = backends(&ant, &native).replace(
        "[llm.backends.oai]",
        "[llm.backends.native]\nresponses = \"native\"",
    ) + "[[llm.routes]]\nmodel = \"both\"\ntargets = [\"native:gpt-5\", \"ant:claude-sonnet-4-5\"]\n";
    let moat = start(&config);

    // Whole response: the request and the answer cross byte for byte, built-in tools and
    // reasoning items included (the backend runs them).
    let answer = json!({
        "id": "resp_up1", "object": "response", "created_at": 1, "status": "completed",
        "model": "gpt-5", "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}
        ],
        "usage": {"input_tokens": 11, "output_tokens": 3, "total_tokens": 14,
                  "input_tokens_details": {"cached_tokens": 4}},
        "store": true
    })
    .to_string();
    let mut reply = Reply::json(200, Value::Null).header("x-request-id", "req_native");
    reply.chunks = vec![(Duration::ZERO, answer.clone())];
    native.push(reply);
    let request = r#"{"model":"gpt-5","input":[{"type":"reasoning","id":"rs_0","summary":[],"encrypted_content":"e"},{"role":"user","content":"Capital of France?"}],"tools":[{"type":"web_search_preview"}],"reasoning":{"effort":"low"},"include":["reasoning.encrypted_content"]}"#;
    let resp = post_json(moat.main, "/v1/responses", &[], request);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body, answer, "the answer is passed as it came");
    assert_eq!(resp.header("x-request-id"), Some("req_native"));
    let seen = &native.seen()[0];
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.headers["authorization"], format!("Bearer {CANARY}"));
    assert_eq!(seen.body, serde_json::from_str::<Value>(request).unwrap());

    // Kept, so the conversation goes on through any backend: here a translated one.
    let got = get(moat.main, "/v1/responses/resp_up1", &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["output"][1]["content"][0]["text"], "Paris.");
    ant.push(Reply::json(200, anthropic_message()));
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "claude-sonnet-4-5", "previous_response_id": "resp_up1", "input": "And Italy?"}).to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let messages = &ant.seen()[0].body["messages"];
    let texts: Vec<(&str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = m["content"].as_str().or(m["content"][0]["text"].as_str());
            (m["role"].as_str().unwrap(), text.unwrap())
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "Capital of France?"),
            ("assistant", "Paris."),
            ("user", "And Italy?")
        ],
        "{messages}"
    );

    // The native backend holds resp_up1 too: a chained request goes to it as it came,
    // and moat keeps the whole conversation for the answer.
    let mut reply = Reply::json(200, Value::Null);
    reply.chunks = vec![(Duration::ZERO, answer.replace("resp_up1", "resp_up3"))];
    native.push(reply);
    let here = json!({"model": "gpt-5", "previous_response_id": "resp_up1", "input": "And Spain?"});
    let resp = post_json(moat.main, "/v1/responses", &[], &here.to_string());
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(native.seen()[1].body, here);
    let items = get(
        moat.main,
        "/v1/responses/resp_up3/input_items?order=asc",
        &[],
    );
    assert_eq!(items.status, 200, "{}", items.body);
    let kinds: Vec<String> = items.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["type"].as_str().unwrap(),
                i["role"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "reasoning/-",
            "message/user",
            "message/assistant",
            "message/user"
        ]
    );

    // Deleting reaches the backend account that holds it; a failure there keeps both.
    let delete = |id: &str| {
        raw(
            moat.main,
            format!(
                "DELETE /v1/responses/{id} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                moat.host()
            )
            .as_bytes(),
        )
    };
    native.push(Reply::json(500, json!({"error": {"message": "try later"}})));
    let resp = delete("resp_up1");
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert!(resp.body.contains("kept its copy"), "{}", resp.body);
    assert_eq!(get(moat.main, "/v1/responses/resp_up1", &[]).status, 200);
    native.push(Reply::json(
        200,
        json!({"id": "resp_up1", "object": "response", "deleted": true}),
    ));
    let resp = delete("resp_up1");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = native.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        (&last.method, last.path.as_str()),
        (&http::Method::DELETE, "/v1/responses/resp_up1")
    );
    assert_eq!(last.headers["authorization"], format!("Bearer {CANARY}"));
    assert_eq!(get(moat.main, "/v1/responses/resp_up1", &[]).status, 404);
    let n = native.seen().len();

    // A previous response moat never saw: only the native backend may know it; the
    // request goes as it came and the answer is not kept (its history is elsewhere).
    let mut reply = Reply::json(200, Value::Null);
    reply.chunks = vec![(
        Duration::ZERO,
        answer.replace("resp_up1", "resp_up2").to_string(),
    )];
    native.push(reply);
    let chained =
        json!({"model": "gpt-5", "previous_response_id": "resp_elsewhere", "input": "more"});
    let resp = post_json(moat.main, "/v1/responses", &[], &chained.to_string());
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(native.seen()[n].body, chained);
    assert_eq!(get(moat.main, "/v1/responses/resp_up2", &[]).status, 404);
    let mut translated = chained.clone();
    translated["model"] = json!("claude-sonnet-4-5");
    let resp = post_json(moat.main, "/v1/responses", &[], &translated.to_string());
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("resp_elsewhere"), "{}", resp.body);
    assert_eq!(ant.seen().len(), 1, "nothing sent upstream");

    // Streamed: the events cross untouched and the final response is kept.
    let events = [
        r_event(
            0,
            "response.created",
            json!({"response": {"id": "resp_s", "object": "response", "status": "in_progress", "output": []}}),
        ),
        r_event(
            1,
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message", "id": "msg_s", "role": "assistant", "content": []}}),
        ),
        r_event(
            2,
            "response.output_text.delta",
            json!({"item_id": "msg_s", "output_index": 0, "content_index": 0, "delta": "Ro"}),
        ),
        r_event(
            3,
            "response.output_text.delta",
            json!({"item_id": "msg_s", "output_index": 0, "content_index": 0, "delta": "me."}),
        ),
        r_event(
            4,
            "response.completed",
            json!({"response": {"id": "resp_s", "object": "response", "status": "completed",
            "output": [{"type": "message", "id": "msg_s", "role": "assistant", "content": [{"type": "output_text", "text": "Rome."}]}],
            "usage": {"input_tokens": 20, "output_tokens": 2, "total_tokens": 22}}}),
        ),
    ];
    native.push(Reply::sse(&events));
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5", "input": "Capital of Italy?", "stream": true}).to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body, events.concat());
    let got = get(moat.main, "/v1/responses/resp_s", &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["output"][0]["content"][0]["text"], "Rome.");

    // Cut short, mid-event: the client gets whole events only, then moat's ending,
    // numbered after the last event that reached it.
    let mut cut = events[..3].to_vec();
    cut.push("event: response.output_text.delta\ndata: {\"type\":\"response.outp".into());
    let mut broken = Reply::sse(&cut);
    // A pause lets the half event out before the break (which may drop a last chunk).
    broken
        .chunks
        .push((Duration::from_millis(100), String::new()));
    broken.break_after = true;
    native.push(broken);
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5", "input": "x", "stream": true, "store": false}).to_string(),
    );
    let got = sse_events(&resp.body);
    for (_, data) in &got {
        assert!(
            serde_json::from_str::<Value>(data).is_ok(),
            "half an event reached the client: {}",
            resp.body
        );
    }
    let tail: Vec<(&str, Value)> = got[got.len() - 2..]
        .iter()
        .map(|(n, d)| (n.as_deref().unwrap(), serde_json::from_str(d).unwrap()))
        .collect();
    assert_eq!(tail[0].0, "error", "{}", resp.body);
    let delivered = got.len() as u64 - 2;
    assert_eq!(delivered, 3, "{}", resp.body);
    assert_eq!(tail[0].1["sequence_number"], delivered);
    assert_eq!(tail[1].0, "response.failed");
    assert_eq!(tail[1].1["sequence_number"], delivered + 1);
    assert_eq!(tail[1].1["response"]["id"], "resp_s");
    assert_eq!(tail[1].1["response"]["status"], "failed");

    // A background response runs at the backend: reading it asks the backend until it
    // is done, then moat's copy answers; cancelling goes to the backend too.
    let background = |status: &str| {
        json!({"id": "resp_bg", "object": "response", "status": status, "store": true,
               "background": true, "output": []})
    };
    native.push(Reply::json(200, background("queued")));
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5", "input": "slow", "background": true}).to_string(),
    );
    assert_eq!(resp.json()["status"], "queued", "{}", resp.body);
    native.push(Reply::json(200, background("in_progress")));
    native.push(Reply::json(200, background("completed")));
    let seen_before = native.seen().len();
    for want in ["in_progress", "completed", "completed"] {
        let got = get(moat.main, "/v1/responses/resp_bg", &[]);
        assert_eq!(got.json()["status"], want, "{}", got.body);
    }
    let seen = native.seen();
    assert_eq!(
        seen.len(),
        seen_before + 2,
        "a finished response is moat's to answer"
    );
    assert_eq!(
        (&seen[seen_before].method, seen[seen_before].path.as_str()),
        (&http::Method::GET, "/v1/responses/resp_bg")
    );
    native.push(Reply::json(200, background("cancelled")));
    let cancelled = post_json(moat.main, "/v1/responses/resp_bg/cancel", &[], "");
    assert_eq!(
        cancelled.json()["status"],
        "cancelled",
        "{}",
        cancelled.body
    );
    let last = native.seen().last().unwrap().clone();
    assert_eq!(
        (&last.method, last.path.as_str()),
        (&http::Method::POST, "/v1/responses/resp_bg/cancel")
    );
    // Unknown ones are 404; moat's own answers are never in the background: 400.
    let unknown = post_json(moat.main, "/v1/responses/resp_nope/cancel", &[], "");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    ant.push(Reply::json(200, anthropic_message()));
    let mine = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "claude-sonnet-4-5", "input": "hi"}).to_string(),
    )
    .json();
    let mine = mine["id"].as_str().unwrap();
    let refused = post_json(moat.main, &format!("/v1/responses/{mine}/cancel"), &[], "");
    assert_eq!(refused.status, 400, "{}", refused.body);

    // History that only an upstream holds never goes to a translated backend, and that
    // refusal does not hide a real upstream failure before it.
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "claude-sonnet-4-5", "conversation": "conv_1", "input": "x"}).to_string(),
    );
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("conversation"), "{}", resp.body);
    let ant_calls = ant.seen().len();
    native.push(Reply::json(
        503,
        json!({"error": {"message": "overloaded"}}),
    ));
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "both", "previous_response_id": "resp_far", "input": "x"}).to_string(),
    );
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(ant.seen().len(), ant_calls);

    // The backend's refusal reaches the client in OpenAI's shape, with its status.
    native.push(Reply::json(
        400,
        json!({"error": {"message": "Unsupported parameter: 'foo'.", "type": "invalid_request_error", "param": "foo", "code": null}}),
    ));
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5", "input": "x", "foo": 1}).to_string(),
    );
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(
        resp.json()["error"]["message"],
        "Unsupported parameter: 'foo'."
    );
    assert_eq!(resp.json()["error"]["param"], "foo", "{}", resp.body);
    // And its machine-readable code, which clients act on.
    native.push(Reply::json(
        400,
        json!({"error": {"message": "This model's maximum context length is 8 tokens.", "type": "invalid_request_error", "param": "input", "code": "context_length_exceeded"}}),
    ));
    let resp = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-5", "input": "x"}).to_string(),
    );
    assert_eq!(
        resp.json()["error"]["code"],
        "context_length_exceeded",
        "{}",
        resp.body
    );

    // Usage was read from both answers' own usage objects (whole and streamed).
    let mut moat = moat;
    moat.terminate();
    assert!(!moat.output().contains(CANARY));
    let (code, out, err) = run_moat(
        moat.home.path(),
        &["usage", "--since", "all", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let u: Value = serde_json::from_str(&out).unwrap();
    let sum = |field: &str| -> u64 {
        u["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["backend"] == "native")
            .map(|g| g[field].as_u64().unwrap())
            .sum()
    };
    // resp_up1, resp_up3, resp_up2 (11/3/4 each) + the stream (20/2).
    assert_eq!(sum("input_tokens"), 53, "{out}");
    assert_eq!(sum("output_tokens"), 11, "{out}");
    assert_eq!(sum("cached_tokens"), 12, "{out}");
}

/// A hostile upstream puts the backend's key into every string field it can: no path
/// from an upstream to a client carries it, whole or streamed, error or success.
#[test]
fn the_key_an_upstream_echoes_never_reaches_the_client_on_any_path() {
    // A key of no known shape: only moat's exact knowledge of it can catch it.
    const PLAIN: &str = "moatCanaryPlainValue7Q2x9Lk";
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let home = new_home();
    std::fs::write(home.path().join("config.toml"), backends(&ant, &oai)).unwrap();
    let moat = Moat::start_in(home, &[], &[("FAKE_KEY", PLAIN)], None);
    let clean = |what: &str, body: &str| {
        assert!(
            !body.contains(PLAIN) && !body.contains(CANARY),
            "{what}: {body}"
        );
    };
    let chat = |stream: bool| {
        json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    let messages = |stream: bool| {
        json!({"model": "claude-a", "stream": stream, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };

    // Mid-stream errors of same-format streams, with the key in a provider's shape too.
    oai.push(Reply::sse(&[
        o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": PLAIN}, "finish_reason": null}]})),
        format!("data: {}\n\n", json!({"error": {"message": format!("key {CANARY} and {PLAIN}"), "code": PLAIN}})),
    ]));
    let r = post_json(moat.main, "/v1/chat/completions", &[], &chat(true));
    clean("openai stream error", &r.body);
    ant.push(Reply::sse(&[
        a_event("message_start", json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "model": "claude-a", "stop_reason": null, "usage": {"input_tokens": 1, "output_tokens": 0}}})),
        a_event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": PLAIN}})),
        a_event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": format!("{CANARY} / {PLAIN}")}})),
    ]));
    let r = post_json(moat.main, "/v1/messages", &[], &messages(true));
    clean("anthropic stream error", &r.body);
    assert!(r.body.contains("event: error"), "{}", r.body);

    // Successes, whole and streamed, on every endpoint that carries upstream bytes.
    oai.push(Reply::json(200, json!({"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("the key is {PLAIN}")}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})));
    let r = post_json(moat.main, "/v1/chat/completions", &[], &chat(false));
    assert_eq!(r.status, 200, "{}", r.body);
    clean("openai whole", &r.body);
    assert!(r.body.contains("[REDACTED]"), "{}", r.body);
    let mut message = anthropic_message();
    message["content"] = json!([{"type": "text", "text": PLAIN}]);
    ant.push(Reply::json(200, message.clone()));
    let r = post_json(moat.main, "/v1/messages", &[], &messages(false));
    assert_eq!(r.status, 200, "{}", r.body);
    clean("anthropic whole", &r.body);
    ant.push(Reply::json(200, message));
    let r = post_json(
        moat.main,
        "/v1/chat/completions",
        &[],
        &json!({"model": "claude-a", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    clean("translated whole", &r.body);
    oai.push(Reply::json(200, json!({"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": PLAIN}, "finish_reason": "stop"}]})));
    let r = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "input": "hi", "store": false}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    clean("responses whole", &r.body);
    oai.push(Reply::sse(&[
        o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": format!("{PLAIN}!")}, "finish_reason": null}]})),
        o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        "data: [DONE]\n\n".into(),
    ]));
    let r = post_json(
        moat.main,
        "/v1/responses",
        &[],
        &json!({"model": "gpt-4o", "input": "hi", "store": false, "stream": true}).to_string(),
    );
    clean("responses stream", &r.body);
    ant.push(Reply::json(200, json!({"input_tokens": 3, "note": PLAIN})));
    let r = post_json(
        moat.main,
        "/v1/messages/count_tokens",
        &[],
        &json!({"model": "claude-a", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    clean("count_tokens", &r.body);
    ant.push(Reply::json(200, json!({"type": "completion", "completion": PLAIN, "stop_reason": "stop_sequence", "model": "claude-2.1"})));
    let r = post_json(moat.main, "/v1/complete", &[("anthropic-version", "2023-06-01")],
        &json!({"model": "claude-2.1", "max_tokens_to_sample": 5, "prompt": "\n\nHuman: hi\n\nAssistant:"}).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    clean("complete", &r.body);
    // OpenAI errors: every field, at every status a client may see (last: a 429 cools
    // the account).
    for status in [400, 404, 413, 422, 429, 500, 502, 504] {
        oai.push(Reply::json(
            status,
            json!({"error": {"message": format!("bad {PLAIN}"), "type": PLAIN, "code": PLAIN, "param": PLAIN}}),
        ));
        let r = post_json(moat.main, "/v1/chat/completions", &[], &chat(false));
        clean(&format!("openai error {status}"), &r.body);
    }
    let r = get(moat.main, "/v1/models", &[]);
    clean("models", &r.body);
}

/// Current Claude Code sends `role: "system"` messages mid-conversation: they reach an
/// OpenAI-kind backend at their place, or merged into the next user turn for chat
/// templates that take a system message only first; server tools are dropped, or
/// refused with the tool and the backend named.
#[test]
fn mid_conversation_system_messages_and_server_tools_reach_openai_backends() {
    let (keep, merge) = (FakeUpstream::start(), FakeUpstream::start());
    let config = format!(
        r#"
[llm.backends.keep]
kind = "openai"
base_url = "{}/v1"
models = ["keep-*"]

[llm.backends.merge]
kind = "openai"
base_url = "{}/v1"
models = ["merge-*"]
system_messages = "merge"
unsupported_tools = "refuse"
"#,
        keep.url(),
        merge.url()
    );
    let moat = start(&config);
    let ok = || {
        Reply::json(
            200,
            json!({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}),
        )
    };
    let request = |model: &str, tools: Value| {
        json!({
            "model": model, "max_tokens": 16, "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": [{"type": "text", "text": "The user is in Paris."}]},
                {"role": "user", "content": "weather?"}
            ],
            "tools": tools,
        })
        .to_string()
    };
    let server_tool = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}, {"name": "f", "input_schema": {"type": "object"}}]);

    keep.push(ok());
    let r = post_json(
        moat.main,
        "/v1/messages",
        &[],
        &request("keep-1", server_tool.clone()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("moat-dropped-tools"), Some("web_search_20250305"));
    let seen = keep.seen();
    let sent = &seen[0].body;
    let roles = roles_of(sent);
    assert_eq!(
        roles,
        ["system", "user", "assistant", "system", "user"],
        "{sent}"
    );
    assert_eq!(sent["messages"][3]["content"], "The user is in Paris.");
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1, "{sent}");

    merge.push(ok());
    let r = post_json(
        moat.main,
        "/v1/messages",
        &[],
        &request("merge-1", json!([])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = merge.seen();
    let sent = &seen[0].body;
    let roles = roles_of(sent);
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{sent}");
    let last = sent["messages"][3]["content"].to_string();
    assert!(
        last.contains("The user is in Paris.") && last.contains("weather?"),
        "{sent}"
    );

    // Claude Code's web search request: only the server tool, forced. With it left out,
    // the request carries no tool settings at all (OpenAI refuses them without tools).
    keep.push(ok());
    let search = json!({"model": "keep-1", "max_tokens": 16,
        "messages": [{"role": "user", "content": "search"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
        "tool_choice": {"type": "tool", "name": "web_search"}});
    let r = post_json(moat.main, "/v1/messages", &[], &search.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = keep.seen();
    let sent = &seen.last().unwrap().body;
    assert!(
        sent.get("tools").is_none() && sent.get("tool_choice").is_none(),
        "{sent}"
    );

    let r = post_json(
        moat.main,
        "/v1/messages",
        &[],
        &request("merge-1", server_tool),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("web_search_20250305") && message.contains("\"merge\""),
        "{message}"
    );
    assert_eq!(
        merge.seen().len(),
        1,
        "a refused request never reaches the backend"
    );
}

/// `llm.upstream_timeout` bounds silence, not a whole stream: a long answer from a slow
/// local model that keeps coming is not cut.
#[test]
fn a_stream_longer_than_the_upstream_timeout_is_not_cut_while_it_keeps_coming() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let config = format!("[llm]\nupstream_timeout = \"2s\"\n{}", backends(&ant, &oai));
    let moat = start(&config);
    let mut chunks: Vec<(Duration, String)> = (0..5)
        .map(|i| {
            let delay = if i == 0 { Duration::ZERO } else { Duration::from_millis(900) };
            (delay, o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": format!("part{i} ")}, "finish_reason": null}]})))
        })
        .collect();
    chunks.push((Duration::from_millis(900), o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))));
    chunks.push((Duration::ZERO, "data: [DONE]\n\n".into()));
    let mut reply = Reply::sse(&[]);
    reply.chunks = chunks;
    oai.push(reply);
    let started = Instant::now();
    let r = post_json(moat.main, "/v1/chat/completions", &[],
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string());
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "the stream took its time"
    );
    assert!(
        r.body.contains("part4") && r.body.ends_with("data: [DONE]\n\n"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("upstream_timeout"), "{}", r.body);
}

/// The server's own refusals on the LLM routes come in the shape each SDK parses.
#[test]
fn the_servers_own_refusals_speak_each_apis_error_format() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let home = new_home();
    std::fs::write(home.path().join("config.toml"), backends(&ant, &oai)).unwrap();
    let moat = Moat::start_in(
        home,
        &[],
        &[("FAKE_KEY", CANARY), ("MOAT_MAX_BODY_BYTES", "1000")],
        None,
    );
    let host = moat.main;
    let too_large = |path: &str| {
        raw(
            moat.main,
            format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    let r = too_large("/v1/chat/completions");
    assert_eq!(r.status, 413);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "request_too_large", "{v}");
    assert!(
        v["error"].get("param").is_some() && v.get("type").is_none(),
        "{v}"
    );
    let r = too_large("/v1/messages");
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "request_too_large", "{v}");
    let r = too_large("/v1/responses");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // A wrong method, in each format.
    let r = get(moat.main, "/v1/messages", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{r:?}");
    assert_eq!(r.json()["type"], "error");
    let r = get(moat.main, "/v1/chat/completions", &[]);
    assert_eq!(r.status, 405);
    assert!(r.json()["error"]["message"].as_str().is_some() && r.json().get("type").is_none());
    // Not an LLM route: the common shape.
    let r = raw(moat.main, format!("POST /health HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(r.json()["error"]["code"], "request_too_large");
}

/// `/v1/models` lists what a glob serves: each glob backend's own list, filtered by its
/// globs, asked once and reused.
#[test]
fn the_model_list_shows_what_globs_serve() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    ant.push(Reply::json(200, json!({"data": [{"id": "claude-a", "type": "model"}, {"id": "other-model"}], "has_more": false})));
    oai.push(Reply::json(
        200,
        json!({"object": "list", "data": [{"id": "gpt-4o"}, {"id": "text-embedding-3"}]}),
    ));
    let config = format!(
        "{}\n[llm.aliases]\nsonnet = \"claude-sonnet-4-5\"\n",
        backends(&ant, &oai)
    );
    let moat = start(&config);
    let ids = |r: common::Resp| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = get(moat.main, "/v1/models", &[]);
    assert_eq!(ids(r), ["claude-a", "gpt-4o", "sonnet"]);
    assert_eq!(ant.seen()[0].path, "/v1/models");
    assert_eq!(oai.seen()[0].path, "/v1/models");
    assert_eq!(
        oai.seen()[0]
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        Some(format!("Bearer {CANARY}")),
        "asked with the backend's own key"
    );
    let r = get(
        moat.main,
        "/v1/models",
        &[("anthropic-version", "2023-06-01")],
    );
    assert_eq!(ids(r), ["claude-a", "gpt-4o", "sonnet"]);
    assert_eq!(
        ant.seen().len() + oai.seen().len(),
        2,
        "the lists are reused"
    );
}

/// Errors cross formats as what each client acts on: a context overflow, an overload.
#[test]
fn upstream_errors_cross_formats_as_what_clients_act_on() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    let anthropic_client = |model: &str| {
        post_json(moat.main, "/v1/messages", &[],
            &json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string())
    };
    let openai_client = |model: &str| {
        post_json(
            moat.main,
            "/v1/chat/completions",
            &[],
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )
    };
    oai.push(Reply::json(400, json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})));
    let r = anthropic_client("gpt-4o");
    assert_eq!(r.status, 400);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("prompt is too long"), "{message}");
    // llama.cpp's words for it (Claude Code's system prompt alone overflows a small model).
    oai.push(Reply::json(400, json!({"error": {"code": 400, "message": "request (22955 tokens) exceeds the available context size (8192 tokens), try increasing it", "type": "exceed_context_size_error"}})));
    let r = anthropic_client("gpt-4o");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("prompt is too long"), "{message}");
    ant.push(Reply::json(400, json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}})));
    let r = openai_client("claude-a");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["code"],
        "context_length_exceeded",
        "{}",
        r.body
    );
    ant.push(Reply::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let r = openai_client("claude-a");
    assert_eq!(r.status, 503, "{}", r.body);
    oai.push(Reply::json(
        503,
        json!({"error": {"message": "The server is overloaded", "type": "server_error"}}),
    ));
    let r = anthropic_client("gpt-4o");
    assert_eq!(r.status, 529, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}

/// A translated Anthropic stream opens with an estimate of the input tokens (clients
/// budget their context by it), corrected at the end; a stop sequence the server names
/// reads as one.
#[test]
fn translated_streams_estimate_input_tokens_and_name_stop_sequences() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    oai.push(Reply::sse(&[
        o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": null}]})),
        o_event(json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "###"}]})),
        o_event(json!({"id": "c", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": 1}})),
        "data: [DONE]\n\n".into(),
    ]));
    let long = "word ".repeat(400);
    let r = post_json(moat.main, "/v1/messages", &[],
        &json!({"model": "gpt-4o", "max_tokens": 5, "stream": true, "stop_sequences": ["###"], "messages": [{"role": "user", "content": long}]}).to_string());
    let events = sse_events(&r.body);
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    let estimate = start["message"]["usage"]["input_tokens"].as_u64().unwrap();
    assert!(estimate > 100, "{}", r.body);
    let delta = events
        .iter()
        .find(|(n, _)| n.as_deref() == Some("message_delta"))
        .unwrap();
    let delta: Value = serde_json::from_str(&delta.1).unwrap();
    assert_eq!(delta["usage"]["input_tokens"], 321, "{delta}");
    assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
    assert_eq!(delta["delta"]["stop_sequence"], "###");
}

/// A stored response can be read back as the stream that made it, and resumed.
#[test]
fn a_stored_response_replays_as_a_stream() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let moat = start(&backends(&ant, &oai));
    oai.push(Reply::json(200, json!({"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}]})));
    let r = post_json(moat.main, "/v1/responses", &[],
        &json!({"model": "gpt-4o", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = get(moat.main, &format!("/v1/responses/{id}?stream=true"), &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&r.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(
        names.contains(&"response.output_text.delta")
            && names.contains(&"response.function_call_arguments.done"),
        "{names:?}"
    );
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["response"]["id"], id.as_str());
    for (i, (_, data)) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["sequence_number"], i as u64);
    }
    let r = get(
        moat.main,
        &format!("/v1/responses/{id}?stream=true&starting_after=2"),
        &[],
    );
    let resumed = sse_events(&r.body);
    assert_eq!(resumed.len(), events.len() - 3);
    let first: Value = serde_json::from_str(&resumed[0].1).unwrap();
    assert_eq!(first["sequence_number"], 3);
}

/// What current Claude Code sends, on its defaults, reaches an OpenAI-kind backend whole:
/// a system message after the first user turn, structured output for its titles, a
/// 64,000-token max_tokens, its reasoning echoed back, and a PDF it read.
#[test]
fn claude_codes_requests_reach_an_openai_backend_whole() {
    let (ant, oai) = (FakeUpstream::start(), FakeUpstream::start());
    let config = backends(&ant, &oai).replace(
        "models = [\"gpt-*\"]",
        "models = [\"gpt-*\"]\nmax_output_tokens = 4096",
    );
    let moat = start(&config);
    let ok = || {
        Reply::json(
            200,
            json!({"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"title\":\"x\"}"}, "finish_reason": "stop"}]}),
        )
    };
    oai.push(ok());
    let first = json!({
        "model": "gpt-4o", "max_tokens": 64000, "stream": false,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}},
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"}, {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"}, {"type": "text", "text": "Read hello.pdf", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "Agents and skills available: ..."}
        ],
        "metadata": {"user_id": "{\"session_id\":\"s\"}"},
    });
    let r = post_json(
        moat.main,
        "/v1/messages?beta=true",
        &[(
            "anthropic-beta",
            "mid-conversation-system-2026-04-07,structured-outputs-2025-12-15",
        )],
        &first.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = oai.seen();
    let sent = &seen[0].body;
    assert_eq!(sent["max_tokens"], 4096, "capped: {sent}");
    assert_eq!(sent["response_format"]["type"], "json_schema", "{sent}");
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"]["required"][0],
        "title"
    );
    let roles = roles_of(sent);
    assert_eq!(roles, ["system", "user", "system"], "{sent}");

    oai.push(ok());
    let pdf = "JVBERi0xLjQK";
    let second = json!({
        "model": "gpt-4o", "max_tokens": 64000,
        "messages": [
            {"role": "user", "content": "Read hello.pdf"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The user wants the file.", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "hello.pdf"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "PDF file read", "is_error": false, "cache_control": {"type": "ephemeral"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}}
            ]}
        ],
    });
    let r = post_json(moat.main, "/v1/messages", &[], &second.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = oai.seen();
    let sent = &seen[1].body;
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(
        messages[1]["reasoning_content"], "The user wants the file.",
        "{sent}"
    );
    assert_eq!(messages[2]["role"], "tool");
    let file = &messages[3]["content"][0];
    assert_eq!(file["type"], "file", "{sent}");
    assert_eq!(
        file["file"]["file_data"],
        format!("data:application/pdf;base64,{pdf}")
    );
}

/// The roles of a chat request's messages, in order.
fn roles_of(body: &Value) -> Vec<&str> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
}
