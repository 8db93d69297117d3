//! Run a command with no network, a read-only root and bounded memory, CPU and time, from
//! Linux primitives directly: no external binary, no daemon.
//!
//! The `process` level gives each call new user, mount, PID, network, IPC, UTS and cgroup
//! namespaces; a read-only root made of the host's `/usr` and libraries, a small generated
//! `/etc`, a minimal `/dev`, a new `/proc`, a private `/tmp` and a per-call `/workspace`
//! (the only writable place, with host folders only by explicit grant); an empty
//! environment but what the caller declares; `no_new_privs`, no capabilities, an
//! unprivileged uid that is `nobody` on the host when moat runs as root; a seccomp
//! allowlist with a kill list for escape attempts; Landlock rules over the same paths; a
//! cgroup of the call's own for memory and processes (v2, or v1 on a hybrid host; an
//! out-of-memory kill becomes [`Outcome::OutOfMemory`]) or rlimits where none can be made,
//! RLIMIT_CPU, a CPU quota in that cgroup for the CPU count (else affinity), a wall-time
//! kill of the whole process tree,
//! and capped output. With [`Network`] grants, loopback
//! comes up with one proxy socket on it that the caller's side serves: tunnels only to
//! granted destinations its [`Judge`] (the egress policy) lets through.
//!
//! ```no_run
//! use moat_sandbox::{Spec, run};
//!
//! let workspace = tempfile::tempdir()?;
//! let report = run(&Spec::new("sh", ["-c", "echo hello > out.txt; cat out.txt"], workspace.path()))?;
//! assert!(report.outcome.success());
//! assert_eq!(report.stdout, b"hello\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `container` level hands the same filesystem, environment and limits to gVisor's
//! `runsc` as an OCI bundle, when it is installed and moat runs as root: the command then
//! runs on gVisor's user-space kernel instead of the host's (see `linux/gvisor.rs`). The
//! `vm` level (Firecracker) is not in this build: it is refused, naming the levels that are.
//!
//! `run` blocks; async callers use `spawn_blocking`. It is safe to call from a
//! multi-threaded program: the child makes only raw system calls until `execve`.

mod attached;
mod error;
#[cfg(target_os = "linux")]
mod linux;
mod outcome;
mod spec;

pub use attached::{Attached, Conversation, attached_pipes};
pub use error::SandboxError;
pub use outcome::{
    Enforcement, LimitMechanism, NetEvent, Outcome, Report, Violation, truncation_marker,
};
pub use spec::{Access, DEFAULT_PATH, Grant, Judge, Level, Limits, NetGrant, Network, Spec};

/// Whether moat runs as root (the container level needs it).
#[cfg(target_os = "linux")]
pub use linux::privileged;

/// Runs one command as `spec` says and reports how it ended.
///
/// A command that runs and fails is `Ok` with its [`Outcome`]; `Err` means it could not
/// be started (a refused grant, a missing kernel feature, a command not found).
pub fn run(spec: &Spec) -> Result<Report, SandboxError> {
    run_with(spec, None)
}

/// Runs one command as `spec` says while the caller talks to it over `io` (from
/// [`attached_pipes`]); `spec.stdin` is not used and the report has no stdout. It blocks
/// until the command ends: at the wall time, when the caller drops
/// [`Conversation::stop`], or by itself.
pub fn run_attached(spec: &Spec, io: Attached) -> Result<Report, SandboxError> {
    run_with(spec, Some(io))
}

fn run_with(spec: &Spec, io: Option<Attached>) -> Result<Report, SandboxError> {
    #[cfg(target_os = "linux")]
    linux::check_limits(&spec.limits)?;
    if spec.level == Level::None && spec.network.is_some() {
        // Grants confine nothing without isolation: refuse rather than look confined.
        return Err(SandboxError::Invalid(
            "network grants apply to the process level; the none level has the host's whole network".into(),
        ));
    }
    match spec.level {
        #[cfg(target_os = "linux")]
        Level::Process => linux::run_process(spec, io),
        #[cfg(target_os = "linux")]
        Level::None => linux::run_unconfined(spec, io),
        #[cfg(not(target_os = "linux"))]
        Level::Process | Level::None => Err(SandboxError::Unsupported(
            "the sandbox needs Linux (namespaces, seccomp, Landlock)".into(),
        )),
        #[cfg(target_os = "linux")]
        Level::Container => match find_on_path("runsc") {
            Some(runsc) => linux::gvisor::run_container(spec, &runsc, io),
            None => Err(runsc_missing()),
        },
        #[cfg(not(target_os = "linux"))]
        Level::Container => Err(runsc_missing()),
        Level::Vm => Err(vm_unavailable()),
    }
}

/// The refusal for the `container` level when gVisor's runsc is not installed.
fn runsc_missing() -> SandboxError {
    SandboxError::MissingRuntime {
        level: Level::Container.name(),
        program: "runsc",
        how: "install gVisor (https://gvisor.dev/docs/user_guide/install/) so that runsc is on PATH",
    }
}

/// The `vm` level is named in config so profiles can ask for it, but this build does not
/// drive Firecracker: installing it would change nothing, so the refusal does not say to.
fn vm_unavailable() -> SandboxError {
    SandboxError::Unsupported(
        "the vm level (a firecracker micro-VM) is not available in this build of moat, \
         whether or not Firecracker is installed; choose level = \"container\" (gVisor's runsc) \
         or level = \"process\""
            .into(),
    )
}

/// Where `program` is on moat's `PATH` (absolute entries only: a relative one would
/// pick a program by the current folder, for a runtime that runs as root).
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// What this kernel offers the `process` level, for `moat doctor` and test reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSupport {
    /// The Landlock ABI, if enabled.
    pub landlock_abi: Option<u32>,
    /// The host uid a sandboxed command runs as.
    pub host_uid: u32,
    /// System calls on the seccomp allowlist.
    pub seccomp_allowed: usize,
    /// Whether a sysctl keeps this process from creating user namespaces (root is exempt
    /// from the unprivileged switches).
    pub user_namespaces_restricted: bool,
    /// What holds memory and processes: `cgroup v2` or `cgroup v1` (a group was made and
    /// removed to find out), or why rlimits do.
    pub limits: Result<&'static str, String>,
}

/// Probes the kernel, without starting a sandbox.
#[cfg(target_os = "linux")]
pub fn kernel_support() -> KernelSupport {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let (host_uid, _) = linux::host_ids();
    let privileged = linux::privileged();
    let unprivileged_blocked = read("/proc/sys/kernel/unprivileged_userns_clone") == Some(0)
        || read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1);
    KernelSupport {
        landlock_abi: linux::landlock::abi(),
        host_uid,
        seccomp_allowed: linux::seccomp::allowed_count(),
        user_namespaces_restricted: read("/proc/sys/user/max_user_namespaces") == Some(0)
            || (!privileged && unprivileged_blocked),
        limits: linux::cgroup_probe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_runtime_is_named_with_how_to_install_it() {
        let message = runsc_missing().to_string();
        assert!(
            message.contains("runsc") && message.contains("gvisor.dev"),
            "{message}"
        );
        let message = vm_unavailable().to_string();
        assert!(
            message.contains("firecracker") && message.contains("level = \"process\""),
            "{message}"
        );
    }
}
