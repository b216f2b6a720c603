//! How the memory of a process that runs an engine should be paged.

/// Turns transparent huge pages off for the whole process (Linux), before its engine grows.
///
/// The engine's state is a few large hash maps that grow. With huge pages (the machine's
/// setting is `madvise`, and the allocator asks for them), each first touch of a fresh 2 MiB
/// page has the kernel clear all of it while the touching thread waits, in the middle of a
/// decision or a log write. On the development machine those stalls cost more than the TLB
/// misses huge pages save, in interleaved runs with and without:
/// - the record day's ack p99 fell from 85–116 ms to 38–65 ms and its peak RSS by 85 MB, in
///   the same time (11.3 s on average over five pairs);
/// - the engine benchmark's ack p99 fell from 48–97 ms to 26–43 ms, and the decision thread
///   alone went from 0.76–0.81M to 0.80–1.05M decisions/s;
/// - the server's p99 under `orderly load` (60k orders, 64 connections) fell from 15.5–17.6 ms
///   to 10.9–12.1 ms in three pairs.
///
/// `orderly` and the engine, audit and projections benchmarks call it first thing; an
/// embedding program may too. Child processes inherit it. Returns whether the kernel took it;
/// elsewhere than Linux nothing changes.
pub fn use_small_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sets a flag of the calling process; the unused arguments must be zero.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_kernel_takes_it_and_the_process_shows_it() {
        assert!(super::use_small_pages());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        // Kernels before 5.0 do not show the flag.
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
