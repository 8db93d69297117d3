//! `moat sandbox run`: one command through the sandbox tool calls use, so owners can try a
//! profile and see what a tool would see.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use moat_core::config::egress::EgressConfig;
use moat_core::config::sandbox::SandboxProfile;
use moat_core::home::Home;
use moat_sandbox::{Level, Report, SandboxError, Spec};

use crate::cli::{SandboxCommand, SandboxRun};
use crate::{Failure, app};

/// Exit status when the sandbox could not be set up (as timeout(1) and `docker run`).
const SETUP_FAILED: u8 = 125;
/// Exit status when the command was not found.
const NOT_FOUND: u8 = 127;

/// Runs a `sandbox` subcommand.
pub(crate) fn run(home: &Home, command: &SandboxCommand) -> Result<ExitCode, Failure> {
    let SandboxCommand::Run(args) = command;
    let loaded = crate::load_config(home, &[])?;
    let sandbox = &loaded.config.sandbox;
    let name = match (&args.profile, &args.tool) {
        (Some(name), _) => name.as_str(),
        (None, Some(tool)) => sandbox.profile_for(tool, &args.trust),
        (None, None) => "default",
    };
    let profile = sandbox.profile(name).ok_or_else(|| {
        Failure::usage(anyhow!(
            "no sandbox profile {name:?}: define [sandbox.profiles.{name}] in {}",
            home.config_file().display()
        ))
    })?;
    let mut spec = spec_for(&profile, args, &loaded.config.egress)?;
    spec.hidden.push(home.root().to_path_buf());
    // One unlock (one password prompt at most) for all the secrets of the call.
    let vault = match args.secrets.is_empty() {
        true => None,
        false => Some(app::vault::unlock(home)?),
    };
    for secret in &args.secrets {
        let vault = vault.as_ref().expect("unlocked when there are secrets");
        let (var, name) = split_assignment(secret, "--secret", "VAR=NAME")?;
        let entry = vault.get(name).ok_or_else(|| {
            Failure::usage(anyhow!(
                "--secret {var}={name}: the vault has no secret {name:?} (see `moat vault list`)"
            ))
        })?;
        spec.set_env(
            var,
            OsString::from(std::ffi::OsStr::from_bytes(entry.value())),
        );
    }
    if args.stdin {
        std::io::stdin()
            .read_to_end(&mut spec.stdin)
            .map_err(|e| Failure::runtime(anyhow!("cannot read standard input: {e}")))?;
    }

    let workspace = Workspace::create(home).map_err(Failure::runtime)?;
    spec.workspace = workspace.path.clone();
    let result = moat_sandbox::run(&spec);
    let kept = args.keep_workspace.then(|| workspace.keep());

    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let code = match error {
                SandboxError::Exec { .. } => NOT_FOUND,
                SandboxError::Invalid(_)
                | SandboxError::ReservedPath(_)
                | SandboxError::ExposesHidden { .. }
                | SandboxError::Path { .. }
                | SandboxError::MissingRuntime { .. } => 2,
                _ => SETUP_FAILED,
            };
            eprintln!("moat sandbox: {error}");
            return Ok(ExitCode::from(code));
        }
    };
    app::audit::record_all_now(
        home,
        moat_agent::sandboxing::audit_records(
            &report,
            name,
            &spec.program,
            &app::audit::cli_actor(),
        ),
    );
    if args.json {
        println!("{}", report_json(&report, name, kept.as_deref()));
    } else {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        let shown = |bytes: &[u8], terminal: bool| -> Vec<u8> {
            if terminal && !args.raw_output {
                for_terminal(bytes)
            } else {
                bytes.to_vec()
            }
        };
        let _ = out.write_all(&shown(&report.stdout, out.is_terminal()));
        let _ = err.write_all(&shown(&report.stderr, err.is_terminal()));
        eprintln!("{}", summary(&report, name));
        if let Some(path) = &kept {
            eprintln!("moat sandbox: workspace kept at {}", path.display());
        }
    }
    Ok(ExitCode::from(
        report.outcome.exit_status().clamp(0, 255) as u8
    ))
}

/// `bytes` made safe to show on a terminal (see [`crate::terminal::shown`]).
fn for_terminal(bytes: &[u8]) -> Vec<u8> {
    crate::terminal::shown(&String::from_utf8_lossy(bytes), true).into_bytes()
}

fn split_assignment<'a>(
    text: &'a str,
    flag: &str,
    shape: &str,
) -> Result<(&'a str, &'a str), Failure> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Failure::usage(anyhow!("{flag} {text:?}: expected {shape}")))
}

/// The spec a profile and the command-line overrides describe; network grants go
/// through `egress`, moat's egress policy (one conversion for this command and the
/// assistant's tools: `moat_agent::sandboxing`).
fn spec_for(
    profile: &SandboxProfile,
    args: &SandboxRun,
    egress: &EgressConfig,
) -> Result<Spec, Failure> {
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut env = Vec::new();
    for assignment in &args.env {
        let (name, value) = split_assignment(assignment, "--env", "NAME=VALUE")?;
        env.push((name.to_string(), value.to_string()));
    }
    let overrides = moat_agent::sandboxing::Overrides {
        memory_mib: args.memory,
        wall_time: args.wall_time,
        env,
        grants: args.grants.clone(),
    };
    if args.wall_time.is_some_and(|w| w.is_zero()) {
        return Err(Failure::usage(anyhow!("--wall-time must be above zero")));
    }
    moat_agent::sandboxing::spec_for(profile, program, rest, &overrides, egress)
        .map_err(|e| Failure::usage(anyhow!("{e}")))
}

/// A per-call folder under `MOAT_HOME/sandbox/`, removed when dropped unless kept.
struct Workspace {
    path: PathBuf,
    keep: bool,
}

impl Workspace {
    fn create(home: &Home) -> anyhow::Result<Workspace> {
        use std::os::unix::fs::DirBuilderExt;
        home.ensure()?;
        let parent = home.root().join("sandbox");
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        match builder.create(&parent) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(anyhow!("cannot create {}: {e}", parent.display()));
            }
            _ => {}
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| anyhow!("no randomness: {e}"))?;
        let path = parent.join(hex::encode(id));
        builder
            .create(&path)
            .map_err(|e| anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(Workspace { path, keep: false })
    }

    fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep || remove_tree(&self.path).is_ok() {
            return;
        }
        eprintln!(
            "moat sandbox: could not remove the workspace {}; remove it by hand",
            self.path.display()
        );
    }
}

/// Removes `path` and everything in it, first giving back to moat's user the folders a
/// command made unreadable or unwritable (`chmod 0 d` inside the workspace).
fn remove_tree(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    fn open_up(dir: &std::path::Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            // Never through a link: only the workspace's own folders are touched.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
    open_up(path);
    std::fs::remove_dir_all(path)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One line for people: how it ended and what isolation was in force.
fn summary(report: &Report, profile: &str) -> String {
    let e = &report.enforcement;
    let mut parts = vec![format!("profile {profile}, {} level", e.level.name())];
    if e.level == Level::Process {
        parts.push(match e.landlock_abi {
            Some(abi) => format!("Landlock ABI {abi}"),
            None => "no Landlock (the kernel lacks it)".into(),
        });
        parts.push(format!("seccomp allowlist of {} calls", e.seccomp_allowed));
        parts.push(match &e.limits {
            moat_sandbox::LimitMechanism::CgroupV2 { .. } => "limits by cgroup v2".into(),
            moat_sandbox::LimitMechanism::CgroupV1 { .. } => "limits by cgroup v1".into(),
            moat_sandbox::LimitMechanism::Rlimits { why_not_cgroup } => {
                format!("limits by rlimits (no cgroup: {why_not_cgroup})")
            }
            moat_sandbox::LimitMechanism::Runsc | moat_sandbox::LimitMechanism::WallTimeOnly => {
                e.limits.name().into()
            }
        });
        parts.push(format!("host uid {}", e.host_uid));
        parts.push(match e.cpu_quota {
            Some(n) => format!("CPU time of {n} CPU by cgroup quota, on CPUs {:?}", e.cpus),
            None => format!("CPU {:?}", e.cpus),
        });
        parts.push(if e.network {
            "network only through moat's egress proxy".into()
        } else {
            "no network".into()
        });
    }
    if e.level == Level::Container {
        parts.push("gVisor (runsc), limits by its cgroup, no network".into());
    }
    let outcome = match report.violation {
        Some(v) => format!(
            "policy violation: {} (by pid {}); the whole sandbox was killed",
            v.syscall, v.pid
        ),
        None => report.outcome.describe(),
    };
    let mut line = format!(
        "moat sandbox: {} after {} (cpu {}, peak memory {} MiB; {})",
        outcome,
        ms(report.elapsed),
        ms(report.cpu_time),
        report.peak_rss_bytes / (1024 * 1024),
        parts.join(", ")
    );
    for event in &report.network_log {
        let what = match (event.allowed, event.reason.as_str()) {
            (true, "http") => "forwarded (plain http)".to_string(),
            (true, _) => "tunnelled".to_string(),
            (false, why) => format!("refused: {why}"),
        };
        line.push_str(&format!(
            "\nmoat sandbox: network {} {what}",
            event.destination
        ));
    }
    for (name, cut) in [
        ("stdout", report.stdout_truncated),
        ("stderr", report.stderr_truncated),
    ] {
        if cut {
            line.push_str(&format!(
                "\nmoat sandbox: {name} was cut at the output limit"
            ));
        }
    }
    line
}

fn report_json(report: &Report, profile: &str, kept: Option<&Path>) -> serde_json::Value {
    let e = &report.enforcement;
    let outcome = match report.outcome {
        moat_sandbox::Outcome::Exited(code) => serde_json::json!({"kind": "exited", "code": code}),
        moat_sandbox::Outcome::Signaled(sig) => {
            serde_json::json!({"kind": "signaled", "signal": sig})
        }
        moat_sandbox::Outcome::TimedOut => serde_json::json!({"kind": "timed_out"}),
        moat_sandbox::Outcome::CpuLimit => serde_json::json!({"kind": "cpu_limit"}),
        moat_sandbox::Outcome::OutOfMemory => serde_json::json!({"kind": "out_of_memory"}),
        moat_sandbox::Outcome::PolicyViolation => serde_json::json!({
            "kind": "policy_violation",
            "syscall": report.violation.map(|v| v.syscall),
        }),
    };
    serde_json::json!({
        "outcome": outcome,
        "exit_status": report.outcome.exit_status(),
        "stdout": String::from_utf8_lossy(&report.stdout),
        "stderr": String::from_utf8_lossy(&report.stderr),
        "stdout_truncated": report.stdout_truncated,
        "stderr_truncated": report.stderr_truncated,
        "elapsed_ms": report.elapsed.as_secs_f64() * 1000.0,
        "cpu_ms": report.cpu_time.as_secs_f64() * 1000.0,
        "peak_rss_bytes": report.peak_rss_bytes,
        "enforcement": {
            "profile": profile,
            "level": e.level.name(),
            "limits": e.limits.name(),
            "cgroup": match &e.limits {
                moat_sandbox::LimitMechanism::CgroupV2 { path }
                | moat_sandbox::LimitMechanism::CgroupV1 { path } => Some(path.display().to_string()),
                _ => None,
            },
            "why_not_cgroup": match &e.limits {
                moat_sandbox::LimitMechanism::Rlimits { why_not_cgroup } => Some(why_not_cgroup.as_str()),
                _ => None,
            },
            "landlock_abi": e.landlock_abi,
            "seccomp_allowed": e.seccomp_allowed,
            "host_uid": e.host_uid,
            "network": e.network,
            "cpus": e.cpus,
            "cpu_quota": e.cpu_quota,
        },
        "network": report.network_log.iter().map(|e| serde_json::json!({
            "destination": e.destination,
            "allowed": e.allowed,
            "reason": e.reason,
        })).collect::<Vec<_>>(),
        "workspace": kept.map(|p| p.display().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_output_carries_no_control_sequences() {
        let hostile = "ok\tdone\n\x1b]52;c;aGk=\x07\x1b[2Jtitle\rover\u{9b}31m\x7f\n";
        let shown = String::from_utf8(for_terminal(hostile.as_bytes())).unwrap();
        assert_eq!(
            shown,
            "ok\tdone\n^[]52;c;aGk=^G^[[2Jtitle^Mover\\u{9b}31m^?\n"
        );
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
        assert_eq!(for_terminal(b"caf\xc3\xa9"), "café".as_bytes());
    }
}
