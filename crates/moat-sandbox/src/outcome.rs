//! What happened: a typed outcome, the captured output, and how the isolation was enforced.

use std::time::Duration;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited by itself with this status.
    Exited(i32),
    /// A signal killed it (not one of the cases below).
    Signaled(i32),
    /// It ran past the wall-time limit; the whole process tree was killed.
    TimedOut,
    /// The CPU-time limit stopped it (`SIGXCPU`/`SIGKILL` from RLIMIT_CPU).
    CpuLimit,
    /// The kernel killed a process of the sandbox for going over the memory limit, and the
    /// command did not succeed. Only a cgroup can tell (see [`LimitMechanism`]); under
    /// rlimits the program sees allocation failures and ends as it handles them.
    OutOfMemory,
    /// A process of the sandbox made a system call on the kill list (ptrace, mount, bpf, a
    /// new namespace...): the whole sandbox was killed before the call ran
    /// ([`Report::violation`] names it), or, on kernels before 5.0, the process died of
    /// `SIGSYS`.
    PolicyViolation,
}

impl Outcome {
    /// Whether the command exited with status 0.
    pub fn success(self) -> bool {
        self == Outcome::Exited(0)
    }

    /// A conventional shell exit status for this outcome: the command's own status, 128 +
    /// signal, 124 for a timeout (as timeout(1)), 137 (128 + SIGKILL) for out of memory,
    /// 159 (128 + SIGSYS) for a policy violation.
    pub fn exit_status(self) -> i32 {
        match self {
            Outcome::Exited(code) => code,
            Outcome::Signaled(sig) => 128 + sig,
            Outcome::TimedOut => 124,
            Outcome::CpuLimit => 128 + libc::SIGXCPU,
            Outcome::OutOfMemory => 128 + libc::SIGKILL,
            Outcome::PolicyViolation => 128 + libc::SIGSYS,
        }
    }

    /// A short description for people.
    pub fn describe(self) -> String {
        match self {
            Outcome::Exited(code) => format!("exited with status {code}"),
            Outcome::Signaled(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
            Outcome::TimedOut => "timed out: the whole process tree was killed".into(),
            Outcome::CpuLimit => "stopped by the CPU-time limit".into(),
            Outcome::OutOfMemory => {
                "out of memory: the kernel killed it at the memory limit".into()
            }
            Outcome::PolicyViolation => {
                "policy violation: a forbidden system call; the sandbox was killed".into()
            }
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

/// How the memory, CPU and process limits were enforced. The CPU count is a cgroup quota
/// where the cpu controller is there ([`Enforcement::cpu_quota`]), else pinning by
/// affinity; RLIMIT_CPU is kept as a backstop either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitMechanism {
    /// A cgroup v2 of the sandbox's own: `memory.max` (no swap) for the whole process
    /// tree, out-of-memory kills counted, `pids.max` for processes.
    CgroupV2 {
        /// The group's directory.
        path: std::path::PathBuf,
    },
    /// A cgroup in the legacy v1 memory and pids hierarchies of a hybrid host (used when
    /// v2 has no memory controller to give): the same limits as v2.
    CgroupV1 {
        /// The group's directory in the memory hierarchy.
        path: std::path::PathBuf,
    },
    /// setrlimit: RLIMIT_AS for memory (each process's address space; the program sees
    /// allocation failures), RLIMIT_NPROC for processes.
    Rlimits {
        /// Why no cgroup could be used.
        why_not_cgroup: String,
    },
    /// gVisor's `runsc` (the `container` level): the sandbox's own cgroup holds memory
    /// (gVisor's kernel included), processes and a CPU quota.
    Runsc,
    /// Nothing beyond the wall-time and output limits (the `none` level).
    WallTimeOnly,
}

impl LimitMechanism {
    /// A short name for reports and JSON: `cgroup_v2`, `cgroup_v1`, `rlimits`, `runsc`,
    /// `wall_time_only`.
    pub fn name(&self) -> &'static str {
        match self {
            LimitMechanism::CgroupV2 { .. } => "cgroup_v2",
            LimitMechanism::CgroupV1 { .. } => "cgroup_v1",
            LimitMechanism::Rlimits { .. } => "rlimits",
            LimitMechanism::Runsc => "runsc",
            LimitMechanism::WallTimeOnly => "wall_time_only",
        }
    }
}

/// What isolation was in force, for reports and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// The level that ran.
    pub level: crate::Level,
    /// How limits were enforced.
    pub limits: LimitMechanism,
    /// The Landlock ABI version applied, if the kernel has Landlock.
    pub landlock_abi: Option<u32>,
    /// System calls on the seccomp allowlist (0 when no filter was installed).
    pub seccomp_allowed: usize,
    /// The host uid the command ran as.
    pub host_uid: u32,
    /// Whether the command had any network (only loopback, down, when it did not).
    pub network: bool,
    /// The CPUs the command could run on: all of them under a quota, else the ones it
    /// was pinned to.
    pub cpus: Vec<usize>,
    /// The CPUs' worth of time per period its cgroup's quota allows (`cpu.max`), when the
    /// CPU limit is a quota rather than pinning.
    pub cpu_quota: Option<u32>,
}

/// A call on the seccomp kill list, made by some process of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The system call, e.g. `mount`, `ptrace`, `clone` (with a namespace flag).
    pub syscall: &'static str,
    /// The process that made it, as a host pid.
    pub pid: u32,
}

/// The result of one sandboxed call.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Standard output, up to the limit, with a truncation marker if cut.
    pub stdout: Vec<u8>,
    /// Standard error, likewise.
    pub stderr: Vec<u8>,
    /// The forbidden system call that ended it, when the outcome is a policy violation
    /// and the kernel said which (seccomp user notification, Linux 5.0+).
    pub violation: Option<Violation>,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// From start to exit.
    pub elapsed: Duration,
    /// User + system CPU time of the command and the children it waited for.
    pub cpu_time: Duration,
    /// Largest resident set of any one process, in bytes.
    pub peak_rss_bytes: u64,
    /// What isolation was in force.
    pub enforcement: Enforcement,
    /// Each connection through the egress proxy: where to, and whether it was let through.
    pub network_log: Vec<NetEvent>,
}

/// One decision of the sandbox's egress proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEvent {
    /// `host:port` as the command asked for it.
    pub destination: String,
    /// Whether a tunnel was made.
    pub allowed: bool,
    /// Why not (not granted, the egress policy's refusal, a failed connection), or how:
    /// `tunnel` (CONNECT) or `http` (a plain-HTTP request forwarded).
    pub reason: String,
}

/// Appended to a stream cut at the output limit.
pub fn truncation_marker(limit: usize) -> String {
    format!("\n[moat: output truncated at {limit} bytes]\n")
}
