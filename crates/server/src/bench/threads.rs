//! CPU time of the process's threads over the day, by role, so that a run shows what bounds
//! it: the single decision thread near a whole core means the writer is the limit; all
//! threads together near every core means the machine is.
//!
//! Read from Linux's per-thread `schedstat` (nanoseconds on a CPU); elsewhere the figures are
//! absent. Roles go by thread name, so every engine of the process counts (`orderly bench`
//! opens one), and a thread that ended within the span is not counted.

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
            let read = |file: &str| std::fs::read(task.path().join(file));
            // A thread that ended meanwhile is simply not counted.
            let (Ok(name), Ok(stat)) = (read("comm"), read("schedstat")) else { continue };
            let stat = String::from_utf8_lossy(&stat);
            let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
            let Some(ns) = ns else { continue };
            // A name cut at 15 bytes may end inside a character.
            threads.insert(tid, (String::from_utf8_lossy(&name).trim().to_owned(), ns));
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

    /// Seconds the calling thread has been on a CPU.
    fn own_cpu() -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) as f64 / 1e9
    }

    /// Spins until this thread has used `seconds` more of CPU, however busy the machine is.
    fn spin_for(seconds: f64) {
        let until = own_cpu() + seconds;
        while own_cpu() < until {
            std::hint::black_box(0);
        }
    }

    #[test]
    fn busy_threads_are_counted_in_their_roles() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let before = Snapshot::take();
        spin_for(0.1);
        let (spun, done) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let decision = std::thread::Builder::new()
            .name("orderly-decide".into())
            .spawn(move || {
                spin_for(0.2);
                spun.0.send(()).expect("the test waits");
                // Alive until the second snapshot is taken.
                let _ = done.1.recv();
            })
            .expect("a thread starts");
        spun.1.recv().expect("the thread spun");
        let cpu = Snapshot::take().since(&before).expect("this Linux has /proc/thread-self");
        drop(done.0);
        decision.join().expect("the thread ends");
        assert!(cpu.decision >= 0.2, "the decision thread spun 0.2 s: {cpu:?}");
        assert!(cpu.driver >= 0.1, "the thread taking the snapshots spun 0.1 s: {cpu:?}");
        assert!(cpu.total() >= cpu.decision + cpu.driver);
    }
}
