//! One policy call: the columnar batch built on the request's task, the
//! call itself on a blocking thread inside the request's span — or, for a
//! policy whose calls have been quick, inline on the request's own thread.
//!
//! The chain and the shadows both call a policy through here, so a call
//! always carries its span onto the blocking thread, is timed the same way,
//! and keeps its permits (queue slot, instance slots) until it returns.
//!
//! **Inline calls.** Handing a call to tokio's blocking pool and back costs
//! a mutex, a wake-up and a park per request: ~7–8% of `oasis serve`'s CPU
//! under gRPC load (BENCHMARKS.md, session 15), more than a quick policy's
//! whole call. Blocking an async worker is only safe for short calls,
//! though: a policy that spins would hold the worker (and every connection
//! on it) until its deadline. So a call runs inline only once its policy
//! version's last [`INLINE_AFTER`] served calls in a row each returned
//! successfully within `--inline-calls-under-us` of CPU time (500 µs by
//! default,
//! [`CpuSlotConfig::inline_under`](crate::serving::cpu::CpuSlotConfig::inline_under);
//! 0 turns inline calls off); one call that does not resets the
//! count, and the next calls go back to the blocking pool (where the CPU
//! slot's slice can demote them) until the streak is rebuilt. At worst one
//! call in `INLINE_AFTER + 1` blocks a worker for its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::control::registry::ActivePolicy;
use crate::error::CallError;
use crate::policy::{Batch, CallOutcome};
use crate::request::ValidRequest;
use crate::sandbox::thread_cpu;

/// One call: its result, wall time and CPU time.
pub struct Invoked {
    /// What the policy decided, or how it failed.
    pub result: Result<CallOutcome, CallError>,
    /// Wall time of the call (its latency).
    pub elapsed: Duration,
    /// CPU time the calling thread spent in the call: what makes a call
    /// quick ([module docs](self)). Wall time also counts the time the
    /// thread waited for a core, and on a busy machine one preemption made
    /// a quick policy look slow and sent its next 64 calls to the blocking
    /// pool. For a call whose wall time was already within the quick limit
    /// it passed to [`invoke`] (or [`invoke_inline`]) this is that wall time,
    /// an upper bound of its CPU time: the thread's CPU clock is read a
    /// second time only for a call that may not be quick (see `call`).
    pub cpu: Duration,
}

/// Calls `arm` on `req` on a blocking thread, holding `permits` until the
/// call returns, in the current span; `quick` is the limit a quick call's
/// CPU time stays within ([`Invoked::cpu`]).
///
/// # Errors
/// The blocking task's join error: only a panic in host code ends up here;
/// guest faults are values in the result.
pub async fn invoke<P: Send + 'static>(
    arm: &Arc<ActivePolicy>,
    req: &ValidRequest<'_>,
    permits: P,
    quick: Duration,
) -> Result<Invoked, tokio::task::JoinError> {
    let batch = arm.policy.batch(req);
    let arm = arm.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        span.in_scope(|| call(&arm, &batch, quick))
    })
    .await
}

/// The span of one policy call (a `debug` span under the request's, for
/// traces): the policy, its version and digest, and the arm it serves as.
pub fn span(arm: &ActivePolicy, as_arm: &'static str) -> tracing::Span {
    let id = arm.policy.identity();
    tracing::debug_span!(
        "policy_call",
        policy = arm.key(),
        version = id.version.as_str(),
        digest = id.digest.as_str(),
        arm = as_arm,
        outcome = tracing::field::Empty,
        error_kind = tracing::field::Empty,
        fuel = tracing::field::Empty,
        peak_memory_bytes = tracing::field::Empty,
    )
}

/// Records a call's outcome and resource use on its [`span`].
pub fn record(span: &tracing::Span, result: &Result<CallOutcome, CallError>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(o) => {
            span.record("outcome", "ok");
            span.record("peak_memory_bytes", o.usage.peak_memory_bytes as u64);
            if let Some(fuel) = o.usage.fuel {
                span.record("fuel", fuel);
            }
        }
        Err(e) => {
            span.record("outcome", "failed");
            span.record("error_kind", e.kind().as_str());
        }
    }
}

/// Starts `arm` on `req` on a thread of `pool` (shadows: at the lowest CPU
/// priority) and returns at once; `then` gets the result on that thread
/// (nobody waits for a shadow).
pub fn spawn_on<P, F>(
    pool: &crate::serving::shadow_pool::ShadowPool,
    arm: &Arc<ActivePolicy>,
    req: &ValidRequest<'_>,
    permits: P,
    then: F,
) where
    P: Send + 'static,
    F: FnOnce(Invoked) + Send + 'static,
{
    let batch = arm.policy.batch(req);
    let arm = arm.clone();
    let span = tracing::Span::current();
    pool.execute(move || {
        let _permits = permits;
        // Duration::ZERO: a shadow's CPU time is always read (nothing
        // depends on it being cheap).
        span.in_scope(|| then(call(&arm, &batch, Duration::ZERO)))
    });
}

/// Quick calls in a row before a policy's calls run inline.
pub const INLINE_AFTER: u32 = 64;

/// Whether `arm`'s next call may run inline, calls of at most `quick`
/// counting as quick ([module docs](self)).
pub fn runs_inline(arm: &ActivePolicy, quick: Duration) -> bool {
    !quick.is_zero() && inline(&arm.quick_calls)
}

fn inline(streak: &AtomicU32) -> bool {
    streak.load(Ordering::Relaxed) >= INLINE_AFTER
}

/// Counts a served call of `arm` towards (or resets) its quick streak.
pub fn note(arm: &ActivePolicy, invoked: &Invoked, quick: Duration) {
    note_call(&arm.quick_calls, invoked.result.is_ok(), invoked.cpu, quick);
}

fn note_call(streak: &AtomicU32, ok: bool, elapsed: Duration, quick: Duration) {
    if ok && elapsed <= quick {
        // Saturating: the count only has to reach INLINE_AFTER.
        if streak.load(Ordering::Relaxed) < INLINE_AFTER {
            streak.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        streak.store(0, Ordering::Relaxed);
    }
}

/// Calls `arm` on `req` here, on the caller's thread (in the current
/// span): for calls [`runs_inline`] allows; `quick` as for [`invoke`].
pub fn invoke_inline(arm: &ActivePolicy, req: &ValidRequest<'_>, quick: Duration) -> Invoked {
    call(arm, &arm.policy.batch(req), quick)
}

/// The call, timed (wall and CPU).
///
/// The thread's CPU clock is a system call, not a vDSO read (the kernel
/// takes the run queue's lock to bring the running task's time up to
/// date): the two reads around every call were ~1.5% of `oasis serve`'s
/// CPU under load (perf, session 18). A call's CPU time is at most its
/// wall time, so a call whose wall time is within `quick` is quick without
/// the second read; only a slower one (preempted, or really slow) reads
/// the clock again to tell which.
fn call(arm: &ActivePolicy, batch: &Batch, quick: Duration) -> Invoked {
    let (started, cpu_started) = (Instant::now(), thread_cpu());
    let result = arm.policy.call(batch);
    let elapsed = started.elapsed();
    let cpu = cpu_time(elapsed, quick, cpu_started, thread_cpu);
    Invoked {
        result,
        elapsed,
        cpu,
    }
}

/// A call's CPU time ([`Invoked::cpu`]): its wall time `elapsed` when that
/// is within `quick` (and non-zero `quick`), else the thread CPU clock's
/// `now()` minus `started` (the wall time when the clock cannot be read).
fn cpu_time(
    elapsed: Duration,
    quick: Duration,
    started: Option<Duration>,
    now: impl FnOnce() -> Option<Duration>,
) -> Duration {
    if !quick.is_zero() && elapsed <= quick {
        return elapsed;
    }
    match (started, now()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The measure of a quick call: CPU time, which a thread that waits
    /// (here, sleeps) does not accumulate, and one that works does.
    #[test]
    fn a_call_is_timed_by_its_thread_s_cpu_time() {
        let before = thread_cpu().expect("the thread CPU clock");
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu().unwrap() - before;
        assert!(slept < Duration::from_millis(10), "sleeping used {slept:?}");
        let (start, wall, mut x) = (thread_cpu().unwrap(), Instant::now(), 0u64);
        while wall.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let worked = thread_cpu().unwrap() - start;
        assert!(
            worked >= Duration::from_millis(3),
            "30 ms of work used {worked:?}"
        );
    }

    /// The second CPU clock read happens only for a call whose wall time
    /// is over the quick limit; such a call is judged on its CPU time.
    #[test]
    fn the_cpu_clock_is_read_again_only_for_a_call_slower_than_quick() {
        let limit = Duration::from_micros(500);
        let started = Some(Duration::from_millis(10));
        let never = || -> Option<Duration> { panic!("the clock was read for a quick call") };
        let wall = Duration::from_micros(200);
        assert_eq!(cpu_time(wall, limit, started, never), wall);
        assert_eq!(cpu_time(limit, limit, started, never), limit);
        // Slower than the limit by the wall clock: preempted (little CPU)...
        let preempted = cpu_time(Duration::from_millis(5), limit, started, || {
            Some(Duration::from_micros(10_100))
        });
        assert_eq!(preempted, Duration::from_micros(100));
        // ...or really slow (its CPU time is over the limit too).
        let slow = cpu_time(Duration::from_millis(5), limit, started, || {
            Some(Duration::from_millis(14))
        });
        assert_eq!(slow, Duration::from_millis(4));
        // No clock: the wall time.
        let blind = cpu_time(Duration::from_millis(5), limit, None, || None);
        assert_eq!(blind, Duration::from_millis(5));
        // quick = 0 (inline calls off, shadows): always read.
        let read = cpu_time(wall, Duration::ZERO, started, || {
            Some(Duration::from_micros(10_050))
        });
        assert_eq!(read, Duration::from_micros(50));
    }

    #[test]
    fn calls_run_inline_only_after_a_streak_of_quick_successes() {
        let streak = AtomicU32::new(0);
        let limit = Duration::from_micros(500);
        let quick = limit / 2;
        for _ in 0..INLINE_AFTER - 1 {
            note_call(&streak, true, quick, limit);
            assert!(!inline(&streak));
        }
        note_call(&streak, true, limit, limit);
        assert!(inline(&streak), "the 64th quick call in a row");
        for _ in 0..1000 {
            note_call(&streak, true, quick, limit);
        }
        assert_eq!(streak.load(Ordering::Relaxed), INLINE_AFTER, "saturates");
        // One slow call, or one failed quick one, sends the next calls back
        // to the blocking pool until the streak is rebuilt.
        note_call(&streak, true, limit + Duration::from_nanos(1), limit);
        assert!(!inline(&streak));
        for _ in 0..INLINE_AFTER {
            note_call(&streak, true, quick, limit);
        }
        assert!(inline(&streak));
        note_call(&streak, false, quick, limit);
        assert!(!inline(&streak));
        assert_eq!(streak.load(Ordering::Relaxed), 0);
    }
}
