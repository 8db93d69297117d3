//! The suite: starts the fake upstream and every gateway, each pinned to its own core where
//! the machine has them, then sends every workload at every concurrency to every target,
//! interleaved and repeated, and hands the measurements to the report.
//!
//! Each measurement is a separate `load` process, so the generator is pinned like the rest
//! and this process only waits.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::gateway::{self, Endpoint, Installs, Kind, Launch};
use crate::load::Report;
use crate::procfs;
use crate::workload::Workload;

#[derive(Clone)]
pub(crate) struct Options {
    pub installs: Installs,
    /// Peers the run script could not install, with why.
    pub not_installed: Vec<(Kind, String)>,
    pub versions: Vec<(String, String)>,
    pub targets: Vec<Kind>,
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    pub secs: f64,
    pub warmup: f64,
    pub repeats: usize,
    pub budget_ms: u64,
    pub stall_ms: u64,
    pub stall_levels: Vec<usize>,
    pub command_line: String,
}

/// Which cores the upstream, the load generator and the gateways run on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cpus {
    pub upstream: Option<String>,
    pub load: Option<String>,
    pub gateway: Option<String>,
}

impl Cpus {
    fn for_machine() -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let taskset = Command::new("taskset").arg("-V").output().is_ok();
        match (taskset, n) {
            (false, _) | (_, 1) => Cpus::default(),
            // Two cores: the gateway gets one to itself; the upstream and the generator
            // share the other, the same for the direct baseline as for every gateway.
            (true, 2) => Cpus {
                upstream: Some("0".into()),
                load: Some("0".into()),
                gateway: Some("1".into()),
            },
            (true, _) => Cpus {
                upstream: Some("0".into()),
                load: Some("1".into()),
                gateway: Some("2".into()),
            },
        }
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.upstream, &self.load, &self.gateway) {
            (Some(u), Some(l), Some(g)) => format!(
                "upstream on CPU {u}, load generator on CPU {l}, gateway under test on CPU {g} (taskset)"
            ),
            _ => "not pinned (one core, or no taskset)".into(),
        }
    }
}

fn pinned(cpu: &Option<String>, command: Vec<String>) -> Vec<String> {
    match cpu {
        Some(c) => [vec!["taskset".into(), "-c".into(), c.clone()], command].concat(),
        None => command,
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Status {
    Ran,
    NotInstalled(String),
    FailedToStart(String),
}

pub(crate) struct Target {
    pub kind: Kind,
    pub status: Status,
    pub port: u16,
    pub launch: Launch,
    pub pid: Option<u32>,
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    /// The highest constant rate whose p99 stayed within the budget with no error, and its report.
    pub budget: Option<(f64, Report)>,
    /// Per level: the workload, the wave's report and the tree's peak RSS during it.
    pub stalls: Vec<(usize, &'static str, Report, u64)>,
}

pub(crate) struct Measurement {
    pub target: Kind,
    pub workload: &'static str,
    pub concurrency: usize,
    pub repeat: usize,
    pub report: Report,
    pub cpu_ns: u64,
}

pub(crate) struct Results {
    pub cpus: Cpus,
    pub targets: Vec<Target>,
    pub runs: Vec<Measurement>,
    pub took: Duration,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Keeps each running gateway's peak RSS, sampled four times a second.
#[derive(Clone, Default)]
struct RssWatch(Arc<Mutex<HashMap<u32, u64>>>);

impl RssWatch {
    fn start(&self) {
        let map = self.0.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let Ok(mut m) = map.lock() else { return };
                for (pid, peak) in m.iter_mut() {
                    *peak = (*peak).max(procfs::rss_kib(*pid));
                }
            }
        });
    }
    fn reset(&self, pid: u32) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(pid, procfs::rss_kib(pid));
        }
    }
    fn peak(&self, pid: u32) -> u64 {
        let now = procfs::rss_kib(pid);
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&pid).copied())
            .unwrap_or(0)
            .max(now)
    }
}

struct Bench {
    exe: PathBuf,
    cpus: Cpus,
    upstream_port: u16,
    opts: Options,
}

impl Bench {
    /// One load run in its own pinned process.
    fn load(
        &self,
        e: &Endpoint,
        w: &Workload,
        mode: &[String],
        timeout_s: u64,
    ) -> anyhow::Result<Report> {
        let mut cmd = vec![
            self.exe.display().to_string(),
            "load".into(),
            "--url".into(),
            e.url.clone(),
            "--api".into(),
            format!("{:?}", e.api).to_lowercase(),
            "--model".into(),
            e.model.clone(),
            "--request-bytes".into(),
            w.request_bytes.to_string(),
            "--expect-deltas".into(),
            w.shape.deltas.to_string(),
            "--expect-bytes".into(),
            w.expect_bytes().to_string(),
            "--stall-ms".into(),
            self.opts.stall_ms.to_string(),
            "--timeout-s".into(),
            timeout_s.to_string(),
        ];
        if w.stream {
            cmd.push("--stream".into());
        }
        for (k, v) in &e.headers {
            cmd.push("--header".into());
            cmd.push(format!("{k}: {v}"));
        }
        cmd.extend(mode.iter().cloned());
        let cmd = pinned(&self.cpus.load, cmd);
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stderr(Stdio::inherit())
            .output()?;
        // A generator that failed is recorded as a failed measurement, so one bad cell does
        // not lose the rest of the run.
        let report = out
            .status
            .success()
            .then(|| serde_json::from_slice::<Report>(&out.stdout).ok())
            .flatten();
        Ok(report.unwrap_or_else(|| {
            let mut r = Report::default();
            r.errors.insert("load generator failed".into(), 1);
            r.first_error = Some(format!("the load generator exited with {}", out.status));
            r
        }))
    }

    fn closed(&self, e: &Endpoint, w: &Workload, c: usize) -> anyhow::Result<Report> {
        let o = &self.opts;
        let mode = [
            "--concurrency".into(),
            c.to_string(),
            "--duration-s".into(),
            o.secs.to_string(),
            "--warmup-s".into(),
            o.warmup.to_string(),
        ];
        self.load(e, w, &mode, 60)
    }
}

fn start(target: &mut Target, dir: &Path, cpus: &Cpus) -> anyhow::Result<Child> {
    for (path, text) in &target.launch.files {
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        std::fs::write(path, text)?;
    }
    let cmd = pinned(&cpus.gateway, target.launch.command.clone());
    let log = std::fs::File::create(dir.join("log.txt"))?;
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .envs(target.launch.env.iter().cloned())
        .stdin(Stdio::null());
    c.stdout(log.try_clone()?).stderr(log);
    if let Some(cwd) = &target.launch.cwd {
        c.current_dir(cwd);
    }
    Ok(spawn_in_group(&mut c)?)
}

/// Spawns in a process group of its own, so stopping it stops its workers too, and
/// registers the group for `stop_all`.
fn spawn_in_group(c: &mut Command) -> std::io::Result<Child> {
    std::os::unix::process::CommandExt::process_group(c, 0);
    let child = c.spawn()?;
    if let Ok(mut groups) = CHILD_GROUPS.lock() {
        groups.push(child.id());
    }
    Ok(child)
}

/// Stops (SIGSTOP) every running gateway but `kind`, so an idle Python or Node runtime
/// does not take time from the one measured on the same core; returns their groups.
fn pause_others(targets: &[Target], kind: Kind) -> Vec<u32> {
    let others: Vec<u32> = targets
        .iter()
        .filter(|t| t.kind != kind)
        .filter_map(|t| t.pid)
        .collect();
    signal_groups(&others, "STOP");
    others
}

fn signal_groups(groups: &[u32], signal: &str) {
    for pgid in groups {
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &format!("-{pgid}")])
            .status();
    }
}

/// The process groups of the fake upstream and the running gateways. They are outside the
/// terminal's group, so Ctrl-C does not reach them: `stop_all` does, from the interrupt
/// handler.
static CHILD_GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(crate) fn stop_all() {
    if let Ok(groups) = CHILD_GROUPS.lock() {
        // A gateway paused for another's measurement acts on TERM only once continued.
        signal_groups(&groups, "TERM");
        signal_groups(&groups, "CONT");
    }
}

fn stop(child: &mut Child) {
    if let Ok(mut groups) = CHILD_GROUPS.lock() {
        groups.retain(|&g| g != child.id());
    }
    let _ = Command::new("kill")
        .args(["-s", "TERM", "--", &format!("-{}", child.id())])
        .status();
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

pub(crate) fn run(opts: Options, work: &Path) -> anyhow::Result<Results> {
    let began = Instant::now();
    let exe = std::env::current_exe()?;
    let cpus = Cpus::for_machine();
    eprintln!("bench: {}", cpus.describe());
    let upstream_port = free_port()?;
    let cmd = pinned(
        &cpus.upstream,
        vec![
            exe.display().to_string(),
            "upstream".into(),
            "--listen".into(),
            format!("127.0.0.1:{upstream_port}"),
        ],
    );
    let mut upstream = spawn_in_group(Command::new(&cmd[0]).args(&cmd[1..]).stdout(Stdio::null()))?;
    let bench = Bench {
        exe,
        cpus: cpus.clone(),
        upstream_port,
        opts,
    };
    let result = run_with_upstream(&bench, work, began);
    stop(&mut upstream);
    result
}

fn run_with_upstream(b: &Bench, work: &Path, began: Instant) -> anyhow::Result<Results> {
    let opts = &b.opts;
    let watch = RssWatch::default();
    watch.start();
    let mut targets = Vec::new();
    let mut children: Vec<(Kind, Child)> = Vec::new();
    for &kind in &opts.targets {
        let port = free_port()?;
        let dir = work.join(kind.label());
        std::fs::create_dir_all(&dir)?;
        let mut t = Target {
            kind,
            status: Status::Ran,
            port,
            launch: Launch::default(),
            pid: None,
            idle_rss_kib: 0,
            peak_rss_kib: 0,
            budget: None,
            stalls: Vec::new(),
        };
        if let Some((_, why)) = opts.not_installed.iter().find(|(k, _)| *k == kind) {
            t.status = Status::NotInstalled(why.clone());
            targets.push(t);
            continue;
        }
        if kind != Kind::Direct {
            let Some(install) = opts.installs.path(kind) else {
                t.status = Status::NotInstalled("not given to the suite".into());
                targets.push(t);
                continue;
            };
            t.launch = gateway::launch(kind, install, &dir, port, b.upstream_port);
            eprintln!("bench: starting {}", kind.label());
            let mut child = match start(&mut t, &dir, &b.cpus) {
                Ok(child) => child,
                Err(e) => {
                    t.status = Status::FailedToStart(format!("{e:#}"));
                    targets.push(t);
                    continue;
                }
            };
            match wait_ready(b, kind, port, &mut child) {
                Ok(()) => {
                    t.pid = Some(child.id());
                    children.push((kind, child));
                }
                Err(e) => {
                    stop(&mut child);
                    t.status = Status::FailedToStart(format!("{e:#}\n{}", log_tail(&dir)));
                    eprintln!("bench: {} did not start: {e:#}", kind.label());
                }
            }
        }
        targets.push(t);
    }
    let runs = measure(b, &mut targets, &watch);
    for (_, mut child) in children {
        stop(&mut child);
    }
    Ok(Results {
        cpus: b.cpus.clone(),
        targets,
        runs: runs?,
        took: began.elapsed(),
    })
}

/// Waits until one request through the gateway succeeds (LiteLLM takes seconds to start).
fn wait_ready(b: &Bench, kind: Kind, port: u16, child: &mut Child) -> anyhow::Result<()> {
    let (w, e) = b
        .opts
        .workloads
        .iter()
        .chain(crate::workload::ALL.iter())
        .find_map(|w| {
            gateway::endpoint(kind, w, port, b.upstream_port)
                .ok()
                .map(|e| (*w, e))
        })
        .context("no workload applies to this gateway")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("it exited ({status})");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let r = b.load(&e, &w, &["--wave".into(), "1".into()], 20)?;
            if r.ok == 1 {
                return Ok(());
            }
            last = r.first_error.unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("no successful request in 120 s; last: {last}")
}

fn measure(
    b: &Bench,
    targets: &mut [Target],
    watch: &RssWatch,
) -> anyhow::Result<Vec<Measurement>> {
    let opts = &b.opts;
    let live: Vec<usize> = (0..targets.len())
        .filter(|&i| matches!(targets[i].status, Status::Ran))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    for &i in &live {
        if let Some(pid) = targets[i].pid {
            targets[i].idle_rss_kib = procfs::rss_kib(pid);
            watch.reset(pid);
        }
    }
    let mut runs = Vec::new();
    let cells: Vec<(Workload, usize)> = opts
        .workloads
        .iter()
        .flat_map(|w| opts.concurrency.iter().map(move |&c| (*w, c)))
        .collect();
    let total = opts.repeats * cells.len();
    let mut step = 0;
    for repeat in 0..opts.repeats {
        for (cell, &(w, c)) in cells.iter().enumerate() {
            step += 1;
            eprintln!(
                "bench: [{step}/{total}] repeat {} {} c={c}",
                repeat + 1,
                w.name
            );
            // Interleaved: every target once per cell, starting at a different one each time,
            // so a slow drift of the machine does not favour whoever runs first.
            let n = live.len();
            for k in 0..n {
                let t = &targets[live[(k + cell + repeat) % n]];
                let Ok(e) = gateway::endpoint(t.kind, &w, t.port, b.upstream_port) else {
                    continue;
                };
                let others = pause_others(targets, t.kind);
                let before = t.pid.map_or(0, procfs::cpu_ns);
                let report = b.closed(&e, &w, c);
                let cpu_ns = t.pid.map_or(0, procfs::cpu_ns).saturating_sub(before);
                signal_groups(&others, "CONT");
                let report = report?;
                runs.push(Measurement {
                    target: t.kind,
                    workload: w.name,
                    concurrency: c,
                    repeat,
                    report,
                    cpu_ns,
                });
            }
        }
    }
    for &i in &live {
        if let Some(pid) = targets[i].pid {
            targets[i].peak_rss_kib = watch.peak(pid);
        }
    }
    for &i in &live {
        let (kind, port, pid) = (targets[i].kind, targets[i].port, targets[i].pid);
        eprintln!(
            "bench: {}: highest rate within a p99 of {} ms",
            kind.label(),
            opts.budget_ms
        );
        let others = pause_others(targets, kind);
        let budget = budget(b, kind, port);
        signal_groups(&others, "CONT");
        targets[i].budget = budget?;
        for &level in &opts.stall_levels {
            eprintln!("bench: {}: {level} streams at once", kind.label());
            let Some((w, e)) = stream_endpoint(b, kind, port) else {
                break;
            };
            if let Some(pid) = pid {
                watch.reset(pid);
            }
            let others = pause_others(targets, kind);
            let report = b.load(&e, &w, &["--wave".into(), level.to_string()], 120);
            signal_groups(&others, "CONT");
            let report = report?;
            let rss = pid.map_or(0, |p| watch.peak(p));
            targets[i].stalls.push((level, w.name, report, rss));
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(runs)
}

/// The paced stream a target serves: OpenAI's if it can, else the first streamed workload.
fn stream_endpoint(b: &Bench, kind: Kind, port: u16) -> Option<(Workload, Endpoint)> {
    crate::workload::ALL
        .iter()
        .filter(|w| w.stream)
        .find_map(|w| {
            gateway::endpoint(kind, w, port, b.upstream_port)
                .ok()
                .map(|e| (*w, e))
        })
}

/// The highest constant rate of small whole requests with p99 within the budget and no
/// error: doubling from 10/s until a step fails, then two halvings of the gap.
fn budget(b: &Bench, kind: Kind, port: u16) -> anyhow::Result<Option<(f64, Report)>> {
    let Some(w) = crate::workload::by_name("small") else {
        return Ok(None);
    };
    let Ok(e) = gateway::endpoint(kind, &w, port, b.upstream_port) else {
        return Ok(None);
    };
    let secs = (b.opts.secs / 2.0).max(2.0);
    let budget_us = b.opts.budget_ms * 1000;
    let step = |rate: f64| -> anyhow::Result<(bool, Report)> {
        let mode = [
            "--rate".into(),
            format!("{rate:.0}"),
            "--duration-s".into(),
            secs.to_string(),
        ];
        let r = b.load(&e, &w, &mode, 10)?;
        std::thread::sleep(Duration::from_millis(500));
        Ok((r.failed() == 0 && r.ok > 0 && r.latency.p99 <= budget_us, r))
    };
    let mut best: Option<(f64, Report)> = None;
    let mut rate = 10.0;
    let mut failed_at = None;
    while rate <= 204_800.0 {
        let (ok, r) = step(rate)?;
        if !ok {
            failed_at = Some(rate);
            break;
        }
        best = Some((rate, r));
        rate *= 2.0;
    }
    if let (Some(mut hi), Some((mut lo, _))) = (failed_at, best.as_ref().map(|(r, _)| (*r, ()))) {
        for _ in 0..2 {
            let mid = (lo + hi) / 2.0;
            let (ok, r) = step(mid)?;
            if ok {
                lo = mid;
                best = Some((mid, r));
            } else {
                hi = mid;
            }
        }
    }
    Ok(best)
}
