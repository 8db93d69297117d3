//! Golden tests of translation in both directions: each file in `tests/golden/` holds an
//! input and the exact expected output, for requests, whole responses and streams.
//! Volatile fields (`created`, generated ids) are normalised before comparing.
//!
//! To review a change in output, run with `MOAT_BLESS=1` and read the diff of the files.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::path::Path;

use moat_llm::sse::SseParser;
use moat_llm::translate::responses::{ChatToResponses, Echo};
use moat_llm::translate::stream::{AnthropicToOpenAi, OpenAiToAnthropic, StreamTranslator};
use moat_llm::translate::{request, response, responses};
use serde_json::{Value, json};

fn translate(kind: &str, input: &Value) -> Value {
    match kind {
        "request_openai_to_anthropic" => {
            request::openai_to_anthropic(input, "upstream-model", 4096)
                .unwrap_or_else(|e| json!({"error": e.message}))
        }
        "request_anthropic_to_openai" => request::anthropic_to_openai(input, "upstream-model")
            .unwrap_or_else(|e| json!({"error": e.message})),
        "response_anthropic_to_openai" => response::anthropic_to_openai(input),
        "response_openai_to_anthropic" => response::openai_to_anthropic(input),
        "stream_anthropic_to_openai" => {
            let include_usage = input["include_usage"].as_bool().unwrap_or(false);
            run_stream(
                &mut AnthropicToOpenAi::new("requested-model", include_usage),
                input,
            )
        }
        "stream_openai_to_anthropic" => {
            run_stream(&mut OpenAiToAnthropic::new("requested-model"), input)
        }
        "request_responses_to_chat" => responses::to_chat(input, "upstream-model")
            .unwrap_or_else(|e| json!({"error": e.message})),
        "response_chat_to_responses" => responses::from_chat(
            &input["chat"],
            &Echo::new(&input["request"], "requested-model"),
        ),
        "stream_chat_to_responses" => run_stream(
            &mut ChatToResponses::new(Echo::new(&input["request"], "requested-model")),
            input,
        ),
        other => panic!("unknown golden kind {other}"),
    }
}

/// Feeds the stream's text one byte at a time (the hardest framing), then ends it.
fn run_stream(t: &mut dyn StreamTranslator, input: &Value) -> Value {
    let text = input["stream"]
        .as_str()
        .expect("a stream case has a `stream` string");
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    for b in text.as_bytes() {
        for ev in parser.feed(std::slice::from_ref(b)).unwrap() {
            out.extend(t.event(ev));
        }
    }
    if !t.done() {
        out.extend(t.end());
    }
    let bytes: Vec<u8> = out.concat();
    let mut p = SseParser::new();
    let events = p.feed(&bytes).unwrap();
    Value::Array(
        events
            .into_iter()
            .map(|e| {
                let data = serde_json::from_str::<Value>(&e.data).unwrap_or(Value::String(e.data));
                json!({"event": e.event, "data": data})
            })
            .collect(),
    )
}

fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match (k.as_str(), &*val) {
                    ("created" | "created_at", Value::Number(_)) => *val = json!(0),
                    ("id" | "item_id", Value::String(s)) if s.contains("moat") => {
                        *val = json!("<generated>")
                    }
                    _ => normalise(val),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("MOAT_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "golden cases missing");
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut case: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut got = translate(case["kind"].as_str().unwrap(), &case["input"]);
        normalise(&mut got);
        if bless {
            case["expected"] = got;
            std::fs::write(&path, serde_json::to_string_pretty(&case).unwrap() + "\n").unwrap();
        } else if case["expected"] != got {
            failures.push(format!(
                "{}:\nexpected {}\n     got {}",
                path.display(),
                serde_json::to_string_pretty(&case["expected"]).unwrap(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
