//! The serving chain: the arms that may answer a request, tried in order.
//!
//! A route's chain today is its stable policy, then that policy's fallback
//! policy, then the host's relevance passthrough, which cannot fail. The
//! first arm that answers serves; each failure before it is recorded in the
//! [`Served`] result (and counted, and logged), so the response can say what
//! failed and what served instead. The chain is data — an iterator of
//! policies with passthrough as the implicit last arm — so that canary,
//! stable and baseline arms are a longer chain, not another nesting level.
//!
//! Overload is not a fault: when the *first* arm has no free instance the
//! request gets a 503 (the caller retries), while a later arm that is busy
//! is skipped.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::http::StatusCode;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

use crate::bindings::{WitDecisions, WitReason};
use crate::error::CallError;
use crate::metadata::PolicyRef;
use crate::policy::CallOutcome;
use crate::request::ValidRequest;
use crate::response::Variant;
use crate::server::api_error::ApiError;
use crate::server::metrics::FallbackBy;
use crate::server::registry::ActivePolicy;
use crate::server::state::AppState;

/// The answer to one request: who served it, and what failed before.
#[derive(Debug)]
pub struct Served {
    /// The decisions, one entry per candidate.
    pub decisions: WitDecisions,
    /// Time in the serving policy's call, microseconds (0 for passthrough).
    pub policy_us: u64,
    /// The version that served.
    pub by: Arc<PolicyRef>,
    /// Which arm served.
    pub variant: Variant,
    /// The arms that failed before it, in chain order, with their errors.
    pub failures: Vec<(Arc<PolicyRef>, CallError)>,
}

/// Scores `req` with the first arm of `arms` that answers, falling back to
/// the host's relevance passthrough. An arm that cannot take this many
/// candidates is skipped.
///
/// # Errors
/// [`ApiError::overloaded`] when the first arm has no free instance within
/// its queue deadline (or its queue is full).
pub async fn serve(
    state: &AppState,
    arms: impl IntoIterator<Item = Arc<ActivePolicy>>,
    req: &ValidRequest<'_>,
) -> Result<Served, ApiError> {
    let mut failures: Vec<(Arc<PolicyRef>, CallError)> = Vec::new();
    // The first arm that failed: fallbacks are counted against it.
    let mut primary_failure: Option<(Arc<ActivePolicy>, crate::CallErrorKind)> = None;
    for (i, arm) in arms.into_iter().enumerate() {
        if req.candidates.len() > arm.policy.limits().max_candidates {
            continue;
        }
        match call(state, &arm, req).await {
            Ok(Ok(outcome)) => {
                if let Some((primary, kind)) = &primary_failure {
                    primary
                        .metrics
                        .fallback_served(*kind, FallbackBy::FallbackPolicy);
                }
                return Ok(Served {
                    decisions: outcome.decisions,
                    policy_us: outcome.usage.wall_us,
                    by: arm.policy.identity().clone(),
                    variant: if i == 0 {
                        Variant::Stable
                    } else {
                        Variant::Fallback
                    },
                    failures,
                });
            }
            Ok(Err(error)) => {
                arm.metrics.failed(error.kind());
                if i == 0 {
                    tracing::warn!(kind = error.kind().as_str(), %error, "policy failed; serving the fallback");
                } else {
                    tracing::error!(arm = i, policy = arm.key(), kind = error.kind().as_str(), %error, "fallback policy failed too; trying the next arm");
                }
                primary_failure.get_or_insert_with(|| (arm.clone(), error.kind()));
                failures.push((arm.policy.identity().clone(), error));
            }
            Err(overloaded) if i == 0 => return Err(overloaded),
            Err(e) => {
                tracing::warn!(arm = i, policy = arm.key(), error = %e.message, "fallback arm overloaded; skipping it")
            }
        }
    }
    if let Some((primary, kind)) = &primary_failure {
        primary
            .metrics
            .fallback_served(*kind, FallbackBy::Passthrough);
    }
    Ok(Served {
        decisions: passthrough(req),
        policy_us: 0,
        by: PASSTHROUGH.clone(),
        variant: Variant::Fallback,
        failures,
    })
}

/// Identity of the host's built-in relevance passthrough.
pub static PASSTHROUGH: LazyLock<Arc<PolicyRef>> = LazyLock::new(|| {
    Arc::new(PolicyRef {
        name: Arc::from("host-passthrough"),
        version: env!("CARGO_PKG_VERSION").into(),
        digest: "builtin".into(),
    })
});

/// Relevance passthrough computed on the host, the chain's last arm: score =
/// relevance, nobody eligible, `organic` for tracks in no campaign.
pub fn passthrough(req: &ValidRequest<'_>) -> WitDecisions {
    let n = req.candidates.len();
    WitDecisions {
        scores: req.candidates.iter().map(|c| c.relevance).collect(),
        eligible: vec![false; n],
        reasons: req
            .campaign_index()
            .iter()
            .map(|&c| {
                if c < 0 {
                    WitReason::ORGANIC
                } else {
                    WitReason::empty()
                }
            })
            .collect(),
        propensity: vec![0.0; n],
        debug: Vec::new(),
    }
}

/// Runs `arm` on `req` once an instance is free: the columnar batch is built
/// here, and the policy called on a blocking thread.
///
/// # Errors
/// [`ApiError::overloaded`] when the policy's queue is full or no instance
/// frees up within the queue deadline.
async fn call(
    state: &AppState,
    arm: &Arc<ActivePolicy>,
    req: &ValidRequest<'_>,
) -> Result<Result<CallOutcome, CallError>, ApiError> {
    let permits = acquire(state, arm).await?;
    let batch = arm.policy.batch(req);
    let arm = arm.clone();
    let span = tracing::Span::current();
    let in_use = state.metrics.instances_in_use.clone();
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        let _in_use = GaugeGuard::new(&in_use);
        let started = Instant::now();
        let result = span.in_scope(|| arm.policy.call(&batch));
        arm.metrics.latency.observe(started.elapsed().as_secs_f64());
        result
    })
    .await
    .map_err(|e| {
        // Only a panic in host code ends up here; guest faults are values.
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("policy task failed: {e}"),
        )
    })
}

/// Increments a gauge for as long as it lives. Decrementing in `Drop` keeps
/// the gauge right when a request future is dropped mid-way (client gone).
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(g: &Gauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A queue slot, the policy's instance permit and a global instance permit.
struct Permits {
    _queue: OwnedSemaphorePermit,
    _own: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Takes a queue slot (refusing at once when the queue is full), then waits
/// up to the policy's queue deadline for a policy slot and a global slot.
async fn acquire(state: &AppState, arm: &ActivePolicy) -> Result<Permits, ApiError> {
    let overloaded = || ApiError::overloaded(arm.key());
    let queue = arm
        .queue
        .clone()
        .try_acquire_owned()
        .map_err(|_| overloaded())?;
    let _waiting = GaugeGuard::new(&arm.metrics.queue_depth);
    let wait = async {
        let own = arm.permits.clone().acquire_owned().await;
        let global = state.instances.clone().acquire_owned().await;
        (own, global)
    };
    match tokio::time::timeout(arm.manifest.concurrency.queue_timeout, wait).await {
        Ok((Ok(own), Ok(global))) => Ok(Permits {
            _queue: queue,
            _own: own,
            _global: global,
        }),
        _ => Err(overloaded()),
    }
}
