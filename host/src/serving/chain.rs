//! The serving chain: the arms that may answer a request, tried in order.
//!
//! A route's chain ([`RoutePlan::arms`](crate::control::registry::RoutePlan::arms))
//! is its canary (for listeners in the canary's share), its stable version,
//! then its baseline, then the host's relevance passthrough, which cannot
//! fail; a killed route's chain is its baseline alone. The first arm that
//! answers serves; each failure before it is recorded in the [`Served`]
//! result (and counted, and logged), so the response can say what failed and
//! which arm served instead. The chain is data, so a new kind of arm is a
//! longer chain, not another nesting level.
//!
//! Overload is not a fault: when the route's *primary* arm (stable, or the
//! baseline of a killed route) has no free instance the request gets a 503
//! (the caller retries), while another arm that is busy is skipped.

use std::sync::{Arc, LazyLock};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

use crate::bindings::{WitDecisions, WitReason};
use crate::control::registry::{ActivePolicy, ArmKind};
use crate::error::CallError;
use crate::metadata::PolicyRef;
use crate::policy::CallOutcome;
use crate::request::ValidRequest;
use crate::response::Variant;
use crate::sandbox::visible;
use crate::serving::cpu::CpuSlot;
use crate::serving::resources::Resources;
use crate::serving::served::Served;
use crate::serving::{ServeError, arm};
use crate::telemetry::metrics::FallbackBy;
use tracing::Instrument;

/// Scores `req` with the first arm of `arms` that answers, falling back to
/// the host's relevance passthrough. An arm that cannot take this many
/// candidates is skipped, as is a busy arm other than the `primary` one.
///
/// # Errors
/// [`ServeError::Overloaded`] when the `primary` arm has no free instance
/// within its queue deadline (or its queue is full).
pub async fn serve(
    res: &Resources,
    arms: impl IntoIterator<Item = (ArmKind, Arc<ActivePolicy>)>,
    primary: ArmKind,
    req: &ValidRequest<'_>,
) -> Result<Served, ServeError> {
    let mut failures: Vec<(Arc<PolicyRef>, CallError)> = Vec::new();
    let mut first: Option<(ArmKind, bool, u64)> = None;
    // The first arm that failed: fallbacks are counted against it.
    let mut first_failure: Option<(Arc<ActivePolicy>, crate::CallErrorKind)> = None;
    let mut tried_any = false;
    for (kind, arm) in arms {
        if req.candidates.len() > arm.policy.limits().max_candidates {
            continue;
        }
        let (result, us) = match call(res, kind, &arm, req).await {
            Ok(r) => r,
            Err(overloaded @ ServeError::Overloaded { .. }) if kind == primary => {
                return Err(overloaded);
            }
            Err(e) => {
                tracing::warn!(arm = kind.as_str(), policy = arm.key(), error = %e, "arm overloaded; skipping it");
                continue;
            }
        };
        first.get_or_insert((kind, result.is_ok(), us));
        match result {
            Ok(outcome) => {
                let campaign = req.campaign_index().iter().filter(|&&c| c >= 0).count();
                let (eligible, promoted) = arm.metrics.decided(&outcome.decisions, campaign as u64);
                if let Some((failed, error_kind)) = &first_failure {
                    failed
                        .metrics
                        .fallback_served(*error_kind, FallbackBy::FallbackPolicy);
                }
                return Ok(Served {
                    decisions: outcome.decisions,
                    policy_us: outcome.usage.wall_us,
                    by: arm.policy.identity().clone(),
                    usage: Some(outcome.usage),
                    active: Some(arm),
                    arm: kind,
                    variant: match kind {
                        _ if tried_any => Variant::Fallback,
                        ArmKind::Canary => Variant::Canary,
                        ArmKind::Baseline => Variant::Killed,
                        _ => Variant::Stable,
                    },
                    failures,
                    first,
                    counts_unknown: false,
                    eligible,
                    promoted,
                });
            }
            Err(error) => {
                arm.metrics.failed(error.kind());
                if !tried_any {
                    tracing::warn!(arm = kind.as_str(), kind = error.kind().as_str(), error = %visible(&error.to_string()), "policy failed; serving the fallback");
                } else {
                    tracing::error!(arm = kind.as_str(), policy = arm.key(), kind = error.kind().as_str(), error = %visible(&error.to_string()), "fallback policy failed too; trying the next arm");
                }
                first_failure.get_or_insert_with(|| (arm.clone(), error.kind()));
                failures.push((arm.policy.identity().clone(), error));
            }
        }
        tried_any = true;
    }
    if let Some((failed, error_kind)) = &first_failure {
        failed
            .metrics
            .fallback_served(*error_kind, FallbackBy::Passthrough);
    }
    let decisions = passthrough(req);
    let (eligible, promoted) = crate::serving::served::counts(&decisions);
    Ok(Served {
        eligible,
        promoted,
        decisions,
        policy_us: 0,
        by: PASSTHROUGH.clone(),
        active: None,
        usage: None,
        arm: ArmKind::Passthrough,
        variant: if tried_any || primary != ArmKind::Baseline {
            Variant::Fallback
        } else {
            Variant::Killed
        },
        failures,
        first,
        counts_unknown: false,
    })
}

/// Identity of the host's built-in relevance passthrough.
pub static PASSTHROUGH: LazyLock<Arc<PolicyRef>> = LazyLock::new(|| {
    Arc::new(PolicyRef {
        name: Arc::from("host-passthrough"),
        version: env!("CARGO_PKG_VERSION").into(),
        digest: "builtin".into(),
        settings_sha256: None,
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
        campaign_updates: Vec::new(),
    }
}

/// Runs `arm` on `req` once an instance is free ([`arm::invoke`]), counting
/// the instance in use and the call's latency.
///
/// # Errors
/// [`ServeError::Overloaded`] when the policy's queue is full or no instance
/// frees up within the queue deadline; [`ServeError::Internal`] if the call's
/// task panicked (host code; guest faults are values).
async fn call(
    res: &Resources,
    kind: ArmKind,
    arm: &Arc<ActivePolicy>,
    req: &ValidRequest<'_>,
) -> Result<(Result<CallOutcome, CallError>, u64), ServeError> {
    let span = arm::span(arm, kind.as_str());
    let (permits, slot) = acquire(res, arm).instrument(span.clone()).await?;
    let in_use = GaugeGuard::new(&res.metrics.requests.instances_in_use);
    let invoked = if arm::runs_inline(arm, res.inline_under) {
        // A policy whose calls have been quick: on this thread, holding
        // the permits and the CPU slot until it returns (arm's docs).
        let invoked = span.in_scope(|| arm::invoke_inline(arm, req, res.inline_under));
        drop((permits, in_use, slot));
        arm.metrics.ran_inline();
        invoked
    } else {
        let invoke =
            arm::invoke(arm, req, (permits, in_use), res.inline_under).instrument(span.clone());
        let invoked = match slot {
            Some(slot) => slot.run(invoke, || arm.metrics.demoted()).await,
            None => invoke.await,
        };
        invoked.map_err(|e| ServeError::Internal(format!("policy task failed: {e}")))?
    };
    arm::note(arm, &invoked, res.inline_under);
    let arm::Invoked {
        result, elapsed, ..
    } = invoked;
    arm::record(&span, &result);
    arm.metrics.called(elapsed.as_secs_f64());
    Ok((result, elapsed.as_micros() as u64))
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
/// up to the policy's queue deadline for a policy slot, a global slot and a
/// CPU slot (when the gate is on).
async fn acquire(
    res: &Resources,
    arm: &ActivePolicy,
) -> Result<(Permits, Option<CpuSlot>), ServeError> {
    let overloaded = || ServeError::Overloaded {
        policy: arm.key().to_string(),
    };
    let queue = arm
        .queue
        .clone()
        .try_acquire_owned()
        .map_err(|_| overloaded())?;
    let _waiting = GaugeGuard::new(&arm.metrics.queue_depth);
    let wait = async {
        let own = arm.permits.clone().acquire_owned().await;
        let global = res.instances.clone().acquire_owned().await;
        let cpu = match &res.cpu {
            Some(cpu) => {
                let started = std::time::Instant::now();
                let slot = cpu.acquire().await;
                res.metrics
                    .requests
                    .cpu_slot_wait
                    .observe(started.elapsed().as_secs_f64());
                Some(slot)
            }
            None => None,
        };
        (own, global, cpu)
    };
    match tokio::time::timeout(arm.manifest.concurrency.queue_timeout, wait).await {
        Ok((Ok(own), Ok(global), cpu)) => Ok((
            Permits {
                _queue: queue,
                _own: own,
                _global: global,
            },
            cpu,
        )),
        _ => Err(overloaded()),
    }
}
