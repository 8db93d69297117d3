//! `moat service`: moat as a systemd user service of the person running it, started with
//! their session (and, with lingering, without one), restarted if it fails, hardened so
//! that the process can write only MOAT_HOME.
//!
//! The unit is written to `$XDG_CONFIG_HOME/systemd/user/moat.service` (default
//! `~/.config/...`), which takes precedence over the one a package installs in
//! `/usr/lib/systemd/user`. Where no user manager answers, nothing is written: the
//! command says so and prints what to run instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow};
use moat_core::home::Home;
use moat_vault::seal::SealPaths;

use crate::Failure;
use crate::cli::ServiceCommand;

const UNIT: &str = "moat.service";

/// `moat service`.
pub(crate) fn run(home: &Home, command: &ServiceCommand) -> Result<(), Failure> {
    match command {
        ServiceCommand::Install { unit_only } => install(home, *unit_only),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Status => status(),
        ServiceCommand::Unit { exe, packaged } => {
            let exe = match exe {
                Some(e) => e.clone(),
                None => this_exe()?,
            };
            let home = (!packaged).then(|| home.root());
            print!("{}", unit(&exe, home, &seal_env()));
            Ok(())
        }
    }
}

/// The unit for `exe`. With `home`, it names that MOAT_HOME; without (the package's
/// unit), moat's default `~/.moat` of whoever runs it.
pub(crate) fn unit(exe: &Path, home: Option<&Path>, env: &[(String, String)]) -> String {
    let quote = |s: &str| {
        // systemd's own quoting: spaces and quotes inside double quotes, % doubled.
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    };
    let mut environment = String::new();
    if let Some(h) = home {
        environment.push_str(&format!(
            "Environment={}\n",
            quote(&format!("MOAT_HOME={}", h.display()))
        ));
    }
    for (k, v) in env {
        environment.push_str(&format!("Environment={}\n", quote(&format!("{k}={v}"))));
    }
    let writable = match home {
        Some(h) => quote(&h.display().to_string()),
        None => "%h/.moat".to_string(),
    };
    // A private /tmp would hide a MOAT_HOME kept there.
    let in_tmp = home.is_some_and(|h| h.starts_with("/tmp") || h.starts_with("/var/tmp"));
    let private_tmp = if in_tmp { "" } else { "PrivateTmp=yes\n" };
    format!(
        "# Written by `moat service install`; `moat service uninstall` removes it.
[Unit]
Description=moat, a local-first AI gateway
Documentation=man:moat-serve(1)
After=network.target

[Service]
Type=exec
ExecStart={exe} serve
{environment}Restart=on-failure
RestartSec=2s
# moat drains its streams on SIGTERM within its grace period.
TimeoutStopSec=40s
UMask=0077
# Hardening that leaves moat whole: it writes only MOAT_HOME (its sandbox, speech cache
# and workspaces live there), speaks IPv4, IPv6 and Unix sockets (the keyring's D-Bus),
# and never gains privileges. Its tool sandbox makes its own namespaces, so namespaces
# are not restricted here.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={writable}
{private_tmp}RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
",
        exe = quote(&exe.display().to_string()),
    )
}

/// How the vault is unsealed in the installing shell, carried into the service so it
/// unseals the same way.
fn seal_env() -> Vec<(String, String)> {
    ["MOAT_SEAL_DIR", "MOAT_SEAL_STORE"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

fn this_exe() -> Result<PathBuf, Failure> {
    std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot tell where this moat binary is")
        .map_err(Failure::runtime)
}

fn unit_path() -> Result<PathBuf, Failure> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Failure::usage(anyhow!("neither XDG_CONFIG_HOME nor HOME is set")))?;
    Ok(config.join("systemd").join("user").join(UNIT))
}

/// `systemctl --user ARGS`, or why the user manager cannot be asked.
fn systemctl(args: &[&str]) -> Result<std::process::Output, String> {
    Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))
}

/// Whether a systemd user manager answers, or why not.
fn user_manager() -> Result<(), String> {
    let out = systemctl(&["show-environment"])?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn install(home: &Home, unit_only: bool) -> Result<(), Failure> {
    let exe = this_exe()?;
    let manager = user_manager();
    if let (false, Err(why)) = (unit_only, &manager) {
        return Err(Failure::runtime(anyhow!(
            "no systemd user manager answers here ({why}); nothing was installed. Run moat yourself instead:\n  MOAT_HOME={} {} serve\n(or write the unit anyway with `moat service install --unit-only`)",
            home.root().display(),
            exe.display()
        )));
    }
    // The unit makes everything but MOAT_HOME read-only: it must exist before the start.
    home.ensure().map_err(Failure::runtime)?;
    let path = unit_path()?;
    let dir = path.parent().expect("the unit path has a folder");
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make {}", dir.display()))
        .map_err(Failure::runtime)?;
    let text = unit(&exe, Some(home.root()), &seal_env());
    crate::app::files::write_public(&path, text.as_bytes())?;
    println!("wrote {}", path.display());
    match SealPaths::for_home(home.root())
        .ok()
        .and_then(|p| p.status())
    {
        Some(false) => {}
        Some(true) => println!(
            "note: the vault's seal needs a PIN, which a service cannot type: it will not unlock unattended (`moat vault seal` without a PIN, or MOAT_VAULT_PASSWORD_FILE)"
        ),
        None => println!(
            "note: the vault is not sealed to this machine: the service cannot unlock it unattended until you run `moat vault seal`"
        ),
    }
    if unit_only {
        println!(
            "not enabled (--unit-only): systemctl --user daemon-reload && systemctl --user enable --now moat"
        );
        return Ok(());
    }
    for args in [&["daemon-reload"][..], &["enable", "--now", UNIT][..]] {
        let out = systemctl(args).map_err(|e| Failure::runtime(anyhow!(e)))?;
        if !out.status.success() {
            return Err(Failure::runtime(anyhow!(
                "systemctl --user {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    println!("moat runs as your user service and starts with your session.");
    println!("  logs:     journalctl --user -u moat -f");
    println!("  state:    moat service status");
    println!(
        "  to keep it running when you are logged out: loginctl enable-linger {}",
        std::env::var("USER").unwrap_or_else(|_| "$USER".into())
    );
    Ok(())
}

fn uninstall() -> Result<(), Failure> {
    let path = unit_path()?;
    if user_manager().is_ok() {
        // Stopping a unit that is not there is no error worth stopping for.
        let _ = systemctl(&["disable", "--now", UNIT]);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no unit at {}: nothing to remove", path.display());
        }
        Err(e) => {
            return Err(Failure::runtime(
                anyhow::Error::from(e).context(format!("cannot remove {}", path.display())),
            ));
        }
    }
    if user_manager().is_ok() {
        let _ = systemctl(&["daemon-reload"]);
    }
    Ok(())
}

fn status() -> Result<(), Failure> {
    let path = unit_path()?;
    println!(
        "unit: {}",
        if path.exists() {
            path.display().to_string()
        } else {
            format!("none at {} (`moat service install`)", path.display())
        }
    );
    match user_manager() {
        Err(why) => println!("systemd user manager: not answering ({why})"),
        Ok(()) => {
            let ask = |what: &str| {
                systemctl(&[what, UNIT])
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_else(|e| e)
            };
            println!("enabled: {}", ask("is-enabled"));
            println!("active: {}", ask("is-active"));
            println!("logs: journalctl --user -u moat");
        }
    }
    Ok(())
}
