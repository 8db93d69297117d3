//! bench/egress: what the SSRF policy costs per URL, DNS excluded.
//!
//! The inputs are the bypass table from the tests (every notation of loopback, metadata,
//! private ranges, odd schemes, userinfo, ports) plus ordinary public URLs. Three loops
//! over the same inputs, interleaved over several rounds, best round kept:
//!
//! 1. baseline: `url::Url::parse` alone (what any URL-handling client pays anyway);
//! 2. the decision: `Policy::check_url` (parse, scheme, userinfo, port, name rules,
//!    address classification, allow/block lists) with a policy that has lists;
//! 3. the address check a resolved name gets: `Policy::check_addr` per address.
//!
//! Reports ns per URL for each, the ratio decision / parse, and the target (<= 2 µs per
//! decision). Usage: moat-bench-egress-policy [ROUNDS]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use moat_net::egress::Policy;

const TABLE: &str = include_str!("../../../crates/moat-net/tests/ssrf/bypasses.tsv");

fn urls() -> Vec<String> {
    let mut out: Vec<String> = TABLE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(_, u)| {
            u.replace("\\t", "\t")
                .replace("\\n", "\n")
                .replace("\\\\", "\\")
        })
        .collect();
    // As many ordinary URLs as bypass attempts: the common case is a public page.
    let n = out.len();
    for i in 0..n {
        out.push(format!(
            "https://docs{i}.example.com/guide/page-{i}.html?ref=moat&lang=en#section-{}",
            i % 7
        ));
    }
    out
}

fn per_item(rounds: usize, items: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut sink = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        sink += f();
        let ns = start.elapsed().as_nanos() as f64 / items as f64;
        best = best.min(ns);
    }
    (best, sink)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let urls = urls();
    // Lists of a realistic size, so that matching them is part of the cost.
    let config = moat_core::config::egress::EgressConfig {
        allow_hosts: vec!["wiki.internal".into(), "*.corp.example".into()],
        block_hosts: vec!["*.evil.example".into(), "tracker.example.net".into()],
        allow_cidrs: vec!["192.168.1.20/32".into()],
        block_cidrs: vec!["203.0.113.0/24".into(), "2001:db8:dead::/48".into()],
        ..Default::default()
    };
    let policy = Policy::from_config(&config).expect("a valid policy");
    let addrs: Vec<IpAddr> = (0..urls.len() as u32)
        .map(|i| IpAddr::from((i.wrapping_mul(2_654_435_761)).to_be_bytes()))
        .collect();

    let mut parse_ns = f64::MAX;
    let mut decide_ns = f64::MAX;
    let mut addr_ns = f64::MAX;
    let mut sink = 0usize;
    // Interleaved so that a noisy neighbour hurts all three alike.
    for _ in 0..5 {
        let (p, s1) = per_item(rounds / 5, urls.len(), || {
            urls.iter()
                .filter(|u| url::Url::parse(black_box(u)).is_ok())
                .count()
        });
        let (d, s2) = per_item(rounds / 5, urls.len(), || {
            urls.iter()
                .filter(|u| policy.check_url(black_box(u)).is_ok())
                .count()
        });
        let (a, s3) = per_item(rounds / 5, addrs.len(), || {
            addrs
                .iter()
                .filter(|a| {
                    policy
                        .check_addr("bench.example.com", **black_box(a))
                        .is_ok()
                })
                .count()
        });
        parse_ns = parse_ns.min(p);
        decide_ns = decide_ns.min(d);
        addr_ns = addr_ns.min(a);
        sink += s1 + s2 + s3;
    }
    println!(
        "egress policy, {} URLs ({} bypass attempts, the rest ordinary), best of {rounds} rounds",
        urls.len(),
        urls.len() / 2
    );
    println!("baseline: url::Url::parse alone      {parse_ns:8.0} ns/URL");
    println!("policy decision (check_url)          {decide_ns:8.0} ns/URL");
    println!("address check (check_addr)           {addr_ns:8.0} ns/address");
    println!(
        "decision / parse                     {:8.2}x",
        decide_ns / parse_ns
    );
    println!(
        "decision per URL: {:.2} µs (target <= 2 µs: {})",
        decide_ns / 1000.0,
        if decide_ns <= 2000.0 { "met" } else { "misses" }
    );
    black_box(sink);
}
