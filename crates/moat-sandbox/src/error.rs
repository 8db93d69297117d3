//! Why a call could not run. A command that runs and fails is not an error: that is an
//! [`Outcome`](crate::Outcome).

use std::path::PathBuf;

/// A sandbox could not be set up or the request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The request itself is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A grant would expose a path that must stay hidden (moat's home, the vault).
    #[error(
        "the grant {grant} would expose {hidden}, which no sandbox may see; grant a folder that neither contains it nor lies inside it"
    )]
    ExposesHidden {
        /// The granted path.
        grant: PathBuf,
        /// The hidden path it overlaps.
        hidden: PathBuf,
    },
    /// A grant names a path the sandbox already provides or cannot mount over.
    #[error(
        "cannot grant {0}: it is part of the sandbox's own filesystem (/, /usr, /bin, /sbin, /lib*, /etc, /dev, /proc, /workspace); grant a folder elsewhere"
    )]
    ReservedPath(PathBuf),
    /// A granted folder or the workspace could not be opened.
    #[error("cannot use {path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// This level needs a program that is not installed.
    #[error(
        "the {level} level needs {program}, which is not installed: {how}; or choose level = \"process\""
    )]
    MissingRuntime {
        /// The level asked for.
        level: &'static str,
        /// The program it delegates to.
        program: &'static str,
        /// How to install it.
        how: &'static str,
    },
    /// This level is not available in this build or on this platform.
    #[error("{0}")]
    Unsupported(String),
    /// The kernel refused a step of the setup (a missing feature, a restrictive host).
    #[error("setting up the sandbox failed at {stage}: {source}{hint}")]
    Setup {
        /// The step.
        stage: &'static str,
        /// The kernel's answer.
        source: std::io::Error,
        /// What to do about it, if known.
        hint: &'static str,
    },
    /// The command was not found or could not be executed inside the sandbox.
    #[error("cannot run {program} in the sandbox: {source} (searched {searched})")]
    Exec {
        /// The program as given.
        program: String,
        /// The kernel's answer to the last attempt.
        source: std::io::Error,
        /// Where it was looked for.
        searched: String,
    },
    /// Supervising the running command failed.
    #[error("supervising the sandboxed command failed: {0}")]
    Io(#[from] std::io::Error),
}
