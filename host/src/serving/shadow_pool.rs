//! The threads shadow calls run on, at the lowest CPU priority.

use std::sync::Arc;

use crate::serving::route_stats::lock;

/// A job on a [`ShadowPool`] thread.
type Job = Box<dyn FnOnce() + Send>;

/// The threads shadow calls run on: started on first use, each at the
/// lowest CPU priority (`SCHED_IDLE`, for the thread only), so a shadow
/// runs only on CPU nothing else wants. A thread's priority is set once and
/// never raised back (an unprivileged thread could not), which is why
/// shadows have threads of their own rather than tokio's blocking pool.
/// The threads end when the pool is dropped.
pub struct ShadowPool {
    threads: usize,
    tx: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>,
}

impl ShadowPool {
    /// A pool of `threads` threads (started on the first job).
    pub fn new(threads: usize) -> Self {
        ShadowPool {
            threads: threads.max(1),
            tx: std::sync::OnceLock::new(),
        }
    }

    /// Runs `job` on one of the pool's threads.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let rx = Arc::new(std::sync::Mutex::new(rx));
            for i in 0..self.threads {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("oasis-shadow-{i}"))
                    .spawn(move || {
                        lowest_cpu_priority();
                        loop {
                            let job = lock(&rx).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => break,
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a shadow thread");
                }
            }
            std::sync::Mutex::new(tx)
        });
        if lock(tx).send(Box::new(job)).is_err() {
            tracing::warn!("shadow threads gone; shadow call dropped");
        }
    }
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only when no other
/// thread wants the CPU. Best effort: logged if refused.
fn lowest_cpu_priority() {
    // SAFETY: `sched_param` is plain data, valid zeroed (priority 0 is the
    // only one SCHED_IDLE takes); pid 0 is the calling thread, and the call
    // changes only its scheduling policy.
    let rc = unsafe {
        let param: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "shadow thread keeps the normal CPU priority (SCHED_IDLE refused)");
    }
}
