//! A spinner for the waits people notice (Argon2id takes about a third of a second).

use std::time::{Duration, Instant};

/// Runs `work`, showing a spinner on a terminal if it takes longer than 300 ms.
pub(crate) fn with_progress<T>(what: &'static str, work: impl FnOnce() -> T) -> T {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let spinner = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(format!("{what} (Argon2id)"));
        bar.enable_steady_tick(Duration::from_millis(100));
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        bar.finish_and_clear();
    });
    let out = work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = spinner.join();
    out
}
