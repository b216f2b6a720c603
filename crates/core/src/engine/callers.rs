//! How a caller's thread should be scheduled when it shares the machine's cores with the
//! engine, as a load driver or a benchmark's callers do.

/// Makes the calling thread a Linux batch thread: one that, when it wakes, waits for its turn
/// instead of taking the core from the thread running there. Callers that wait for answers
/// sleep, and each answer the log's sync thread hands over wakes one; as normal threads they
/// took the core from the sync thread mid-group, read one answer and slept again (over
/// 200,000 times in `orderly bench`'s record day on two cores). The thread's share of the CPU
/// is unchanged. Returns whether the scheduler took it; elsewhere than Linux nothing changes.
pub fn yield_to_engine() -> bool {
    #[cfg(target_os = "linux")]
    {
        let normal = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's own policy from a valid parameter.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const normal) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}
