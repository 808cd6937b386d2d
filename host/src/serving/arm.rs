//! One policy call: the columnar batch built on the request's task, the
//! call itself on a blocking thread inside the request's span.
//!
//! The chain and the shadows both call a policy through here, so a call
//! always carries its span onto the blocking thread, is timed the same way,
//! and keeps its permits (queue slot, instance slots) until it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::registry::ActivePolicy;
use crate::error::CallError;
use crate::policy::{Batch, CallOutcome};
use crate::request::ValidRequest;

/// The result of one call and its wall time.
pub type Invoked = (Result<CallOutcome, CallError>, Duration);

/// Calls `arm` on `req` on a blocking thread, holding `permits` until the
/// call returns, in the current span.
///
/// # Errors
/// The blocking task's join error: only a panic in host code ends up here;
/// guest faults are values in the result.
pub async fn invoke<P: Send + 'static>(
    arm: &Arc<ActivePolicy>,
    req: &ValidRequest<'_>,
    permits: P,
) -> Result<Invoked, tokio::task::JoinError> {
    let batch = arm.policy.batch(req);
    let arm = arm.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        span.in_scope(|| call(&arm, &batch))
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
        span.in_scope(|| then(call(&arm, &batch)))
    });
}

/// The call, timed.
fn call(arm: &ActivePolicy, batch: &Batch) -> Invoked {
    let started = Instant::now();
    let result = arm.policy.call(batch);
    (result, started.elapsed())
}
