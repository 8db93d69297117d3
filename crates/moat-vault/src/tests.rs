use super::*;

const PW: &[u8] = b"correct horse battery staple";
/// Cheap parameters so the tests are quick; the format records them per file.
const FAST: KdfParams = KdfParams {
    m_kib: 8 * 1024,
    t: 1,
    p: 1,
};

fn new_vault() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.moat");
    Vault::create(&path, PW, FAST).unwrap();
    Vault::update(&path, PW, |v| {
        v.add(
            "anthropic-main",
            b"sk-ant-canary-vault-value".to_vec(),
            Some("work".into()),
            Some("anthropic".into()),
        )
    })
    .unwrap();
    (dir, path)
}

#[test]
fn round_trip_with_metadata() {
    let (_d, path) = new_vault();
    let v = Vault::open(&path, PW).unwrap();
    let e = v.get("anthropic-main").unwrap();
    assert_eq!(e.value(), b"sk-ant-canary-vault-value");
    assert_eq!(
        (e.description(), e.scope()),
        (Some("work"), Some("anthropic"))
    );
    assert!(e.created() > 0 && e.updated() >= e.created());
    assert_eq!(v.entries().count(), 1);
    assert_eq!(v.kdf(), FAST);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_stolen_file_reveals_no_names_or_values() {
    let (_d, path) = new_vault();
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for needle in ["anthropic", "canary", "work"] {
        assert!(!text.contains(needle), "{needle} visible in the file");
    }
}

#[test]
fn wrong_password_changes_nothing() {
    let (_d, path) = new_vault();
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        Vault::open(&path, b"wrong"),
        Err(VaultError::WrongPassword)
    ));
    assert!(matches!(
        Vault::update(&path, b"wrong", |v| v.remove("anthropic-main")),
        Err(VaultError::WrongPassword)
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn password_change_rewraps_and_keeps_entries() {
    let (_d, path) = new_vault();
    Vault::update(&path, PW, |v| v.change_password(b"new password", FAST)).unwrap();
    assert!(matches!(
        Vault::open(&path, PW),
        Err(VaultError::WrongPassword)
    ));
    let v = Vault::open(&path, b"new password").unwrap();
    assert_eq!(
        v.get("anthropic-main").unwrap().value(),
        b"sk-ant-canary-vault-value"
    );
}

#[test]
fn every_single_byte_change_is_refused_without_panic() {
    let (_d, path) = new_vault();
    let good = std::fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            Vault::open(&path, PW).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
    std::fs::write(&path, &good).unwrap();
    assert!(Vault::open(&path, PW).is_ok());
}

#[test]
fn every_truncation_is_refused() {
    let (_d, path) = new_vault();
    let good = std::fs::read(&path).unwrap();
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).unwrap();
        assert!(
            matches!(Vault::open(&path, PW), Err(VaultError::Corrupt(_))),
            "length {len}"
        );
    }
}

#[test]
fn hostile_kdf_parameters_are_refused_before_deriving() {
    let (_d, path) = new_vault();
    let mut bad = std::fs::read(&path).unwrap();
    bad[10..14].copy_from_slice(&u32::MAX.to_le_bytes()); // 4 TiB of memory
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        Vault::open(&path, PW),
        Err(VaultError::Corrupt(_))
    ));
}

#[test]
fn newer_versions_and_foreign_files() {
    let (_d, path) = new_vault();
    let mut newer = std::fs::read(&path).unwrap();
    newer[8] = 2;
    std::fs::write(&path, &newer).unwrap();
    assert!(matches!(Vault::open(&path, PW), Err(VaultError::TooNew(2))));
    std::fs::write(&path, b"{\"not\": \"a vault\"}").unwrap();
    assert!(matches!(
        Vault::open(&path, PW),
        Err(VaultError::Corrupt(_))
    ));
}

#[test]
fn names_are_validated_and_unique() {
    let (_d, path) = new_vault();
    let r = Vault::update(&path, PW, |v| v.add("bad name", vec![1], None, None));
    assert!(matches!(r, Err(VaultError::BadName(_))));
    // What a person may name an entry (moat's own entries, such as OAuth tokens named
    // after a backend, are held to `valid_name` only).
    for name in [".", "..", "-x", ".hidden"] {
        assert!(
            matches!(crate::check_new_name(name), Err(VaultError::BadName(_))),
            "{name}"
        );
    }
    // A key pasted where its name belongs (spelled in parts: no key-shaped literal here).
    let pasted = format!("{}-{}-{}", "sk", "proj", "0123456789abcdefghijKLMNOP");
    assert!(matches!(
        crate::check_new_name(&pasted),
        Err(VaultError::KeyAsName)
    ));
    assert!(!VaultError::KeyAsName.to_string().contains(&pasted));
    let slack = format!("{}-{}", "xoxb", "123456789012-abcdefghijkl");
    assert!(matches!(
        crate::check_new_name(&slack),
        Err(VaultError::KeyAsName)
    ));
    for name in [
        "_private.key-2",
        "hf_token_for_private_models",
        "gsk_groq_production_key",
        "xai-production-api-key-01",
        "moat.oauth.hf-inference-endpoints-eu.main",
    ] {
        assert!(crate::check_new_name(name).is_ok(), "{name}");
    }
    let r = Vault::update(&path, PW, |v| {
        v.add(
            "moat.oauth.hf-inference-endpoints-eu.main",
            vec![1],
            None,
            None,
        )
    });
    assert!(r.is_ok(), "{r:?}");
    Vault::update(&path, PW, |v| {
        v.remove("moat.oauth.hf-inference-endpoints-eu.main")
    })
    .unwrap();
    let r = Vault::update(&path, PW, |v| v.add("anthropic-main", vec![1], None, None));
    assert!(matches!(r, Err(VaultError::EntryExists(_))));
    let r = Vault::update(&path, PW, |v| v.rename("nope", "other"));
    assert!(matches!(r, Err(VaultError::NoEntry(_))));
    Vault::update(&path, PW, |v| v.rename("anthropic-main", "claude")).unwrap();
    Vault::update(&path, PW, |v| v.remove("claude")).unwrap();
    assert_eq!(Vault::open(&path, PW).unwrap().entries().count(), 0);
}

#[test]
fn concurrent_writers_are_serialized() {
    let (_d, path) = new_vault();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                Vault::update(&path, PW, |v| {
                    v.add(&format!("key{i}"), vec![i as u8; 8], None, None)
                })
                .unwrap()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(Vault::open(&path, PW).unwrap().entries().count(), 5);
}

#[test]
fn debug_never_shows_values() {
    let (_d, path) = new_vault();
    let v = Vault::open(&path, PW).unwrap();
    let shown = format!("{v:?} {:?}", v.get("anthropic-main").unwrap());
    assert!(!shown.contains("canary"), "{shown}");
}

#[test]
fn create_refuses_to_overwrite() {
    let (_d, path) = new_vault();
    assert!(matches!(
        Vault::create(&path, PW, FAST),
        Err(VaultError::Exists(_))
    ));
}
