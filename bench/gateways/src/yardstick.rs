//! moat against nginx in the same run: the ratios issue 34 sets as targets. nginx, a
//! plain reverse proxy with no parsing, routing or accounting, is what the same bytes
//! cost on this machine at least; each row says how far moat is from it.

use std::fmt::Write as _;

use crate::gateway::Kind;
use crate::report::ms;
use crate::stats::{self, Cell};
use crate::suite::{Options, Results, Status, Target};
use crate::workload;

/// One compared figure.
struct Row {
    what: String,
    moat: Option<f64>,
    nginx: Option<f64>,
    unit: Unit,
    target: Goal,
}

#[derive(Clone, Copy)]
enum Unit {
    Micros,
    PerSecond,
    Kib,
    Millis,
}

#[derive(Clone, Copy)]
enum Goal {
    /// moat's figure at most this many times nginx's.
    AtMostTimes(f64),
    /// moat's figure at least this many times nginx's.
    AtLeastTimes(f64),
    /// moat's figure at most nginx's plus this many microseconds.
    AtMostPlusMicros(f64),
    /// moat's figure at most this, whatever nginx's.
    AtMost(f64),
    /// Shown for the picture, no target.
    None,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Micros => format!("{v:.1} µs"),
            Unit::PerSecond => format!("{v:.0}/s"),
            Unit::Kib => format!("{v:.1} KiB"),
            Unit::Millis => ms(v),
        }
    }
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.unit, self.moat, self.nginx) {
            // Added latencies can be zero or negative (noise around direct): a ratio of
            // them means nothing, the difference is the target.
            (Unit::Millis, ..) => None,
            (_, Some(m), Some(n)) if n > 0.0 => Some(m / n),
            _ => None,
        }
    }

    fn goal(&self) -> String {
        match self.target {
            Goal::AtMostTimes(x) => format!("≤ {x}× nginx"),
            Goal::AtLeastTimes(x) => format!("≥ {x}× nginx"),
            Goal::AtMostPlusMicros(us) => format!("≤ nginx + {us:.0} µs"),
            Goal::AtMost(v) => format!("≤ {}", self.unit.show(v)),
            Goal::None => "–".into(),
        }
    }

    fn verdict(&self) -> &'static str {
        let met = match (self.target, self.moat, self.nginx) {
            (Goal::None, ..) => return "",
            (Goal::AtMost(v), Some(m), _) => m <= v,
            (Goal::AtMostTimes(x), Some(m), Some(n)) => m <= x * n,
            (Goal::AtLeastTimes(x), Some(m), Some(n)) => m >= x * n,
            (Goal::AtMostPlusMicros(us), Some(m), Some(n)) => m <= n + us,
            _ => return "not measured",
        };
        if met { "met" } else { "**not met**" }
    }
}

/// One figure of a cell.
type Figure = fn(&Cell) -> Option<f64>;

fn median(s: Option<stats::Spread>) -> Option<f64> {
    s.map(|s| s.median)
}

/// RSS per open stream in the largest wave: the rise over idle, divided by the streams.
fn per_stream_kib(t: &Target) -> Option<(usize, f64, f64)> {
    let (level, _, _, rss) = t.stalls.iter().max_by_key(|s| s.0)?;
    let rise = rss.saturating_sub(t.idle_rss_kib) as f64;
    Some((*level, rise / *level as f64, *rss as f64))
}

pub(crate) fn section(md: &mut String, opts: &Options, r: &Results) {
    let ran = |k: Kind| {
        r.targets
            .iter()
            .find(|t| t.kind == k && matches!(t.status, Status::Ran))
    };
    let (Some(moat), Some(nginx)) = (ran(Kind::Moat), ran(Kind::Nginx)) else {
        return;
    };
    let cell = |w: &str, c: usize, k: Kind| stats::cell(&r.runs, w, c, k);
    let has = |w: &str| opts.workloads.iter().any(|x| x.name == w);
    let mid = opts
        .concurrency
        .get(opts.concurrency.len() / 2)
        .copied()
        .unwrap_or(1);
    let top = opts.concurrency.iter().copied().max().unwrap_or(1);
    let low = opts.concurrency.iter().copied().min().unwrap_or(1);
    let mut rows = Vec::new();
    let both = |w: &str, c: usize, f: &dyn Fn(&Cell) -> Option<f64>| {
        (f(&cell(w, c, Kind::Moat)), f(&cell(w, c, Kind::Nginx)))
    };
    let cpu = |c: &Cell| median(c.cpu_us_per_request);
    // The middle and the highest concurrency, once each when they are the same.
    let mut levels = vec![mid, top];
    levels.dedup();
    for (w, goal) in [("small", Goal::AtMostTimes(1.5)), ("large", Goal::None)] {
        if has(w) {
            for &c in &levels {
                let (m, n) = both(w, c, &cpu);
                rows.push(Row {
                    what: format!("CPU per request, pass-through `{w}`, c={c}"),
                    moat: m,
                    nginx: n,
                    unit: Unit::Micros,
                    target: goal,
                });
            }
        }
    }
    if has("small") {
        let (m, n) = both("small", top, &|c| median(c.rps));
        rows.push(Row {
            what: format!("Throughput, `small`, closed loop at c={top}"),
            moat: m,
            nginx: n,
            unit: Unit::PerSecond,
            target: Goal::AtLeastTimes(0.8),
        });
    }
    rows.push(Row {
        what: format!(
            "Throughput within a p99 of {} ms, `small`, open loop",
            opts.budget_ms
        ),
        moat: moat.budget.as_ref().map(|b| b.0),
        nginx: nginx.budget.as_ref().map(|b| b.0),
        unit: Unit::PerSecond,
        target: Goal::AtLeastTimes(0.8),
    });
    let deltas = workload::by_name("stream").map_or(1.0, |w| w.shape.deltas.max(1) as f64);
    let per_delta = |c: &Cell| median(c.cpu_us_per_request).map(|v| v / deltas);
    // The most streams per measurement: the steadiest CPU figure.
    let nginx_delta = per_delta(&cell("stream", top, Kind::Nginx));
    if has("stream") {
        rows.push(Row {
            what: format!("CPU per streamed delta, pass-through `stream`, c={top}"),
            moat: per_delta(&cell("stream", top, Kind::Moat)),
            nginx: nginx_delta,
            unit: Unit::Micros,
            target: Goal::AtMostTimes(1.5),
        });
    }
    for w in opts.workloads.iter().filter(|w| w.stream && w.translated()) {
        rows.push(Row {
            what: format!(
                "CPU per streamed delta, translated `{}` (nginx: `stream`), c={top}",
                w.name
            ),
            moat: per_delta(&cell(w.name, top, Kind::Moat)),
            nginx: nginx_delta,
            unit: Unit::Micros,
            target: Goal::AtMostTimes(3.0),
        });
    }
    for (w, goal) in [
        ("small", Goal::AtMostPlusMicros(50.0)),
        ("large", Goal::None),
        ("stream", Goal::None),
    ] {
        if !has(w) {
            continue;
        }
        let figures: [(&str, Figure, Goal); 2] = [
            ("p99", |c| median(c.added_p99_us), goal),
            ("p50", |c| median(c.added_p50_us), Goal::None),
        ];
        for (which, figure, target) in figures {
            let (m, n) = both(w, low, &figure);
            rows.push(Row {
                what: format!("Added {which} over direct, `{w}`, c={low}"),
                moat: m,
                nginx: n,
                unit: Unit::Millis,
                target,
            });
        }
    }
    if let (Some((level, m, m_rss)), Some((_, n, n_rss))) =
        (per_stream_kib(moat), per_stream_kib(nginx))
    {
        rows.push(Row {
            what: format!("Memory per open stream ({level} at once, rise over idle)"),
            moat: Some(m),
            nginx: Some(n),
            unit: Unit::Kib,
            target: Goal::AtMost(16.0),
        });
        rows.push(Row {
            what: format!("RSS with {level} streams open"),
            moat: Some(m_rss),
            nginx: Some(n_rss),
            unit: Unit::Kib,
            target: if level >= 1000 {
                Goal::AtMost(40.0 * 1024.0)
            } else {
                Goal::None
            },
        });
    }

    let _ = writeln!(
        md,
        "## Against nginx\n\nnginx {} as a plain reverse proxy in front of the same upstream (one worker on the gateway core, \
         keep-alive pool, no log, no buffering), measured interleaved with moat in the same repeats. \
         The targets are issue 34's. Added latencies in ms; a figure's \"× nginx\" is moat's over nginx's.\n",
        opts.versions
            .iter()
            .find(|(k, _)| k == "nginx")
            .map_or("", |(_, v)| v.as_str())
    );
    let _ = writeln!(
        md,
        "| measure | moat | nginx | × nginx | target | |\n|---|---|---|---|---|---|"
    );
    for row in &rows {
        let show = |v: Option<f64>| v.map_or("–".into(), |v| row.unit.show(v));
        let ratio = row.ratio().map_or("–".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            row.what,
            show(row.moat),
            show(row.nginx),
            ratio,
            row.goal(),
            row.verdict()
        );
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(moat: f64, nginx: f64, unit: Unit, target: Goal) -> Row {
        Row {
            what: String::new(),
            moat: Some(moat),
            nginx: Some(nginx),
            unit,
            target,
        }
    }

    #[test]
    fn each_goal_is_judged_against_nginx_in_its_own_way() {
        let cpu = |m| row(m, 10.0, Unit::Micros, Goal::AtMostTimes(1.5));
        assert_eq!(cpu(15.0).verdict(), "met");
        assert_eq!(cpu(15.1).verdict(), "**not met**");
        let rate = |m| row(m, 1000.0, Unit::PerSecond, Goal::AtLeastTimes(0.8));
        assert_eq!(rate(800.0).verdict(), "met");
        assert_eq!(rate(799.0).verdict(), "**not met**");
        // Added latencies in µs: nginx's plus 50.
        let added = |m| row(m, 60.0, Unit::Millis, Goal::AtMostPlusMicros(50.0));
        assert_eq!(added(110.0).verdict(), "met");
        assert_eq!(added(111.0).verdict(), "**not met**");
        assert_eq!(added(110.0).ratio(), None);
        let kib = |m| row(m, 17.0, Unit::Kib, Goal::AtMost(16.0));
        assert_eq!(kib(16.0).verdict(), "met");
        assert_eq!(kib(29.0).verdict(), "**not met**");
        assert_eq!(row(1.0, 1.0, Unit::Micros, Goal::None).verdict(), "");
        let mut unmeasured = cpu(1.0);
        unmeasured.nginx = None;
        assert_eq!(unmeasured.verdict(), "not measured");
    }
}
