//! The seccomp policy: two stacked filters compiled once per call, installed last before
//! `execve`.
//!
//! 1. **Allowlist.** The system calls ordinary programs (shells, coreutils, interpreters,
//!    compilers) use, modelled on Docker's default profile. Anything else fails with
//!    `ENOSYS`, which programs treat as "not supported here" and fall back from (glibc
//!    falls back from `clone3` to `clone` this way).
//! 2. **Kill list.** Calls that only an escape attempt makes are fatal: the kernel kills
//!    the process with `SIGSYS`, which the supervisor reports as a policy violation. They
//!    are: ptrace, process_vm_readv/writev, mount and the new mount API, umount2,
//!    pivot_root, chroot, kexec_load, kexec_file_load, bpf, keyctl, add_key, request_key,
//!    userfaultfd, perf_event_open, init_module, finit_module, delete_module, unshare,
//!    setns, open_by_handle_at, pidfd_getfd, reboot, swapon/swapoff, iopl/ioperm (x86),
//!    `clone` with any `CLONE_NEW*` flag (new namespaces, user namespaces first of all),
//!    `personality` with anything but the harmless personas, and the `TIOCSTI`/`TIOCLINUX`
//!    ioctls that push input into a terminal.
//!
//! The kill list answers with a user notification: moat's supervisor hears which call
//! which process made, and kills the whole sandbox before the call runs (kernels before
//! 5.0 get `SECCOMP_RET_KILL_PROCESS` instead, which kills only the caller).
//! `sched_setaffinity` is left off the allowlist so a command cannot leave the CPUs it
//! was pinned to, and `socket` accepts only Unix, IPv4, IPv6 and netlink sockets (vsock
//! and the like are not confined by a network namespace).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Allowed on every architecture.
const ALLOWED: &[(&str, i64)] = syscalls!(
    SYS_accept,
    SYS_accept4,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_dup,
    SYS_dup3,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchmodat2,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_get_robust_list,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_io_setup,
    SYS_io_submit,
    SYS_ioctl,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lgetxattr,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_mincore,
    SYS_mkdirat,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mseal,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_openat,
    SYS_openat2,
    SYS_personality,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe2,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_pselect6,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_set_robust_list,
    SYS_set_tid_address,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setsid,
    SYS_setsockopt,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd4,
    SYS_socket,
    SYS_socketpair,
    SYS_splice,
    SYS_statfs,
    SYS_statx,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlinkat,
    SYS_utimensat,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
    // clone is allowed here; the kill list refuses it with namespace flags.
    SYS_clone,
);

/// The older x86_64 calls that newer architectures only have as `*at` forms.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[(&str, i64)] = syscalls!(
    SYS_access,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_chmod,
    SYS_chown,
    SYS_creat,
    SYS_dup2,
    SYS_epoll_create,
    SYS_epoll_wait,
    SYS_eventfd,
    SYS_fork,
    SYS_futimesat,
    SYS_getdents,
    SYS_getpgrp,
    SYS_getrlimit,
    SYS_inotify_init,
    SYS_lchown,
    SYS_link,
    SYS_lstat,
    SYS_mkdir,
    SYS_mknod,
    SYS_open,
    SYS_pause,
    SYS_pipe,
    SYS_poll,
    SYS_readlink,
    SYS_rename,
    SYS_rmdir,
    SYS_select,
    SYS_setrlimit,
    SYS_signalfd,
    SYS_stat,
    SYS_symlink,
    SYS_time,
    SYS_unlink,
    SYS_utime,
    SYS_utimes,
    SYS_vfork,
);
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_ARCH: &[(&str, i64)] = &[];

/// Fatal on every architecture (see the module docs).
const KILLED: &[(&str, i64)] = syscalls!(
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_bpf,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_userfaultfd,
    SYS_perf_event_open,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_unshare,
    SYS_setns,
    SYS_open_by_handle_at,
    SYS_pidfd_getfd,
    SYS_reboot,
    SYS_swapon,
    SYS_swapoff,
    SYS_fsopen,
    SYS_fsmount,
    SYS_fsconfig,
    SYS_move_mount,
    SYS_open_tree,
    SYS_mount_setattr,
);
#[cfg(target_arch = "x86_64")]
const KILLED_ARCH: &[(&str, i64)] = syscalls!(SYS_iopl, SYS_ioperm);
#[cfg(not(target_arch = "x86_64"))]
const KILLED_ARCH: &[(&str, i64)] = &[];

/// Every `CLONE_NEW*` flag: creating any namespace is an escape attempt in here.
const CLONE_NEW_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// Personas a program may legitimately ask for: the default, the query value, and the
/// 32-bit / UNAME26 compatibility ones. ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC and the like
/// weaken exploit mitigations and are killed.
const PERSONAS: &[u64] = &[0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// ioctls that inject input into a terminal (TIOCSTI) or drive the console (TIOCLINUX).
const KILLED_IOCTLS: &[u64] = &[libc::TIOCSTI, 0x541C];

/// Address families `socket` accepts: Unix, IPv4, IPv6 (loopback only, and down, in the
/// sandbox's network namespace) and netlink (programs ask it for their addresses).
const SOCKET_FAMILIES: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
    libc::AF_NETLINK as u64,
];

/// The number of system calls on the allowlist (`socket` counted, with its families).
pub fn allowed_count() -> usize {
    ALLOWED.len() + ALLOWED_ARCH.len() + 1
}

/// Names of the system calls on the kill list.
#[cfg(test)]
fn killed_names() -> impl Iterator<Item = &'static str> {
    KILLED
        .iter()
        .chain(KILLED_ARCH)
        .map(|(n, _)| n.trim_start_matches("SYS_"))
}

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| format!("no seccomp policy for {}", std::env::consts::ARCH))
}

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, op, value).expect("argument index below 6")
}

/// The compiled policy: the allowlist, and the kill list in two forms.
pub struct Filters {
    /// Installed first.
    pub allowlist: BpfProgram,
    /// The kill list answering with `SECCOMP_RET_USER_NOTIF`: the supervisor hears of the
    /// call (which one, from which process) and kills the whole sandbox before it runs.
    pub notify: BpfProgram,
    /// The kill list answering with `SECCOMP_RET_KILL_PROCESS`, for kernels without user
    /// notification (before 5.0): only the calling process dies.
    pub kill: BpfProgram,
}

/// `SECCOMP_RET_USER_NOTIF`.
const RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// The system call `nr` names, when it is one the kill list covers.
pub fn killed_name(nr: i64) -> Option<&'static str> {
    KILLED
        .iter()
        .chain(KILLED_ARCH)
        .chain(syscalls!(SYS_clone, SYS_personality, SYS_ioctl))
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| name.trim_start_matches("SYS_"))
}

/// The compiled policy, built once per process (it never changes).
pub fn filters() -> Result<&'static Filters, String> {
    static FILTERS: std::sync::OnceLock<Result<Filters, String>> = std::sync::OnceLock::new();
    FILTERS.get_or_init(compile).as_ref().map_err(Clone::clone)
}

/// `AUDIT_ARCH_*` of this target.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

/// Compiles the policy.
pub fn compile() -> Result<Filters, String> {
    arch()?;
    // The kill-list calls pass this filter so the second one decides them: an ERRNO
    // answer here would outrank its USER_NOTIF (the kernel applies the most severe action,
    // and ERRNO ranks above USER_NOTIF), and KILL_PROCESS outranks everything anyway.
    // `socket` passes only for the families a network namespace contains: vsock, for
    // one, is not namespaced and would reach the hypervisor's host from inside a VM.
    let allowed: Vec<i64> = ALLOWED
        .iter()
        .chain(ALLOWED_ARCH)
        .chain(KILLED)
        .chain(KILLED_ARCH)
        .map(|&(_, nr)| nr)
        .collect();
    let allowlist = super::bpf::allowlist(
        AUDIT_ARCH,
        &allowed,
        libc::SYS_socket,
        SOCKET_FAMILIES,
        libc::SECCOMP_RET_ALLOW,
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    )?;
    let kill = program(SeccompAction::KillProcess)?;
    // seccompiler has no user-notification action: compile with Trap, which nothing
    // else in this filter returns, and swap the return value.
    let mut notify = program(SeccompAction::Trap)?;
    for insn in &mut notify {
        if insn.code == 0x06 && insn.k == libc::SECCOMP_RET_TRAP {
            insn.k = RET_USER_NOTIF;
        }
    }
    Ok(Filters {
        allowlist,
        notify,
        kill,
    })
}

/// The kill list with `action` for the calls on it.
fn program(action: SeccompAction) -> Result<BpfProgram, String> {
    let arch = arch()?;
    let rule = |conditions| SeccompRule::new(conditions).expect("conditions are not empty");
    let mut kill: BTreeMap<i64, Vec<SeccompRule>> = KILLED
        .iter()
        .chain(KILLED_ARCH)
        .map(|&(_, nr)| (nr, Vec::new()))
        .collect();
    kill.insert(
        libc::SYS_clone,
        CLONE_NEW_FLAGS
            .iter()
            .map(|&flag| {
                rule(vec![cond(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )])
            })
            .collect(),
    );
    kill.insert(
        libc::SYS_personality,
        vec![rule(
            PERSONAS
                .iter()
                .map(|&p| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, p))
                .collect(),
        )],
    );
    kill.insert(
        libc::SYS_ioctl,
        KILLED_IOCTLS
            .iter()
            .map(|&req| {
                rule(vec![cond(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    req,
                )])
            })
            .collect(),
    );
    let kill_list =
        SeccompFilter::new(kill, SeccompAction::Allow, action, arch).map_err(|e| e.to_string())?;
    BpfProgram::try_from(kill_list).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let f = compile().unwrap();
        for program in [&f.allowlist, &f.notify, &f.kill] {
            assert!(!program.is_empty() && program.len() < 4096);
        }
        assert!(
            f.allowlist.len() < 200,
            "{} instructions",
            f.allowlist.len()
        );
        let eval = |nr: i64, arg0: u32| {
            super::super::bpf::tests::eval(&f.allowlist, AUDIT_ARCH, nr as u32, arg0)
        };
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(eval(libc::SYS_read, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            eval(libc::SYS_mount, 0),
            libc::SECCOMP_RET_ALLOW,
            "left to the kill list"
        );
        assert_eq!(eval(libc::SYS_sched_setaffinity, 0), enosys);
        assert_eq!(eval(libc::SYS_io_uring_setup, 0), enosys);
        assert_eq!(
            eval(libc::SYS_socket, libc::AF_INET as u32),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(eval(libc::SYS_socket, libc::AF_VSOCK as u32), enosys);
        let rets = |p: &BpfProgram, k: u32| p.iter().filter(|i| i.code == 0x06 && i.k == k).count();
        assert!(rets(&f.notify, RET_USER_NOTIF) > 0);
        assert_eq!(rets(&f.notify, libc::SECCOMP_RET_TRAP), 0);
        assert_eq!(killed_name(libc::SYS_mount), Some("mount"));
        assert_eq!(killed_name(libc::SYS_read), None);
    }

    #[test]
    fn no_call_is_both_allowed_and_killed() {
        for (name, nr) in KILLED.iter().chain(KILLED_ARCH) {
            assert!(
                !ALLOWED.iter().chain(ALLOWED_ARCH).any(|(_, a)| a == nr),
                "{name} is on both lists"
            );
        }
    }

    #[test]
    fn the_issue_s_named_calls_are_killed() {
        let killed: Vec<_> = killed_names().collect();
        for name in [
            "ptrace",
            "mount",
            "umount2",
            "pivot_root",
            "kexec_load",
            "bpf",
            "keyctl",
            "add_key",
            "userfaultfd",
            "perf_event_open",
            "init_module",
            "finit_module",
            "unshare",
            "setns",
        ] {
            assert!(killed.contains(&name), "{name}");
        }
        assert!(!ALLOWED.iter().any(|(n, _)| *n == "SYS_sched_setaffinity"));
    }
}
