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
use crate::divergence::{DecisionColumns, compare};
use crate::request::ValidRequest;
use crate::serving::arm;
use crate::serving::chain::Served;
use crate::serving::route_stats::lock;
use crate::serving::scorer::Scorer;
#[cfg(doc)]
use crate::serving::scorer::max_shadow_calls;

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
    scorer: &Scorer,
    plan: &RoutePlan,
    req: &ValidRequest<'_>,
    served: &Served,
    body: Option<&bytes::Bytes>,
    fill: Option<&Arc<crate::delivery::Fill>>,
) {
    if plan.shadows.is_empty() || served.arm == ArmKind::Passthrough {
        return;
    }
    let state = scorer.inner();
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
        arm::spawn_on(
            &pool,
            shadow,
            req,
            (slot, instance),
            move |(result, elapsed)| {
                let mut shadows = lock(&runtime.shadows);
                let stats = shadows.entry(reference.clone()).or_default();
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
                metrics
                    .shadows
                    .divergence(&route, &reference, &stats.summary());
            },
        );
    }
}

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
