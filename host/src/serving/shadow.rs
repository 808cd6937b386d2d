//! Shadow scoring: a route's shadow policies score the same validated
//! request beside the served arm, and only their divergence is kept.
//!
//! A shadow never serves, never delays the response and never changes any
//! state: it runs after the served decisions are known, on its own fresh
//! instance, in a task the response does not wait for. Shadows must not
//! take CPU the served arms need:
//!
//! - they run on their own threads ([`ShadowPool`]) at the lowest CPU
//!   priority (`SCHED_IDLE`): the kernel gives them only CPU nothing else
//!   wants;
//! - a shadow call needs a free shadow slot (at most
//!   [`max_shadow_calls`] at once: half the cores, at least one) *and*
//!   leaves at least as many instance slots to serving;
//! - and it is shed when the route's served arm's latency has risen well
//!   above its usual ([`LatencyTrend`](crate::serving::route_stats::LatencyTrend)).
//!
//! Otherwise it is skipped and counted as `shed`.

use std::sync::Arc;

use oasis_contract::ReasonBits;

use crate::control::registry::{ArmKind, RoutePlan};
use crate::divergence::{DecisionColumns, WindowedDivergence, compare};
use crate::request::ValidRequest;
use crate::serving::arm;
use crate::serving::resources::Resources;
#[cfg(doc)]
use crate::serving::resources::max_shadow_calls;
use crate::serving::route_stats::{SHADOW_WINDOW, lock};
use crate::serving::served::Served;
#[cfg(doc)]
use crate::serving::shadow_pool::ShadowPool;

/// Top-k used for overlap and rank correlation.
pub const TOP_K: usize = 10;

/// The served decisions, copied once per request for every shadow.
struct ServedColumns {
    scores: Vec<f64>,
    eligible: Vec<bool>,
    reasons: Vec<u16>,
}

/// Starts the route's shadows on `req`, comparing each with `served`, and
/// logging their decisions when the request is logged (`body` given).
/// Returns at once.
pub fn spawn(
    state: &Resources,
    plan: &RoutePlan,
    req: &ValidRequest<'_>,
    served: &Served,
    body: Option<&bytes::Bytes>,
    fill: Option<&Arc<crate::delivery::Fill>>,
) {
    if plan.shadows.is_empty() || served.arm == ArmKind::Passthrough {
        return;
    }
    // Copied once, and only if a shadow actually runs (not when all are shed).
    let mut columns: Option<Arc<ServedColumns>> = None;
    for (reference, shadow) in &plan.shadows {
        let count =
            |result: &'static str| state.metrics.shadows.call(&plan.route, reference, result);
        if req.candidates.len() > shadow.policy.limits().max_candidates {
            count("skipped");
            continue;
        }
        // Shed first: keep instance slots, and CPU, for serving.
        if state.instances.available_permits() < state.shadow_slots
            || lock(&state.route_stats.get(&plan.route).served).pressed()
        {
            count("shed");
            continue;
        }
        let (Ok(slot), Ok(instance)) = (
            state.shadows.clone().try_acquire_owned(),
            state.instances.clone().try_acquire_owned(),
        ) else {
            count("shed");
            continue;
        };
        let columns = columns
            .get_or_insert_with(|| {
                let d = &served.decisions;
                Arc::new(ServedColumns {
                    scores: d.scores.clone(),
                    eligible: d.eligible.clone(),
                    reasons: d.reasons.iter().map(|r| r.reason_bits()).collect(),
                })
            })
            .clone();
        let runtime = state.route_stats.get(&plan.route);
        let (arms_key, served_arm) = (plan.arms_key, served.arm);
        let metrics = state.metrics.clone();
        let (route, reference) = (plan.route.clone(), reference.clone());
        let log = body.and_then(|b| {
            let log = state.decision_log.clone()?;
            Some((
                log,
                b.clone(),
                req.context.request_id.to_string(),
                fill.cloned(),
            ))
        });
        let arm = shadow.clone();
        let pool = state.shadow_pool.clone();
        let _span = arm::span(shadow, "shadow").entered();
        arm::spawn_on(
            &pool,
            shadow,
            req,
            (slot, instance),
            move |arm::Invoked {
                      result, elapsed, ..
                  }| {
                let mut shadows = lock(&runtime.shadows);
                // A rollout change since the call started: its comparison
                // is about arms that no longer serve.
                if !runtime.is_current(arms_key) {
                    return;
                }
                let stats = shadows
                    .entry(reference.clone())
                    .or_default()
                    .entry(served_arm)
                    .or_insert_with(|| WindowedDivergence::new(SHADOW_WINDOW));
                stats.record_latency(elapsed);
                match result {
                    Ok(outcome) => {
                        let o = &outcome.decisions;
                        let reasons: Vec<u16> = o.reasons.iter().map(|r| r.reason_bits()).collect();
                        let served = DecisionColumns {
                            scores: &columns.scores,
                            eligible: &columns.eligible,
                            reasons: &columns.reasons,
                        };
                        let other = DecisionColumns {
                            scores: &o.scores,
                            eligible: &o.eligible,
                            reasons: &reasons,
                        };
                        // Both passed the output check for the same request, so
                        // the lengths agree.
                        if let Ok(div) = compare(served, other, TOP_K) {
                            stats.add(&div);
                        }
                        metrics.shadows.call(&route, &reference, "ok");
                        if let Some((log, body, request_id, fill)) = &log {
                            log.shadow(
                                &route,
                                request_id,
                                body,
                                fill.as_ref(),
                                arm.policy.identity(),
                                arm.policy.settings_sha256(),
                                o,
                                &outcome.usage,
                            );
                        }
                    }
                    Err(error) => {
                        stats.record_error();
                        metrics.shadows.call(&route, &reference, "failed");
                        tracing::debug!(%route, shadow = %reference, error = %crate::sandbox::visible(&error.to_string()), "shadow call failed");
                    }
                }
                metrics.shadows.divergence(
                    &route,
                    &reference,
                    served_arm.as_str(),
                    &stats.summary(),
                );
            },
        );
    }
}
