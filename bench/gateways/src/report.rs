//! The Markdown report: what was run where and how, then the figures, then every raw
//! measurement and every failure, so a reader can check a claim against its data.

use std::fmt::Write as _;

use crate::gateway::Kind;
use crate::stats::{self, Cell, Spread};
use crate::suite::{Options, Results, Status};

pub(crate) fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An added figure: signed, since a gateway can measure faster than direct within noise.
fn signed(us: f64) -> String {
    if us >= 0.0 {
        format!("+{}", ms(us))
    } else {
        ms(us)
    }
}

fn spread_ms(s: Option<Spread>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => signed(s.median),
        Some(s) => format!("{} ({}…{})", signed(s.median), signed(s.min), signed(s.max)),
    }
}

fn added_ms(s: Option<Spread>) -> String {
    s.map_or("–".into(), |s| signed(s.median))
}

fn median_ms(s: Option<Spread>) -> String {
    s.map_or("–".into(), |s| ms(s.median))
}

fn rps(s: Option<Spread>) -> String {
    s.map_or("–".into(), |s| format!("{:.0}", s.median))
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, v)| v.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores available, {mem} memory, Linux {}",
        kernel.trim()
    )
}

/// Whether a cell is worth a row: the target does this workload.
fn has(cell: &Cell) -> bool {
    cell.repeats > 0
}

pub(crate) fn markdown(opts: &Options, r: &Results, chart: Option<&str>, stamp: &str) -> String {
    let mut md = String::new();
    let ran: Vec<Kind> = r
        .targets
        .iter()
        .filter(|t| matches!(t.status, Status::Ran))
        .map(|t| t.kind)
        .collect();
    let gateways: Vec<Kind> = ran.iter().copied().filter(|k| *k != Kind::Direct).collect();
    let cell = |w: &str, c: usize, k: Kind| stats::cell(&r.runs, w, c, k);
    let mid = opts
        .concurrency
        .get(opts.concurrency.len() / 2)
        .copied()
        .unwrap_or(1);
    let _ = writeln!(
        md,
        "# Gateway overhead: moat and its peers against the direct upstream\n"
    );
    let _ = writeln!(
        md,
        "Run {stamp}, {:.0} min. {} repeats of {} s per measurement after {} s of warm-up; \
         latencies in milliseconds, medians over repeats with (min…max) when they differ. \
         \"Added\" is the gateway's figure minus the direct figure of the same repeat. \
         Only the measured gateway runs: the others are stopped (SIGSTOP) meanwhile. Each measurement warms up on its own \
         connections first. A streamed request takes ~1.3 s, so at concurrency 1 and 16 a repeat has fewer than 100 of \
         them and its \"p99\" is its slowest request. On a 2-core machine the direct baseline runs upstream and generator \
         on one core while a gateway moves part of the loopback work to its own core: a small negative \"added\" is that, not a \
         gateway faster than no gateway.\n",
        r.took.as_secs_f64() / 60.0,
        opts.repeats,
        opts.secs,
        opts.warmup
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(md, "- Pinning: {}", r.cpus.describe());
    for (name, version) in &opts.versions {
        let _ = writeln!(md, "- {name}: {version}");
    }
    let _ = writeln!(md, "- Command: `{}`\n", opts.command_line);
    if let Some(png) = chart {
        let _ = writeln!(
            md,
            "![Added p99 latency per workload and concurrency, and throughput within the latency budget]({png})\n"
        );
    }

    let _ = writeln!(md, "## Targets\n\n| target | status |\n|---|---|");
    for t in &r.targets {
        let status = match &t.status {
            Status::Ran => {
                let failing: Vec<String> = opts
                    .workloads
                    .iter()
                    .filter_map(|w| {
                        let errors: usize = opts
                            .concurrency
                            .iter()
                            .map(|&c| cell(w.name, c, t.kind).errors)
                            .sum();
                        (errors > 0).then(|| format!("{} failed requests in `{}`", errors, w.name))
                    })
                    .chain(
                        t.stalls
                            .iter()
                            .filter(|(_, _, rep, _)| rep.failed() > 0)
                            .map(|(level, _, rep, _)| {
                                format!("{} failed of {level} streams at once", rep.failed())
                            }),
                    )
                    .collect();
                if failing.is_empty() {
                    "ran every workload it supports".into()
                } else {
                    format!("ran; {}", failing.join(", "))
                }
            }
            Status::NotInstalled(why) => format!("**not installed**: {}", one_line(why)),
            Status::FailedToStart(why) => format!("**failed to start**: {}", one_line(why)),
        };
        let _ = writeln!(md, "| {} | {} |", t.kind.label(), status);
    }
    let _ = writeln!(md);
    crate::yardstick::section(&mut md, opts, r);

    let _ = writeln!(md, "## Added latency at concurrency {mid}\n");
    let _ = writeln!(
        md,
        "p50 / p99 of the whole request, minus direct's; for streams also the added time to the first delta (p50) and the added p99 gap between deltas.\n"
    );
    let _ = write!(md, "| workload |");
    for k in &gateways {
        let _ = write!(md, " {} |", k.label());
    }
    let _ = write!(md, "\n|---|");
    for _ in &gateways {
        let _ = write!(md, "---|");
    }
    let _ = writeln!(md);
    for w in &opts.workloads {
        let _ = write!(md, "| `{}` {} |", w.name, w.title);
        for &k in &gateways {
            let c = cell(w.name, mid, k);
            let text = if !has(&c) {
                "n/a".into()
            } else if c.ok == 0 && c.errors == 0 {
                // No request finished at all (each worker sends one past the window).
                "no answer".into()
            } else if c.ok == 0 {
                "failed".into()
            } else if w.stream {
                format!(
                    "{} / {}; first delta {}, gap p99 {}",
                    added_ms(c.added_p50_us),
                    added_ms(c.added_p99_us),
                    added_ms(c.added_ttft_p50_us),
                    added_ms(c.added_gap_p99_us)
                )
            } else {
                format!(
                    "{} / {}",
                    added_ms(c.added_p50_us),
                    added_ms(c.added_p99_us)
                )
            };
            let _ = write!(md, " {text} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);

    let _ = writeln!(
        md,
        "## Throughput within a latency budget\n\nThe highest constant rate of small whole requests (open loop: latency counted from each \
         request's scheduled time) that every target answered with no error and a p99 at or under {} ms. \
         Rates double from 10/s until one fails, then the gap is halved twice.\n\n| target | requests/s | p99 at that rate |\n|---|---|---|",
        opts.budget_ms
    );
    for t in r.targets.iter().filter(|t| matches!(t.status, Status::Ran)) {
        match &t.budget {
            Some((rate, rep)) => {
                let _ = writeln!(
                    md,
                    "| {} | {rate:.0} | {} |",
                    t.kind.label(),
                    ms(rep.latency.p99 as f64)
                );
            }
            None => {
                let why = if crate::workload::by_name("small")
                    .is_some_and(|w| crate::gateway::endpoint(t.kind, &w, 0, 0).is_ok())
                {
                    "none: fails at 10/s"
                } else {
                    "n/a: does not serve OpenAI clients"
                };
                let _ = writeln!(md, "| {} | {why} | – |", t.kind.label());
            }
        }
    }
    let _ = writeln!(md);

    let _ = writeln!(
        md,
        "## Streams without a stall\n\nN paced streams (64 deltas, 20 ms apart) opened at once; a stream counts when it \
         arrived whole and no gap between two deltas exceeded {} ms (deltas that arrive together count as held back). \
         Each target streams its own format (claude-code-router serves only Anthropic clients). RSS is the gateway's \
         (with its workers) peak during the wave. Where direct itself does not keep every stream, the core shared by \
         the upstream and the load generator is the limit at that level, not the gateway.\n",
        opts.stall_ms
    );
    let _ = write!(md, "| target | workload |");
    for level in &opts.stall_levels {
        let _ = write!(md, " {level} streams | RSS |");
    }
    let _ = write!(md, "\n|---|---|");
    for _ in &opts.stall_levels {
        let _ = write!(md, "---|---|");
    }
    let _ = writeln!(md);
    for t in r.targets.iter().filter(|t| matches!(t.status, Status::Ran)) {
        let workload = t.stalls.first().map_or("–", |s| s.1);
        let _ = write!(md, "| {} | `{workload}` |", t.kind.label());
        for level in &opts.stall_levels {
            match t.stalls.iter().find(|(l, _, _, _)| l == level) {
                Some((_, _, rep, rss)) => {
                    let fine = rep.ok - rep.stalled;
                    let rss = if t.kind == Kind::Direct {
                        "–".into()
                    } else {
                        format!("{} MiB", rss / 1024)
                    };
                    let _ = write!(md, " {fine} of {level} | {rss} |");
                }
                None => {
                    let _ = write!(md, " – | – |");
                }
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);

    let _ = writeln!(
        md,
        "## Memory and CPU\n\nCPU is the gateway's (with its workers) user+system time during a measurement over the requests it completed.\n\n| gateway | RSS idle | RSS peak (matrix) | CPU per request, `small` c={mid} | `stream` c={mid} | `ant-to-oai` c={mid} |\n|---|---|---|---|---|---|"
    );
    for t in r
        .targets
        .iter()
        .filter(|t| matches!(t.status, Status::Ran) && t.kind != Kind::Direct)
    {
        let cpu = |w: &str| {
            cell(w, mid, t.kind)
                .cpu_us_per_request
                .map_or("–".into(), |s| format!("{:.0} µs", s.median))
        };
        let _ = writeln!(
            md,
            "| {} | {} MiB | {} MiB | {} | {} | {} |",
            t.kind.label(),
            t.idle_rss_kib / 1024,
            t.peak_rss_kib / 1024,
            cpu("small"),
            cpu("stream"),
            cpu("ant-to-oai")
        );
    }
    let _ = writeln!(md);

    let _ = writeln!(md, "## Every measurement\n");
    let _ = writeln!(
        md,
        "| workload | c | target | req/s | × direct | p50 | p99 | added p50 | added p99 | first delta p50 | added | gap p99 | added | ok | errors | stalled | CPU/req |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for w in &opts.workloads {
        for &c in &opts.concurrency {
            for &k in &ran {
                let x = cell(w.name, c, k);
                if !has(&x) {
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    w.name,
                    k.label(),
                    rps(x.rps),
                    x.vs_direct
                        .map_or("–".into(), |s| format!("{:.2}", s.median)),
                    median_ms(x.p50_us),
                    median_ms(x.p99_us),
                    spread_ms(x.added_p50_us),
                    spread_ms(x.added_p99_us),
                    median_ms(x.ttft_p50_us),
                    spread_ms(x.added_ttft_p50_us),
                    median_ms(x.gap_p99_us),
                    spread_ms(x.added_gap_p99_us),
                    x.ok,
                    x.errors,
                    x.stalled,
                    x.cpu_us_per_request
                        .map_or("–".into(), |s| format!("{:.0} µs", s.median)),
                );
            }
        }
    }
    let _ = writeln!(md);

    let mut failures = String::new();
    for w in &opts.workloads {
        for &c in &opts.concurrency {
            for &k in &ran {
                let x = cell(w.name, c, k);
                if let Some(e) = x.first_error.filter(|_| x.errors > 0) {
                    let _ = writeln!(
                        failures,
                        "- {} `{}` c={c}: {} of {} failed; first: `{}`",
                        k.label(),
                        w.name,
                        x.errors,
                        x.errors + x.ok,
                        one_line(&e)
                    );
                }
            }
        }
    }
    for t in &r.targets {
        for (level, _, rep, _) in &t.stalls {
            if let Some(e) = rep.first_error.as_ref().filter(|_| rep.failed() > 0) {
                let _ = writeln!(
                    failures,
                    "- {} {level} streams at once: {} failed; first: `{}`",
                    t.kind.label(),
                    rep.failed(),
                    one_line(e)
                );
            }
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(md, "## Failures\n\n{failures}");
    }

    let _ = writeln!(md, "## Workloads\n");
    for w in &opts.workloads {
        let _ = writeln!(
            md,
            "- `{}`: {}. Client {:?}, upstream {:?}, model name `{}` (the fake upstream reads the answer's shape from it).",
            w.name,
            w.title,
            w.client,
            w.upstream,
            w.shape.model()
        );
    }
    let _ = writeln!(
        md,
        "\nDirect is a client of the upstream's own format sent straight to it: for a translated workload it is the baseline of the same answer without a gateway.\n"
    );

    let _ = writeln!(md, "## How each gateway ran\n");
    for t in &r.targets {
        if t.launch.command.is_empty() {
            continue;
        }
        let env: Vec<String> = t
            .launch
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            md,
            "### {}\n\n```sh\n{} {}\n```\n",
            t.kind.label(),
            env.join(" "),
            t.launch.command.join(" ")
        );
        for (path, text) in &t.launch.files {
            let name = path
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let _ = writeln!(md, "`{name}`:\n\n```\n{}\n```\n", text.trim_end());
        }
    }
    md
}

fn one_line(s: &str) -> String {
    let flat: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('`', "'")
        .replace('|', "/");
    if flat.chars().count() > 300 {
        flat.chars().take(300).collect::<String>() + "…"
    } else {
        flat
    }
}
