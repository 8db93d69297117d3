//! Watching a started command: feed its stdin, collect capped output, enforce the wall
//! time, and read how it ended. One `poll` loop over the pidfd and the pipes, no threads.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::outcome::{Enforcement, Outcome, Report, Violation, truncation_marker};

use super::sys;

/// A command that has started.
pub struct Running<'a> {
    pub pid: libc::pid_t,
    pub pidfd: BorrowedFd<'a>,
    pub stdin: Option<OwnedFd>,
    /// None when the caller reads the command's output itself.
    pub stdout: Option<OwnedFd>,
    pub stderr: OwnedFd,
    /// The caller's stop pipe: its closing ends the command.
    pub stop: Option<OwnedFd>,
    pub input: &'a [u8],
    pub output_limit: usize,
    pub deadline: Instant,
    /// Kills the whole process tree.
    pub kill: &'a dyn Fn(),
    /// The seccomp notification descriptor for the kill list, when the kernel gave one.
    pub listener: Option<OwnedFd>,
}

/// A command that has ended.
pub struct Finished {
    status: libc::c_int,
    usage: libc::rusage,
    timed_out: bool,
    violation: Option<Violation>,
    stdout: Capture,
    stderr: Capture,
}

/// How long to keep reading output after the command ended, for pipes that a stray
/// descendant of an unconfined command still holds.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

struct Capture {
    fd: Option<OwnedFd>,
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(fd: Option<OwnedFd>, limit: usize) -> std::io::Result<Capture> {
        if let Some(fd) = &fd {
            sys::set_nonblocking(fd.as_raw_fd())?;
        }
        Ok(Capture {
            fd,
            bytes: Vec::new(),
            limit,
            truncated: false,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Reads what is available, at most a few buffers' worth so that a command flooding
    /// its output cannot keep the supervisor from its deadline; closes at end of file.
    fn pump(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut buf = [0u8; 64 * 1024];
        for _ in 0..4 {
            // SAFETY: reads at most buf.len() bytes into buf from a descriptor we own.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                self.fd = None;
                return;
            }
            if n < 0 {
                match sys::errno() {
                    libc::EINTR => continue,
                    _ => return, // EAGAIN: nothing more for now
                }
            }
            let n = n as usize;
            let room = self.limit.saturating_sub(self.bytes.len());
            self.bytes.extend_from_slice(&buf[..n.min(room)]);
            if n > room {
                self.truncated = true;
            }
        }
    }

    fn finish(mut self) -> (Vec<u8>, bool) {
        if self.truncated {
            self.bytes
                .extend_from_slice(truncation_marker(self.limit).as_bytes());
        }
        (self.bytes, self.truncated)
    }
}

/// Waits for `pid` (our child) and returns its wait status and resource usage. An error
/// (the host program reaped it behind our back) is not mistaken for success.
fn wait(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes into the two locals we pass.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r >= 0 {
            return Ok((status, usage));
        }
        if sys::errno() != libc::EINTR {
            return Err(std::io::Error::last_os_error());
        }
    }
}

/// Kills and reaps a started child unless disarmed: every early return between the
/// clone and the end of supervision leaves nothing running.
pub struct ChildGuard<'a> {
    pub pid: libc::pid_t,
    pub kill: &'a dyn Fn(),
    pub armed: bool,
}

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            (self.kill)();
            let _ = wait(self.pid);
        }
    }
}

/// A pidfd for a command just started with `std::process::Command`, whose process group
/// it leads. Without one it cannot be supervised: it is killed and reaped before the
/// error returns, so nothing outlives a failed call.
pub fn pidfd_or_kill(child: &mut std::process::Child) -> std::io::Result<OwnedFd> {
    let pid = child.id() as libc::pid_t;
    sys::pidfd_open(pid).inspect_err(|_| {
        // SAFETY: kill takes no pointers; -pid is the process group the child leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
    })
}

/// Gives a command to be started with `std::process::Command` the caller's pipes as
/// stdin and stdout (then the caller's stop pipe is returned, for the supervisor to watch),
/// or pipes for the supervisor to feed and capture.
pub fn wire_stdio(
    command: &mut std::process::Command,
    io: Option<crate::Attached>,
) -> Option<OwnedFd> {
    use std::process::Stdio;
    match io {
        Some(io) => {
            command.stdin(io.stdin).stdout(io.stdout);
            Some(io.stop)
        }
        None => {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
            None
        }
    }
}

/// Supervises a command started with `std::process::Command` (stderr piped, and stdin and
/// stdout unless the caller holds them and `stop`): a guard kills it on any early return,
/// as for the process level's own child.
pub fn supervise_spawned(
    child: &mut std::process::Child,
    pidfd: BorrowedFd<'_>,
    spec: &crate::Spec,
    deadline: Instant,
    kill: &dyn Fn(),
    stop: Option<OwnedFd>,
) -> std::io::Result<Finished> {
    let pid = child.id() as libc::pid_t;
    let mut guard = ChildGuard {
        pid,
        kill,
        armed: true,
    };
    let piped = |fd: Option<OwnedFd>| fd.ok_or_else(|| std::io::Error::other("stdio not piped"));
    let finished = supervise(Running {
        pid,
        pidfd,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: piped(child.stderr.take().map(OwnedFd::from))?,
        stop,
        input: &spec.stdin,
        output_limit: spec.limits.output_bytes,
        deadline,
        kill,
        listener: None,
    })?;
    guard.armed = false; // supervise reaped it
    Ok(finished)
}

/// Runs the loop until the command has ended and its output is read.
pub fn supervise(run: Running<'_>) -> std::io::Result<Finished> {
    let mut stdin = run.stdin;
    if let Some(fd) = &stdin {
        sys::set_nonblocking(fd.as_raw_fd())?;
    }
    if run.input.is_empty() {
        stdin = None; // closing it gives the command end of file at once
    }
    let mut fed = 0;
    let mut stdout = Capture::new(run.stdout, run.output_limit)?;
    let mut stderr = Capture::new(Some(run.stderr), run.output_limit)?;
    let mut ended: Option<(libc::c_int, libc::rusage)> = None;
    let mut timed_out = false;
    let mut drain_until: Option<Instant> = None;
    let mut listener = run.listener;
    let mut violation: Option<Violation> = None;
    let mut stop = run.stop;

    loop {
        if ended.is_some() && stdout.fd.is_none() && stderr.fd.is_none() {
            break;
        }
        let now = Instant::now();
        if let Some(limit) = drain_until
            && now >= limit
        {
            break;
        }
        if ended.is_none() && now >= run.deadline && !timed_out {
            (run.kill)();
            timed_out = true;
        }
        let wake = match (ended, drain_until) {
            (Some(_), Some(limit)) => limit,
            _ if timed_out => now + Duration::from_millis(100),
            _ => run.deadline,
        };
        let timeout = wake
            .saturating_duration_since(now)
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let mut polled = [
            libc::pollfd {
                fd: if ended.is_none() {
                    run.pidfd.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stdout.raw(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stderr.raw(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stdin.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: listener.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if ended.is_none() {
                    stop.as_ref().map_or(-1, AsRawFd::as_raw_fd)
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the array we pass, of the length we pass.
        let r = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout) };
        if r < 0 && sys::errno() != libc::EINTR {
            return Err(std::io::Error::last_os_error());
        }
        stdout.pump();
        stderr.pump();
        if let Some(fd) = &stdin
            && polled[3].revents != 0
        {
            let rest = &run.input[fed..];
            // SAFETY: writes at most rest.len() bytes from rest to a descriptor we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                fed += n as usize;
            }
            if fed >= run.input.len() || (n < 0 && sys::errno() != libc::EAGAIN) {
                stdin = None;
            }
        }
        if let Some(fd) = &listener
            && polled[4].revents != 0
        {
            match receive_violation(fd.as_raw_fd()) {
                Some(v) => {
                    // A call on the kill list, from any process in the tree: the whole
                    // sandbox dies before the call runs.
                    (run.kill)();
                    violation.get_or_insert(v);
                }
                None if polled[4].revents & (libc::POLLHUP | libc::POLLERR) != 0 => {
                    listener = None;
                }
                None => {}
            }
        }
        if stop.is_some() && polled[5].revents != 0 {
            // Nobody writes to the stop pipe: readable means the caller closed it.
            (run.kill)();
            stop = None;
        }
        if ended.is_none() && polled[0].revents != 0 {
            // Whatever the command left behind dies with it (killed before the reap, so
            // the pid and process group cannot have been reused).
            (run.kill)();
            ended = Some(wait(run.pid)?);
            stdin = None;
            drain_until = Some(Instant::now() + DRAIN_GRACE);
        }
    }
    let (status, usage) = match ended {
        Some(ended) => ended,
        None => wait(run.pid)?,
    };
    Ok(Finished {
        status,
        usage,
        timed_out,
        violation,
        stdout,
        stderr,
    })
}

/// `struct seccomp_notif`.
#[repr(C)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

/// `SECCOMP_IOCTL_NOTIF_RECV` = `_IOWR('!', 0, struct seccomp_notif)`.
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;

/// Reads one pending notification: which call, from which process.
fn receive_violation(listener: RawFd) -> Option<Violation> {
    // SAFETY: plain C struct; the kernel requires it zeroed before the call.
    let mut notif: SeccompNotif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one struct seccomp_notif into `notif`.
    let r = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
    if r < 0 {
        return None;
    }
    Some(Violation {
        syscall: super::seccomp::killed_name(i64::from(notif.nr)).unwrap_or("a forbidden call"),
        pid: notif.pid,
    })
}

fn duration(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

impl Finished {
    /// The same, with the command's own wait status in place of its init's.
    pub fn with_command_status(mut self, status: libc::c_int) -> Finished {
        self.status = status;
        self
    }

    /// The typed outcome: a timeout wins over the SIGKILL that enforced it; an
    /// out-of-memory kill anywhere in the sandbox explains a failure (a shell reports its
    /// killed child as status 137, the kernel kills the command itself with SIGKILL).
    fn outcome(&self, cpu_limit_secs: u64, oom_kills: u64) -> Outcome {
        let cpu = duration(self.usage.ru_utime) + duration(self.usage.ru_stime);
        let succeeded = libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0;
        if self.violation.is_some() {
            Outcome::PolicyViolation
        } else if self.timed_out {
            Outcome::TimedOut
        } else if oom_kills > 0 && !succeeded {
            Outcome::OutOfMemory
        } else if libc::WIFEXITED(self.status) {
            Outcome::Exited(libc::WEXITSTATUS(self.status))
        } else {
            match libc::WTERMSIG(self.status) {
                libc::SIGSYS => Outcome::PolicyViolation,
                libc::SIGXCPU => Outcome::CpuLimit,
                libc::SIGKILL if cpu.as_secs() >= cpu_limit_secs => Outcome::CpuLimit,
                sig => Outcome::Signaled(sig),
            }
        }
    }

    /// The report for callers.
    pub fn into_report(
        self,
        start: Instant,
        cpu_limit_secs: u64,
        oom_kills: u64,
        enforcement: Enforcement,
    ) -> Report {
        let outcome = self.outcome(cpu_limit_secs, oom_kills);
        let cpu_time = duration(self.usage.ru_utime) + duration(self.usage.ru_stime);
        let peak_rss_bytes = self.usage.ru_maxrss.max(0) as u64 * 1024;
        let (stdout, stdout_truncated) = self.stdout.finish();
        let (stderr, stderr_truncated) = self.stderr.finish();
        Report {
            outcome,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            violation: self.violation,
            elapsed: start.elapsed(),
            cpu_time,
            peak_rss_bytes,
            enforcement,
            network_log: Vec::new(),
        }
    }
}
