//! A command that talks while it runs (an MCP server on stdio): its stdin and stdout are
//! pipes the caller holds, instead of bytes the supervisor feeds and captures. Everything
//! else is as for [`crate::run`]: the same levels, limits, grants and report; stderr is
//! still captured (capped) for the report. Dropping [`Conversation::stop`] ends the
//! command and its whole tree, as the wall time does.

use std::os::fd::OwnedFd;

/// The sandbox's side of the pipes, handed to [`crate::run_attached`].
#[derive(Debug)]
pub struct Attached {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stop: OwnedFd,
}

/// The caller's side: write to the command, read from it, and hold `stop` for as long as
/// it should run.
#[derive(Debug)]
pub struct Conversation {
    /// The command's stdin.
    pub to_command: OwnedFd,
    /// The command's stdout.
    pub from_command: OwnedFd,
    /// Closing it (dropping it) kills the command and everything it started.
    pub stop: OwnedFd,
}

/// Three fresh pipes (close-on-exec), split into the sandbox's ends and the caller's.
pub fn attached_pipes() -> std::io::Result<(Attached, Conversation)> {
    let (stdin, to_command) = std::io::pipe()?;
    let (from_command, stdout) = std::io::pipe()?;
    let (stop_watch, stop) = std::io::pipe()?;
    Ok((
        Attached {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stop: stop_watch.into(),
        },
        Conversation {
            to_command: to_command.into(),
            from_command: from_command.into(),
            stop: stop.into(),
        },
    ))
}
