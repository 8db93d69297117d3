//! Memory and process limits from a cgroup of the sandbox's own, where moat may make one.
//!
//! A cgroup counts what the whole process tree really uses (resident pages, page cache,
//! its tmpfs files) instead of each process's address space, so programs that reserve
//! large virtual areas (Go, the JVM, V8) run, a tree of processes shares one budget, and
//! the kernel's out-of-memory kill inside it is counted: that count turns into the typed
//! `OutOfMemory` outcome.
//!
//! Tried in order:
//! - cgroup v2, when moat's own cgroup hands the memory and pids controllers to its
//!   children (already, or moat can enable them: the kernel refuses that while moat's
//!   cgroup holds processes itself, unless it is the root; when moat is the only one
//!   there, it first moves itself into a leaf child, `moat-supervisor`, as systemd asks
//!   of a service with `Delegate=yes`).
//! - cgroup v1, the legacy hierarchies of a hybrid host, when the memory and pids
//!   hierarchies let moat make a child group there (in practice: moat runs as root).
//! - Neither: the caller falls back to rlimits and reports why.
//!
//! The CPU limit is a quota where the `cpu` controller is there too (v2 `cpu.max`, v1
//! `cpu.cfs_quota_us`): the command's threads may run on every CPU, but together get at
//! most `cpus` CPUs' worth of time per period, so a multi-threaded program is not packed
//! onto one core and concurrent sandboxes do not pile onto the same ones. Without the
//! controller, the caller pins the command to `cpus` CPUs instead (affinity).
//!
//! Each sandbox gets `moat-sandbox-<moat's pid>-<n>` (beside moat's leaf, if any), and it
//! is removed when the sandbox ends; groups left by a moat that died are swept once per
//! process.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "moat-sandbox-";

/// Which cgroup interface holds the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One sandbox's cgroup (one directory for v2, one per controller for v1). Dropping it
/// kills what is left inside and removes the directories.
#[derive(Debug)]
pub struct Cgroup {
    pub version: Version,
    /// The group that holds the memory limit (and, for v2, everything).
    memory: PathBuf,
    /// For v1, the group in the pids hierarchy; for v2 the same as `memory`.
    pids: PathBuf,
    /// The group that holds the CPU quota (v1: in the cpu hierarchy; v2: `memory`), when
    /// the cpu controller is there to hold one.
    cpu: Option<PathBuf>,
}

/// The quota's period: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

impl Cgroup {
    /// A new cgroup limited to `memory_bytes` (no swap) and `processes`, or why none could
    /// be made, for the report.
    pub fn create(memory_bytes: u64, processes: u64, cpus: u32) -> Result<Cgroup, String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let name = unique_name();
        let v2 = match own_dir(&mounts, &own, None) {
            Some(parent) => {
                match create_v2(delegating(&parent), &name, memory_bytes, processes, cpus) {
                    Ok(group) => return Ok(group),
                    Err(why) => why,
                }
            }
            None => "cgroup v2 is not mounted".to_string(),
        };
        let v1 = match (
            own_dir(&mounts, &own, Some("memory")),
            own_dir(&mounts, &own, Some("pids")),
        ) {
            (Some(memory), Some(pids)) => {
                let cpu = own_dir(&mounts, &own, Some("cpu"));
                let sizes = (memory_bytes, processes, cpus);
                match create_v1(&memory, &pids, cpu.as_deref(), &name, sizes) {
                    Ok(group) => return Ok(group),
                    Err(why) => why,
                }
            }
            _ => "no cgroup v1 memory and pids hierarchies".to_string(),
        };
        Err(format!("{v2}; {v1}"))
    }

    /// A group with no limit that only holds the processes of a `none`-level call: a
    /// process that leaves the process group (`setsid`) stays in its cgroup, so the
    /// wall-time kill still reaches it ([`Cgroup::kill_all`]). v2 needs no controller for
    /// that; v1 uses the pids hierarchy.
    pub fn create_tracking() -> Result<Cgroup, String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let name = unique_name();
        let (version, parent) = match own_dir(&mounts, &own, None) {
            Some(parent) => (Version::V2, delegating(&parent).to_owned()),
            None => match own_dir(&mounts, &own, Some("pids")) {
                Some(parent) => (Version::V1, parent),
                None => return Err("no cgroup v2, nor a v1 pids hierarchy".into()),
            },
        };
        sweep_once(&parent);
        let dir = parent.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        Ok(Cgroup {
            version,
            memory: dir.clone(),
            pids: dir,
            cpu: None,
        })
    }

    /// Kills every process in the group, including those that made sessions of their
    /// own: at once with v2's `cgroup.kill` (Linux 5.14+), else by listing and killing
    /// until the group is empty (a process forked meanwhile is in the next list).
    pub fn kill_all(&self) {
        if self.version == Version::V2 {
            let killed = std::fs::OpenOptions::new()
                .write(true)
                .open(self.pids.join("cgroup.kill"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
            if killed.is_ok() {
                return;
            }
        }
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.pids.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<libc::pid_t> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill takes no pointers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The files through which a process moves itself into the group, opened for
    /// writing: `tasks` in each v1 hierarchy, `cgroup.procs` for v2. The child writes "0"
    /// to each. Moving oneself through v1's `tasks` skips the lock that makes moving
    /// another process wait for an RCU grace period (~8 ms here); the write is checked
    /// against these files' opener, moat, not against the child.
    pub fn entry_files(&self) -> std::io::Result<Vec<OwnedFd>> {
        let file = match self.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        let mut dirs = vec![&self.memory];
        if self.pids != self.memory {
            dirs.push(&self.pids);
        }
        if let Some(cpu) = self.cpu.as_ref().filter(|c| **c != self.memory) {
            dirs.push(cpu);
        }
        dirs.into_iter()
            .map(|dir| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(dir.join(file))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    /// Whether the group holds the CPU limit as a quota (else the caller pins CPUs).
    pub fn has_cpu_quota(&self) -> bool {
        self.cpu.is_some()
    }

    /// How many processes the kernel killed for going over the memory limit.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        std::fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|text| counter(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// The group's path, for the report.
    pub fn path(&self) -> &Path {
        &self.memory
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.version == Version::V2 {
            // Linux 5.14+: kills everything inside at once; older kernels lack the file,
            // and the PID namespace's end has killed the tree anyway.
            let kill = std::fs::OpenOptions::new()
                .write(true)
                .open(self.memory.join("cgroup.kill"));
            if let Ok(mut kill) = kill {
                let _ = std::io::Write::write_all(&mut kill, b"1");
            }
        }
        remove(&self.memory);
        if self.pids != self.memory {
            remove(&self.pids);
        }
        if let Some(cpu) = self.cpu.as_ref().filter(|c| **c != self.memory) {
            remove(cpu);
        }
    }
}

/// Makes the group on a thread of its own, beside the plan's building (making a memory
/// group takes most of a millisecond).
pub struct Maker(Result<std::thread::JoinHandle<Result<Cgroup, String>>, String>);

impl Maker {
    pub fn start(limits: &crate::Limits) -> Maker {
        if !limits.use_cgroup {
            return Maker(Err("not asked for (use_cgroup is off)".into()));
        }
        // One more process than the command's: the sandbox's init (see `child::init`).
        let (memory_bytes, processes, cpus) = (
            limits.memory_bytes,
            limits.processes.saturating_add(1),
            limits.cpus,
        );
        Maker(
            std::thread::Builder::new()
                .name("moat-sandbox-cgroup".into())
                .spawn(move || Cgroup::create(memory_bytes, processes, cpus))
                .map_err(|e| format!("cannot start a thread to make the cgroup: {e}")),
        )
    }

    /// The group, or why there is none.
    pub fn finish(self) -> Result<Cgroup, String> {
        self.0?
            .join()
            .unwrap_or_else(|_| Err("making the cgroup panicked".into()))
    }
}

/// Removes an emptied group. Processes killed with their PID namespace may take a moment
/// to leave it; the kernel refuses the rmdir (EBUSY) until they have.
fn remove(dir: &Path) {
    let until = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(50);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= until => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove the sandbox's cgroup; the next moat start sweeps it");
                return;
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
        }
    }
}

fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The leaf group moat moves itself into (see [`move_into_leaf`]).
const SUPERVISOR: &str = "moat-supervisor";

/// The group whose children the sandboxes' groups are: moat's own, or, once moat has
/// moved into its leaf, the leaf's parent.
fn delegating(own: &Path) -> &Path {
    match own.parent() {
        Some(parent) if own.file_name() == Some(std::ffi::OsStr::new(SUPERVISOR)) => parent,
        _ => own,
    }
}

/// When moat is the only process in its own group (a systemd service with
/// `Delegate=yes`, say), moves it into a leaf child of that group, as systemd asks of a
/// delegated service, so that the group may hand controllers to the sandboxes' groups
/// beside the leaf. Another process there is not moat's to move: then nothing moves.
fn move_into_leaf(parent: &Path) -> bool {
    let me = std::process::id().to_string();
    let procs = std::fs::read_to_string(parent.join("cgroup.procs")).unwrap_or_default();
    let leaf = parent.join(SUPERVISOR);
    if procs.trim().is_empty() {
        // Another call moved moat a moment ago.
        return leaf.is_dir();
    }
    if procs.split_whitespace().any(|pid| pid != me) {
        return false;
    }
    if let Err(e) = std::fs::create_dir(&leaf)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return false;
    }
    match std::fs::write(leaf.join("cgroup.procs"), &me) {
        Ok(()) => {
            tracing::info!(cgroup = %leaf.display(), "moved moat into a leaf cgroup so that sandboxes may have groups of their own beside it");
            true
        }
        Err(_) => false,
    }
}

fn create_v2(
    parent: &Path,
    name: &str,
    memory_bytes: u64,
    processes: u64,
    cpus: u32,
) -> Result<Cgroup, String> {
    let read = |file: &str| std::fs::read_to_string(parent.join(file)).unwrap_or_default();
    let available = read("cgroup.controllers");
    let missing: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .filter(|c| !has_word(&available, c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "cgroup v2 {} has no {} controller",
            parent.display(),
            missing.join(" or ")
        ));
    }
    let delegated = read("cgroup.subtree_control");
    if !has_word(&delegated, "memory") || !has_word(&delegated, "pids") {
        let enable = || std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids");
        enable()
            .or_else(|e| match e.raw_os_error() {
                // The kernel's "no internal processes" rule: moat's group holds moat.
                Some(libc::EBUSY) if move_into_leaf(parent) => enable(),
                _ => Err(e),
            })
            .map_err(|e| {
                format!(
                    "cgroup v2 {} does not hand memory and pids to its children and cannot be made to ({e}; the kernel refuses while the group holds processes other than moat: run moat in a group of its own with a delegated subtree, e.g. a systemd service with Delegate=yes)",
                    parent.display()
                )
            })?;
    }
    // The CPU quota is a bonus: without the controller, affinity holds the limit.
    let cpu_controller = has_word(&available, "cpu")
        && (has_word(&read("cgroup.subtree_control"), "cpu")
            || std::fs::write(parent.join("cgroup.subtree_control"), "+cpu").is_ok());
    sweep_once(parent);
    let dir = parent.join(name);
    std::fs::create_dir(&dir)
        .map_err(|e| format!("cannot create the cgroup v2 {}: {e}", dir.display()))?;
    let mut group = Cgroup {
        version: Version::V2,
        memory: dir.clone(),
        pids: dir.clone(),
        cpu: None,
    };
    let quota = format!("{} {CPU_PERIOD_US}", u64::from(cpus.max(1)) * CPU_PERIOD_US);
    if cpu_controller && std::fs::write(dir.join("cpu.max"), quota).is_ok() {
        group.cpu = Some(dir);
    }
    set(&group.memory, "memory.max", memory_bytes)?;
    // Absent without swap accounting; then there is no swap to escape to either.
    let _ = std::fs::write(group.memory.join("memory.swap.max"), "0");
    // The whole sandbox ends on an out-of-memory kill, not a random member of it.
    let _ = std::fs::write(group.memory.join("memory.oom.group"), "1");
    set(&group.pids, "pids.max", processes)?;
    Ok(group)
}

fn create_v1(
    memory_parent: &Path,
    pids_parent: &Path,
    cpu_parent: Option<&Path>,
    name: &str,
    (memory_bytes, processes, cpus): (u64, u64, u32),
) -> Result<Cgroup, String> {
    sweep_once(memory_parent);
    sweep_once(pids_parent);
    let memory = memory_parent.join(name);
    let pids = pids_parent.join(name);
    std::fs::create_dir(&memory)
        .map_err(|e| format!("cannot create the cgroup v1 {}: {e}", memory.display()))?;
    if let Err(e) = std::fs::create_dir(&pids) {
        remove(&memory);
        return Err(format!(
            "cannot create the cgroup v1 {}: {e}",
            pids.display()
        ));
    }
    let mut group = Cgroup {
        version: Version::V1,
        memory,
        pids,
        cpu: None,
    };
    if let Some(parent) = cpu_parent {
        sweep_once(parent);
        let dir = parent.join(name);
        let quota = u64::from(cpus.max(1)) * CPU_PERIOD_US;
        if std::fs::create_dir(&dir).is_ok() {
            let set_up = set(&dir, "cpu.cfs_period_us", CPU_PERIOD_US)
                .and_then(|()| set(&dir, "cpu.cfs_quota_us", quota));
            match set_up {
                Ok(()) => group.cpu = Some(dir),
                Err(why) => {
                    tracing::debug!(%why, "no CPU quota; the sandbox is pinned instead");
                    remove(&dir);
                }
            }
        }
    }
    set(&group.memory, "memory.limit_in_bytes", memory_bytes)?;
    // Memory plus swap, so swap is no way around the limit (absent without swap
    // accounting, and then there is nothing to close).
    let memsw = group.memory.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        set(&group.memory, "memory.memsw.limit_in_bytes", memory_bytes)?;
    }
    set(&group.pids, "pids.max", processes)?;
    Ok(group)
}

fn set(dir: &Path, file: &str, value: u64) -> Result<(), String> {
    std::fs::write(dir.join(file), value.to_string())
        .map_err(|e| format!("cannot set {file} in {}: {e}", dir.display()))
}

/// Removes groups a moat that is gone left behind (it died before its sandboxes ended).
/// Only empty groups can be removed; a busy one is left alone.
fn sweep_once(parent: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut swept = SWEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if swept.iter().any(|p| p == parent) {
        return;
    }
    swept.push(parent.to_path_buf());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner != std::process::id() && !Path::new(&format!("/proc/{owner}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The directory of moat's own cgroup: in the v2 hierarchy (`controller` None) or in the
/// v1 hierarchy that has `controller`. `mountinfo` and `own` are `/proc/self/mountinfo`
/// and `/proc/self/cgroup`.
fn own_dir(mountinfo: &str, own: &str, controller: Option<&str>) -> Option<PathBuf> {
    let path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        matches.then_some(path)
    })?;
    let (root, mount_point) = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let (fstype, _source, options) = (right.next()?, right.next()?, right.next()?);
        let matches = match controller {
            None => fstype == "cgroup2",
            Some(c) => fstype == "cgroup" && options.split(',').any(|x| x == c),
        };
        (matches && left.len() >= 5).then(|| (unescape(left[3]), unescape(left[4])))
    })?;
    // A group outside what the mount shows (another cgroup namespace) cannot be reached.
    let relative = if root == "/" {
        path
    } else {
        path.strip_prefix(root.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))?
    };
    if relative.split('/').any(|part| part == "..") {
        return None;
    }
    Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

/// The value of `key N` in a flat-keyed cgroup file.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
    const HYBRID_OWN: &str = "\
9:pids:/user.slice
4:memory:/user.slice/session-1.scope
3:cpu,cpuacct:/
0::/user.slice/session-1.scope
";

    #[test]
    fn finds_the_own_group_in_each_hierarchy() {
        assert_eq!(
            own_dir(HYBRID_MOUNTS, HYBRID_OWN, None).unwrap(),
            Path::new("/sys/fs/cgroup/unified/user.slice/session-1.scope")
        );
        assert_eq!(
            own_dir(HYBRID_MOUNTS, HYBRID_OWN, Some("memory")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/user.slice/session-1.scope")
        );
        assert_eq!(
            own_dir(HYBRID_MOUNTS, HYBRID_OWN, Some("pids")).unwrap(),
            Path::new("/sys/fs/cgroup/pids/user.slice")
        );
        // cpu is one of two controllers of its hierarchy.
        assert_eq!(
            own_dir(HYBRID_MOUNTS, HYBRID_OWN, Some("cpuacct")).unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(own_dir(HYBRID_MOUNTS, HYBRID_OWN, Some("blkio")).is_none());
    }

    #[test]
    fn a_unified_host_and_a_mount_of_a_subtree() {
        let mounts = "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            own_dir(mounts, "0::/system.slice/moat.service\n", None).unwrap(),
            Path::new("/sys/fs/cgroup/system.slice/moat.service")
        );
        assert!(own_dir(mounts, "0::/system.slice\n", Some("memory")).is_none());
        // A container sees only its subtree, mounted at its root.
        let mounts = "40 30 0:26 /box /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_dir(mounts, "0::/box/inner\n", None).unwrap(),
            Path::new("/sys/fs/cgroup/inner")
        );
        assert!(own_dir(mounts, "0::/boxer\n", None).is_none());
        assert!(own_dir(mounts, "0::/elsewhere\n", None).is_none());
        assert!(own_dir(mounts, "0::/box/../etc\n", None).is_none());
        let spaced = "40 30 0:26 / /mnt/cgroup\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_dir(spaced, "0::/\n", None).unwrap(),
            Path::new("/mnt/cgroup two")
        );
    }

    /// The v2 path on a directory laid out like a cgroup2 group (this test machine's v2
    /// mount has no memory controller to give): which files get which values.
    #[test]
    fn a_v2_group_gets_its_limits_and_no_swap() {
        let parent = tempfile::tempdir().unwrap();
        let write =
            |file: &str, text: &str| std::fs::write(parent.path().join(file), text).unwrap();
        write("cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
        write("cgroup.subtree_control", "memory pids\n");
        let group = create_v2(parent.path(), "moat-sandbox-1-0", 128 << 20, 32, 1).unwrap();
        assert_eq!(group.version, Version::V2);
        let read = |file: &str| std::fs::read_to_string(group.path().join(file)).unwrap();
        assert_eq!(read("memory.max"), (128u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("memory.oom.group"), "1");
        assert_eq!(read("pids.max"), "32");
        std::fs::write(group.path().join("cgroup.procs"), "").unwrap();
        let entries = group.entry_files().unwrap();
        assert_eq!(entries.len(), 1, "one group holds both limits");
        std::fs::write(group.path().join("memory.events"), "oom 1\noom_kill 2\n").unwrap();
        assert_eq!(group.oom_kills(), 2);
        // Its directory goes with it (here: once the files a real cgroupfs has are gone).
        let dir = group.path().to_owned();
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        drop(entries);
        drop(group);
        assert!(!dir.exists());

        write("cgroup.controllers", "cpu io\n");
        let why = create_v2(parent.path(), "moat-sandbox-1-1", 1 << 28, 8, 1).unwrap_err();
        assert!(why.contains("no memory or pids controller"), "{why}");
    }

    #[test]
    fn sandboxes_go_beside_moats_leaf_not_inside_it() {
        let own = Path::new("/sys/fs/cgroup/system.slice/moat.service");
        assert_eq!(delegating(own), own);
        assert_eq!(delegating(&own.join(SUPERVISOR)), own);
        // A fresh group holding someone else: nothing is moved.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "1\n").unwrap();
        assert!(!move_into_leaf(dir.path()));
        assert!(!dir.path().join(SUPERVISOR).exists());
    }

    #[test]
    fn reads_the_oom_kill_counter() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 1\n";
        assert_eq!(counter(v2, "oom_kill"), Some(1));
        assert_eq!(counter("", "oom_kill"), None);
    }
}
