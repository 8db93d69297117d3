//! The PNG chart: one panel per workload with each gateway's added p99 latency against
//! concurrency (log scale: the peers differ by orders of magnitude), and one panel with
//! throughput within the latency budget.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::gateway::Kind;
use crate::stats;
use crate::suite::{Options, Results, Status};

const FONT: &str = "sans-serif";
const FONT_FILES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Direct => RGBColor(120, 120, 120),
        Kind::Moat => RGBColor(31, 119, 180),
        Kind::Litellm => RGBColor(214, 39, 40),
        Kind::Portkey => RGBColor(44, 160, 44),
        Kind::Ccr => RGBColor(255, 127, 14),
        Kind::Nginx => RGBColor(148, 103, 189),
    }
}

/// Plotters draws text with a font it is given; DejaVu Sans is in Debian's fonts-dejavu-core.
fn register_font() -> anyhow::Result<()> {
    let path = FONT_FILES.iter().find(|p| Path::new(p).exists()).context(
        "no DejaVu Sans font for the chart's labels (apt-get install fonts-dejavu-core)",
    )?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))
}

pub(crate) fn draw(opts: &Options, r: &Results, out: &Path) -> anyhow::Result<()> {
    register_font()?;
    let gateways: Vec<Kind> = r
        .targets
        .iter()
        .filter(|t| matches!(t.status, Status::Ran) && t.kind != Kind::Direct)
        .map(|t| t.kind)
        .collect();
    // Three panels a row: one per workload, then the throughput panel.
    let rows = (opts.workloads.len() + 1).div_ceil(3);
    let root = BitMapBackend::new(out, (1500, 60 + 470 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Added p99 latency over direct, ms (log scale; 0.01 and below, or faster than direct, on the floor)",
        (FONT, 26),
    )?;
    let panels = root.split_evenly((rows, 3));
    let cs = &opts.concurrency;
    for (panel, w) in panels.iter().zip(opts.workloads.iter()) {
        let mut lines = Vec::new();
        for &k in &gateways {
            let points: Vec<(f64, f64)> = cs
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| {
                    let cell = stats::cell(&r.runs, w.name, c, k);
                    // Below 10 µs (or faster than direct) is drawn at the floor.
                    cell.added_p99_us
                        .map(|s| (i as f64, (s.median / 1000.0).max(0.01)))
                })
                .collect();
            if !points.is_empty() {
                lines.push((k, points));
            }
        }
        let top = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .fold(1.0f64, f64::max)
            * 2.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(w.name, (FONT, 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.3f64..(cs.len() as f64 - 0.7), (0.01f64..top).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(cs.len())
            .x_label_formatter(&|x| {
                cs.get(x.round().max(0.0) as usize)
                    .map_or(String::new(), |c| format!("c={c}"))
            })
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .label_style((FONT, 14))
            .draw()?;
        for (k, points) in lines {
            let c = color(k);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
                .label(k.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    if let Some(panel) = panels.get(opts.workloads.len()) {
        let bars: Vec<(Kind, f64)> = r
            .targets
            .iter()
            .filter(|t| matches!(t.status, Status::Ran))
            .map(|t| (t.kind, t.budget.as_ref().map_or(0.0, |b| b.0)))
            .collect();
        let top = bars.iter().map(|b| b.1).fold(100.0f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("requests/s within p99 <= {} ms", opts.budget_ms),
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..(bars.len() as f64 - 0.5), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len())
            .x_label_formatter(&|x| {
                bars.get(x.round().max(0.0) as usize)
                    .map_or(String::new(), |b| b.0.label().to_string())
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 12))
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (k, v))| {
            Rectangle::new(
                [(i as f64 - 0.35, 0.0), (i as f64 + 0.35, *v)],
                color(*k).filled(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
