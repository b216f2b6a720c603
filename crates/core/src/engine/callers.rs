//! How a thread that shares the machine's cores with the engine should be scheduled: a caller
//! (a load driver, a benchmark's callers), or work that can wait (read models, event streams).

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

/// Lowers the calling thread's scheduling priority (nice 10), for a thread whose work can wait
/// while the engine and the threads answering callers are busy: the read models' committer and
/// file writer, an event stream catching up from far back. Best effort: a refusal changes
/// nothing but the order. On Linux a nice value is per thread; elsewhere nothing changes.
pub fn yield_to_others() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread.
        let (tid, result) = unsafe {
            let tid = libc::gettid();
            (tid, libc::setpriority(libc::PRIO_PROCESS, tid.cast_unsigned(), 10))
        };
        if result != 0 {
            tracing::debug!(tid, "thread priority unchanged");
        }
    }
}
