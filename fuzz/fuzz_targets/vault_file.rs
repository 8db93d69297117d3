//! Arbitrary bytes as a vault file. Properties: parsing and opening never panic, and a
//! file not made by moat with this password never opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_vault::{Vault, format};

fuzz_target!(|data: &[u8]| {
    let _ = format::parse_header(data);
    // Opening runs Argon2id with the header's (bounded) parameters; keep inputs whose
    // parameters are the cheapest so the fuzzer stays fast.
    if data.len() > 22 && data[10..22] == [0, 32, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("vault.moat");
        std::fs::write(&path, data).expect("write");
        assert!(Vault::open(&path, b"fuzz-password").is_err());
    }
});
