//! Recall and false positives on variants the phrase lists were not written from:
//! languages beyond the lists' first five, impersonation of developers and system
//! messages, splitting and spacing tricks, instructions in quoted or code context, and
//! polite requests to AI readers, against benign texts that look like them (security
//! writing that quotes attacks, everyday "disregard my last email").
//!
//! Each set was written apart, by someone who saw neither the lists nor the other sets.
//! `dev_*` is the one the lists were tuned on (recall 0.97, no false positive). `dev2_*`
//! was scored blind once (recall 0.50, 4 false positives in 25) and then tuned on too
//! (0.87, none). `blind_*` was scored once the
//! tuning was done, and not tuned on: its floor holds what it measured then, and its
//! figure (docs/guard.md) is the one to believe. "Flagged" means tier medium or high.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use moat_guard::{Scanner, Tier};

/// What the blind set measured when first scored (recall 0.51, no false positive in 25):
/// a floor against regressions. The target, recall 0.9 with at most 1 false positive in
/// 25 on variants the lists were not written from, is not met (docs/guard.md).
const BLIND_RECALL_FLOOR: f64 = 0.5;
const BLIND_FALSE_POSITIVES: usize = 1;

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn flagged(text: &str) -> bool {
    Scanner::global().scan(text).tier >= Tier::Medium
}

/// (recall, false positives, what was missed, what was flagged wrongly)
fn score<'a>(attacks: &[&'a str], benign: &[&'a str]) -> (f64, usize, Vec<&'a str>, Vec<&'a str>) {
    let missed: Vec<&str> = attacks.iter().copied().filter(|t| !flagged(t)).collect();
    let wrong: Vec<&str> = benign.iter().copied().filter(|t| flagged(t)).collect();
    let recall = 1.0 - missed.len() as f64 / attacks.len() as f64;
    (recall, wrong.len(), missed, wrong)
}

fn check(name: &str, attacks: &str, benign: &str, recall_floor: f64, max_fps: usize) {
    let (attacks, benign) = (lines(attacks), lines(benign));
    let (recall, fps, missed, wrong) = score(&attacks, &benign);
    eprintln!(
        "{name}: recall {recall:.2} on {} attacks, {fps} false positives in {} look-alikes",
        attacks.len(),
        benign.len()
    );
    for m in &missed {
        eprintln!("  missed: {m}");
    }
    for w in &wrong {
        eprintln!("  flagged: {w}");
    }
    assert!(
        recall >= recall_floor,
        "{name}: recall {recall:.2} is below {recall_floor}"
    );
    assert!(
        fps <= max_fps,
        "{name}: {fps} false positives in {} look-alikes (at most {max_fps})",
        benign.len()
    );
}

#[test]
fn dev_variants() {
    check(
        "dev",
        include_str!("data/dev_injection.txt"),
        include_str!("data/dev_benign.txt"),
        0.9,
        1,
    );
}

#[test]
fn dev2_variants() {
    check(
        "dev2",
        include_str!("data/dev2_injection.txt"),
        include_str!("data/dev2_benign.txt"),
        0.85,
        1,
    );
}

#[test]
fn blind_variants() {
    check(
        "blind",
        include_str!("data/blind_injection.txt"),
        include_str!("data/blind_benign.txt"),
        BLIND_RECALL_FLOOR,
        BLIND_FALSE_POSITIVES,
    );
}
