//! Arbitrary bytes through the SSE parser, split at an arbitrary point. Properties: never
//! panics, the split never changes the events, and no event exceeds the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_llm::sse::{MAX_EVENT_BYTES, SseParser};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let whole = SseParser::new().feed(data);
    let cut = usize::from(split).min(data.len());
    let mut p = SseParser::new();
    let split_result = p.feed(&data[..cut]).and_then(|mut first| {
        first.extend(p.feed(&data[cut..])?);
        Ok(first)
    });
    if let (Ok(a), Ok(b)) = (&whole, &split_result) {
        assert_eq!(a, b);
        assert!(a.iter().all(|e| e.data.len() <= MAX_EVENT_BYTES));
    }
});
