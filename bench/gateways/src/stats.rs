//! From repeated measurements to the figures the report prints: per target, workload and
//! concurrency, the median over repeats and its spread (min and max), each "added" figure
//! taken against the direct run of the same repeat.

use crate::gateway::Kind;
use crate::load::Report;
use crate::suite::Measurement;

/// A median with the smallest and largest value it was taken from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(mut v: Vec<f64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// One (workload, concurrency, target) over all repeats.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cell {
    pub repeats: usize,
    pub rps: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub added_p50_us: Option<Spread>,
    pub added_p99_us: Option<Spread>,
    pub ttft_p50_us: Option<Spread>,
    pub added_ttft_p50_us: Option<Spread>,
    pub gap_p99_us: Option<Spread>,
    pub added_gap_p99_us: Option<Spread>,
    /// Throughput as a share of direct's in the same repeat.
    pub vs_direct: Option<Spread>,
    pub cpu_us_per_request: Option<Spread>,
    pub ok: usize,
    pub errors: usize,
    pub stalled: usize,
    pub first_error: Option<String>,
}

pub(crate) fn cell(runs: &[Measurement], workload: &str, c: usize, target: Kind) -> Cell {
    let mine: Vec<&Measurement> = runs
        .iter()
        .filter(|m| m.workload == workload && m.concurrency == c && m.target == target)
        .collect();
    let direct = |repeat: usize| {
        runs.iter()
            .find(|m| {
                m.workload == workload
                    && m.concurrency == c
                    && m.target == Kind::Direct
                    && m.repeat == repeat
            })
            .map(|m| &m.report)
    };
    // Percentiles of a run with no successful request are not figures.
    let usable = |r: &Report| r.ok > 0;
    let series = |f: &dyn Fn(&Report) -> Option<f64>| {
        Spread::of(
            mine.iter()
                .filter(|m| usable(&m.report))
                .filter_map(|m| f(&m.report))
                .collect(),
        )
    };
    let added = |f: &dyn Fn(&Report) -> Option<f64>| {
        Spread::of(
            mine.iter()
                .filter(|m| usable(&m.report))
                .filter_map(|m| {
                    let d = direct(m.repeat).filter(|d| usable(d))?;
                    Some(f(&m.report)? - f(d)?)
                })
                .collect(),
        )
    };
    let some = |v: u64, n: usize| (n > 0).then_some(v as f64);
    Cell {
        repeats: mine.len(),
        rps: series(&|r| Some(r.rps)),
        p50_us: series(&|r| some(r.latency.p50, r.latency.n)),
        p99_us: series(&|r| some(r.latency.p99, r.latency.n)),
        added_p50_us: added(&|r| some(r.latency.p50, r.latency.n)),
        added_p99_us: added(&|r| some(r.latency.p99, r.latency.n)),
        ttft_p50_us: series(&|r| some(r.ttft.p50, r.ttft.n)),
        added_ttft_p50_us: added(&|r| some(r.ttft.p50, r.ttft.n)),
        gap_p99_us: series(&|r| some(r.gap.p99, r.gap.n)),
        added_gap_p99_us: added(&|r| some(r.gap.p99, r.gap.n)),
        vs_direct: Spread::of(
            mine.iter()
                .filter_map(|m| {
                    let d = direct(m.repeat)?;
                    (d.rps > 0.0).then(|| m.report.rps / d.rps)
                })
                .collect(),
        ),
        cpu_us_per_request: Spread::of(
            mine.iter()
                .filter(|m| m.report.ok > 0 && target != Kind::Direct)
                .map(|m| m.cpu_ns as f64 / 1e3 / m.report.handled.max(m.report.ok) as f64)
                .collect(),
        ),
        ok: mine.iter().map(|m| m.report.ok).sum(),
        errors: mine.iter().map(|m| m.report.failed()).sum(),
        stalled: mine.iter().map(|m| m.report.stalled).sum(),
        first_error: mine.iter().find_map(|m| m.report.first_error.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Kind, repeat: usize, p50: u64, rps: f64) -> Measurement {
        let mut report = Report {
            ok: 10,
            rps,
            ..Report::default()
        };
        report.latency.n = 10;
        report.latency.p50 = p50;
        report.latency.p99 = p50 * 2;
        Measurement {
            target,
            workload: "small",
            concurrency: 1,
            repeat,
            report,
            cpu_ns: 1,
        }
    }

    #[test]
    fn added_latency_is_taken_against_direct_in_the_same_repeat() {
        let runs = vec![
            run(Kind::Direct, 0, 100, 1000.0),
            run(Kind::Moat, 0, 150, 500.0),
            run(Kind::Direct, 1, 300, 1000.0),
            run(Kind::Moat, 1, 310, 800.0),
            run(Kind::Direct, 2, 100, 1000.0),
            run(Kind::Moat, 2, 130, 900.0),
        ];
        let c = cell(&runs, "small", 1, Kind::Moat);
        assert_eq!(
            c.added_p50_us,
            Some(Spread {
                median: 30.0,
                min: 10.0,
                max: 50.0
            })
        );
        assert_eq!(c.vs_direct.map(|s| s.median), Some(0.8));
        assert_eq!(c.repeats, 3);
    }

    #[test]
    fn a_run_without_successes_gives_no_latency() {
        let mut failed = run(Kind::Moat, 0, 0, 0.0);
        failed.report.ok = 0;
        failed.report.errors.insert("status 500".into(), 5);
        let c = cell(
            &[run(Kind::Direct, 0, 100, 1.0), failed],
            "small",
            1,
            Kind::Moat,
        );
        assert_eq!((c.p50_us, c.added_p50_us, c.errors), (None, None, 5));
    }
}
