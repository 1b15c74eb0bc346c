//! The writer's background thread. SQLite does its work on a thread per connection, and
//! on a core it shares with the tokio worker, a batch's inserts and rollup triggers
//! hold the core for a millisecond or more: a request that arrives meanwhile waits for
//! them (the p99 at one connection). The writer's own connection runs on a thread named
//! [`THREAD_NAME`], which this lowers to the least priority, so the kernel hands the
//! core to a request first and the inserts take what is left. Lowering is one-way for
//! an unprivileged process, so the writer never raises this thread back: when it falls
//! behind, it sends its batches through the shared pool, at normal priority, instead.
//! Only with `ledger.writer_priority = "background"`: on a core kept busy at a modest
//! rate the short batches wait for spare time, and a kill -9 loses rows answered up to
//! ~0.4 s before it instead of ~0.06 s (the fault suite), so it is not the default.

/// The name sqlx gives the writer connection's worker thread: at most 15 bytes, the
/// length Linux keeps (`/proc/self/task/*/comm`).
pub(super) const THREAD_NAME: &str = "tollgate-ledger";

/// The least priority a thread can have without giving up fair scheduling. SCHED_IDLE
/// did as well when set from the shell, but needs `sched_setscheduler`, which has no
/// safe wrapper in the dependency tree; the nice-19 thread built here measured as low.
pub(super) const NICE: i32 = 19;

/// Lowers every thread of this process named [`THREAD_NAME`] that is not at [`NICE`]
/// yet (a new connection's thread); returns how many it lowered.
#[cfg(target_os = "linux")]
pub(super) fn lower_writer_threads() -> std::io::Result<usize> {
    use rustix::io::Errno;
    use rustix::process::{Pid, getpriority_process, setpriority_process};

    let mut lowered = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|tid| tid.parse().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        // A thread can end between the listing and the read: it is skipped.
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if name.trim_end() != THREAD_NAME {
            continue;
        }
        // On Linux the nice value is a thread's, and PRIO_PROCESS with a thread id
        // sets that thread's alone.
        match getpriority_process(Some(pid)) {
            Ok(nice) if nice >= NICE => {}
            Ok(_) => match setpriority_process(Some(pid), NICE) {
                Ok(()) => lowered += 1,
                Err(Errno::SRCH) => {}
                Err(error) => return Err(error.into()),
            },
            Err(Errno::SRCH) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(lowered)
}

/// Elsewhere a thread's priority is not its own to set this way: it keeps the
/// process's.
#[cfg(not(target_os = "linux"))]
pub(super) fn lower_writer_threads() -> std::io::Result<usize> {
    Ok(0)
}

/// Whether a batch of `rows` goes through the background connection: not when it came
/// out full, which means rows were waiting for the writer and it is falling behind.
pub(super) fn keeps_up(rows: usize, batch_size: usize) -> bool {
    rows < batch_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_goes_at_normal_priority() {
        assert!(keeps_up(1, 512));
        assert!(keeps_up(511, 512));
        assert!(!keeps_up(512, 512));
        assert!(!keeps_up(1, 1));
    }

    #[test]
    fn the_thread_name_fits_linux_thread_names() {
        assert!(THREAD_NAME.len() <= 15);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowers_only_the_named_thread_and_only_once() {
        let (named_tx, named_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                named_tx.send(rustix::thread::gettid()).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        let tid = named_rx.recv().unwrap();
        let nice_of = |pid| rustix::process::getpriority_process(Some(pid)).unwrap();
        let mine = nice_of(rustix::thread::gettid());

        assert!(lower_writer_threads().unwrap() >= 1);
        assert_eq!(nice_of(tid), NICE);
        assert_eq!(
            nice_of(rustix::thread::gettid()),
            mine,
            "only the named thread"
        );
        // Already lowered: the next connection's call leaves it where it is.
        lower_writer_threads().unwrap();
        assert_eq!(nice_of(tid), NICE);

        done_tx.send(()).unwrap();
        named.join().unwrap();
    }
}
