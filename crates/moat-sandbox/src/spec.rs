//! What a caller asks for: the command, its declared environment, its workspace, the host
//! folders it is granted, and its limits.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How strongly a command is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// No isolation at all: the command runs on the host as moat's user, with the declared
    /// environment only, in the workspace, under the wall-time and output limits. Only the
    /// owner may choose it, explicitly.
    None,
    /// Namespaces, a read-only minimal root, seccomp, Landlock and resource limits, from
    /// Linux primitives directly (the default).
    #[default]
    Process,
    /// Delegated to gVisor's `runsc`.
    Container,
    /// Delegated to a Firecracker micro-VM.
    Vm,
}

impl Level {
    /// The name used in config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Process => "process",
            Level::Container => "container",
            Level::Vm => "vm",
        }
    }

    /// Parses a config or command-line name.
    pub fn parse(name: &str) -> Option<Level> {
        Some(match name {
            "none" => Level::None,
            "process" => Level::Process,
            "container" => Level::Container,
            "vm" => Level::Vm,
            _ => return None,
        })
    }
}

/// Resource limits for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory of the whole sandbox when a cgroup holds it, else the address space of each
    /// process (RLIMIT_AS); also the size of each tmpfs.
    pub memory_bytes: u64,
    /// CPUs the command may run on.
    pub cpus: u32,
    /// Processes (and threads) the command may have at once.
    pub processes: u64,
    /// From start to the kill of the whole process tree.
    pub wall_time: Duration,
    /// Bytes kept of each of stdout and stderr; the rest is read and dropped.
    pub output_bytes: usize,
    /// Whether memory and processes may be held by a cgroup of the call's own where one
    /// can be made (see [`crate::LimitMechanism`]); false keeps to rlimits, which start
    /// faster on hosts where moving a process between cgroups is slow.
    pub use_cgroup: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * 1024 * 1024,
            cpus: 1,
            processes: 64,
            wall_time: Duration::from_secs(30),
            output_bytes: 1024 * 1024,
            use_cgroup: true,
        }
    }
}

/// Whether a granted host folder may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and execute.
    ReadOnly,
    /// Read, execute, create, change and delete.
    ReadWrite,
}

/// A host folder made visible inside the sandbox at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The host folder (made absolute and resolved before use).
    pub path: PathBuf,
    /// What the command may do there.
    pub access: Access,
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program: a path, or a name looked up in the declared `PATH` inside the sandbox.
    pub program: OsString,
    /// Its arguments (not counting the program).
    pub args: Vec<OsString>,
    /// The whole environment the command sees: what the tool declares plus the secrets
    /// injected for this call. Nothing of moat's own environment is passed.
    pub env: Vec<(String, OsString)>,
    /// Bytes written to the command's standard input (then closed).
    pub stdin: Vec<u8>,
    /// The host directory mounted read-write at `/workspace`, the working directory.
    pub workspace: PathBuf,
    /// Host folders granted to this call.
    pub grants: Vec<Grant>,
    /// Host paths that no mount may expose (moat's home and vault), checked against every
    /// grant.
    pub hidden: Vec<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// How to isolate.
    pub level: Level,
    /// Network access, only through moat's egress proxy; `None` is no network at all.
    pub network: Option<Network>,
}

/// Decides whether a destination the grants allow may be reached, and where it is: the
/// caller's egress policy (name rules, address classes, ports) and resolver. The
/// addresses to connect to, or why not.
pub type Judge = Arc<dyn Fn(&str, u16) -> Result<Vec<SocketAddr>, String> + Send + Sync>;

/// A sandbox's network: one HTTP proxy on its loopback (`HTTP_PROXY`, `HTTPS_PROXY`),
/// served by moat, which tunnels (`CONNECT`) only to granted destinations the [`Judge`]
/// lets through. Nothing else is reachable: the network namespace has only loopback.
#[derive(Clone)]
pub struct Network {
    /// Where the command may connect.
    pub grants: Vec<NetGrant>,
    /// The egress policy every granted destination must also pass.
    pub judge: Judge,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// One destination a command may reach: a host name (or `*.suffix`, or an IP address)
/// and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetGrant {
    /// Lowercase host, `*.example.com` for any subdomain, or an IP address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl NetGrant {
    /// `HOST` (port 443), `HOST:PORT`, `*.SUFFIX[:PORT]` or `[IPV6]:PORT`.
    pub fn parse(text: &str) -> Result<NetGrant, String> {
        let bad = |why: &str| {
            format!("network grant {text:?}: {why}; use HOST, HOST:PORT or *.DOMAIN:PORT")
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && (name.parse::<std::net::IpAddr>().is_ok()
                || name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid {
            return Err(bad("not a host name"));
        }
        Ok(NetGrant { host, port })
    }

    /// Whether this grant covers `host` (lowercase, no trailing dot) at `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        port == self.port
            && match self.host.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                // Addresses by value: `[0::1]` is `[::1]`, `::ffff:127.0.0.1` is `127.0.0.1`.
                None => match (
                    self.host.parse::<std::net::IpAddr>(),
                    host.parse::<std::net::IpAddr>(),
                ) {
                    (Ok(granted), Ok(asked)) => granted.to_canonical() == asked.to_canonical(),
                    _ => host == self.host,
                },
            }
    }
}

/// The `PATH` declared when a caller declares none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

impl Spec {
    /// A spec for `program args...` in `workspace` with the default limits, `PATH` and
    /// `HOME=/workspace` as the only environment, and the `process` level.
    pub fn new(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        workspace: impl Into<PathBuf>,
    ) -> Spec {
        Spec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/workspace".into()),
            ],
            stdin: Vec::new(),
            workspace: workspace.into(),
            grants: Vec::new(),
            hidden: Vec::new(),
            limits: Limits::default(),
            level: Level::Process,
            network: None,
        }
    }

    /// Declares (or replaces) one environment variable.
    pub fn set_env(&mut self, name: impl Into<String>, value: impl Into<OsString>) {
        let name = name.into();
        let value = value.into();
        match self.env.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name, value)),
        }
    }

    /// The declared `PATH`, or [`DEFAULT_PATH`].
    pub(crate) fn path_var(&self) -> OsString {
        self.env
            .iter()
            .find(|(n, _)| n == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| DEFAULT_PATH.into())
    }

    /// Where the program is looked for, for error messages.
    pub(crate) fn searched(&self) -> String {
        if self.program.as_encoded_bytes().contains(&b'/') {
            self.program.to_string_lossy().into_owned()
        } else {
            format!("PATH={}", self.path_var().to_string_lossy())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_grants_parse_and_match() {
        let g = NetGrant::parse("API.example.com").unwrap();
        assert_eq!((g.host.as_str(), g.port), ("api.example.com", 443));
        assert!(g.allows("api.example.com", 443));
        assert!(!g.allows("api.example.com", 80));
        assert!(!g.allows("evil-api.example.com", 443));
        let w = NetGrant::parse("*.example.com:8443").unwrap();
        assert!(w.allows("a.example.com", 8443));
        assert!(w.allows("b.a.example.com", 8443));
        assert!(!w.allows("example.com", 8443));
        assert!(!w.allows("badexample.com", 8443));
        let ip = NetGrant::parse("[::1]:8080").unwrap();
        assert_eq!((ip.host.as_str(), ip.port), ("::1", 8080));
        assert!(
            NetGrant::parse("127.0.0.1:5000")
                .unwrap()
                .allows("127.0.0.1", 5000)
        );
        assert!(ip.allows("0::1", 8080));
        assert!(!ip.allows("::2", 8080));
        let v4 = NetGrant::parse("127.0.0.1:5000").unwrap();
        assert!(v4.allows("::ffff:127.0.0.1", 5000));
        for bad in [
            "",
            ":443",
            "host:0",
            "host:99999",
            "a b",
            "ex ample.com",
            "[::1",
            "x/y",
        ] {
            assert!(NetGrant::parse(bad).is_err(), "{bad:?}");
        }
    }
}
