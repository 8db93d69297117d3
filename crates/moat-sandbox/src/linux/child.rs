//! The child between `clone3` and `execve`: it becomes the sandbox.
//!
//! It is a copy of one thread of moat, which may have many, so it must not allocate, lock
//! or panic: it only reads the [`ChildPlan`] the parent built and makes raw system calls.
//! A failing step writes `(stage, errno)` to the error pipe and exits; a successful
//! `execve` closes that pipe (close-on-exec), which is how the parent knows it started.

use std::os::fd::RawFd;

use libc::{c_ulong, c_void};

use super::plan::{ChildPlan, HOSTNAME, NetSetup, Op, SANDBOX_ID};
use super::sys::{self, CAP_V3, CapData, CapHeader, raw};

/// The setup steps, in order; the parent turns a number back into words.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Stage {
    WaitForParent,
    Identity,
    Capabilities,
    PrivateMounts,
    StagingRoot,
    BuildRoot,
    Proc,
    Mount,
    PivotRoot,
    ReadOnlyRoot,
    Hostname,
    Network,
    Workdir,
    Limits,
    Stdio,
    NoNewPrivs,
    Landlock,
    DropCapabilities,
    Seccomp,
    Exec,
}

impl Stage {
    /// Every stage, indexed by its number.
    pub const ALL: [Stage; 20] = [
        Stage::WaitForParent,
        Stage::Identity,
        Stage::Capabilities,
        Stage::PrivateMounts,
        Stage::StagingRoot,
        Stage::BuildRoot,
        Stage::Proc,
        Stage::Mount,
        Stage::PivotRoot,
        Stage::ReadOnlyRoot,
        Stage::Hostname,
        Stage::Network,
        Stage::Workdir,
        Stage::Limits,
        Stage::Stdio,
        Stage::NoNewPrivs,
        Stage::Landlock,
        Stage::DropCapabilities,
        Stage::Seccomp,
        Stage::Exec,
    ];

    /// What the step does, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::WaitForParent => "waiting for the user namespace mapping",
            Stage::Identity => "switching to the sandbox user",
            Stage::Capabilities => "keeping namespace capabilities for the setup",
            Stage::PrivateMounts => "making mounts private",
            Stage::StagingRoot => "mounting the new root's tmpfs",
            Stage::BuildRoot => "building the new root",
            Stage::Proc => "mounting a fresh /proc",
            Stage::Mount => "bind-mounting a host path",
            Stage::PivotRoot => "pivot_root into the new root",
            Stage::ReadOnlyRoot => "making the root read-only",
            Stage::Hostname => "setting the hostname",
            Stage::Network => "bringing up loopback and the egress proxy's socket",
            Stage::Workdir => "entering /workspace",
            Stage::Limits => "setting resource limits",
            Stage::Stdio => "connecting standard input and output",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Landlock => "applying Landlock rules",
            Stage::DropCapabilities => "dropping capabilities",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Exec => "starting the command",
        }
    }
}

/// The descriptors the child works with (numbers valid in its copy of the table).
pub struct ChildFds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub errors: RawFd,
    pub sync: RawFd,
    /// Where the child moves itself into the sandbox's cgroup (see
    /// `Cgroup::entry_files`); -1 for none. None at all: limits fall to rlimits.
    pub cgroup: [RawFd; 3],
    /// Where the sandbox's init writes the command's wait status (4 bytes) before it
    /// exits.
    pub status: RawFd,
}

fn fail(fds: &ChildFds, stage: Stage, errno: i32) -> ! {
    let mut record = [0u8; 8];
    let (a, b) = record.split_at_mut(4);
    a.copy_from_slice(&(stage as u32).to_le_bytes());
    b.copy_from_slice(&errno.to_le_bytes());
    sys::write_all(fds.errors, &record);
    sys::exit(127)
}

/// Fails with the current errno when `ret` is negative.
fn check(fds: &ChildFds, stage: Stage, ret: libc::c_long) {
    if ret < 0 {
        fail(fds, stage, sys::errno());
    }
}

fn mount(
    source: *const libc::c_char,
    target: *const libc::c_char,
    fstype: *const libc::c_char,
    flags: c_ulong,
    data: *const c_void,
) -> libc::c_long {
    raw(
        libc::SYS_mount,
        source as usize,
        target as usize,
        fstype as usize,
        flags as usize,
        data as usize,
    )
}

/// Per-mount flags the kernel locks on a bind mount made in a less privileged namespace:
/// a remount must keep them (the statfs `ST_*` values equal the `MS_*` ones).
const LOCKED_FLAGS: c_ulong = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME;

/// Index of `f_flags` in the kernel's 64-bit `struct statfs`.
const STATFS_FLAGS_WORD: usize = 10;
#[cfg(not(target_pointer_width = "64"))]
compile_error!("the sandbox reads struct statfs with the 64-bit layout");

fn run_op(fds: &ChildFds, op: &Op, slots: &[[u8; 32]]) {
    match op {
        Op::Mkdir(path, mode) => {
            let r = raw(
                libc::SYS_mkdirat,
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                *mode as usize,
                0,
                0,
            );
            if r < 0 {
                if sys::errno() != libc::EEXIST {
                    fail(fds, Stage::BuildRoot, sys::errno());
                }
            } else {
                // mkdir applies the umask; the modes here are exact (1777 for /tmp).
                check(
                    fds,
                    Stage::BuildRoot,
                    raw(
                        libc::SYS_fchmodat,
                        libc::AT_FDCWD as usize,
                        path.as_ptr() as usize,
                        *mode as usize,
                        0,
                        0,
                    ),
                );
            }
        }
        Op::Symlink(target, link) => {
            check(
                fds,
                Stage::BuildRoot,
                raw(
                    libc::SYS_symlinkat,
                    target.as_ptr() as usize,
                    libc::AT_FDCWD as usize,
                    link.as_ptr() as usize,
                    0,
                    0,
                ),
            );
        }
        Op::File(path, content) => {
            let fd = raw(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                (libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC) as usize,
                0o644,
                0,
            );
            check(fds, Stage::BuildRoot, fd);
            if !sys::write_all(fd as RawFd, content) {
                fail(fds, Stage::BuildRoot, sys::errno());
            }
            raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
        }
        Op::Bind {
            source,
            target,
            dir,
            writable,
            device,
        } => {
            if *dir {
                let r = raw(
                    libc::SYS_mkdirat,
                    libc::AT_FDCWD as usize,
                    target.as_ptr() as usize,
                    0o755,
                    0,
                    0,
                );
                if r < 0 && sys::errno() != libc::EEXIST {
                    fail(fds, Stage::Mount, sys::errno());
                }
            } else {
                let fd = raw(
                    libc::SYS_openat,
                    libc::AT_FDCWD as usize,
                    target.as_ptr() as usize,
                    (libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC) as usize,
                    0o644,
                    0,
                );
                check(fds, Stage::Mount, fd);
                raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            }
            let Some(source) = slots.get(*source) else {
                fail(fds, Stage::Mount, libc::EINVAL)
            };
            // Not recursive: mounts below a shared folder stay out of sight rather than
            // keeping their host flags (a remount changes only the top mount).
            let flags = libc::MS_BIND;
            check(
                fds,
                Stage::Mount,
                mount(
                    source.as_ptr().cast(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ),
            );
            // The kernel's struct statfs on 64-bit targets: eleven 8-byte words, f_flags
            // last (libc keeps that field private), then spare words.
            let mut st = [0u64; 16];
            check(
                fds,
                Stage::Mount,
                raw(
                    libc::SYS_statfs,
                    target.as_ptr() as usize,
                    st.as_mut_ptr() as usize,
                    0,
                    0,
                    0,
                ),
            );
            let mut flags = libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_NOSUID
                | (st[STATFS_FLAGS_WORD] as c_ulong & LOCKED_FLAGS);
            if !writable {
                flags |= libc::MS_RDONLY;
            }
            if *device {
                flags |= libc::MS_NOEXEC;
            } else {
                flags |= libc::MS_NODEV;
            }
            check(
                fds,
                Stage::Mount,
                mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ),
            );
        }
        Op::Tmpfs(target, options) => {
            check(
                fds,
                Stage::BuildRoot,
                mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                ),
            );
        }
        Op::Proc(target) => {
            check(
                fds,
                Stage::Proc,
                mount(
                    c"proc".as_ptr(),
                    target.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
            );
        }
    }
}

/// capget (`nr` = SYS_capget) or capset (SYS_capset) on this process's version-3 sets.
fn caps(fds: &ChildFds, stage: Stage, nr: libc::c_long, data: *mut [CapData; 2]) {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    check(
        fds,
        stage,
        raw(
            nr,
            &mut header as *mut CapHeader as usize,
            data as usize,
            0,
            0,
            0,
        ),
    );
}

fn prctl(fds: &ChildFds, stage: Stage, option: libc::c_int, arg: usize) {
    check(
        fds,
        stage,
        raw(libc::SYS_prctl, option as usize, arg, 0, 0, 0),
    );
}

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: the call returns a notification descriptor.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: usize = 1 << 3;

/// Installs one filter; returns the raw result (a listener descriptor with the flag).
/// Failing to install the allowlist is fatal.
fn install_filter(
    fds: &ChildFds,
    filter: &[seccompiler::sock_filter],
    flags: usize,
) -> libc::c_long {
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let r = raw(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER as usize,
        flags,
        &program as *const libc::sock_fprog as usize,
        0,
        0,
    );
    if r < 0 && flags == 0 {
        fail(fds, Stage::Seccomp, sys::errno());
    }
    r
}

/// Marks the record that carries the seccomp listener descriptor.
pub const LISTENER_RECORD: u32 = u32::MAX;
/// Marks the record that carries the egress proxy's listening socket.
pub const PROXY_RECORD: u32 = u32::MAX - 1;

/// Passes a descriptor to the parent over the error socket (SCM_RIGHTS), in a record
/// marked `marker`.
fn send_fd(fds: &ChildFds, stage: Stage, marker: u32, listener: RawFd) {
    #[repr(C)]
    struct Control {
        header: libc::cmsghdr,
        fd: RawFd,
        _pad: u32,
    }
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&marker.to_le_bytes());
    let mut iov = libc::iovec {
        iov_base: record.as_mut_ptr().cast(),
        iov_len: record.len(),
    };
    // SAFETY: cmsghdr and msghdr are plain C structs for which all-zero is valid.
    let mut control: Control = unsafe { std::mem::zeroed() };
    control.header.cmsg_len = std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<RawFd>();
    control.header.cmsg_level = libc::SOL_SOCKET;
    control.header.cmsg_type = libc::SCM_RIGHTS;
    control.fd = listener;
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut Control).cast();
    msg.msg_controllen = std::mem::size_of::<Control>();
    check(
        fds,
        stage,
        raw(
            libc::SYS_sendmsg,
            fds.errors as usize,
            &msg as *const libc::msghdr as usize,
            0,
            0,
            0,
        ),
    );
}

/// Brings up the namespace's loopback and opens the egress proxy's listening socket on
/// it, which goes to the parent (moat serves it); the child keeps no copy, and the port
/// stays taken, so nothing inside can listen there instead.
fn network(fds: &ChildFds, net: &NetSetup) {
    let flags = libc::SOCK_CLOEXEC as usize;
    let control = raw(
        libc::SYS_socket,
        libc::AF_INET as usize,
        libc::SOCK_DGRAM as usize | flags,
        0,
        0,
        0,
    );
    check(fds, Stage::Network, control);
    check(
        fds,
        Stage::Network,
        raw(
            libc::SYS_ioctl,
            control as usize,
            libc::SIOCSIFFLAGS as usize,
            &net.lo_up as *const libc::ifreq as usize,
            0,
            0,
        ),
    );
    raw(libc::SYS_close, control as usize, 0, 0, 0, 0);
    let listener = raw(
        libc::SYS_socket,
        libc::AF_INET as usize,
        libc::SOCK_STREAM as usize | flags,
        0,
        0,
        0,
    );
    check(fds, Stage::Network, listener);
    check(
        fds,
        Stage::Network,
        raw(
            libc::SYS_bind,
            listener as usize,
            &net.proxy as *const libc::sockaddr_in as usize,
            std::mem::size_of::<libc::sockaddr_in>(),
            0,
            0,
        ),
    );
    check(
        fds,
        Stage::Network,
        raw(libc::SYS_listen, listener as usize, 64, 0, 0, 0),
    );
    send_fd(fds, Stage::Network, PROXY_RECORD, listener as RawFd);
    raw(libc::SYS_close, listener as usize, 0, 0, 0, 0);
}

/// Writes `/proc/self/fd/N` and a NUL into `slot` without allocating.
fn proc_fd_path(fd: u32, slot: &mut [u8; 32]) {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    slot[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        slot[PREFIX.len() + i] = digits[len - 1 - i];
    }
    slot[PREFIX.len() + len] = 0;
}

/// The sandbox's init, once the command is forked: reaps every child until the command
/// itself ends, writes its wait status to `fds.status`, and exits. Holds no descriptor
/// the command's end should wait for.
fn init(fds: &ChildFds, command: libc::pid_t) -> ! {
    // The setup socket must close when the command execs (the parent reads to its end),
    // the command's pipes when the command and its own children are done.
    // Every other descriptor goes: the command's pipes (the stdin's write end above all,
    // or the command would wait for its end forever) and the setup socket.
    let keep = fds.status as usize;
    if keep > 0 {
        raw(libc::SYS_close_range, 0, keep - 1, 0, 0, 0);
    }
    raw(libc::SYS_close_range, keep + 1, u32::MAX as usize, 0, 0, 0);
    loop {
        let mut status: libc::c_int = 0;
        let reaped = raw(
            libc::SYS_wait4,
            -1isize as usize,
            &mut status as *mut libc::c_int as usize,
            0,
            0,
            0,
        );
        if reaped == command as libc::c_long {
            sys::write_all(fds.status, &status.to_le_bytes());
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            sys::exit(code);
        }
        if reaped < 0 && sys::errno() != libc::EINTR {
            sys::exit(127);
        }
    }
}

/// Becomes the sandbox and executes the command. Never returns.
pub fn run(plan: &mut ChildPlan, fds: &ChildFds) -> ! {
    // Die with moat; then wait until the parent has written our uid/gid maps.
    prctl(
        fds,
        Stage::WaitForParent,
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as usize,
    );
    let mut byte = [0u8; 1];
    if raw(
        libc::SYS_read,
        fds.sync as usize,
        byte.as_mut_ptr() as usize,
        1,
        0,
        0,
    ) != 1
    {
        sys::exit(127);
    }
    // Into the sandbox's cgroup before anything else runs here ("0" is this process). A
    // cgroup namespace made after has that group as its root: the command sees `/`, not
    // moat's groups.
    for &entry in fds.cgroup.iter().filter(|&&fd| fd >= 0) {
        if !sys::write_all(entry, b"0") {
            fail(fds, Stage::Limits, sys::errno());
        }
    }
    check(
        fds,
        Stage::Limits,
        raw(
            libc::SYS_unshare,
            libc::CLONE_NEWCGROUP as usize,
            0,
            0,
            0,
            0,
        ),
    );

    // Open the bind sources while we still have moat's host identity (moat's home may be
    // closed to the sandbox user) and the host's tree is still in view.
    // Each must still be the very file the parent checked (same device and inode): a
    // path swapped for a symlink in between is refused, not followed.
    for (source, slot) in plan.sources.iter().zip(plan.source_slots.iter_mut()) {
        let fd = raw(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            source.path.as_ptr() as usize,
            (libc::O_PATH | libc::O_CLOEXEC) as usize,
            0,
            0,
        );
        check(fds, Stage::Mount, fd);
        // SAFETY: struct stat is plain data; zeroed is a valid value to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(
            fds,
            Stage::Mount,
            raw(
                libc::SYS_fstat,
                fd as usize,
                &mut st as *mut libc::stat as usize,
                0,
                0,
                0,
            ),
        );
        if st.st_dev != source.dev || st.st_ino != source.ino {
            fail(fds, Stage::Mount, libc::ESTALE);
        }
        proc_fd_path(fd as u32, slot);
    }

    // Become uid/gid 1000 inside, keeping this namespace's capabilities for the setup
    // (files created in the new tmpfs must belong to a mapped id).
    if plan.privileged {
        check(
            fds,
            Stage::Identity,
            raw(libc::SYS_setgroups, 0, 0, 0, 0, 0),
        );
    }
    prctl(fds, Stage::Capabilities, libc::PR_SET_KEEPCAPS, 1);
    let id = SANDBOX_ID as usize;
    check(
        fds,
        Stage::Identity,
        raw(libc::SYS_setresgid, id, id, id, 0, 0),
    );
    check(
        fds,
        Stage::Identity,
        raw(libc::SYS_setresuid, id, id, id, 0, 0),
    );
    // Changing the effective uid (moat as root becomes nobody) clears the parent-death
    // signal: set it again, then make sure the parent did not die in between (it holds
    // the other end of the error socket until we exec).
    prctl(
        fds,
        Stage::WaitForParent,
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as usize,
    );
    let mut peer = libc::pollfd {
        fd: fds.errors,
        events: 0,
        revents: 0,
    };
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if raw(
        libc::SYS_ppoll,
        &mut peer as *mut libc::pollfd as usize,
        1,
        &now as *const libc::timespec as usize,
        0,
        0,
    ) != 0
    {
        sys::exit(127);
    }
    let mut sets = [CapData::default(); 2];
    caps(fds, Stage::Capabilities, libc::SYS_capget, &mut sets);
    for word in &mut sets {
        word.effective = word.permitted;
    }
    caps(fds, Stage::Capabilities, libc::SYS_capset, &mut sets);

    // Build the new root on a tmpfs, then pivot into it.
    check(
        fds,
        Stage::PrivateMounts,
        mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ),
    );
    check(
        fds,
        Stage::StagingRoot,
        mount(
            c"tmpfs".as_ptr(),
            plan.staging.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            plan.staging_options.as_ptr().cast(),
        ),
    );
    for op in &plan.ops {
        run_op(fds, op, &plan.source_slots);
    }
    check(
        fds,
        Stage::PivotRoot,
        raw(libc::SYS_chdir, plan.staging.as_ptr() as usize, 0, 0, 0, 0),
    );
    check(
        fds,
        Stage::PivotRoot,
        raw(
            libc::SYS_pivot_root,
            c".".as_ptr() as usize,
            c".".as_ptr() as usize,
            0,
            0,
            0,
        ),
    );
    // The old root now sits on top of the new one at "/": detach it.
    check(
        fds,
        Stage::PivotRoot,
        raw(
            libc::SYS_umount2,
            c".".as_ptr() as usize,
            libc::MNT_DETACH as usize,
            0,
            0,
            0,
        ),
    );
    check(
        fds,
        Stage::PivotRoot,
        raw(libc::SYS_chdir, c"/".as_ptr() as usize, 0, 0, 0, 0),
    );
    check(
        fds,
        Stage::ReadOnlyRoot,
        mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ),
    );
    check(
        fds,
        Stage::Hostname,
        raw(
            libc::SYS_sethostname,
            HOSTNAME.as_ptr() as usize,
            HOSTNAME.len(),
            0,
            0,
            0,
        ),
    );
    if let Some(net) = &plan.network {
        network(fds, net);
    }
    check(
        fds,
        Stage::Workdir,
        raw(libc::SYS_chdir, plan.workdir.as_ptr() as usize, 0, 0, 0, 0),
    );

    let fallback: &[_] = if fds.cgroup[0] < 0 {
        &plan.fallback_rlimits
    } else {
        &[]
    };
    for &(resource, soft, hard) in plan.rlimits.iter().chain(fallback) {
        let limit = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        check(
            fds,
            Stage::Limits,
            raw(
                libc::SYS_prlimit64,
                0,
                resource as usize,
                &limit as *const libc::rlimit64 as usize,
                0,
                0,
            ),
        );
    }
    check(
        fds,
        Stage::Limits,
        raw(
            libc::SYS_sched_setaffinity,
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &plan.cpus as *const libc::cpu_set_t as usize,
            0,
            0,
        ),
    );

    for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
        if from == to {
            check(
                fds,
                Stage::Stdio,
                raw(
                    libc::SYS_fcntl,
                    from as usize,
                    libc::F_SETFD as usize,
                    0,
                    0,
                    0,
                ),
            );
        } else {
            check(
                fds,
                Stage::Stdio,
                raw(libc::SYS_dup3, from as usize, to as usize, 0, 0, 0),
            );
        }
    }
    // Nothing of moat's crosses exec: every other descriptor closes on exec (the error
    // pipe too, which tells the parent the exec happened).
    check(
        fds,
        Stage::Stdio,
        raw(
            libc::SYS_close_range,
            3,
            u32::MAX as usize,
            libc::CLOSE_RANGE_CLOEXEC as usize,
            0,
            0,
        ),
    );

    prctl(fds, Stage::NoNewPrivs, libc::PR_SET_NO_NEW_PRIVS, 1);
    if let Some(landlock) = &plan.landlock
        && let Err(errno) = landlock.apply()
    {
        fail(fds, Stage::Landlock, errno);
    }

    for cap in 0..=plan.cap_last {
        let r = raw(
            libc::SYS_prctl,
            libc::PR_CAPBSET_DROP as usize,
            cap as usize,
            0,
            0,
            0,
        );
        if r < 0 && sys::errno() != libc::EINVAL {
            fail(fds, Stage::DropCapabilities, sys::errno());
        }
    }
    check(
        fds,
        Stage::DropCapabilities,
        raw(
            libc::SYS_prctl,
            libc::PR_CAP_AMBIENT as usize,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as usize,
            0,
            0,
            0,
        ),
    );
    caps(
        fds,
        Stage::DropCapabilities,
        libc::SYS_capset,
        &mut [CapData::default(); 2],
    );

    // A session of its own (no controlling terminal to push input into), default signal
    // dispositions, nothing blocked.
    raw(libc::SYS_setsid, 0, 0, 0, 0, 0);
    sys::reset_signals();

    install_filter(fds, &plan.seccomp.allowlist, 0);
    let listener = install_filter(fds, &plan.seccomp.notify, SECCOMP_FILTER_FLAG_NEW_LISTENER);
    if listener < 0 {
        // A kernel without user notification: the offending process alone is killed.
        check(
            fds,
            Stage::Seccomp,
            install_filter(fds, &plan.seccomp.kill, 0),
        );
    } else {
        send_fd(fds, Stage::Seccomp, LISTENER_RECORD, listener as RawFd);
        raw(libc::SYS_close, listener as usize, 0, 0, 0, 0);
    }

    // PID 1 of the namespace stays ours: it reaps the orphans the command leaves (a
    // program that never waits would otherwise fill the process limit with zombies),
    // and when the command ends it passes on its status and ends, which ends the rest.
    let forked = raw(libc::SYS_clone, libc::SIGCHLD as usize, 0, 0, 0, 0);
    if forked < 0 {
        fail(fds, Stage::Exec, sys::errno());
    }
    if forked > 0 {
        init(fds, forked as libc::pid_t);
    }

    // Try each candidate as execvp does; report the most telling failure.
    let mut errno = libc::ENOENT;
    for path in &plan.candidates {
        raw(
            libc::SYS_execve,
            path.as_ptr() as usize,
            plan.argv_ptrs.as_ptr() as usize,
            plan.envp_ptrs.as_ptr() as usize,
            0,
            0,
        );
        let e = sys::errno();
        if e != libc::ENOENT && e != libc::ENOTDIR {
            errno = e;
        }
    }
    fail(fds, Stage::Exec, errno)
}
