//! The `container` level: gVisor's `runsc` runs the command on a kernel of its own, in
//! user space, so a kernel bug a system call could reach is gVisor's, not the host's.
//!
//! moat writes an OCI bundle into a private temporary folder: a read-only root holding
//! the process level's filesystem (the host's system folders read-only, a generated
//! `/etc` with the same shared files, a private `/tmp`, the workspace, the grants), the
//! declared environment, no capabilities, `no_new_privs`, and the limits as the
//! sandbox's cgroup (memory, processes, CPU quota). `runsc run` starts it with no network
//! (`--network=none`: loopback only) as the unprivileged `nobody`; moat supervises the
//! `runsc` process like any other command (wall time, output caps) and removes the
//! sandbox, its cgroup and the folder afterwards.
//!
//! Differences from the process level, all stated in the report: the memory limit covers
//! gVisor's own kernel too, so [`SENTRY_ALLOWANCE`] is added to it; runsc folds a signal
//! into exit status 128 + N, read back as that signal; network grants are refused (the
//! egress proxy is wired into the process level's namespaces only); runsc needs root.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use super::{plan, supervise, sys};
use crate::outcome::{Enforcement, LimitMechanism, Outcome, Report};
use crate::{Access, Level, SandboxError, Spec};

/// Memory added to the limit for gVisor's Sentry (its user-space kernel) and gofer, which
/// share the sandbox's cgroup with the command.
pub const SENTRY_ALLOWANCE: u64 = 64 * 1024 * 1024;

/// What names each sandbox's bundle folder and cgroups: then moat's pid and a number.
const LEFTOVER_PREFIX: &str = "moat-runsc-";

/// Removes what a moat that died left of its gVisor sandboxes: bundle folders (their
/// config.json holds a call's secrets) and empty cgroups. Its sandboxes died with it
/// (runsc has a parent-death signal and kills an attached sandbox when it dies). Once per
/// process; a pid that is alive again (reused) keeps its leftovers, to be safe.
fn sweep_leftovers() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let cgroups = Path::new("/sys/fs/cgroup");
        let mut places = vec![Path::new("/run").to_path_buf(), std::env::temp_dir()];
        places.push(cgroups.to_path_buf());
        if let Ok(hierarchies) = std::fs::read_dir(cgroups) {
            places.extend(hierarchies.flatten().map(|h| h.path()));
        }
        for place in places {
            sweep_dead(&place, |dir| {
                if dir.starts_with(cgroups) {
                    std::fs::remove_dir(dir)
                } else {
                    std::fs::remove_dir_all(dir)
                }
            });
        }
    });
}

/// Calls `remove` on each entry of `place` named for a moat process that is gone.
fn sweep_dead(place: &Path, remove: impl Fn(&Path) -> std::io::Result<()>) {
    let Ok(entries) = std::fs::read_dir(place) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|n| n.strip_prefix(LEFTOVER_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(owner) = owner else { continue };
        let gone = owner != std::process::id() && !Path::new(&format!("/proc/{owner}")).exists();
        // Folders only: a file or link by that name is not moat's.
        let folder = entry.file_type().is_ok_and(|t| t.is_dir());
        // A bundle whose lock someone holds is in use, whatever its pid says here.
        let locked = std::fs::File::open(entry.path().join(IN_USE))
            .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        if gone && folder && !locked {
            match remove(&entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed what a moat that died left of a gVisor sandbox")
                }
                Err(error) => {
                    tracing::debug!(path = %entry.path().display(), %error, "a dead moat's leftover stays")
                }
            }
        }
    }
}

/// Runs `spec` in a gVisor sandbox with `runsc` (found on `PATH`).
pub fn run_container(
    spec: &Spec,
    runsc: &Path,
    io: Option<crate::Attached>,
) -> Result<Report, SandboxError> {
    let start = Instant::now();
    let deadline = start + spec.limits.wall_time;
    if !plan::privileged() {
        return Err(SandboxError::Unsupported(
            "the container level needs moat to run as root: runsc makes its sandbox, cgroup and mounts with root's privileges; run moat as root or choose level = \"process\"".into(),
        ));
    }
    if spec.network.is_some() {
        return Err(SandboxError::Invalid(
            "network grants apply to the process level; the container level has no network (only loopback): choose level = \"process\" for a tool that needs the egress proxy".into(),
        ));
    }
    sweep_leftovers();
    let bundle = Bundle::write(spec, runsc)?;
    super::hand_over_workspace(spec, plan::NOBODY, plan::NOBODY)?;

    let mut command = Command::new(runsc);
    command
        .arg("--root")
        .arg(bundle.state())
        .arg("--network=none")
        .arg("--log")
        .arg(bundle.log())
        .arg("--log-format=json")
        .arg("run")
        .arg("--bundle")
        .arg(bundle.dir())
        .arg(&bundle.id)
        // runsc passes the container only what config.json declares; its own
        // environment need not carry moat's either.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .current_dir(bundle.dir())
        .process_group(0)
        .stderr(Stdio::piped());
    let stop = supervise::wire_stdio(&mut command, io);
    // If moat dies, runsc goes too: its container would otherwise run on without a
    // wall-time limit. (The thread that starts runsc supervises it to the end.)
    // A moat that died between the fork and the prctl sent no signal: then the child's
    // parent is no longer moat, and it must not exec.
    let moat = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls prctl and getppid,
    // which are async-signal-safe and touch no memory of ours.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != moat {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| SandboxError::Setup {
        stage: "starting runsc",
        source,
        hint: "",
    })?;
    // The command holds the child's ends of the caller's pipes: close ours.
    drop(command);
    let pid = child.id() as libc::pid_t;
    let pidfd = supervise::pidfd_or_kill(&mut child)?;
    // `runsc kill` ends the container's processes at once and `runsc run` exits, cleaning
    // up after itself. Killing runsc instead would leave the sandbox (in a session of its
    // own) to die slowly and its state for a slow `runsc delete`; that is only the
    // backstop for a sandbox that does not answer.
    let kill = || {
        bundle.kill_container();
        if !sys::wait_readable(pidfd.as_raw_fd(), RUNSC_GRACE).unwrap_or(false) {
            // SAFETY: kill takes no pointers; -pid is the process group runsc leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    };
    let finished =
        supervise::supervise_spawned(&mut child, pidfd.as_fd(), spec, deadline, &kill, stop)?;
    bundle.delete_sandbox();
    let runtime_error = bundle.runtime_error();

    let cpu_limit_secs = cpu_limit_secs(&spec.limits);
    let mut report = finished.into_report(
        start,
        cpu_limit_secs,
        0,
        Enforcement {
            level: Level::Container,
            limits: LimitMechanism::Runsc,
            landlock_abi: None,
            seccomp_allowed: 0,
            host_uid: plan::NOBODY,
            network: false,
            cpus: Vec::new(),
            cpu_quota: None,
        },
    );
    if let Outcome::Exited(status) = report.outcome {
        if let Some(message) = runtime_error.filter(|_| status == RUNSC_FAILED) {
            return Err(refusal(spec, message));
        }
        if (129..=128 + 64).contains(&status) {
            report.outcome = Outcome::Signaled(status - 128);
        }
    }
    if report.outcome == Outcome::Signaled(libc::SIGXCPU) {
        report.outcome = Outcome::CpuLimit;
    }
    Ok(report)
}

/// How long `runsc run` has to exit after its container was killed.
const RUNSC_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The status `runsc` exits with when it could not start the container.
const RUNSC_FAILED: i32 = 128;

fn cpu_limit_secs(limits: &crate::Limits) -> u64 {
    limits.wall_time.as_secs().max(1) * u64::from(limits.cpus) + 1
}

/// A failure runsc logged (it exits 128, as a command may do by itself): a program that
/// could not be loaded is an [`SandboxError::Exec`], anything else a setup failure.
fn refusal(spec: &Spec, message: String) -> SandboxError {
    // runsc prefixes each layer it went through ("running container: starting ...").
    let cause = ["failed to load", "error finding executable"]
        .iter()
        .find_map(|start| message.find(start))
        .map(|at| message[at..].to_owned());
    if let Some(message) = cause {
        let kind = if message.contains("no such file") {
            std::io::ErrorKind::NotFound
        } else if message.contains("permission denied") {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::Other
        };
        return SandboxError::Exec {
            program: spec.program.to_string_lossy().into_owned(),
            source: std::io::Error::new(kind, message),
            searched: spec.searched(),
        };
    }
    SandboxError::Setup {
        stage: "starting the gVisor sandbox (runsc)",
        source: std::io::Error::other(message),
        hint: "; `moat doctor` and runsc's own checks (runsc --help) may say why",
    }
}

/// The bundle, runsc's state and log, in one private folder removed on drop.
struct Bundle {
    root: tempfile::TempDir,
    id: String,
    runsc: PathBuf,
    /// Held locked while the bundle lives: a sweeping moat (perhaps in another PID
    /// namespace, where this pid means nothing) can tell the folder is in use.
    _in_use: std::fs::File,
}

/// The lock file in each bundle folder (see [`Bundle`]).
const IN_USE: &str = "in-use.lock";

/// However the call ended (an early error included), the sandbox goes before its state
/// folder does: without its state runsc could no longer find it to delete it.
impl Drop for Bundle {
    fn drop(&mut self) {
        self.delete_sandbox();
    }
}

impl Bundle {
    fn dir(&self) -> PathBuf {
        self.root.path().join("bundle")
    }

    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    fn log(&self) -> PathBuf {
        self.root.path().join("runsc.log")
    }

    /// Lays out the bundle for `spec`: host paths are resolved and checked first, so a
    /// refused grant fails before runsc starts.
    fn write(spec: &Spec, runsc: &Path) -> Result<Bundle, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if spec.program.is_empty() {
            return Err(SandboxError::Invalid("no command given".into()));
        }
        let workspace = plan::resolve_workspace(&spec.workspace)?;
        let grants = plan::checked_grants(spec)?;
        let mut rootfs = RootFs::default();
        let mut exposed = vec![workspace.clone()];

        for name in plan::SYSTEM_DIRS {
            let host = Path::new("/").join(name);
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                rootfs.links.push((std::fs::read_link(&host)?, host));
            } else if meta.is_dir() {
                rootfs.bind(&host, &host, true, false);
                exposed.push(host);
            }
        }
        for name in plan::ETC_SHARED {
            let host = Path::new("/etc").join(name);
            if let Ok(meta) = std::fs::metadata(&host) {
                rootfs.bind(&host, &host, meta.is_dir(), false);
                exposed.push(host);
            }
        }
        rootfs.bind(&workspace, Path::new("/workspace"), true, true);
        for (path, access) in &grants {
            rootfs.bind(path, path, true, *access == Access::ReadWrite);
            exposed.push(path.clone());
        }
        plan::check_hidden(spec, &workspace, &exposed)?;

        let process = process(spec)?;
        let id = format!(
            "{LEFTOVER_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // config.json carries the call's secrets: in root's /run (a tmpfs on systemd
        // hosts, so that not even a crash leaves them on disk) where moat may write there,
        // else in the temporary folder.
        // Named after moat's pid, so that a later moat can tell a dead one's leftovers.
        let prefix = format!("{LEFTOVER_PREFIX}{}-", std::process::id());
        let mut folder = tempfile::Builder::new();
        folder.prefix(&prefix);
        let root = folder
            .tempdir_in("/run")
            .or_else(|_| folder.tempdir())
            .map_err(|source| SandboxError::Setup {
                stage: "making the sandbox's bundle folder",
                source,
                hint: "",
            })?;
        let in_use = std::fs::File::create(root.path().join(IN_USE))
            .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::from))
            .map_err(|source| SandboxError::Setup {
                stage: "locking the sandbox's bundle folder",
                source,
                hint: "",
            })?;
        let bundle = Bundle {
            root,
            id,
            runsc: runsc.to_owned(),
            _in_use: in_use,
        };
        let namespaces: Vec<Value> = ["pid", "network", "ipc", "uts", "mount", "cgroup"]
            .map(|kind| json!({ "type": kind }))
            .to_vec();
        let config = json!({
            "ociVersion": "1.0.2",
            "process": process,
            "root": { "path": "rootfs", "readonly": true },
            "hostname": "moat-sandbox",
            "mounts": rootfs.mounts(&spec.limits),
            "linux": {
                "namespaces": namespaces,
                "cgroupsPath": format!("/{}", bundle.id),
                "resources": resources(&spec.limits),
            },
        });
        let made = (|| {
            std::fs::set_permissions(bundle.root.path(), std::fs::Permissions::from_mode(0o700))?;
            std::fs::create_dir(bundle.state())?;
            rootfs.make(&bundle.dir().join("rootfs"))?;
            std::fs::write(
                bundle.dir().join("config.json"),
                serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
            )
        })();
        made.map_err(|source| SandboxError::Setup {
            stage: "writing the sandbox's OCI bundle",
            source,
            hint: "",
        })?;
        Ok(bundle)
    }

    /// Removes what a killed or failed `runsc run` left: the sandbox's state, then any of
    /// its cgroups still there (runsc leaves them when its sandbox fails to boot). A run
    /// that ended by itself has cleaned up already.
    fn delete_sandbox(&self) {
        self.force_delete();
        let cgroups = Path::new("/sys/fs/cgroup");
        let mut groups = vec![cgroups.join(&self.id)];
        if let Ok(hierarchies) = std::fs::read_dir(cgroups) {
            groups.extend(hierarchies.flatten().map(|h| h.path().join(&self.id)));
        }
        for group in groups.iter().filter(|g| g.is_dir()) {
            if let Err(error) = std::fs::remove_dir(group) {
                tracing::warn!(group = %group.display(), %error, "a cgroup of a gVisor sandbox remains");
            }
        }
    }

    /// Whether runsc has state for the sandbox (a run that ended by itself left none).
    fn is_live(&self) -> bool {
        std::fs::read_dir(self.state()).is_ok_and(|mut entries| entries.next().is_some())
    }

    /// Runs `runsc ARGS` on this sandbox's state, for at most [`RUNSC_GRACE`]: a runsc
    /// that hangs must not hold up the wall-time kill it is part of.
    fn runsc(&self, args: &[&str]) {
        let started = Command::new(&self.runsc)
            .arg("--root")
            .arg(self.state())
            .args(args)
            .env_clear()
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = started else { return };
        let done = sys::pidfd_open(child.id() as libc::pid_t)
            .and_then(|fd| sys::wait_readable(fd.as_raw_fd(), RUNSC_GRACE))
            .unwrap_or(false);
        if !done {
            tracing::warn!(
                command = args.first().copied().unwrap_or(""),
                "runsc did not answer in time; killed"
            );
            // SAFETY: kill takes no pointers; -pid is the process group runsc leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        }
        let _ = child.wait();
    }

    /// Kills every process of the container, if it still runs.
    fn kill_container(&self) {
        if self.is_live() {
            self.runsc(&["kill", "--all", &self.id, "KILL"]);
        }
    }

    /// Removes the sandbox and its state, if runsc left any.
    fn force_delete(&self) {
        if self.is_live() {
            self.runsc(&["delete", "--force", &self.id]);
        }
    }

    /// The error runsc logged, if it logged one.
    fn runtime_error(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.log()).ok()?;
        log.lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["level"] == "error")
            .find_map(|entry| entry["msg"].as_str().map(str::to_owned))
    }
}

/// The container's root: mount points, links, and the generated `/etc` files.
#[derive(Default)]
struct RootFs {
    /// (host path, path inside, is a folder, writable).
    binds: Vec<(PathBuf, PathBuf, bool, bool)>,
    /// (target, link path inside).
    links: Vec<(PathBuf, PathBuf)>,
}

impl RootFs {
    fn bind(&mut self, host: &Path, inside: &Path, dir: bool, writable: bool) {
        self.binds
            .push((host.to_owned(), inside.to_owned(), dir, writable));
    }

    fn mounts(&self, limits: &crate::Limits) -> Vec<Value> {
        let tmpfs = |at: &str| {
            json!({
                "destination": at, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", format!("size={}", limits.memory_bytes)],
            })
        };
        let mut mounts = vec![
            json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
            tmpfs("/tmp"),
            tmpfs("/dev/shm"),
        ];
        for (host, inside, _, writable) in &self.binds {
            let access = if *writable { "rw" } else { "ro" };
            mounts.push(json!({
                "destination": inside, "type": "bind", "source": host,
                "options": ["bind", access, "nosuid", "nodev"],
            }));
        }
        mounts
    }

    /// Creates the root folder: one mount point per bind (its parents too), the links,
    /// the generated `/etc` files. The root is mounted read-only.
    fn make(&self, rootfs: &Path) -> std::io::Result<()> {
        let at = |inside: &Path| {
            let mut path = rootfs.to_owned();
            path.extend(
                inside
                    .components()
                    .filter(|c| matches!(c, Component::Normal(_))),
            );
            path
        };
        for dir in ["proc", "tmp", "dev", "etc", "workspace"] {
            std::fs::create_dir_all(rootfs.join(dir))?;
        }
        for (target, link) in &self.links {
            std::os::unix::fs::symlink(target, at(link))?;
        }
        for (_, inside, dir, _) in &self.binds {
            let point = at(inside);
            if *dir {
                std::fs::create_dir_all(&point)?;
            } else {
                if let Some(parent) = point.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&point, b"")?;
            }
        }
        for (name, content) in [
            ("passwd", plan::PASSWD),
            ("group", plan::GROUP),
            ("hosts", plan::HOSTS),
            ("nsswitch.conf", plan::NSSWITCH),
            ("hostname", "moat-sandbox\n"),
        ] {
            std::fs::write(rootfs.join("etc").join(name), content)?;
        }
        Ok(())
    }
}

/// The OCI `process`: the command, its declared environment only, `nobody`, no
/// capabilities, `no_new_privs`, CPU time and core-dump limits.
fn process(spec: &Spec) -> Result<Value, SandboxError> {
    let text = |value: &std::ffi::OsStr, what: &str| {
        value
            .to_str()
            .filter(|v| !v.contains('\0'))
            .map(str::to_owned)
            .ok_or_else(|| {
                SandboxError::Invalid(format!(
                    "{what} is not UTF-8 text, which the container level (an OCI runtime) needs; use the process level"
                ))
            })
    };
    let mut args = vec![text(&spec.program, "the command")?];
    for arg in &spec.args {
        args.push(text(arg, "an argument")?);
    }
    let mut env = Vec::new();
    let mut has_path = false;
    for (name, value) in &spec.env {
        if !plan::valid_env_name(name) {
            return Err(SandboxError::Invalid(format!(
                "{name:?} is not a valid environment variable name"
            )));
        }
        has_path |= name == "PATH";
        env.push(format!("{name}={}", text(value, "an environment value")?));
    }
    if !has_path {
        // runsc looks a bare program name up in the declared PATH, as exec would.
        let path: OsString = spec.path_var();
        env.push(format!("PATH={}", text(&path, "PATH")?));
    }
    let cpu = cpu_limit_secs(&spec.limits);
    let none: [&str; 0] = [];
    Ok(json!({
        "terminal": false,
        "user": { "uid": plan::NOBODY, "gid": plan::NOBODY, "additionalGids": [] },
        "args": args,
        "env": env,
        "cwd": "/workspace",
        "noNewPrivileges": true,
        "capabilities": {
            "bounding": none, "effective": none, "inheritable": none,
            "permitted": none, "ambient": none,
        },
        "rlimits": [
            { "type": "RLIMIT_CPU", "soft": cpu, "hard": cpu + 1 },
            { "type": "RLIMIT_CORE", "soft": 0, "hard": 0 },
            { "type": "RLIMIT_NPROC", "soft": spec.limits.processes, "hard": spec.limits.processes },
        ],
    }))
}

/// Host tasks of gVisor's own (Sentry and gofer threads) in the sandbox's pids cgroup.
const SENTRY_TASKS: u64 = 128;
/// Host tasks per process of the command: the ptrace platform gives each one a stub
/// process and threads (seen: about 7).
const TASKS_PER_PROCESS: u64 = 8;

/// The sandbox's cgroup: memory (no swap) with the Sentry's allowance, a backstop on host
/// tasks (the command's own count is RLIMIT_NPROC, which gVisor enforces), and a CPU
/// quota of `cpus` whole CPUs.
fn resources(limits: &crate::Limits) -> Value {
    let memory = limits.memory_bytes.saturating_add(SENTRY_ALLOWANCE);
    let tasks = SENTRY_TASKS.saturating_add(limits.processes.saturating_mul(TASKS_PER_PROCESS));
    let period: u64 = 100_000;
    json!({
        "memory": { "limit": memory, "swap": memory },
        "pids": { "limit": tasks },
        "cpu": { "quota": period * u64::from(limits.cpus), "period": period },
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn spec(workspace: &Path) -> Spec {
        let mut spec = Spec::new("/bin/echo", ["hi"], workspace);
        spec.env = vec![("LANG".into(), "C.UTF-8".into())];
        spec
    }

    #[test]
    fn the_bundle_has_the_process_levels_filesystem_and_no_privilege() {
        let workspace = tempfile::tempdir().unwrap();
        let bundle = Bundle::write(&spec(workspace.path()), Path::new("runsc")).unwrap();
        let config: Value =
            serde_json::from_slice(&std::fs::read(bundle.dir().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["process"]["noNewPrivileges"], true);
        assert_eq!(config["process"]["user"]["uid"], plan::NOBODY);
        assert_eq!(config["process"]["capabilities"]["bounding"], json!([]));
        let env = config["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("LANG=C.UTF-8")));
        assert!(env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));
        assert_eq!(env.len(), 2, "only what was declared, plus PATH: {env:?}");
        let mounts = config["mounts"].as_array().unwrap();
        let mount = |at: &str| mounts.iter().find(|m| m["destination"] == at).cloned();
        let workspace_mount = mount("/workspace").expect("the workspace is mounted");
        assert!(
            workspace_mount["options"]
                .as_array()
                .unwrap()
                .contains(&json!("rw"))
        );
        let usr = mount("/usr").expect("/usr is shared");
        assert!(usr["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(mount("/etc").is_none() && mount("/root").is_none() && mount("/home").is_none());
        let memory = &config["linux"]["resources"]["memory"];
        assert_eq!(memory["limit"], memory["swap"], "no swap");
        assert_eq!(
            memory["limit"],
            crate::Limits::default().memory_bytes + SENTRY_ALLOWANCE
        );
        let rootfs = bundle.dir().join("rootfs");
        assert!(
            std::fs::read_to_string(rootfs.join("etc/passwd"))
                .unwrap()
                .contains("nobody")
        );
        assert!(!rootfs.join("etc/shadow").exists());
        let folder = bundle.root.path().to_owned();
        assert_eq!(
            std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(bundle);
        assert!(!folder.exists(), "the bundle folder goes with the run");
    }

    #[test]
    fn grants_are_checked_before_anything_is_written() {
        let workspace = tempfile::tempdir().unwrap();
        let mut hidden = spec(workspace.path());
        let secret = tempfile::tempdir().unwrap();
        hidden.grants = vec![crate::Grant {
            path: secret.path().to_owned(),
            access: Access::ReadOnly,
        }];
        hidden.hidden = vec![secret.path().join("vault")];
        assert!(matches!(
            Bundle::write(&hidden, Path::new("runsc")),
            Err(SandboxError::ExposesHidden { .. })
        ));

        let mut reserved = spec(workspace.path());
        reserved.grants = vec![crate::Grant {
            path: "/etc".into(),
            access: Access::ReadOnly,
        }];
        assert!(matches!(
            Bundle::write(&reserved, Path::new("runsc")),
            Err(SandboxError::ReservedPath(_))
        ));

        let mut binary = spec(workspace.path());
        binary.args = vec![OsString::from_vec(vec![0xff, 0xfe])];
        let Err(SandboxError::Invalid(why)) = Bundle::write(&binary, Path::new("runsc")) else {
            panic!("a non-UTF-8 argument cannot go into config.json");
        };
        assert!(why.contains("process level"), "{why}");
    }
    #[test]
    fn a_dead_moats_leftovers_go_and_a_live_ones_stay() {
        let place = tempfile::tempdir().unwrap();
        // No process has a pid above the kernel's limit of 2^22.
        let dead = place.path().join(format!("{LEFTOVER_PREFIX}4194305-abc"));
        let mine = place
            .path()
            .join(format!("{LEFTOVER_PREFIX}{}-abc", std::process::id()));
        let not_ours = place.path().join("moat-other-4194305");
        let a_file = place.path().join(format!("{LEFTOVER_PREFIX}4194306-x"));
        for dir in [&dead, &mine, &not_ours] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("config.json"), "{}").unwrap();
        }
        std::fs::write(&a_file, "").unwrap();
        // A pid that means nothing here, but whose bundle is locked: in use elsewhere.
        let elsewhere = place.path().join(format!("{LEFTOVER_PREFIX}4194307-abc"));
        std::fs::create_dir(&elsewhere).unwrap();
        let held = std::fs::File::create(elsewhere.join(IN_USE)).unwrap();
        held.try_lock().unwrap();
        sweep_dead(place.path(), |dir| std::fs::remove_dir_all(dir));
        assert!(!dead.exists());
        assert!(mine.exists() && not_ours.exists() && a_file.exists() && elsewhere.exists());
        drop(held);
        sweep_dead(place.path(), |dir| std::fs::remove_dir_all(dir));
        assert!(!elsewhere.exists());
    }
}
