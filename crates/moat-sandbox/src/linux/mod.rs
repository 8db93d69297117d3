//! The Linux implementation: the `process` level (namespaces, a new root, Landlock,
//! seccomp, a cgroup or rlimits), the `container` level (gVisor's runsc) and the
//! unconfined `none` level, sharing one supervisor.

mod bpf;
mod cgroup;
mod child;
pub mod gvisor;
pub mod landlock;
mod plan;
mod proxy;
pub mod seccomp;
mod supervise;
mod sys;
mod tls_name;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use crate::outcome::{Enforcement, LimitMechanism, Report};
use crate::{Attached, Level, SandboxError, Spec};
use child::{ChildFds, Stage};
use sys::Forked;

const NAMESPACES: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS) as u64;
// CLONE_NEWCGROUP comes later, from the child, once it is in its own cgroup.

const PROC_HINT: &str = "; the kernel refuses a new /proc where the host's /proc has paths covered by other mounts (as inside a Docker container): run moat on the host, or in a container started with --security-opt systempaths=unconfined";
const USERNS_HINT: &str = "; moat needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu) or to run as root";

pub(crate) use plan::check_limits;
pub use plan::{host_ids, privileged};

/// Which cgroup version the sandbox's limits would use, or why none: a group with the
/// default limits is made and removed.
pub fn cgroup_probe() -> Result<&'static str, String> {
    let limits = crate::Limits::default();
    cgroup::Cgroup::create(limits.memory_bytes, limits.processes, limits.cpus).map(|group| {
        match group.version {
            cgroup::Version::V1 => "cgroup v1",
            cgroup::Version::V2 => "cgroup v2",
        }
    })
}

/// Runs `spec` at the `process` level; with `io`, its stdin and stdout are the caller's.
pub fn run_process(spec: &Spec, io: Option<Attached>) -> Result<Report, SandboxError> {
    let start = Instant::now();
    let deadline = start + spec.limits.wall_time;
    let making_cgroup = cgroup::Maker::start(&spec.limits);
    let mut plan = plan::build(spec)?;
    hand_over_workspace(spec, plan.host_uid, plan.host_gid)?;
    // Dropped after the guard below: the group is removed only once the guard has killed
    // and reaped whatever a failed setup left in it.
    let cgroup = making_cgroup.finish();
    if cgroup.as_ref().is_ok_and(cgroup::Cgroup::has_cpu_quota) {
        // The quota holds the CPU limit: the threads may spread over every CPU.
        (plan.cpus, plan.cpu_list) = plan::pick_cpus(u32::MAX)?;
    }
    let entries = match &cgroup {
        Ok(group) => group.entry_files().map_err(|source| SandboxError::Setup {
            stage: "opening the sandbox's cgroup",
            source,
            hint: "",
        })?,
        Err(why) => {
            tracing::debug!(%why, "no cgroup for the sandbox; limits by rlimits");
            Vec::new()
        }
    };
    let mut cgroup_fds = [-1; 3];
    for (slot, entry) in cgroup_fds.iter_mut().zip(&entries) {
        *slot = entry.as_raw_fd();
    }

    // The supervisor's ends (feeding stdin, capturing stdout) exist only when the caller
    // does not hold them.
    let (stdin_r, stdin_w, out_r, out_w, stop) = match io {
        Some(io) => (io.stdin, None, None, io.stdout, Some(io.stop)),
        None => {
            let (stdin_r, stdin_w) = sys::pipe()?;
            let (out_r, out_w) = sys::pipe()?;
            (stdin_r, Some(stdin_w), Some(out_r), out_w, None)
        }
    };
    let (err_r, err_w) = sys::pipe()?;
    let (errors_r, errors_w) = sys::socketpair()?;
    let (status_r, status_w) = sys::pipe()?;
    // A socket, not a pipe: a child that died early must not SIGPIPE moat.
    let (sync_r, sync_w) = sys::socketpair()?;
    let fds = ChildFds {
        stdin: stdin_r.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        errors: errors_w.as_raw_fd(),
        sync: sync_r.as_raw_fd(),
        cgroup: cgroup_fds,
        status: status_w.as_raw_fd(),
    };

    // No signal handler of moat's may run in the child before exec: block everything
    // across the clone (the child unblocks after resetting every disposition).
    let saved_mask = sys::block_all_signals();
    // SAFETY: the child branch only calls child::run, which makes raw system calls on
    // data built before the clone and never returns.
    let forked = unsafe { sys::clone3(NAMESPACES) };
    if !matches!(forked, Ok(Forked::Child)) {
        sys::restore_signals(&saved_mask);
    }
    let (pid, pidfd) = match forked {
        Ok(Forked::Child) => child::run(&mut plan, &fds),
        Ok(Forked::Parent { pid, pidfd }) => (pid, pidfd),
        Err(source) => {
            return Err(SandboxError::Setup {
                stage: "creating the namespaces (clone3)",
                source,
                hint: USERNS_HINT,
            });
        }
    };
    drop((stdin_r, out_w, err_w, errors_w, sync_r, entries, status_w));
    let kill = || {
        sys::raw(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd() as usize,
            libc::SIGKILL as usize,
            0,
            0,
            0,
        );
    };
    let mut guard = supervise::ChildGuard {
        pid,
        kill: &kill,
        armed: true,
    };

    if let Err(source) = write_id_maps(pid, &plan) {
        return Err(SandboxError::Setup {
            stage: "mapping the sandbox user (uid_map/gid_map)",
            source,
            hint: USERNS_HINT,
        });
    }
    // A child that is gone already (a failed setup step) reports why in read_setup.
    let _ = sys::send_byte(sync_w.as_raw_fd(), b'1');
    drop(sync_w);

    let (setup_error, listener, proxy_socket) = match read_setup(errors_r, deadline) {
        Ok(read) => read,
        // The guard kills the child on the way out.
        Err(source) if source.kind() == std::io::ErrorKind::TimedOut => {
            return Err(SandboxError::Setup {
                stage: "waiting for the setup to finish within the wall-time limit (is a granted folder on a hung network or FUSE filesystem?)",
                source,
                hint: "",
            });
        }
        Err(e) => return Err(e.into()),
    };
    if let Some((stage, errno)) = setup_error {
        let source = std::io::Error::from_raw_os_error(errno);
        return Err(match stage {
            Stage::Exec => SandboxError::Exec {
                program: spec.program.to_string_lossy().into_owned(),
                source,
                searched: spec.searched(),
            },
            stage => SandboxError::Setup {
                stage: stage.describe(),
                hint: match (stage, errno) {
                    (Stage::Proc, libc::EPERM) => PROC_HINT,
                    // Before the namespaces are in place, a refusal is the kernel's
                    // policy on user namespaces; later ones have other causes.
                    (
                        Stage::WaitForParent
                        | Stage::Identity
                        | Stage::Capabilities
                        | Stage::PrivateMounts
                        | Stage::StagingRoot,
                        libc::EPERM,
                    ) => USERNS_HINT,
                    _ => "",
                },
                source,
            },
        });
    }

    // The proxy serves until the sandbox ends; nothing reaches out before it runs.
    let proxy = match (&spec.network, proxy_socket) {
        (Some(network), Some(socket)) => Some(proxy::Proxy::start(socket, network)?),
        (Some(_), None) => {
            return Err(SandboxError::Setup {
                stage: "bringing up loopback and the egress proxy's socket",
                source: std::io::Error::other("the sandbox sent no proxy socket"),
                hint: "",
            });
        }
        _ => None,
    };
    let finished = supervise::supervise(supervise::Running {
        pid,
        pidfd: pidfd.as_fd(),
        stdin: stdin_w,
        stdout: out_r,
        stderr: err_r,
        stop,
        input: &spec.stdin,
        output_limit: spec.limits.output_bytes,
        deadline,
        kill: &kill,
        listener,
    })?;
    guard.armed = false; // supervise reaped it
    // The command's own status, which the sandbox's init passed on (none when init
    // itself was killed: a timeout, a violation, the out-of-memory group kill).
    let mut status = [0u8; 4];
    let finished = match sys::read_exact_or_eof(status_r.as_raw_fd(), &mut status) {
        Ok(true) => finished.with_command_status(i32::from_le_bytes(status)),
        _ => finished,
    };
    let network_log = proxy.map(proxy::Proxy::stop).unwrap_or_default();
    let (limits, oom_kills) = match &cgroup {
        Ok(group) => (
            match group.version {
                cgroup::Version::V2 => LimitMechanism::CgroupV2 {
                    path: group.path().to_owned(),
                },
                cgroup::Version::V1 => LimitMechanism::CgroupV1 {
                    path: group.path().to_owned(),
                },
            },
            group.oom_kills(),
        ),
        Err(why) => (
            LimitMechanism::Rlimits {
                why_not_cgroup: why.clone(),
            },
            0,
        ),
    };
    let cpu_quota = cgroup
        .as_ref()
        .ok()
        .filter(|g| g.has_cpu_quota())
        .map(|_| spec.limits.cpus);
    drop(cgroup); // removes the group now that its processes are gone
    let mut report = finished.into_report(
        start,
        plan.cpu_limit_secs,
        oom_kills,
        Enforcement {
            level: Level::Process,
            limits,
            landlock_abi: plan.landlock.as_ref().map(|l| l.abi),
            seccomp_allowed: seccomp::allowed_count(),
            host_uid: plan.host_uid,
            network: spec.network.is_some(),
            cpus: plan.cpu_list.clone(),
            cpu_quota,
        },
    );
    report.network_log = network_log;
    Ok(report)
}

/// The workspace is the one place the command may write: when the sandbox runs under
/// another host identity than moat (moat is root; the command is `nobody`), hand the
/// folder itself to that identity.
fn hand_over_workspace(spec: &Spec, uid: u32, gid: u32) -> Result<(), SandboxError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == uid {
        return Ok(());
    }
    let path_error = |source| SandboxError::Path {
        path: spec.workspace.clone(),
        source,
    };
    let resolved = std::fs::canonicalize(&spec.workspace).map_err(path_error)?;
    std::os::unix::fs::lchown(&resolved, Some(uid), Some(gid)).map_err(path_error)
}

fn write_id_maps(pid: libc::pid_t, plan: &plan::ChildPlan) -> std::io::Result<()> {
    let (uid, gid) = (plan.host_uid, plan.host_gid);
    let proc = format!("/proc/{pid}");
    if !plan.privileged {
        // Unprivileged: the kernel only accepts a gid map once setgroups is denied.
        std::fs::write(format!("{proc}/setgroups"), "deny")?;
    }
    let id = plan::SANDBOX_ID;
    std::fs::write(format!("{proc}/uid_map"), format!("{id} {uid} 1\n"))?;
    std::fs::write(format!("{proc}/gid_map"), format!("{id} {gid} 1\n"))?;
    Ok(())
}

/// Waits until the child either execs (the socket closes) or reports a failed step; on
/// the way it may pass the seccomp listener. A setup still going at `deadline` (a bind
/// source on a hung filesystem blocks the child in the kernel) is a `TimedOut` error.
#[allow(clippy::type_complexity)]
fn read_setup(
    errors: OwnedFd,
    deadline: Instant,
) -> std::io::Result<(Option<(Stage, i32)>, Option<OwnedFd>, Option<OwnedFd>)> {
    let mut listener = None;
    let mut proxy = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !sys::wait_readable(errors.as_raw_fd(), left)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sandbox's setup did not finish in time",
            ));
        }
        let Some((record, fds)) = sys::recv_record(errors.as_raw_fd())? else {
            break;
        };
        if record.len() < 8 {
            break;
        }
        let stage = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
        if stage == child::LISTENER_RECORD {
            listener = fds.into_iter().next();
            continue;
        }
        if stage == child::PROXY_RECORD {
            proxy = fds.into_iter().next();
            continue;
        }
        let errno = i32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
        let stage = Stage::ALL
            .get(stage as usize)
            .copied()
            .unwrap_or(Stage::Exec);
        return Ok((Some((stage, errno)), listener, proxy));
    }
    Ok((None, listener, proxy))
}

/// Runs `spec` with no isolation (the `none` level): an empty environment but the declared
/// one, the workspace as working directory, its own process group, and a cgroup of its own
/// where one can be made (descendants that left the group with `setsid` stay in it), all
/// killed at the wall-time limit, output capped. With `io`, its stdin and stdout are the
/// caller's.
pub fn run_unconfined(spec: &Spec, io: Option<Attached>) -> Result<Report, SandboxError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let start = Instant::now();
    let deadline = start + spec.limits.wall_time;
    let tracking = cgroup::Cgroup::create_tracking();
    if let Err(why) = &tracking {
        tracing::debug!(%why, "no cgroup for a none-level call; the wall time kills its process group only");
    }
    let entries = match &tracking {
        Ok(group) => group.entry_files().map_err(|source| SandboxError::Setup {
            stage: "opening the call's cgroup",
            source,
            hint: "",
        })?,
        Err(_) => Vec::new(),
    };
    let entry_fds: Vec<std::os::fd::RawFd> = entries.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = Command::new(&spec.program);
    // SAFETY: between fork and exec the hook only calls write(2), which is
    // async-signal-safe, on descriptors opened before the fork.
    unsafe {
        command.pre_exec(move || {
            for &fd in &entry_fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
        .args(&spec.args)
        .env_clear()
        // Paths declared as /workspace mean the workspace, which here is the host folder.
        .envs(spec.env.iter().map(|(k, v)| match v.to_str() {
            Some("/workspace") => (k, spec.workspace.as_os_str().to_owned()),
            _ => (k, v.clone()),
        }))
        .current_dir(&spec.workspace)
        .process_group(0)
        .stderr(Stdio::piped());
    let stop = supervise::wire_stdio(&mut command, io);
    let mut child = command.spawn().map_err(|source| SandboxError::Exec {
        program: spec.program.to_string_lossy().into_owned(),
        source,
        searched: spec.searched(),
    })?;
    // The command holds the child's ends of the caller's pipes: close ours, so the caller
    // sees end of file when the command ends.
    drop(command);
    drop(entries);
    let pid = child.id() as libc::pid_t;
    let pidfd = supervise::pidfd_or_kill(&mut child)?;
    let kill = || {
        // SAFETY: kill takes no pointers; -pid is the process group we created.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        if let Ok(group) = &tracking {
            group.kill_all();
        }
    };
    let finished =
        supervise::supervise_spawned(&mut child, pidfd.as_fd(), spec, deadline, &kill, stop)?;
    // Nothing the call started outlives it, as at the other levels (there the PID
    // namespace ends); the group is removed when dropped.
    if let Ok(group) = &tracking {
        group.kill_all();
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    Ok(finished.into_report(
        start,
        u64::MAX,
        0,
        Enforcement {
            level: Level::None,
            limits: LimitMechanism::WallTimeOnly,
            landlock_abi: None,
            seccomp_allowed: 0,
            host_uid: uid,
            network: true,
            cpus: Vec::new(),
            cpu_quota: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_setup_that_never_finishes_times_out() {
        let (reader, writer) = sys::socketpair().unwrap();
        let started = Instant::now();
        let Err(err) = read_setup(reader, started + Duration::from_millis(200)) else {
            panic!("a setup that never reports finished");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(writer);

        // The child's exec closes its end: a setup that finished.
        let (reader, writer) = sys::socketpair().unwrap();
        drop(writer);
        let (failed, listener, proxy) =
            read_setup(reader, Instant::now() + Duration::from_secs(5)).unwrap();
        assert!(failed.is_none() && listener.is_none() && proxy.is_none());
    }
}
