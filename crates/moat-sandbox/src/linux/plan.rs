//! Everything the child needs, computed in the parent: after `clone3` the child may not
//! allocate, so every path, string, rule and filter is built here and only read there.
//!
//! The sandbox's root is a fresh tmpfs holding:
//!
//! | path | what |
//! |---|---|
//! | `/usr`, `/bin`, `/sbin`, `/lib*` | the host's, bind-mounted read-only (symlinks copied as symlinks) |
//! | `/etc` | generated `passwd`, `group`, `hosts`, `hostname`, `nsswitch.conf`; the host's dynamic-linker files, `alternatives`, `localtime`, `ssl`, read-only |
//! | `/dev` | `null`, `zero`, `full`, `random`, `urandom` bound from the host; `fd`, `stdin`, `stdout`, `stderr` links; a tmpfs `shm` |
//! | `/proc` | a new proc for the sandbox's PID namespace |
//! | `/tmp` | a private tmpfs |
//! | `/workspace` | the per-call workspace, read-write, the working directory |
//! | granted folders | at their host path, read-only or read-write |
//!
//! and the root itself is remounted read-only once built.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::c_char;

use super::landlock::{self, fs};
use crate::{Access, SandboxError, Spec};

/// Where the new root is assembled before `pivot_root` (a tmpfs mounted over it in the
/// child's own mount namespace; the host's `/tmp` is untouched).
const STAGING: &str = "/tmp";
/// The uid and gid the command has inside.
pub const SANDBOX_ID: u32 = 1000;
/// The host identity used when moat runs as root: the command must not be root anywhere.
pub(super) const NOBODY: u32 = 65534;

/// Host directories shared read-only when present.
pub(super) const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Host files and folders under `/etc` that programs need to start.
pub(super) const ETC_SHARED: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "ssl/certs",
    "protocols",
    "services",
];
/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Paths inside the sandbox that a grant may not cover or lie in.
const RESERVED: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/dev",
    "/proc",
    "/workspace",
];

pub(super) const PASSWD: &str = "root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:1000:1000:moat sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n";
pub(super) const GROUP: &str = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";
pub(super) const HOSTS: &str = "127.0.0.1\tlocalhost moat-sandbox\n::1\tlocalhost\n";
pub(super) const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files\n";
/// The sandbox's hostname (its own UTS namespace).
pub const HOSTNAME: &[u8] = b"moat-sandbox";

/// One step of building the new root. Paths are absolute, under the staging mount.
pub enum Op {
    /// `mkdir` with this mode.
    Mkdir(CString, u32),
    /// A symbolic link: (target, link path).
    Symlink(CString, CString),
    /// A new read-only-to-be file with this content.
    File(CString, &'static [u8]),
    /// Bind host path number `source` of [`ChildPlan::sources`] onto a new mount point.
    Bind {
        source: usize,
        target: CString,
        dir: bool,
        writable: bool,
        device: bool,
    },
    /// A tmpfs with these mount options.
    Tmpfs(CString, CString),
    /// A proc filesystem for the new PID namespace.
    Proc(CString),
}

/// A host path to bind and the identity of the file the parent checked there.
pub struct Source {
    pub path: CString,
    pub dev: u64,
    pub ino: u64,
}

/// Everything the child reads.
pub struct ChildPlan {
    pub staging: CString,
    pub staging_options: CString,
    pub ops: Vec<Op>,
    /// Host paths to bind. The child opens them first, before its setup changes what it
    /// can see: a bind source must belong to the child's own mount namespace, so the
    /// parent cannot open them for it.
    pub sources: Vec<Source>,
    /// One buffer per source for the child to write `/proc/self/fd/N` into.
    pub source_slots: Vec<[u8; 32]>,
    pub workdir: CString,
    /// Applied always.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    /// Memory and processes, applied only when no cgroup holds them: RLIMIT_AS refuses
    /// programs that reserve more address space than they use, and a cgroup counts the
    /// whole tree.
    pub fallback_rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    /// The soft RLIMIT_CPU, which tells a CPU-limit kill from others.
    pub cpu_limit_secs: u64,
    pub cpus: libc::cpu_set_t,
    pub cpu_list: Vec<usize>,
    pub landlock: Option<landlock::Plan>,
    pub seccomp: &'static super::seccomp::Filters,
    pub candidates: Vec<CString>,
    /// Own the strings `argv_ptrs` and `envp_ptrs` point into.
    #[allow(dead_code)]
    pub argv: Vec<CString>,
    #[allow(dead_code)]
    pub envp: Vec<CString>,
    /// Null-terminated pointer arrays into `argv` and `envp` (which must outlive them).
    pub argv_ptrs: Vec<*const c_char>,
    pub envp_ptrs: Vec<*const c_char>,
    /// Whether moat runs as root: it may then leave setgroups allowed in the new
    /// namespace, and the child clears its supplementary groups.
    pub privileged: bool,
    /// The highest capability number this kernel knows.
    pub cap_last: u32,
    /// The host identity of the sandbox's uid/gid 1000.
    pub host_uid: u32,
    pub host_gid: u32,
    /// The loopback and proxy socket to set up, when the command has network grants.
    pub network: Option<NetSetup>,
}

/// The port of moat's egress proxy on the sandbox's loopback.
pub const PROXY_PORT: u16 = 3128;

/// What the child needs to bring its loopback up and open the proxy's listening socket
/// (built here: the child may not allocate).
pub struct NetSetup {
    /// `lo`, with IFF_UP.
    pub lo_up: libc::ifreq,
    /// 127.0.0.1:[`PROXY_PORT`].
    pub proxy: libc::sockaddr_in,
}

impl NetSetup {
    fn new() -> NetSetup {
        // SAFETY: ifreq and sockaddr_in are plain C structs for which all-zero is valid.
        let mut lo_up: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in lo_up.ifr_name.iter_mut().zip(b"lo") {
            *dst = src as c_char;
        }
        lo_up.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        // SAFETY: as above.
        let mut proxy: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        proxy.sin_family = libc::AF_INET as libc::sa_family_t;
        proxy.sin_port = PROXY_PORT.to_be();
        proxy.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        NetSetup { lo_up, proxy }
    }
}

fn cstring(bytes: impl AsRef<[u8]>, what: &str) -> Result<CString, SandboxError> {
    CString::new(bytes.as_ref().to_vec())
        .map_err(|_| SandboxError::Invalid(format!("{what} contains a NUL byte")))
}

fn staged(inside: &Path) -> CString {
    let mut bytes = STAGING.as_bytes().to_vec();
    bytes.extend_from_slice(inside.as_os_str().as_bytes());
    CString::new(bytes).expect("paths from the plan hold no NUL")
}

/// Resolves a host path the caller named to an absolute, symlink-free directory.
pub(super) fn resolve_dir(path: &Path) -> Result<PathBuf, SandboxError> {
    let resolved = std::fs::canonicalize(path).map_err(|source| SandboxError::Path {
        path: path.to_path_buf(),
        source,
    })?;
    if !resolved.is_dir() {
        return Err(SandboxError::Path {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    Ok(resolved)
}

/// Whether `a` is `b` or lies inside it.
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// The host identity that uid 1000 inside maps to.
pub fn host_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        (NOBODY, NOBODY)
    } else {
        (uid, gid)
    }
}

/// Whether moat runs as root.
pub fn privileged() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Picks `n` CPUs this process may use, rotating between calls so concurrent sandboxes
/// spread out.
pub(super) fn pick_cpus(n: u32) -> Result<(libc::cpu_set_t, Vec<usize>), SandboxError> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `allowed`.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) }
        != 0
    {
        return Err(std::io::Error::last_os_error().into());
    }
    let usable: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: the index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
        .collect();
    if usable.is_empty() {
        return Err(SandboxError::Invalid("this process may use no CPU".into()));
    }
    let n = (n.max(1) as usize).min(usable.len());
    let start = NEXT.fetch_add(n, Ordering::Relaxed);
    let mut chosen: Vec<usize> = (0..n).map(|i| usable[(start + i) % usable.len()]).collect();
    chosen.sort_unstable();
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in &chosen {
        // SAFETY: c came from the allowed set, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    Ok((set, chosen))
}

pub(super) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Refuses limits no sandbox can run under.
pub(crate) fn check_limits(limits: &crate::Limits) -> Result<(), SandboxError> {
    if limits.memory_bytes < 16 * 1024 * 1024 {
        return Err(SandboxError::Invalid(
            "the memory limit must be at least 16 MiB".into(),
        ));
    }
    if limits.processes == 0 || limits.cpus == 0 || limits.wall_time.is_zero() {
        return Err(SandboxError::Invalid(
            "the process, CPU and wall-time limits must be above zero".into(),
        ));
    }
    if limits.wall_time > MAX_WALL_TIME {
        return Err(SandboxError::Invalid(format!(
            "the wall-time limit may be at most {} hours: a tool call is not a service",
            MAX_WALL_TIME.as_secs() / 3600
        )));
    }
    Ok(())
}

/// The longest wall time a call may ask for; also keeps deadline arithmetic in range.
const MAX_WALL_TIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The workspace, resolved: a folder of its own, never `/` or a system folder, since it
/// is bound read-write and, when moat is root, handed to the sandbox's identity.
pub(super) fn resolve_workspace(path: &Path) -> Result<PathBuf, SandboxError> {
    let workspace = resolve_dir(path)?;
    let system = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc",
        "/sys", "/boot", "/run",
    ];
    if workspace == Path::new("/") || system.iter().any(|d| within(&workspace, Path::new(d))) {
        return Err(SandboxError::Invalid(format!(
            "cannot use {} as the workspace: it is / or a system folder; give the call a folder of its own",
            workspace.display()
        )));
    }
    Ok(workspace)
}

/// The granted folders, resolved: none may be `/`, cover or lie in a folder the sandbox
/// provides itself, or overlap another grant.
pub(super) fn checked_grants(spec: &Spec) -> Result<Vec<(PathBuf, Access)>, SandboxError> {
    let mut grants: Vec<(PathBuf, Access)> = Vec::new();
    for grant in &spec.grants {
        let path = resolve_dir(&grant.path)?;
        if path == Path::new("/") || RESERVED.iter().any(|r| within(&path, Path::new(r))) {
            return Err(SandboxError::ReservedPath(path));
        }
        if let Some((other, _)) = grants
            .iter()
            .find(|(g, _)| within(&path, g) || within(g, &path))
        {
            return Err(SandboxError::Invalid(format!(
                "the grants {} and {} overlap; grant one folder that covers what is needed",
                other.display(),
                path.display()
            )));
        }
        grants.push((path, grant.access));
    }
    Ok(grants)
}

/// Nothing shared may contain a hidden path or lie inside one; the workspace may lie
/// inside one (it is a folder of moat's home made for this call) but neither contain it
/// nor be it.
pub(super) fn check_hidden(
    spec: &Spec,
    workspace: &Path,
    exposed: &[PathBuf],
) -> Result<(), SandboxError> {
    for hidden in &spec.hidden {
        let hidden = std::fs::canonicalize(hidden).unwrap_or_else(|_| hidden.clone());
        let exposes = |shared: &PathBuf| {
            if shared == workspace {
                within(&hidden, shared)
            } else {
                within(&hidden, shared) || within(shared, &hidden)
            }
        };
        if let Some(shared) = exposed.iter().find(|e| exposes(e)) {
            return Err(SandboxError::ExposesHidden {
                grant: shared.clone(),
                hidden,
            });
        }
    }
    Ok(())
}

/// Builds the plan for `spec`. Host paths are resolved and checked here, so a missing
/// grant or workspace fails before anything is started.
pub fn build(spec: &Spec) -> Result<ChildPlan, SandboxError> {
    if spec.program.as_bytes().is_empty() {
        return Err(SandboxError::Invalid("no command given".into()));
    }
    // `crate::run` checked the limits before any level started.
    let limits = &spec.limits;
    let workspace = resolve_workspace(&spec.workspace)?;
    let mut root = Root::new()?;
    root.system_dirs()?;
    root.etc()?;
    root.dev(limits.memory_bytes)?;
    root.proc_and_tmp(limits.memory_bytes)?;
    root.workspace(&workspace)?;
    root.grants(&checked_grants(spec)?)?;
    check_hidden(spec, &workspace, &root.exposed)?;

    let (argv, envp) = command_line(spec)?;
    let candidates = candidates(&spec.program, &spec.path_var())?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);

    let cpu_limit_secs = limits.wall_time.as_secs().max(1) * u64::from(limits.cpus) + 1;
    let rlimits = vec![
        (libc::RLIMIT_CPU, cpu_limit_secs, cpu_limit_secs + 1),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    let fallback_rlimits = vec![
        (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        // One more for the sandbox's init (see `child::init`).
        (
            libc::RLIMIT_NPROC,
            limits.processes.saturating_add(1),
            limits.processes.saturating_add(1),
        ),
    ];
    let (cpus, cpu_list) = pick_cpus(limits.cpus)?;
    let seccomp = super::seccomp::filters().map_err(SandboxError::Unsupported)?;
    let connect_ports = match spec.network {
        Some(_) => vec![PROXY_PORT],
        None => Vec::new(),
    };
    let Root {
        ops,
        sources,
        rules,
        ..
    } = root;
    let landlock = landlock::abi().map(|abi| landlock::Plan::new(abi, rules, connect_ports));
    let (host_uid, host_gid) = host_ids();

    Ok(ChildPlan {
        staging: cstring(STAGING, "path")?,
        staging_options: CString::new("mode=0755,size=16m").expect("no NUL"),
        ops,
        source_slots: vec![[0; 32]; sources.len()],
        sources,
        workdir: cstring("/workspace", "path")?,
        rlimits,
        fallback_rlimits,
        cpu_limit_secs,
        cpus,
        cpu_list,
        landlock,
        seccomp,
        candidates,
        argv,
        envp,
        argv_ptrs,
        envp_ptrs,
        privileged: privileged(),
        cap_last: cap_last(),
        host_uid,
        host_gid,
        network: spec.network.as_ref().map(|_| NetSetup::new()),
    })
}

/// The sandbox's root as it is planned: the mount operations the child carries out, the
/// host paths it binds (checked again by device and inode after opening), the Landlock
/// rules that go with them, and every host path exposed (for the hidden-path check).
struct Root {
    ops: Vec<Op>,
    sources: Vec<Source>,
    rules: Vec<(CString, u64)>,
    exposed: Vec<PathBuf>,
}

impl Root {
    fn new() -> Result<Self, SandboxError> {
        Ok(Self {
            ops: Vec::new(),
            sources: Vec::new(),
            rules: vec![(cstring("/", "path")?, fs::READ_DIR)],
            exposed: Vec::new(),
        })
    }

    /// Binds `host` at `inside`, remembering what the host path resolved to.
    fn bind(
        &mut self,
        host: &Path,
        inside: &Path,
        dir: bool,
        writable: bool,
        device: bool,
    ) -> Result<(), SandboxError> {
        use std::os::unix::fs::MetadataExt;
        let resolved = std::fs::canonicalize(host).map_err(|source| SandboxError::Path {
            path: host.to_path_buf(),
            source,
        })?;
        let meta = std::fs::metadata(&resolved).map_err(|source| SandboxError::Path {
            path: host.to_path_buf(),
            source,
        })?;
        self.ops.push(Op::Bind {
            source: self.sources.len(),
            target: staged(inside),
            dir,
            writable,
            device,
        });
        self.sources.push(Source {
            path: cstring(resolved.as_os_str().as_bytes(), "a path")?,
            dev: meta.dev(),
            ino: meta.ino(),
        });
        Ok(())
    }

    fn rule(&mut self, path: &str, rights: u64) -> Result<(), SandboxError> {
        self.rules.push((cstring(path, "path")?, rights));
        Ok(())
    }

    /// The system directories, read-only (symlinks such as `/bin` → `usr/bin` as links).
    fn system_dirs(&mut self) -> Result<(), SandboxError> {
        for name in SYSTEM_DIRS {
            let host = Path::new("/").join(name);
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host)?;
                self.ops.push(Op::Symlink(
                    cstring(target.as_os_str().as_bytes(), "link")?,
                    staged(&host),
                ));
            } else if meta.is_dir() {
                self.bind(&host, &host, true, false, false)?;
                self.rules
                    .push((cstring(host.as_os_str().as_bytes(), "path")?, fs::READ_EXEC));
                self.exposed.push(host);
            }
        }
        Ok(())
    }

    /// `/etc`: moat's own minimal files, and the few host files programs need to run.
    fn etc(&mut self) -> Result<(), SandboxError> {
        self.ops.push(Op::Mkdir(staged(Path::new("/etc")), 0o755));
        for (name, content) in [
            ("passwd", PASSWD),
            ("group", GROUP),
            ("hosts", HOSTS),
            ("nsswitch.conf", NSSWITCH),
            ("hostname", "moat-sandbox\n"),
        ] {
            self.ops.push(Op::File(
                staged(&Path::new("/etc").join(name)),
                content.as_bytes(),
            ));
        }
        for name in ETC_SHARED {
            let host = Path::new("/etc").join(name);
            if let Ok(meta) = std::fs::metadata(&host) {
                if let Some(parent) = host.parent().filter(|p| *p != Path::new("/etc")) {
                    self.ops.push(Op::Mkdir(staged(parent), 0o755));
                }
                self.bind(&host, &host, meta.is_dir(), false, false)?;
                self.exposed.push(host);
            }
        }
        self.rule("/etc", fs::READ_EXEC)
    }

    /// `/dev`: the harmless devices, the standard descriptors, and a private `/dev/shm`.
    fn dev(&mut self, memory_bytes: u64) -> Result<(), SandboxError> {
        self.ops.push(Op::Mkdir(staged(Path::new("/dev")), 0o755));
        for name in DEVICES {
            let host = Path::new("/dev").join(name);
            if host.exists() {
                self.bind(&host, &host, false, true, true)?;
            }
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            self.ops.push(Op::Symlink(
                cstring(target, "link")?,
                staged(&Path::new("/dev").join(link)),
            ));
        }
        self.ops
            .push(Op::Mkdir(staged(Path::new("/dev/shm")), 0o755));
        self.ops.push(Op::Tmpfs(
            staged(Path::new("/dev/shm")),
            tmpfs_options(memory_bytes),
        ));
        self.rule(
            "/dev",
            fs::READ_FILE | fs::WRITE_FILE | fs::READ_DIR | fs::TRUNCATE | fs::IOCTL_DEV,
        )?;
        self.rule("/dev/shm", fs::READ_WRITE)
    }

    /// A fresh `/proc` of the sandbox's own PID namespace, and a private `/tmp`.
    fn proc_and_tmp(&mut self, memory_bytes: u64) -> Result<(), SandboxError> {
        self.ops.push(Op::Mkdir(staged(Path::new("/proc")), 0o555));
        self.ops.push(Op::Proc(staged(Path::new("/proc"))));
        self.rule("/proc", fs::READ_FILE | fs::READ_DIR)?;
        self.ops.push(Op::Mkdir(staged(Path::new("/tmp")), 0o1777));
        self.ops.push(Op::Tmpfs(
            staged(Path::new("/tmp")),
            tmpfs_options(memory_bytes),
        ));
        self.rule("/tmp", fs::READ_WRITE)
    }

    /// The workspace, read-write at `/workspace`.
    fn workspace(&mut self, workspace: &Path) -> Result<(), SandboxError> {
        self.ops
            .push(Op::Mkdir(staged(Path::new("/workspace")), 0o755));
        self.bind(workspace, Path::new("/workspace"), true, true, false)?;
        self.rule("/workspace", fs::READ_WRITE)?;
        self.exposed.push(workspace.to_path_buf());
        Ok(())
    }

    /// Each granted path at its own place, read-only or read-write as granted.
    fn grants(&mut self, grants: &[(PathBuf, Access)]) -> Result<(), SandboxError> {
        for (path, access) in grants {
            let mut ancestor = PathBuf::from("/");
            for part in path.components().skip(1) {
                if let Component::Normal(name) = part {
                    ancestor.push(name);
                    if ancestor != *path {
                        self.ops.push(Op::Mkdir(staged(&ancestor), 0o755));
                    }
                }
            }
            self.ops.push(Op::Mkdir(staged(path), 0o755));
            let writable = *access == Access::ReadWrite;
            self.bind(path, path, true, writable, false)?;
            let rights = if writable {
                fs::READ_WRITE
            } else {
                fs::READ_EXEC
            };
            self.rules
                .push((cstring(path.as_os_str().as_bytes(), "grant")?, rights));
            self.exposed.push(path.clone());
        }
        Ok(())
    }
}

/// A tmpfs sized at the memory limit, open to everyone (sticky).
fn tmpfs_options(memory_bytes: u64) -> CString {
    CString::new(format!("mode=1777,size={memory_bytes}")).expect("digits")
}

/// The command's argv and environment as C strings; with a network grant, the proxy
/// variables every common client honours point at the egress proxy, the only way out.
fn command_line(spec: &Spec) -> Result<(Vec<CString>, Vec<CString>), SandboxError> {
    let mut argv = vec![cstring(spec.program.as_bytes(), "the command")?];
    for arg in &spec.args {
        argv.push(cstring(arg.as_bytes(), "an argument")?);
    }
    let mut env: Vec<(String, OsString)> = spec.env.clone();
    if spec.network.is_some() {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            if !env.iter().any(|(n, _)| n == name) {
                env.push((name.to_string(), proxy.clone().into()));
            }
        }
    }
    let mut envp = Vec::new();
    for (name, value) in &env {
        if !valid_env_name(name) {
            return Err(SandboxError::Invalid(format!(
                "{name:?} is not a valid environment variable name"
            )));
        }
        let mut entry = OsString::from(format!("{name}="));
        entry.push(value);
        envp.push(cstring(entry.as_bytes(), "an environment value")?);
    }
    Ok((argv, envp))
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths `execve` tries, as `execvp` would: the program itself when it names a path,
/// else each `PATH` entry joined with it.
fn candidates(program: &OsStr, path: &OsStr) -> Result<Vec<CString>, SandboxError> {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        return Ok(vec![cstring(bytes, "the command")?]);
    }
    let mut out = Vec::new();
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(bytes);
        out.push(cstring(full, "a PATH entry")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> Spec {
        Spec::new("true", Vec::<String>::new(), dir)
    }

    #[test]
    fn the_program_is_searched_in_the_declared_path() {
        let c = candidates(OsStr::new("sh"), OsStr::new("/usr/bin:/bin")).unwrap();
        assert_eq!(c, [c"/usr/bin/sh".to_owned(), c"/bin/sh".to_owned()]);
        let c = candidates(OsStr::new("./run"), OsStr::new("/usr/bin")).unwrap();
        assert_eq!(c, [c"./run".to_owned()]);
    }

    #[test]
    fn grants_of_the_sandbox_s_own_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for reserved in ["/", "/usr", "/usr/share", "/etc", "/proc", "/dev"] {
            let mut s = spec(dir.path());
            s.grants.push(crate::Grant {
                path: reserved.into(),
                access: Access::ReadOnly,
            });
            assert!(
                matches!(build(&s), Err(SandboxError::ReservedPath(_))),
                "{reserved}"
            );
        }
    }

    #[test]
    fn a_grant_that_exposes_a_hidden_path_is_refused_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let vault = home.join(".moat");
        std::fs::create_dir_all(vault.join("audit")).unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        for granted in [&home, &vault.join("audit")] {
            let mut s = spec(&ws);
            s.hidden.push(vault.clone());
            s.grants.push(crate::Grant {
                path: granted.clone(),
                access: Access::ReadOnly,
            });
            let err = build(&s).err().expect("refused");
            assert!(matches!(err, SandboxError::ExposesHidden { .. }), "{err}");
        }
        // A workspace inside the hidden home is fine: only that folder is mounted.
        let inner = vault.join("sandbox");
        std::fs::create_dir(&inner).unwrap();
        let mut s = spec(&inner);
        s.hidden.push(vault.clone());
        assert!(build(&s).is_ok());
        // A workspace that contains it is not, nor one that is it.
        for workspace in [dir.path(), vault.as_path()] {
            let mut s = spec(workspace);
            s.hidden.push(vault.clone());
            assert!(
                matches!(build(&s), Err(SandboxError::ExposesHidden { .. })),
                "{}",
                workspace.display()
            );
        }
    }

    #[test]
    fn the_workspace_is_never_the_root_or_a_system_folder() {
        for system in ["/", "/etc", "/usr/share", "/proc", "/dev"] {
            let err = build(&spec(Path::new(system))).err().expect(system);
            assert!(
                err.to_string().contains("as the workspace"),
                "{system}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(build(&spec(dir.path())).is_ok());
    }

    #[test]
    fn limits_out_of_range_are_refused_not_overflowed() {
        let mut limits = crate::Limits {
            wall_time: std::time::Duration::from_secs(u64::MAX),
            ..crate::Limits::default()
        };
        let err = check_limits(&limits).unwrap_err();
        assert!(err.to_string().contains("at most 24 hours"), "{err}");
        limits.wall_time = MAX_WALL_TIME;
        assert!(check_limits(&limits).is_ok());
    }

    #[test]
    fn overlapping_grants_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let ws = tempfile::tempdir().unwrap();
        let mut s = spec(ws.path());
        for path in [dir.path().join("a"), inner] {
            s.grants.push(crate::Grant {
                path,
                access: Access::ReadOnly,
            });
        }
        let err = build(&s).err().expect("refused").to_string();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn bad_names_and_nul_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.env.push(("1BAD".into(), "x".into()));
        assert!(matches!(build(&s), Err(SandboxError::Invalid(_))));
        let mut s = spec(dir.path());
        s.args.push(OsString::from("a\0b"));
        assert!(matches!(build(&s), Err(SandboxError::Invalid(_))));
        let mut s = spec(dir.path());
        s.workspace = dir.path().join("missing");
        assert!(matches!(build(&s), Err(SandboxError::Path { .. })));
    }
}
