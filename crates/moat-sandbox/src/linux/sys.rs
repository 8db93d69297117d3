//! Thin wrappers over the raw system calls the sandbox needs and `libc` does not wrap, or
//! wraps through glibc code that is unsafe to run between `clone` and `exec` (glibc's
//! `setresuid` broadcasts to every thread it believes exists; after a raw `clone3` those
//! threads are gone and the broadcast would hang).
//!
//! Every function here is safe to call in the child: no allocation, no locks, no panics.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_long};

/// `struct clone_args` from `<linux/sched.h>` (clone3, kernel 5.3+).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// `CLONE_PIDFD`: clone3 stores a pidfd for the child at `args.pidfd`.
pub const CLONE_PIDFD: u64 = 0x1000;

/// What `clone3` returned in this process.
pub enum Forked {
    /// In the parent: the child's pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    /// In the child.
    Child,
}

/// `clone3` with fork semantics (no new stack: the child returns here on a copy of ours).
///
/// # Safety
///
/// The child must only make raw system calls until it calls `execve` or exits: it is a copy
/// of one thread of a process that may have others, whose locks (the allocator's among
/// them) may be held forever in the copy.
pub unsafe fn clone3(flags: u64) -> io::Result<Forked> {
    let mut pidfd: c_int = -1;
    let args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; with no stack given the
    // kernel duplicates this thread like fork(2). The caller upholds the child's contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as libc::pid_t,
            // SAFETY: the kernel wrote a fresh pidfd that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// A raw system call with up to five arguments; `-1` means failure, errno is set.
#[inline(always)]
pub fn raw(nr: c_long, a: usize, b: usize, c: usize, d: usize, e: usize) -> c_long {
    // SAFETY: callers pass arguments valid for `nr` (pointers to live memory of the right
    // type); the wrapper itself touches no memory.
    unsafe { libc::syscall(nr, a, b, c, d, e) }
}

/// The calling thread's errno.
#[inline(always)]
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// `write(2)` of a whole small buffer (pipes up to PIPE_BUF are atomic).
pub fn write_all(fd: RawFd, bytes: &[u8]) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        let n = raw(
            libc::SYS_write,
            fd as usize,
            rest.as_ptr() as usize,
            rest.len(),
            0,
            0,
        );
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        done += n as usize;
    }
    true
}

/// Fills `buf` from `fd`: true when it was filled, false at an end of file before that.
/// For a pipe whose writers are all gone, so it never blocks for long.
pub fn read_exact_or_eof(fd: RawFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let n = raw(
            libc::SYS_read,
            fd as usize,
            rest.as_mut_ptr() as usize,
            rest.len(),
            0,
            0,
        );
        match n {
            0 => return Ok(false),
            n if n < 0 && errno() == libc::EINTR => continue,
            n if n < 0 => return Err(io::Error::last_os_error()),
            n => done += n as usize,
        }
    }
    Ok(true)
}

/// `exit_group(2)`: never returns, runs no atexit handlers (they belong to the parent).
pub fn exit(code: i32) -> ! {
    loop {
        raw(libc::SYS_exit_group, code as usize, 0, 0, 0, 0);
    }
}

/// Linux capability set header/data for capget/capset (version 3: two 32-bit words).
#[repr(C)]
pub struct CapHeader {
    pub version: u32,
    pub pid: c_int,
}

/// One word of a capability set.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
pub const CAP_V3: u32 = 0x2008_0522;

/// `landlock_create_ruleset(2)` and friends use the same numbers on every architecture.
pub const SYS_LANDLOCK_CREATE_RULESET: c_long = 444;
pub const SYS_LANDLOCK_ADD_RULE: c_long = 445;
pub const SYS_LANDLOCK_RESTRICT_SELF: c_long = 446;

/// Opens a pidfd for a process of ours (used by the `none` level, where std spawns).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    let fd = raw(libc::SYS_pidfd_open, pid as usize, 0, 0, 0, 0);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A pipe whose two ends close on exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take no pointers.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A connected pair of Unix stream sockets whose two ends close on exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one byte on a socket; a peer that is gone is an error, not a SIGPIPE.
pub fn send_byte(sock: RawFd, byte: u8) -> io::Result<()> {
    // SAFETY: send reads one byte from a live local.
    let sent = unsafe { libc::send(sock, (&byte as *const u8).cast(), 1, libc::MSG_NOSIGNAL) };
    if sent == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until `fd` is readable (or at its end), at most `timeout`; false on timeout.
pub fn wait_readable(fd: RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that lives through the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        return Ok(r > 0);
    }
}

/// Receives up to 8 bytes and any descriptors passed with them; `Ok(None)` at end of
/// stream.
pub fn recv_record(sock: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut data = [0u8; 8];
    let mut control = [0u64; 8]; // aligned room for a few descriptors
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: msg points at buffers that live through the call.
        let n =
            unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_WAITALL) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* walkers read within msg_control/msg_controllen, which the kernel
    // filled; SCM_RIGHTS payloads are arrays of descriptors now owned by us.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                let first = libc::CMSG_DATA(cmsg) as *const c_int;
                for i in 0..payload / std::mem::size_of::<c_int>() {
                    fds.push(OwnedFd::from_raw_fd(first.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((data[..n as usize].to_vec(), fds)))
}

/// Blocks every signal in the calling thread; returns the previous mask.
pub fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask write only into the
    // sets we pass.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    }
}

/// Restores a mask saved by [`block_all_signals`].
pub fn restore_signals(mask: &libc::sigset_t) {
    // SAFETY: pthread_sigmask reads the set we pass.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// Child side: every signal back to its default action (a disposition of "ignore", like
/// the SIGPIPE Rust programs set, would survive exec) and nothing blocked.
pub fn reset_signals() {
    // The kernel's struct sigaction with SIG_DFL, no flags, no restorer, empty mask.
    let default = [0u64; 4];
    for sig in 1..=64usize {
        if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
            raw(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr() as usize,
                0,
                8,
                0,
            );
        }
    }
    let empty = 0u64;
    raw(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK as usize,
        &empty as *const u64 as usize,
        0,
        8,
        0,
    );
}
