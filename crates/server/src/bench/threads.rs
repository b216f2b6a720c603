//! CPU time of the process's threads over the day, by role, so that a run shows what bounds
//! it: the single decision thread near a whole core means the writer is the limit; all
//! threads together near every core means the machine is.
//!
//! Read from Linux's per-thread `schedstat` (nanoseconds on a CPU); elsewhere the figures are
//! absent.

use std::collections::BTreeMap;

use serde::Serialize;

/// CPU seconds of each role's threads, from the first command sent to the last answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ThreadCpu {
    /// The engine's decision thread: the single writer.
    pub decision: f64,
    /// The log's threads: gathering, sealing, writing and syncing groups, and answering.
    pub log: f64,
    /// The thread that runs the day: generates it and judges the answers (the callers' side).
    pub driver: f64,
    /// Every other thread (the engine's durable-answers thread among them).
    pub other: f64,
}

impl ThreadCpu {
    /// All roles together.
    #[must_use]
    pub fn total(&self) -> f64 {
        self.decision + self.log + self.driver + self.other
    }
}

/// CPU nanoseconds per thread id, with the thread's name, at one moment, and the id of the
/// thread that took it (the driver).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    threads: BTreeMap<u32, (String, u64)>,
    taker: Option<u32>,
}

impl Snapshot {
    /// The process's threads now; empty where `/proc` is not there.
    pub(crate) fn take() -> Snapshot {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        let taker = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|link| link.file_name()?.to_str()?.parse().ok());
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Snapshot { threads, taker };
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let read = |file: &str| std::fs::read_to_string(task.path().join(file));
            // A thread that ended meanwhile is simply not counted.
            let (Ok(name), Ok(stat)) = (read("comm"), read("schedstat")) else { continue };
            let Some(ns) = stat.split_whitespace().next().and_then(|n| n.parse().ok()) else {
                continue;
            };
            threads.insert(tid, (name.trim().to_owned(), ns));
        }
        Snapshot { threads, taker }
    }

    /// What each role used since `before`, the driver being the thread that took both;
    /// `None` where threads cannot be read.
    pub(crate) fn since(&self, before: &Snapshot) -> Option<ThreadCpu> {
        if self.threads.is_empty() || self.taker.is_none() {
            return None;
        }
        let mut cpu = ThreadCpu::default();
        for (tid, (name, ns)) in &self.threads {
            let earlier = before.threads.get(tid).map_or(0, |(_, ns)| *ns);
            let seconds = ns.saturating_sub(earlier) as f64 / 1e9;
            let role = match name.as_str() {
                _ if Some(*tid) == self.taker => &mut cpu.driver,
                "orderly-decide" => &mut cpu.decision,
                // Thread names are cut to 15 bytes: orderly-log-seal becomes orderly-log-sea.
                name if name.starts_with("orderly-log") => &mut cpu.log,
                _ => &mut cpu.other,
            };
            *role += seconds;
        }
        Some(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_counted_in_its_role() {
        let before = Snapshot::take();
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(100) {
            std::hint::black_box(started.elapsed());
        }
        let spin = std::thread::Builder::new()
            .name("orderly-decide".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(200) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                // Still running when the second snapshot is taken.
                std::thread::sleep(std::time::Duration::from_millis(300));
                x
            })
            .expect("a thread starts");
        std::thread::sleep(std::time::Duration::from_millis(250));
        let cpu = Snapshot::take().since(&before);
        spin.join().expect("the thread ends");
        if cfg!(target_os = "linux") {
            let cpu = cpu.expect("Linux has /proc/self/task");
            assert!(cpu.decision > 0.1, "spun for 0.2 s, counted {}", cpu.decision);
            assert!(cpu.decision < 0.5, "spun for 0.2 s, counted {}", cpu.decision);
            assert!(cpu.driver > 0.05, "the taking thread spun for 0.1 s: {}", cpu.driver);
            assert!(cpu.total() >= cpu.decision);
        }
    }
}
