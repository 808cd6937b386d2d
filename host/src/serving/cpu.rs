//! CPU slots: policy calls run to completion, at most one per core at once.
//!
//! A policy call is pure CPU work. When more calls run than the machine has
//! cores, the kernel time-slices them, and every call's wall time (what the
//! request waits for, and what `timing.policy_us` reports) stretches by the
//! number of calls sharing a core: on 2 cores with 8 clients, the Python
//! `guarded_boost` call (1.2 ms on its own) measured p50 3.4 ms and p99
//! 15.4 ms. (The deadline counts the call's own CPU time, so contention does
//! not turn calls into fallbacks, but only the wall-clock ceiling stops a call
//! that cannot get a core.)
//!
//! With a slot per core, a call starts only when a core is free for it and
//! then runs with little interruption; the rest of the time becomes queueing
//! *before* the call, bounded by the policy's queue timeout and measured in
//! `oasis_cpu_slot_wait_seconds`. Same run with the gate: p50 1.7 ms, p99
//! 4.7 ms, the same throughput, request p99 26 -> 20 ms.
//!
//! The risk of a gate is head-of-line blocking: a policy that spins until
//! its deadline would hold a core for the whole deadline, and with every
//! slot held so, nothing else would run. So a call keeps its slot for one
//! **slice** only (5 ms by default): past it the slot is given to the next
//! call and the long call goes on time-sliced by the kernel, as every call
//! did before the gate (`oasis_policy_calls_demoted`). A spinning policy
//! therefore holds a slot for a slice, never for its whole deadline, and its
//! deadline still stops it.
//!
//! A request dropped mid-call (its client gone) releases its slot at once;
//! its call runs on to the end outside the slots, as a demoted one does.
//!
//! The transports' own work (reading, parsing, validating, encoding) runs on
//! the async workers outside the slots; shadows run on their own low-priority
//! threads (`shadow_pool`) outside them too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many calls may execute at once, for how long each keeps its slot,
/// and which calls run inline on the request's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSlotConfig {
    /// Calls executing at once; 0 turns the gate off (every call starts at
    /// once and the kernel shares the cores).
    pub slots: usize,
    /// How long a call keeps its slot before it is demoted.
    pub slice: Duration,
    /// A policy's calls run inline, without the blocking pool's thread hop,
    /// once its last [`INLINE_AFTER`](crate::serving::arm::INLINE_AFTER)
    /// calls in a row each succeeded within this much CPU time
    /// ([`crate::serving::arm`]); zero: never.
    pub inline_under: Duration,
}

impl CpuSlotConfig {
    /// The default slice.
    pub const DEFAULT_SLICE: Duration = Duration::from_millis(5);
    /// The default [`inline_under`](Self::inline_under).
    pub const DEFAULT_INLINE_UNDER: Duration = Duration::from_micros(500);
    /// The most slots `oasis serve` accepts (far above any core count).
    pub const MAX_SLOTS: usize = 4096;

    /// One slot per core of this machine, the default slice.
    pub fn for_this_machine() -> Self {
        CpuSlotConfig {
            slots: std::thread::available_parallelism().map_or(1, |n| n.get()),
            slice: Self::DEFAULT_SLICE,
            inline_under: Self::DEFAULT_INLINE_UNDER,
        }
    }
}

impl Default for CpuSlotConfig {
    fn default() -> Self {
        Self::for_this_machine()
    }
}

/// The gate ([module docs](self)).
#[derive(Debug, Clone)]
pub struct CpuSlots {
    slots: Arc<Semaphore>,
    slice: Duration,
}

/// A slot held by one call, for one slice ([`CpuSlot::run`]).
#[derive(Debug)]
pub struct CpuSlot {
    permit: OwnedSemaphorePermit,
    slice: Duration,
}

impl CpuSlots {
    /// The gate of `config`; `None` when it is off (0 slots).
    pub fn new(config: CpuSlotConfig) -> Option<Self> {
        (config.slots > 0).then(|| CpuSlots {
            slots: Arc::new(Semaphore::new(config.slots)),
            slice: config.slice,
        })
    }

    /// Waits for a slot (first come, first served).
    pub async fn acquire(&self) -> CpuSlot {
        CpuSlot {
            permit: self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the CPU slot semaphore is never closed"),
            slice: self.slice,
        }
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

impl CpuSlot {
    /// Runs `call` holding this slot for one slice at most: if the call is
    /// not done by then, the slot is released, `demoted` is called, and the
    /// call goes on without it.
    pub async fn run<F: Future>(self, call: F, demoted: impl FnOnce()) -> F::Output {
        let mut call = std::pin::pin!(call);
        tokio::select! {
            biased;
            out = &mut call => return out,
            () = tokio::time::sleep(self.slice) => {}
        }
        // Counted before the slot is given up: whoever gets the slot next
        // (and a metrics scrape after it) sees the demotion that freed it.
        demoted();
        drop(self.permit);
        call.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    fn gate(slots: usize, slice_ms: u64) -> CpuSlots {
        CpuSlots::new(CpuSlotConfig {
            slots,
            slice: Duration::from_millis(slice_ms),
            inline_under: Duration::ZERO,
        })
        .unwrap()
    }

    #[test]
    fn zero_slots_is_off() {
        assert!(
            CpuSlots::new(CpuSlotConfig {
                slots: 0,
                slice: Duration::from_millis(5),
                inline_under: Duration::ZERO,
            })
            .is_none()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_calls_execute_at_once_than_there_are_slots() {
        let gate = gate(2, 10_000);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let slot = gate.acquire().await;
                let call = tokio::task::spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                });
                slot.run(call, || panic!("not demoted")).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(gate.available(), 2, "every slot is returned");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_past_its_slice_gives_its_slot_to_the_next() {
        // One slot, held by a call that runs 2 s: the next call waits one
        // slice (20 ms), not 2 s.
        let gate = gate(1, 20);
        let demoted = Arc::new(AtomicUsize::new(0));
        let long = {
            let (gate, demoted) = (gate.clone(), demoted.clone());
            let slot = gate.acquire().await;
            tokio::spawn(async move {
                let call = tokio::time::sleep(Duration::from_secs(2));
                slot.run(call, || {
                    demoted.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            })
        };
        let started = Instant::now();
        let slot = gate.acquire().await;
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(1500),
            "waited {waited:?} for a slot held by a call past its slice"
        );
        assert_eq!(demoted.load(Ordering::SeqCst), 1);
        let quick = slot.run(async { 7 }, || panic!("not demoted")).await;
        assert_eq!(quick, 7);
        long.abort();
    }
}
