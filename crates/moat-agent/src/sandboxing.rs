//! A sandbox profile (`[sandbox.profiles.NAME]`) made into the spec of one call: its
//! level, limits, environment and grants, with network grants judged by moat's egress
//! policy. Used by the assistant's tools and by `moat sandbox run`, so a profile means the
//! same thing to both.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use moat_core::config::egress::EgressConfig;
use moat_core::config::sandbox::{SandboxProfile, parse_grant};
use moat_net::egress::{Host, Policy};
use moat_sandbox::{Access, Grant, Judge, Level, Limits, NetGrant, Network, Spec};

/// What a caller sets over the profile's own values.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A memory limit in MiB instead of the profile's.
    pub memory_mib: Option<u64>,
    /// A wall time instead of the profile's.
    pub wall_time: Option<Duration>,
    /// Environment variables added after the profile's.
    pub env: Vec<(String, String)>,
    /// Grants added to the profile's (`ro:PATH`, `rw:PATH`, `net:HOST[:PORT]`).
    pub grants: Vec<String>,
}

/// The spec for `program args` under `profile` and `overrides`; network grants go
/// through `egress`. The workspace is left for the caller to set. An error says which
/// value is wrong and how it should look.
pub fn spec_for(
    profile: &SandboxProfile,
    program: &OsStr,
    args: &[OsString],
    overrides: &Overrides,
    egress: &EgressConfig,
) -> Result<Spec, String> {
    let mut spec = Spec::new(program, args.to_vec(), PathBuf::new());
    spec.level = Level::parse(&profile.level).ok_or_else(|| {
        format!(
            "the sandbox level {:?} is not one of none, process, container, vm",
            profile.level
        )
    })?;
    let memory_mib = overrides.memory_mib.unwrap_or(profile.memory_mib);
    let memory_bytes = memory_mib
        .checked_mul(1024 * 1024)
        .ok_or_else(|| format!("a memory limit of {memory_mib} MiB is beyond any machine"))?;
    let output_bytes = profile
        .output_kib
        .checked_mul(1024)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("output_kib = {} is beyond any machine", profile.output_kib))?;
    spec.limits = Limits {
        memory_bytes,
        cpus: profile.cpus,
        processes: profile.processes,
        wall_time: overrides.wall_time.unwrap_or(profile.wall_time),
        output_bytes,
        ..Limits::default()
    };
    if spec.limits.wall_time.is_zero() {
        return Err("the wall time must be above zero".into());
    }
    for (name, value) in profile
        .env
        .iter()
        .chain(overrides.env.iter().map(|(k, v)| (k, v)))
    {
        spec.set_env(name, value);
    }
    let mut net = Vec::new();
    for grant in profile.grants.iter().chain(&overrides.grants) {
        if let Some(destination) = grant.strip_prefix("net:") {
            net.push(NetGrant::parse(destination).map_err(|e| format!("grant {grant:?}: {e}"))?);
            continue;
        }
        let (writable, path) = parse_grant(grant).ok_or_else(|| {
            format!(
                "grant {grant:?}: expected ro:/absolute/path, rw:/absolute/path or net:HOST[:PORT]"
            )
        })?;
        spec.grants.push(Grant {
            path: path.into(),
            access: if writable {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            },
        });
    }
    if !net.is_empty() {
        spec.network = Some(Network {
            grants: net,
            judge: egress_judge(egress)?,
        });
    }
    Ok(spec)
}

/// moat's egress policy as the sandbox proxy's judge: a granted destination must also
/// pass the name rules, the port list and the address classes (`[egress]`), for every
/// address its name resolves to.
pub fn egress_judge(egress: &EgressConfig) -> Result<Judge, String> {
    let policy = Policy::from_config(egress).map_err(|e| e.to_string())?;
    let within = egress.connect_timeout;
    Ok(std::sync::Arc::new(move |host: &str, port: u16| {
        let url = if host.contains(':') {
            format!("https://[{host}]:{port}/")
        } else {
            format!("https://{host}:{port}/")
        };
        let checked = policy.check_url(&url).map_err(|r| r.to_string())?;
        let ips: Vec<std::net::IpAddr> = match &checked.host {
            Host::Addr(ip) => vec![*ip],
            // Fully qualified: no resolver search domain may stand in for the name.
            Host::Name(name) => resolve(name, port, within)?,
        };
        let name = checked.host.to_string();
        policy
            .check_resolved(&name, &ips)
            .map_err(|r| r.to_string())?;
        Ok(ips
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, port))
            .collect())
    }))
}

/// The addresses of `name`, fully qualified (no resolver search domain may stand in for
/// it), within `within`: the system resolver can block for much longer, and each
/// connection of the sandbox's proxy waits on this.
fn resolve(name: &str, port: u16, within: Duration) -> Result<Vec<std::net::IpAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let query = format!("{name}.");
    std::thread::Builder::new()
        .name("moat-sandbox-dns".into())
        .spawn(move || {
            let answer = std::net::ToSocketAddrs::to_socket_addrs(&(query.as_str(), port))
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>());
            let _ = tx.send(answer);
        })
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
    match rx.recv_timeout(within) {
        Ok(Ok(ips)) => Ok(ips),
        Ok(Err(e)) => Err(format!("cannot resolve {name}: {e}")),
        Err(_) => Err(format!(
            "cannot resolve {name}: no answer within {} (egress.connect_timeout)",
            humantime::format_duration(within)
        )),
    }
}

/// What the assistant's sandboxed tools run under: the profiles and which tool uses
/// which (`[sandbox]`), and the egress policy their network grants must also pass.
#[derive(Debug, Clone, Default)]
pub struct ToolSandbox {
    /// `[sandbox]`.
    pub config: moat_core::config::sandbox::SandboxConfig,
    /// `[egress]`.
    pub egress: EgressConfig,
}

/// The most output of one stream the model is shown, whatever the profile keeps.
const MODEL_OUTPUT_BYTES: usize = 64 * 1024;

/// Runs `program args` (with `stdin`) for the tool `tool` in the call's sandbox: the
/// profile `[sandbox.tools.TOOL]` names for the sender's trust, the session's workspace
/// as `/workspace`, MOAT_HOME hidden, at most the turn's tool time left. The run and any
/// refused connection are audited; the model gets the outcome line and the output.
pub async fn run_tool(
    ctx: &crate::tools::ToolContext,
    tool: &str,
    program: &str,
    args: Vec<String>,
    stdin: Vec<u8>,
) -> crate::tools::ToolResult {
    let name = ctx.sandbox.config.profile_for(tool, &ctx.trust).to_string();
    let profile = ctx.sandbox.config.profile(&name).ok_or_else(|| {
        format!("the sandbox profile {name:?} (sandbox.tools.{tool}) is not configured")
    })?;
    let overrides = Overrides {
        wall_time: Some(profile.wall_time.min(ctx.time_left)),
        ..Overrides::default()
    };
    let args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    let mut spec = spec_for(
        &profile,
        OsStr::new(program),
        &args,
        &overrides,
        &ctx.sandbox.egress,
    )?;
    spec.limits.output_bytes = spec.limits.output_bytes.min(MODEL_OUTPUT_BYTES);
    spec.workspace = ctx.workspace.clone();
    spec.hidden.clone_from(&ctx.hidden);
    spec.stdin = stdin;
    let report = tokio::task::spawn_blocking(move || moat_sandbox::run(&spec))
        .await
        .map_err(|_| "the sandbox stopped unexpectedly".to_string())?
        .map_err(|e| match e {
            moat_sandbox::SandboxError::Exec { .. } => {
                format!("{program} is not installed where the sandbox can run it ({e})")
            }
            e => format!("the sandbox refused to run it: {e}"),
        })?;
    if let Some(log) = &ctx.audit {
        for record in audit_records(&report, &name, OsStr::new(program), &ctx.actor) {
            if let Err(e) = log.record(record.detail("session", ctx.session.as_str())) {
                tracing::warn!("the audit log refused a sandbox record: {e}");
            }
        }
    }
    let mut out = format!("{}\n", report.outcome.describe());
    out.push_str(&String::from_utf8_lossy(&report.stdout));
    if !report.stderr.is_empty() {
        out.push_str("\n[stderr]\n");
        out.push_str(&String::from_utf8_lossy(&report.stderr));
    }
    for event in report.network_log.iter().filter(|e| !e.allowed) {
        out.push_str(&format!(
            "\n[moat: connection to {} refused: {}]",
            event.destination, event.reason
        ));
    }
    if report.outcome.success() {
        Ok(out)
    } else {
        Err(out)
    }
}

/// The audit records of one sandboxed run by `actor`: `sandbox.run` (profile, level,
/// exit status, the syscall of a violation) and a `sandbox.egress.refused` for each
/// connection the proxy refused.
pub fn audit_records(
    report: &moat_sandbox::Report,
    profile: &str,
    program: &OsStr,
    actor: &str,
) -> Vec<moat_audit::Record> {
    let program = std::path::Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned();
    let outcome = match report.outcome {
        moat_sandbox::Outcome::Exited(0) => "ok",
        moat_sandbox::Outcome::Exited(_) => "failed",
        moat_sandbox::Outcome::Signaled(_) => "signaled",
        moat_sandbox::Outcome::TimedOut => "timed_out",
        moat_sandbox::Outcome::CpuLimit => "cpu_limit",
        moat_sandbox::Outcome::OutOfMemory => "out_of_memory",
        moat_sandbox::Outcome::PolicyViolation => "policy_violation",
    };
    let mut run = moat_audit::Record::new(actor, "sandbox.run", program, outcome)
        .detail("profile", profile)
        .detail("level", report.enforcement.level.name())
        .detail("exit_status", report.outcome.exit_status().to_string());
    if let Some(v) = report.violation {
        run = run.detail("syscall", v.syscall);
    }
    let mut records = vec![run];
    for event in report.network_log.iter().filter(|e| !e.allowed) {
        records.push(
            moat_audit::Record::new(
                actor,
                "sandbox.egress.refused",
                event.destination.clone(),
                "refused",
            )
            .detail("reason", event.reason.clone()),
        );
    }
    records
}
