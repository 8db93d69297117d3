//! Arbitrary JSON through request and response translation in both directions, and
//! arbitrary bytes through both stream translators. Properties: never panics; every
//! translated request is a JSON object naming the upstream model; streams end well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_llm::sse::SseParser;
use moat_llm::translate::stream::{AnthropicToOpenAi, OpenAiToAnthropic, StreamTranslator};
use moat_llm::translate::{request, response};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        for out in [
            request::openai_to_anthropic(&v, "m", 16),
            request::anthropic_to_openai(&v, "m"),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(out["model"], "m");
        }
        let _ = response::anthropic_to_openai(&v);
        let _ = response::openai_to_anthropic(&v);
    }
    let translators: [Box<dyn StreamTranslator>; 2] = [
        Box::new(AnthropicToOpenAi::new("m", true)),
        Box::new(OpenAiToAnthropic::new("m")),
    ];
    for mut t in translators {
        let mut p = SseParser::new();
        if let Ok(events) = p.feed(data) {
            for ev in events {
                let _ = t.event(ev);
            }
        }
        let _ = t.end();
        assert!(t.done());
    }
});
