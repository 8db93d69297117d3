//! Arbitrary text through the redactor. Properties: never panics, and a known secret
//! planted anywhere in the text never survives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_core::redact::Redactor;

const SECRET: &str = "zq8-fuzz-known-secret-value";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let redactor = Redactor::new();
    redactor.add_known_secret(SECRET);
    let _ = redactor.redact(&text);
    let cut = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
    let planted = format!("{}{SECRET}{}", &text[..cut], &text[cut..]);
    assert!(!redactor.redact(&planted).contains(SECRET));
});
