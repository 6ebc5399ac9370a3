//! Heavy work off the runtime's threads, at a lower CPU priority.
//!
//! A node's runtime threads carry its control traffic: heartbeats, votes, the event loop. On a
//! machine where six members share two cores, a multiplication or a decimal conversion that
//! runs at the same priority takes the cores from them, a heartbeat arrives late, and a
//! healthy coordinator is deposed. Heavy work therefore runs on its own thread at nice
//! [`COMPUTE_NICE`]: it gets every cycle the control path leaves, and none it needs.

/// The niceness of compute threads (0 is the default, 19 the lowest priority).
const COMPUTE_NICE: i32 = 10;

/// Runs `work` on a new low-priority thread and waits for its result without blocking the
/// runtime. At most one piece of work per core runs at a time: niceness shares the CPU by
/// weight per thread, so a hundred low-priority threads (a new coordinator converting many
/// results at once) would still outweigh the runtime's few. An error only
/// if the thread could not start or `work` panicked.
pub async fn low_priority<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (release, slot) = slots();
    slot.recv().await.map_err(|_| "no compute slots".to_string())?;
    let done = low_priority_thread(work).await;
    let _ = release.try_send(());
    done
}

/// The compute slots: a channel holding one token per core.
fn slots() -> (async_std::channel::Sender<()>, async_std::channel::Receiver<()>) {
    static SLOTS: std::sync::OnceLock<(async_std::channel::Sender<()>, async_std::channel::Receiver<()>)> =
        std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let (tx, rx) = async_std::channel::bounded(cores);
            for _ in 0..cores {
                let _ = tx.try_send(());
            }
            (tx, rx)
        })
        .clone()
}

async fn low_priority_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = async_std::channel::bounded(1);
    std::thread::Builder::new()
        .name("facto-compute".into())
        .spawn(move || {
            lower_this_threads_priority();
            let _ = tx.try_send(work());
        })
        .map_err(|e| format!("cannot start a compute thread: {e}"))?;
    rx.recv().await.map_err(|_| "the computation failed".to_string())
}

/// On Linux, niceness is per thread: threads this one starts inherit it.
fn lower_this_threads_priority() {
    // SAFETY: plain system calls on the calling thread; failure only leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, COMPUTE_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_work_at_a_lower_priority_and_returns_its_result() {
        let nice = async_std::task::block_on(low_priority(|| {
            // SAFETY: reads the calling thread's niceness.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t) }
        }));
        assert_eq!(nice, Ok(COMPUTE_NICE));
        let failed = async_std::task::block_on(low_priority(|| -> u8 { panic!("on purpose") }));
        assert!(failed.is_err());
    }
}
