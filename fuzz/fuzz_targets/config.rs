//! Arbitrary bytes as config.toml. Property: loading returns a config or an error, never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_core::config::Config;
use moat_core::home::Home;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.toml"), data).expect("write");
    let _ = Config::load_with(&Home::at(dir.path()), |_| None, &[]);
});
