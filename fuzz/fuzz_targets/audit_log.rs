//! Arbitrary bytes as an audit segment, checkpoint file and head. Properties: reading and
//! verifying never panic; a line that checks as intact hashes to what it says; and a
//! made-up head or checkpoint never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_audit::{AuditKey, Trust, entry, verify};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if let Some(c) = entry::check(line) {
            let _ = entry::unhex(c.hash_hex);
        }
        let _ = entry::parse(line);
    }
    let third = data.len() / 3;
    let (segment, rest) = data.split_at(third);
    let (checkpoints, head) = rest.split_at(rest.len() / 2);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("0000000000000001.jsonl"), segment).expect("write");
    std::fs::write(dir.path().join("checkpoints.jsonl"), checkpoints).expect("write");
    std::fs::write(dir.path().join("head"), head).expect("write");
    let key = AuditKey::from_seed(&[7; 32]);
    let public = key.public();
    let trust = Trust {
        public: &public,
        anchor: None,
    };
    let report = verify::verify(dir.path(), &trust, None, &mut |_, _| {}).expect("readable");
    // Only the key's holder signs, and this fuzzer never calls `sign`: no head or
    // checkpoint it makes up may verify.
    assert!(report.head.is_none() && report.last_checkpoint.is_none());
});
