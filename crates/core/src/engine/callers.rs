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

/// Lowers the calling thread's scheduling priority by 10 nice steps (to at most 19, the
/// lowest), for a thread whose work can wait while the engine and the threads answering
/// callers are busy: the read models' committer and file writer, an event stream's reader.
/// Never raises it (a process started at a low priority stays below it). Best effort: a
/// refusal changes nothing but the order. On Linux a nice value is per thread; elsewhere
/// nothing changes.
pub fn yield_to_others() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; errno is reset first, since -1 is
        // also a valid priority.
        let (tid, now, result) = unsafe {
            let tid = libc::gettid();
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid.cast_unsigned());
            let known = *libc::__errno_location() == 0;
            let lower = (now + 10).min(19);
            let result = if known && lower > now {
                libc::setpriority(libc::PRIO_PROCESS, tid.cast_unsigned(), lower)
            } else {
                0
            };
            (tid, now, result)
        };
        if result != 0 {
            tracing::debug!(tid, now, "thread priority unchanged");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The calling thread's nice value.
    fn nice() -> i32 {
        // SAFETY: a plain syscall on the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid().cast_unsigned()) }
    }

    #[test]
    fn yielding_lowers_a_thread_by_ten_and_never_raises_it() {
        std::thread::spawn(|| {
            let before = nice();
            super::yield_to_others();
            assert_eq!(nice(), (before + 10).min(19));
            // SAFETY: as above.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid().cast_unsigned(), 19) };
            super::yield_to_others();
            assert_eq!(nice(), 19, "already at the lowest, it stays there");
        })
        .join()
        .unwrap();
    }
}
