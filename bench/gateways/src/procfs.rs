//! A process tree's memory and CPU time from `/proc`: gateways such as LiteLLM run as
//! a parent with workers, so one process's figures would undercount them.

use std::collections::BTreeSet;

/// The process and all its descendants.
pub(crate) fn tree(root: u32) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    seen.into_iter().collect()
}

/// Resident memory of the tree, in KiB.
pub(crate) fn rss_kib(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time of the tree in nanoseconds. Each live thread's time on a CPU comes from its
/// `schedstat` (nanoseconds: a paced stream costs a few milliseconds, below the 10 ms
/// ticks of `stat`); children already reaped are added from `stat`'s cutime and cstime.
/// A thread that exited during the measurement is not counted (the gateways measured
/// keep their threads).
pub(crate) fn cpu_ns(root: u32) -> u64 {
    let tick_ns = 1_000_000_000 / ticks_per_second().max(1);
    tree(root)
        .into_iter()
        .map(|pid| threads_ns(pid).unwrap_or(0) + reaped_children_ticks(pid).unwrap_or(0) * tick_ns)
        .sum()
}

/// Time on a CPU of every live thread of `pid`, in nanoseconds.
fn threads_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|t| {
                std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum(),
    )
}

/// cutime + cstime of `pid`, in clock ticks.
fn reaped_children_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields start after its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // cutime, cstime: fields 16-17 of stat, 14-15 after the name.
    Some(f.get(13)? + f.get(14)?)
}

/// Clock ticks per second (`getconf CLK_TCK`), read once.
fn ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(rss_kib(me) > 0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(cpu_ns(me) > 0);
    }
}
