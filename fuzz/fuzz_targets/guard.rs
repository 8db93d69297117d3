//! Arbitrary bytes (as lossy UTF-8) through the prompt-injection scanner and spotlighting.
//! Properties: never panics; every span lies inside the text on character boundaries;
//! the score is in 0..=1 and agrees with the tier; a spotlighted text holds its boundary
//! exactly twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_guard::{Scanner, Tier};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let report = Scanner::global().scan(&text);
    assert!((0.0..=1.0).contains(&report.score));
    assert_eq!(report.tier, Tier::of(report.score));
    for s in &report.signals {
        assert!(s.span.start <= s.span.end && s.span.end <= text.len(), "{s:?}");
        assert!(text.is_char_boundary(s.span.start) && text.is_char_boundary(s.span.end));
    }
    let (wrapped, boundary) = moat_guard::spotlight("fuzz", &text);
    assert_eq!(wrapped.matches(&boundary).count(), 2);
});
