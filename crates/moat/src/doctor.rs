//! `moat doctor`: read-only checks of the home, the config and the exposure, each printed
//! with the fix when it fails.

use std::process::ExitCode;

use moat_core::config::Config;
use moat_core::home::Home;
use moat_core::secret::SecretRef;
use moat_net::{ApiKeyState, exposure_problems};
use moat_vault::seal::SealPaths;
use moat_vault::{Unlock, Vault};

/// One check's result.
enum Outcome {
    Ok(String),
    Warn(String),
    Fail { problem: String, fix: String },
}

/// Whether a secret reference will resolve at start, as far as can be told without asking
/// for a password: doctor never prompts and changes nothing.
fn check_reference(home: &Home, reference: &SecretRef) -> Outcome {
    let name = match reference {
        SecretRef::Env(_) => {
            return match reference.resolve() {
                Ok(_) => Outcome::Ok(format!("{reference} is set")),
                Err(e) => Outcome::Fail {
                    problem: e.to_string(),
                    fix: "export the variable before `moat serve`, or change auth.api_key".into(),
                },
            };
        }
        SecretRef::Vault(name) => name,
    };
    let path = home.vault_file();
    if !path.exists() {
        return Outcome::Fail {
            problem: format!(
                "{reference} needs the vault, and there is none at {}",
                path.display()
            ),
            fix: format!("moat vault add {name} (it creates a vault sealed to this machine)"),
        };
    }
    // Only a seal without a PIN opens the vault with no one asked.
    let unsealed = SealPaths::for_home(home.root())
        .ok()
        .filter(|p| p.status() == Some(false))
        .and_then(|p| p.unseal(None).ok());
    let Some(key) = unsealed else {
        return Outcome::Warn(format!(
            "{reference} is checked when `moat serve` unlocks the vault (it needs the password or PIN)"
        ));
    };
    match Vault::open(&path, Unlock::DataKey(&key)) {
        Ok(vault) if vault.get(name).is_some() => {
            Outcome::Ok(format!("{reference} is in the vault"))
        }
        Ok(_) => Outcome::Fail {
            problem: format!("the vault has no secret named {name:?}"),
            fix: format!("moat vault add {name}"),
        },
        Err(e) => Outcome::Fail {
            problem: e.to_string(),
            fix: "see `moat vault status`".into(),
        },
    }
}

pub(crate) fn run(home: &Home) -> ExitCode {
    let mut results: Vec<(&str, Outcome)> = Vec::new();
    home_checks(home, &mut results);
    config_checks(home, &mut results);
    version_checks(home, &mut results);
    results.push(("sandbox", sandbox_support()));
    results.push(("sandbox container level", container_level()));
    report(&results)
}

/// The home directory: there, a directory, and private.
fn home_checks(home: &Home, results: &mut Vec<(&'static str, Outcome)>) {
    let root = home.root();
    match std::fs::metadata(root) {
        Err(_) => results.push((
            "home",
            Outcome::Warn(format!(
                "{} does not exist yet; `moat serve` creates it (0700)",
                root.display()
            )),
        )),
        Ok(m) if !m.is_dir() => results.push((
            "home",
            Outcome::Fail {
                problem: format!("{} is not a directory", root.display()),
                fix: "point MOAT_HOME at a directory, or move the file aside".into(),
            },
        )),
        Ok(_) => match home.permission_problems() {
            Ok(problems) if problems.is_empty() => results.push((
                "permissions",
                Outcome::Ok(format!("{}: directories 0700, files 0600", root.display())),
            )),
            Ok(problems) => {
                for p in problems {
                    let problem = p.problem();
                    results.push((
                        "permissions",
                        Outcome::Fail {
                            problem: if p.is_unsafe() {
                                format!("{problem} (moat serve refuses to start)")
                            } else {
                                problem.to_string()
                            },
                            fix: p.fix(),
                        },
                    ));
                }
            }
            Err(e) => results.push((
                "permissions",
                Outcome::Fail {
                    problem: format!("cannot inspect {}: {e}", root.display()),
                    fix: "check that you own MOAT_HOME".into(),
                },
            )),
        },
    }
}

/// The configuration, and what it exposes: listeners, API key, TLS.
/// The formats of what MOAT_HOME holds, next to what this moat reads: an older one is
/// migrated when opened (state.db keeps a copy), a newer one is refused.
fn version_checks(home: &Home, results: &mut Vec<(&'static str, Outcome)>) {
    let mut parts = Vec::new();
    let mut newer = Vec::new();
    if let Ok(l) = Config::load(home, &[]) {
        parts.push(format!(
            "config format {} (this moat: {})",
            l.format,
            moat_core::config::CONFIG_FORMAT
        ));
    }
    if let Some(v) = moat_state::StateStore::schema_version_at(&home.state_db()) {
        let known = moat_state::SCHEMA_VERSION;
        parts.push(format!("state schema {v} (this moat: {known})"));
        if v > known {
            newer.push("state.db");
        }
    }
    if let Ok(bytes) = std::fs::read(home.vault_file())
        && let Some(&v) = bytes.get(8)
    {
        let known = moat_vault::format::VERSION;
        parts.push(format!("vault format {v} (this moat: {known})"));
        if v > known {
            newer.push("the vault");
        }
    }
    parts.push("audit log format v1".into());
    results.push((
        "versions",
        if newer.is_empty() {
            Outcome::Ok(parts.join(", "))
        } else {
            Outcome::Fail {
                problem: format!(
                    "{} written by a newer moat: {}",
                    newer.join(" and "),
                    parts.join(", ")
                ),
                fix: "upgrade moat to the version that wrote them".into(),
            }
        },
    ));
}

fn config_checks(home: &Home, results: &mut Vec<(&'static str, Outcome)>) {
    match Config::load(home, &[]) {
        Err(e) => results.push((
            "config",
            Outcome::Fail {
                problem: e.to_string(),
                fix: format!(
                    "edit {} (or the variable named) and run `moat doctor` again",
                    home.config_file().display()
                ),
            },
        )),
        Ok(loaded) => {
            let c = &loaded.config;
            let source = if loaded.file_exists {
                "valid"
            } else {
                "no config file; embedded defaults"
            };
            results.push((
                "config",
                Outcome::Ok(format!("{} ({source})", loaded.file.display())),
            ));
            // An `env:` key is read (it is this process's own environment); a vault key is
            // not, so its strength is checked when `moat serve` unlocks the vault.
            let key_value = match &c.auth.api_key {
                Some(r @ SecretRef::Env(_)) => r.resolve().ok(),
                _ => None,
            };
            let key = match (&c.auth.api_key, &key_value) {
                (None, _) => ApiKeyState::Absent,
                (Some(_), Some(v)) => ApiKeyState::Value(v.expose()),
                (Some(_), None) => ApiKeyState::Unread,
            };
            let problems = exposure_problems(
                c.server.listen,
                key,
                c.server.tls.is_some(),
                c.server.allow_insecure_remote,
            );
            if problems.is_empty() {
                let how = if c.server.listen.ip().is_loopback() {
                    "loopback only".to_string()
                } else {
                    format!(
                        "reachable from the network, with API key{}",
                        if c.server.tls.is_some() {
                            " and TLS"
                        } else {
                            ", WITHOUT TLS"
                        }
                    )
                };
                results.push((
                    "exposure",
                    Outcome::Ok(format!("main listener {}: {how}", c.server.listen)),
                ));
            }
            for p in problems {
                results.push((
                    "exposure",
                    Outcome::Fail {
                        problem: p.problem(),
                        fix: p.fix(),
                    },
                ));
            }
            if let Some(lan) = c.server.lan_listen {
                results.push((
                    "exposure",
                    Outcome::Ok(format!(
                        "LAN listener {lan}: /health and read-only media only"
                    )),
                ));
            }
            if let Some(r) = &c.auth.api_key {
                results.push(("api key", check_reference(home, r)));
            }
            channel_checks(home, c, results);
            radio_checks(home, c, results);
            if let Some(t) = &c.server.tls {
                match moat_net::server_config(&t.cert, &t.key) {
                    Ok(_) => results.push((
                        "tls",
                        Outcome::Ok(format!("{} and {} load", t.cert.display(), t.key.display())),
                    )),
                    Err(e) => results.push((
                        "tls",
                        Outcome::Fail {
                            problem: e.to_string(),
                            fix: "fix server.tls.cert / server.tls.key".into(),
                        },
                    )),
                }
            }
        }
    }
}

/// Each channel: who may talk on it (an open one is a warning: anyone on the service
/// reaches the assistant), whether its secret is there, plain IRC off loopback.
fn channel_checks(home: &Home, c: &Config, results: &mut Vec<(&'static str, Outcome)>) {
    use moat_core::config::channels::DmPolicy;
    for (name, ch) in &c.channels {
        let policy = match ch.dm_policy {
            DmPolicy::Open => Outcome::Warn(format!(
                "channel {name}: dm_policy = \"open\": ANYONE on {} reaches the assistant (as trust {:?}); use \"pairing\" unless that is what you want",
                ch.server
                    .as_deref()
                    .or(ch.api_base.as_deref())
                    .unwrap_or(&ch.kind),
                ch.trust
            )),
            DmPolicy::Disabled => Outcome::Ok(format!(
                "channel {name}: disabled (nobody reaches the assistant)"
            )),
            p => Outcome::Ok(format!("channel {name}: dm_policy = {:?}", p.as_str())),
        };
        results.push(("channels", policy));
        let named = ch
            .password_secret
            .as_ref()
            .or(ch.token_secret.as_ref())
            .or(ch.key_secret.as_ref());
        if let Some(secret) = named {
            results.push((
                "channels",
                check_reference(home, &SecretRef::Vault(secret.clone())),
            ));
        }
        let target = ch.server.as_deref().or(ch.imap_server.as_deref());
        let loopback = target
            .and_then(|s| s.rsplit_once(':'))
            .is_some_and(|(h, _)| matches!(h, "127.0.0.1" | "localhost" | "[::1]" | "::1"));
        if ch.tls == Some(false) && !loopback {
            results.push((
                "channels",
                Outcome::Warn(format!(
                    "channel {name}: plain {} to {}: messages (and any password) cross the network unencrypted",
                    ch.kind,
                    target.unwrap_or("?")
                )),
            ));
        }
    }
}

/// The radio: each library's secret, plain `http://` (with `enc:` hex passwords on old
/// servers) off this machine, and ffmpeg when a station will play.
fn radio_checks(home: &Home, c: &Config, results: &mut Vec<(&'static str, Outcome)>) {
    for (name, lib) in &c.radio.libraries {
        results.push((
            "radio",
            check_reference(home, &SecretRef::Vault(lib.password_secret.clone())),
        ));
        let local = url::Url::parse(&lib.url).ok().is_some_and(|u| {
            matches!(
                u.host_str(),
                Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
            )
        });
        if lib.url.starts_with("http://") && !local {
            results.push((
                "radio",
                Outcome::Warn(format!(
                    "library {name}: plain http to {}: a server older than Subsonic API 1.13 gets the password hex-encoded, readable on the network; use https",
                    lib.url
                )),
            ));
        }
    }
    if c.radio.station_library().is_some() {
        let ffmpeg = &c.radio.ffmpeg;
        let runs = std::process::Command::new(ffmpeg)
            .arg("-version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        results.push((
            "radio",
            if runs {
                Outcome::Ok(format!("{} runs: the station can decode and encode", ffmpeg.display()))
            } else {
                Outcome::Fail {
                    problem: format!("cannot run {}: the station cannot play", ffmpeg.display()),
                    fix: "install ffmpeg (Debian: apt install ffmpeg) or set radio.ffmpeg to its path".into(),
                }
            },
        ));
        voice_checks(home, &c.radio.tts, results);
    }
}

/// The DJ's voice: the engine's program, Piper's model, the speech server's key. A
/// voice that cannot speak costs the station its DJ, not its music: a warning.
fn voice_checks(
    home: &Home,
    tts: &moat_core::config::radio::TtsConfig,
    results: &mut Vec<(&'static str, Outcome)>,
) {
    let runs = |program: &std::path::Path, arg: &str| {
        std::process::Command::new(program)
            .arg(arg)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let outcome = match tts.engine.as_str() {
        "piper" => match &tts.piper_model {
            _ if !runs(&tts.piper, "--help") => Outcome::Warn(format!(
                "cannot run {}: the DJ has no voice; pip install piper-tts or set radio.tts.piper",
                tts.piper.display()
            )),
            Some(m) if !m.is_file() => Outcome::Warn(format!(
                "radio.tts.piper_model {} is not a file: the DJ has no voice",
                m.display()
            )),
            _ => Outcome::Ok("Piper runs and its voice model is there".into()),
        },
        "http" => match &tts.api_key_secret {
            Some(secret) => check_reference(home, &SecretRef::Vault(secret.clone())),
            None => Outcome::Ok("the DJ speaks through a speech server with no key".into()),
        },
        _ if runs(&tts.espeak, "--version") => {
            Outcome::Ok(format!("{} runs: the DJ has a voice", tts.espeak.display()))
        }
        _ => Outcome::Warn(format!(
            "cannot run {}: the DJ has no voice; apt install espeak-ng or set radio.tts.espeak",
            tts.espeak.display()
        )),
    };
    results.push(("radio", outcome));
}

/// Prints each result, with the fix under each failure; exit 1 if any failed.
fn report(results: &[(&str, Outcome)]) -> ExitCode {
    // Messages can quote configuration; they leave the process redacted like everything else.
    let redactor = moat_core::redact::global();
    let r = |text: &str| redactor.redact(text).into_owned();
    let mut failed = false;
    for (name, outcome) in results {
        match outcome {
            Outcome::Ok(msg) => println!("ok    {name}: {}", r(msg)),
            Outcome::Warn(msg) => println!("note  {name}: {}", r(msg)),
            Outcome::Fail { problem, fix } => {
                failed = true;
                println!("FAIL  {name}: {}", r(problem));
                if !fix.is_empty() {
                    println!("      fix: {}", r(fix));
                }
            }
        }
    }
    if failed {
        println!("\nSome checks failed; apply the fixes above and run `moat doctor` again.");
        ExitCode::FAILURE
    } else {
        println!("\nAll checks passed.");
        ExitCode::SUCCESS
    }
}

/// Whether profiles at `level = "container"` can run: gVisor's runsc on PATH, and root.
fn container_level() -> Outcome {
    match moat_sandbox::find_on_path("runsc") {
        None => Outcome::Warn(
            "runsc (gVisor) is not on PATH: profiles at level \"container\" are refused (install gVisor, e.g. apt-get install runsc)".into(),
        ),
        Some(runsc) if !moat_sandbox::privileged() => Outcome::Warn(format!(
            "{} found, but the container level needs moat to run as root",
            runsc.display()
        )),
        Some(runsc) => Outcome::Ok(format!("gVisor's {} drives level \"container\"", runsc.display())),
    }
}

/// What the kernel offers tool sandboxes, read without starting one.
fn sandbox_support() -> Outcome {
    let support = moat_sandbox::kernel_support();
    if support.user_namespaces_restricted {
        return Outcome::Warn(
            "user namespaces are restricted on this kernel: tool sandboxes may fail to start (allow them with sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0)".into(),
        );
    }
    let limits = match &support.limits {
        Ok(version) => format!("memory and processes limited by {version}"),
        Err(why) => format!(
            "memory and processes limited by rlimits, per process (no cgroup: {why}); out of memory is not reported as such"
        ),
    };
    match support.landlock_abi {
        Some(abi) => Outcome::Ok(format!(
            "Landlock ABI {abi}, seccomp allowlist of {} calls, {limits}; sandboxed commands run as host uid {}",
            support.seccomp_allowed, support.host_uid
        )),
        None => Outcome::Warn(
            "the kernel has no Landlock: tool sandboxes still get namespaces, seccomp and limits, but no Landlock file rules (enable CONFIG_SECURITY_LANDLOCK and add landlock to the lsm= boot parameter)".into(),
        ),
    }
}
