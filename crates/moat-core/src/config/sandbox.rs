//! `[sandbox]`: named profiles for running tool commands isolated. Data only;
//! `moat-sandbox` enforces it.
//!
//! ```toml
//! [sandbox.profiles.build]
//! level = "process"          # none | process | container | vm
//! memory_mib = 1024
//! cpus = 2
//! processes = 256
//! wall_time = "5m"
//! output_kib = 4096
//! env = { LANG = "C.UTF-8" } # the whole environment besides PATH and HOME
//! grants = ["ro:/srv/datasets", "rw:/home/me/project", "net:pypi.org", "net:*.pythonhosted.org"]
//! ```
//!
//! A profile named `default` is used when none is named; it exists with the built-in
//! values below unless configured.
//!
//! Which profile a tool runs with is chosen per tool and per trust level of whoever asked
//! for the call:
//!
//! ```toml
//! [sandbox.tools.shell]
//! profile = "locked"                 # any trust level not listed below
//! trust = { owner = "build" }        # trust level -> profile
//! ```
//!
//! A tool without an entry runs with `default`. A profile at level `none` (no isolation)
//! may be chosen for the `owner` trust level only.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// `[sandbox]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Profiles by name.
    pub profiles: BTreeMap<String, SandboxProfile>,
    /// The profile each tool runs with, by trust level.
    pub tools: BTreeMap<String, ToolSandbox>,
}

/// One `[sandbox.tools.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolSandbox {
    /// The profile for every trust level without its own entry in `trust`.
    pub profile: String,
    /// Trust level (`owner`, or a level the assistant gives a sender) to profile.
    pub trust: BTreeMap<String, String>,
}

impl Default for ToolSandbox {
    fn default() -> Self {
        Self {
            profile: "default".into(),
            trust: BTreeMap::new(),
        }
    }
}

/// The trust level of moat's owner: the only one a profile without isolation may serve.
pub const OWNER: &str = "owner";

/// One `[sandbox.profiles.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxProfile {
    /// `process` (the default), `none` (no isolation: owner only), `container` (gVisor's
    /// runsc) or `vm` (Firecracker).
    pub level: String,
    /// Memory in MiB: of the whole sandbox where a cgroup holds it, else of each process
    /// (RLIMIT_AS); also the size of the private /tmp.
    pub memory_mib: u64,
    /// CPUs the command may run on.
    pub cpus: u32,
    /// Processes and threads at once.
    pub processes: u64,
    /// Wall time before the whole process tree is killed.
    #[serde(with = "humantime_serde")]
    pub wall_time: Duration,
    /// KiB kept of each of stdout and stderr.
    pub output_kib: u64,
    /// Environment variables the command sees, besides PATH and HOME.
    pub env: BTreeMap<String, String>,
    /// Host folders visible inside at the same path (`ro:/path` or `rw:/path`), and
    /// destinations reachable through moat's egress proxy (`net:HOST[:PORT]`, port 443
    /// by default, `*.domain` for subdomains).
    pub grants: Vec<String>,
}

impl Default for SandboxProfile {
    fn default() -> Self {
        Self {
            level: "process".into(),
            memory_mib: 256,
            cpus: 1,
            processes: 64,
            wall_time: Duration::from_secs(30),
            output_kib: 1024,
            env: BTreeMap::new(),
            grants: Vec::new(),
        }
    }
}

/// The isolation levels a profile may name.
pub const LEVELS: &[&str] = &["none", "process", "container", "vm"];

/// Splits a grant `ro:/path` / `rw:/path` into (writable, path).
pub fn parse_grant(text: &str) -> Option<(bool, &str)> {
    let (mode, path) = text.split_once(':')?;
    let writable = match mode {
        "ro" => false,
        "rw" => true,
        _ => return None,
    };
    path.starts_with('/').then_some((writable, path))
}

/// Whether `name` can name a tool or a trust level: lowercase letters, digits, `_`, `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks `[sandbox.tools]`: names, that every profile exists, and that `none` serves the
/// owner only.
fn validate_tools(s: &SandboxConfig) -> Result<(), (String, String)> {
    for (tool, t) in &s.tools {
        if !valid_name(tool) {
            return Err((
                format!("sandbox.tools.{tool}"),
                "a tool name is lowercase letters, digits, _ and -".into(),
            ));
        }
        let choices = std::iter::once((None, &t.profile))
            .chain(t.trust.iter().map(|(level, p)| (Some(level.as_str()), p)));
        for (level, profile) in choices {
            let key = match level {
                None => format!("sandbox.tools.{tool}.profile"),
                Some(level) => format!("sandbox.tools.{tool}.trust.{level}"),
            };
            if level.is_some_and(|l| !valid_name(l)) {
                return Err((
                    key,
                    "a trust level is lowercase letters, digits, _ and -".into(),
                ));
            }
            let Some(found) = s.profile(profile) else {
                return Err((
                    key,
                    format!("no profile {profile:?}: define [sandbox.profiles.{profile}]"),
                ));
            };
            if found.level == "none" && level != Some(OWNER) {
                return Err((
                    key,
                    format!(
                        "profile {profile:?} has level \"none\" (no isolation), which only the owner may be given: choose it under trust.{OWNER}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks `[sandbox]`; the error names the key.
pub fn validate(s: &SandboxConfig) -> Result<(), InvalidValue> {
    rules(s).map_err(InvalidValue::from)
}

fn rules(s: &SandboxConfig) -> Result<(), (String, String)> {
    validate_tools(s)?;
    // `default` serves every tool without an entry, at every trust level: at level none
    // it would run any sender's tool calls on the host.
    if s.profiles.get("default").is_some_and(|p| p.level == "none") {
        return Err((
            "sandbox.profiles.default.level".into(),
            format!(
                "\"default\" runs every tool not listed in [sandbox.tools], for everyone, so it cannot be \"none\": give that level to another profile and choose it under [sandbox.tools.TOOL] trust.{OWNER}"
            ),
        ));
    }
    for (name, p) in &s.profiles {
        let key = |field: &str| format!("sandbox.profiles.{name}.{field}");
        if !LEVELS.contains(&p.level.as_str()) {
            return Err((
                key("level"),
                format!("must be one of {}", LEVELS.join(", ")),
            ));
        }
        if p.memory_mib < 16 {
            return Err((key("memory_mib"), "must be at least 16".into()));
        }
        if p.cpus == 0 || p.processes == 0 || p.output_kib == 0 || p.wall_time.is_zero() {
            return Err((
                key("cpus, processes, output_kib, wall_time"),
                "must be above zero".into(),
            ));
        }
        if p.wall_time > Duration::from_secs(24 * 3600) {
            return Err((
                key("wall_time"),
                "may be at most 24h: a tool call is not a service".into(),
            ));
        }
        if p.memory_mib > u64::MAX / (1024 * 1024) {
            return Err((key("memory_mib"), "is out of range".into()));
        }
        for grant in &p.grants {
            let net = grant.strip_prefix("net:").is_some_and(|d| {
                !d.is_empty() && !d.contains(|c: char| c.is_whitespace() || c == '/')
            });
            if !net && parse_grant(grant).is_none() {
                return Err((
                    key("grants"),
                    format!(
                        "{grant:?} must be ro:/absolute/path, rw:/absolute/path or net:HOST[:PORT]"
                    ),
                ));
            }
        }
        for var in p.env.keys() {
            let mut chars = var.chars();
            let valid = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
            if !valid {
                return Err((key("env"), format!("{var:?} is not a variable name")));
            }
        }
    }
    Ok(())
}

impl SandboxConfig {
    /// The name of the profile `tool` runs with for someone at trust level `trust`: the
    /// tool's entry for that level, else the tool's profile, else `default`.
    pub fn profile_for<'a>(&'a self, tool: &str, trust: &str) -> &'a str {
        match self.tools.get(tool) {
            Some(t) => t.trust.get(trust).unwrap_or(&t.profile),
            None => "default",
        }
    }

    /// The profile called `name`; `default` exists even when not configured.
    pub fn profile(&self, name: &str) -> Option<SandboxProfile> {
        match self.profiles.get(name) {
            Some(p) => Some(p.clone()),
            None if name == "default" => Some(SandboxProfile::default()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_levels_are_checked_with_the_key_named() {
        assert_eq!(parse_grant("rw:/srv"), Some((true, "/srv")));
        assert_eq!(parse_grant("ro:relative"), None);
        assert_eq!(parse_grant("x:/srv"), None);
        let mut c = SandboxConfig::default();
        c.profiles.insert(
            "t".into(),
            SandboxProfile {
                level: "docker".into(),
                ..SandboxProfile::default()
            },
        );
        assert_eq!(validate(&c).unwrap_err().key, "sandbox.profiles.t.level");
        c.profiles.insert(
            "t".into(),
            SandboxProfile {
                wall_time: Duration::from_secs(25 * 3600),
                ..SandboxProfile::default()
            },
        );
        assert_eq!(
            validate(&c).unwrap_err().key,
            "sandbox.profiles.t.wall_time"
        );
        assert!(c.profile("default").is_some());
        assert!(c.profile("missing").is_none());
        let with_grants = |grants: &[&str]| {
            let mut c = SandboxConfig::default();
            c.profiles.insert(
                "t".into(),
                SandboxProfile {
                    grants: grants.iter().map(|g| g.to_string()).collect(),
                    ..SandboxProfile::default()
                },
            );
            validate(&c)
        };
        assert!(with_grants(&["net:pypi.org", "net:*.example.com:8443", "ro:/srv"]).is_ok());
        for bad in ["net:", "net:a b", "net:host/path", "tcp:host"] {
            assert_eq!(
                with_grants(&[bad]).unwrap_err().key,
                "sandbox.profiles.t.grants",
                "{bad}"
            );
        }
    }

    #[test]
    fn tools_choose_a_profile_per_trust_level_and_none_is_for_the_owner() {
        let parsed: SandboxConfig = toml::from_str(
            r#"
            [profiles.build]
            memory_mib = 1024
            [profiles.host]
            level = "none"
            [profiles.locked]
            wall_time = "5s"
            [tools.shell]
            profile = "locked"
            trust = { owner = "build", trusted = "default" }
            [tools.python]
            trust = { owner = "host" }
            "#,
        )
        .unwrap();
        assert_eq!(validate(&parsed), Ok(()));
        assert_eq!(parsed.profile_for("shell", "owner"), "build");
        assert_eq!(parsed.profile_for("shell", "trusted"), "default");
        assert_eq!(parsed.profile_for("shell", "stranger"), "locked");
        assert_eq!(parsed.profile_for("python", "owner"), "host");
        assert_eq!(parsed.profile_for("python", "trusted"), "default");
        assert_eq!(parsed.profile_for("unlisted", "owner"), "default");

        let refused = |tools: &str| {
            let text = format!("[profiles.host]\nlevel = \"none\"\n{tools}");
            let c: SandboxConfig = toml::from_str(&text).unwrap();
            validate(&c).unwrap_err()
        };
        let InvalidValue { key, problem: why } = refused("[tools.shell]\nprofile = \"host\"");
        assert_eq!(key, "sandbox.tools.shell.profile");
        assert!(why.contains("only the owner"), "{why}");
        let InvalidValue { key, .. } = refused("[tools.shell]\ntrust = { guest = \"host\" }");
        assert_eq!(key, "sandbox.tools.shell.trust.guest");
        let InvalidValue { key, problem: why } =
            refused("[tools.shell]\ntrust = { owner = \"nope\" }");
        assert_eq!(key, "sandbox.tools.shell.trust.owner");
        assert!(why.contains("no profile \"nope\""), "{why}");
        assert_eq!(refused("[tools.Shell]").key, "sandbox.tools.Shell");
        let InvalidValue { key, problem: why } = refused("[profiles.default]\nlevel = \"none\"");
        assert_eq!(key, "sandbox.profiles.default.level");
        assert!(why.contains("every tool not listed"), "{why}");
        assert_eq!(
            refused("[tools.shell]\ntrust = { \"Owner \" = \"default\" }").key,
            "sandbox.tools.shell.trust.Owner "
        );
    }
}
