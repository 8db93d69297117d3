//! Vault unlock vs. the raw Argon2id derivation with the same parameters, in one run.
//! Unlocking should cost the KDF and nothing else (ratio ≈ 1.0); reading a secret after
//! unlock should take well under a microsecond.
//!
//! Usage: `moat-bench-vault-unlock [ROUNDS]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use moat_vault::{KdfParams, Vault};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    let kdf = KdfParams::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vault.moat");
    let password = b"benchmark password";
    Vault::create(&path, password, kdf).expect("create");
    Vault::update(&path, password, |v| {
        for i in 0..50 {
            v.add(&format!("key-{i}"), vec![b'x'; 64], None, None)?;
        }
        Ok(())
    })
    .expect("fill");

    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = [7u8; 32];
    let (mut raw, mut unlock) = (Vec::new(), Vec::new());
    // Alternate so drift on a shared machine hits both alike.
    for _ in 0..rounds {
        let t = Instant::now();
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, &salt, &mut out)
            .expect("argon2");
        black_box(out);
        raw.push(t.elapsed());
        let t = Instant::now();
        black_box(Vault::open(&path, password).expect("open"));
        unlock.push(t.elapsed());
    }
    let (raw, unlock) = (median(raw), median(unlock));

    let vault = Vault::open(&path, password).expect("open");
    let reads = 1_000_000u32;
    let t = Instant::now();
    for i in 0..reads {
        black_box(
            vault
                .get(black_box(if i % 2 == 0 { "key-7" } else { "key-42" }))
                .map(|e| e.value().len()),
        );
    }
    let per_read = t.elapsed() / reads;

    println!(
        "Argon2id m={}KiB t={} p={}, median of {rounds} alternating rounds",
        kdf.m_kib, kdf.t, kdf.p
    );
    println!("raw Argon2id      {:>10.1} ms", raw.as_secs_f64() * 1e3);
    println!("vault unlock      {:>10.1} ms", unlock.as_secs_f64() * 1e3);
    println!(
        "ratio unlock/raw  {:>10.3}   (target ~1.0)",
        unlock.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "secret read       {:>10.1} ns   (target <= 1000 ns; 50 entries)",
        per_read.as_nanos() as f64
    );
}
