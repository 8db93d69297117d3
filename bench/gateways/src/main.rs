//! `bench/gateways`: moat's overhead against the direct upstream and against peer gateways
//! (LiteLLM, Portkey, claude-code-router), under the same load, on the same machine, in
//! one run. `bench/gateways/run` installs the peers and calls `suite`; `upstream` and
//! `load` are the suite's parts, usable alone.

mod chart;
mod gateway;
mod load;
mod procfs;
mod report;
mod stats;
mod suite;
mod upstream;
mod workload;
mod yardstick;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::gateway::{Installs, Kind};
use crate::load::ClientApi;

#[derive(Parser)]
#[command(
    about = "Gateway overhead benchmark: a fake OpenAI+Anthropic upstream, a load generator, and the suite that runs moat and its peers against the direct upstream"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a fake upstream speaking OpenAI (/v1/chat/completions) and Anthropic (/v1/messages).
    /// The model name sets the answer: `bench-d64-g20-b32-l0` = 64 streamed deltas 20 ms
    /// apart, 32 bytes of text when whole, 0 ms before the answer starts.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
    },
    /// Send load to one URL and print one JSON line of what came back.
    Load(LoadArgs),
    /// Run every workload through every target and write the report (Markdown and PNG).
    Suite(SuiteArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long)]
    url: String,
    /// The client's API format.
    #[arg(long, value_enum, default_value = "openai")]
    api: ClientApi,
    #[arg(long, default_value = "bench")]
    model: String,
    #[arg(long)]
    stream: bool,
    /// Size of the request's conversation in bytes (0: one short message).
    #[arg(long, default_value_t = 0)]
    request_bytes: usize,
    /// Extra header, `NAME: VALUE`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Deltas each stream must deliver to count as whole.
    #[arg(long, default_value_t = 16)]
    expect_deltas: u32,
    /// Bytes a whole answer must at least have.
    #[arg(long, default_value_t = 0)]
    expect_bytes: usize,
    /// Closed loop: this many requests always in flight.
    #[arg(long, conflicts_with_all = ["rate", "wave"])]
    concurrency: Option<usize>,
    /// Open loop: this many requests per second.
    #[arg(long, conflicts_with = "wave")]
    rate: Option<f64>,
    /// This many requests at once, one each.
    #[arg(long)]
    wave: Option<usize>,
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Closed loop: seconds of load first, on the same connections, not counted.
    #[arg(long, default_value_t = 0.0)]
    warmup_s: f64,
    /// A gap between two deltas longer than this marks the stream stalled.
    #[arg(long, default_value_t = 100)]
    stall_ms: u64,
    /// Per-request limit.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// The moat binary to measure.
    #[arg(long)]
    moat: PathBuf,
    /// LiteLLM's `litellm` command (from `litellm[proxy]`).
    #[arg(long)]
    litellm: Option<PathBuf>,
    /// Portkey gateway's `build/start-server.js`.
    #[arg(long)]
    portkey: Option<PathBuf>,
    /// claude-code-router's `dist/cli.js`.
    #[arg(long)]
    ccr: Option<PathBuf>,
    /// The `nginx` binary (Debian's nginx-light), the plain reverse proxy every gateway is
    /// compared with.
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// A peer that could not be installed, `NAME=why` (NAME: litellm, portkey, ccr, nginx); repeatable.
    #[arg(long = "not-installed")]
    not_installed: Vec<String>,
    /// A version to record in the report, `NAME=VERSION`; repeatable.
    #[arg(long = "version-of")]
    versions: Vec<String>,
    /// Targets to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Kind>,
    /// Workloads to run: small, large, stream, oai-to-ant, ant-to-oai, resp-to-oai, resp-to-ant (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,
    /// Seconds of discarded load before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// p99 budget for the throughput-within-budget figure.
    #[arg(long, default_value_t = 100)]
    budget_ms: u64,
    /// A gap between deltas past this is a stall.
    #[arg(long, default_value_t = 100)]
    stall_ms: u64,
    /// Numbers of simultaneous streams for the stall test.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    stall_levels: Vec<usize>,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The command line to print in the report (the run script's).
    #[arg(long, default_value = "bench/gateways/run")]
    command_line: String,
}

fn pair(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .with_context(|| format!("{s:?} is not NAME=VALUE"))
}

fn load_spec(a: LoadArgs) -> anyhow::Result<load::Spec> {
    let duration = Duration::from_secs_f64(a.duration_s.max(0.1));
    let mode = match (a.concurrency, a.rate, a.wave) {
        (Some(c), None, None) if c > 0 => load::Mode::Closed {
            concurrency: c,
            duration,
        },
        (None, Some(rate), None) if rate > 0.0 => load::Mode::Rate { rate, duration },
        (None, None, Some(n)) if n > 0 => load::Mode::Wave { n },
        _ => bail!("give one of --concurrency N, --rate R or --wave N, above zero"),
    };
    let headers = a
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect::<Option<Vec<_>>>()
        .context("a --header is not NAME: VALUE")?;
    Ok(load::Spec {
        url: a.url,
        api: a.api,
        model: a.model,
        stream: a.stream,
        request_bytes: a.request_bytes,
        headers,
        expect_deltas: a.expect_deltas,
        expect_bytes: a.expect_bytes,
        mode,
        warmup: Duration::from_secs_f64(a.warmup_s.clamp(0.0, 3600.0)),
        stall: Duration::from_millis(a.stall_ms),
        timeout: Duration::from_secs(a.timeout_s.max(1)),
    })
}

fn suite_options(a: &SuiteArgs) -> anyhow::Result<suite::Options> {
    let kind = |name: &str| -> anyhow::Result<Kind> {
        <Kind as clap::ValueEnum>::from_str(name, true)
            .map_err(|_| anyhow::anyhow!("no target named {name:?}"))
    };
    let not_installed = a
        .not_installed
        .iter()
        .map(|s| pair(s).and_then(|(k, why)| Ok((kind(&k)?, why))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let workloads = if a.workloads.is_empty() {
        workload::ALL.to_vec()
    } else {
        a.workloads
            .iter()
            .map(|n| workload::by_name(n).with_context(|| format!("no workload named {n:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut targets = if a.targets.is_empty() {
        vec![
            Kind::Direct,
            Kind::Moat,
            Kind::Nginx,
            Kind::Litellm,
            Kind::Portkey,
            Kind::Ccr,
        ]
    } else {
        a.targets.clone()
    };
    // Every added figure is against direct.
    if !targets.contains(&Kind::Direct) {
        targets.insert(0, Kind::Direct);
    }
    if a.concurrency.is_empty() || a.concurrency.contains(&0) || a.repeats == 0 || a.secs <= 0.0 {
        bail!("--concurrency, --repeats and --secs must be above zero");
    }
    Ok(suite::Options {
        installs: Installs {
            moat: a.moat.clone(),
            litellm: a.litellm.clone(),
            portkey: a.portkey.clone(),
            ccr: a.ccr.clone(),
            nginx: a.nginx.clone(),
        },
        not_installed,
        versions: a
            .versions
            .iter()
            .map(|s| pair(s))
            .collect::<anyhow::Result<_>>()?,
        targets,
        workloads,
        concurrency: a.concurrency.clone(),
        secs: a.secs,
        warmup: a.warmup.max(0.1),
        repeats: a.repeats,
        budget_ms: a.budget_ms,
        stall_ms: a.stall_ms,
        stall_levels: a.stall_levels.clone(),
        command_line: a.command_line.clone(),
    })
}

fn run_suite(a: SuiteArgs) -> anyhow::Result<()> {
    let opts = suite_options(&a)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let work = std::env::temp_dir().join(format!("moat-bench-gateways-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let results = suite::run(opts.clone(), &work);
    let _ = std::fs::remove_dir_all(&work);
    let results = results?;
    let stamp = std::process::Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .context("`date -u` gave no time stamp for the report's name")?;
    let png_name = format!("gateways-{stamp}.png");
    let png = a.out.join(&png_name);
    let chart = match chart::draw(&opts, &results, &png) {
        Ok(()) => Some(png_name.as_str()),
        Err(e) => {
            eprintln!("bench: no chart: {e:#}");
            None
        }
    };
    let md = report::markdown(&opts, &results, chart, &stamp);
    let md_path = a.out.join(format!("gateways-{stamp}.md"));
    // Written whole to a temporary name, then renamed: never a half-written report.
    let tmp = a.out.join(format!(".gateways-{stamp}.md.tmp"));
    std::fs::write(&tmp, &md)?;
    std::fs::rename(&tmp, &md_path)?;
    // docs/benchmarks.md links the latest run under a fixed name.
    let latest_md = md.replace(&png_name, "gateways-latest.png");
    std::fs::write(a.out.join(".gateways-latest.md.tmp"), latest_md)?;
    std::fs::rename(
        a.out.join(".gateways-latest.md.tmp"),
        a.out.join("gateways-latest.md"),
    )?;
    if chart.is_some() {
        let tmp = a.out.join(".gateways-latest.png.tmp");
        std::fs::copy(&png, &tmp)?;
        std::fs::rename(&tmp, a.out.join("gateways-latest.png"))?;
    }
    println!("{}", md_path.display());
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Upstream { listen } => upstream::serve(listen).await.context("the fake upstream"),
        Cmd::Load(a) => match load_spec(a) {
            Ok(spec) => {
                let report = load::run(spec).await;
                // A closed stdout means the suite that asked is gone: nothing to tell.
                serde_json::to_string(&report)
                    .map(|s| {
                        let _ = writeln!(std::io::stdout(), "{s}");
                    })
                    .map_err(Into::into)
            }
            Err(e) => Err(e),
        },
        // The suite blocks on child processes; it runs off the async workers.
        Cmd::Suite(a) => {
            let suite = tokio::task::spawn_blocking(move || run_suite(a));
            tokio::select! {
                r = suite => r.unwrap_or_else(|e| Err(anyhow::anyhow!("the suite panicked: {e}"))),
                _ = tokio::signal::ctrl_c() => {
                    suite::stop_all();
                    Err(anyhow::anyhow!("interrupted; the gateways were stopped and no report was written"))
                }
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
