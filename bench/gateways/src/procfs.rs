//! A process tree's memory and CPU time from `/proc`: gateways such as LiteLLM run as
//! a parent with workers, so one process's figures would undercount them.

use std::collections::BTreeSet;

/// The process and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
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
pub fn rss_kib(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time of the tree's live threads in nanoseconds, from each thread's `schedstat`
/// (`stat`'s clock ticks are 10 ms: too coarse for a few streamed requests).
pub fn cpu_ns(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
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
        while spin.elapsed() < std::time::Duration::from_millis(5) {}
        assert!(cpu_ns(me) > 0);
    }
}
