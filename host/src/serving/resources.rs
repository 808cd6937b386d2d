//! What the serving chain and the shadows draw on: the metrics, the
//! instance and shadow slots, the per-route statistics and the decision
//! log. Owned by the [`Scorer`](super::Scorer) and lent to `chain` and
//! `shadow`, which therefore need not know the scorer.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::serving::cpu::{CpuSlotConfig, CpuSlots};
use crate::serving::logging::DecisionLogging;
use crate::serving::route_stats::RouteStats;
use crate::serving::shadow_pool::ShadowPool;
use crate::telemetry::metrics::Metrics;

/// Shadow calls in flight at once, across routes, on a machine of `cores`
/// cores: half of them, at least one, so shadows never hold every core the
/// served arms need. Shadows are shed first: beyond this, when fewer than
/// this many instance slots are free, or when the served arm's latency
/// rises, a shadow call is skipped (and counted as `shed`).
pub fn max_shadow_calls(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// [`max_shadow_calls`] of this machine.
pub fn default_max_shadow_calls() -> usize {
    max_shadow_calls(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The shared resources of serving.
#[derive(Clone)]
pub struct Resources {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Instances across all policies, sized below the pooling allocator's
    /// capacity so that a burst queues instead of failing to instantiate.
    pub instances: Arc<Semaphore>,
    /// Bounds shadow calls in flight; a shadow that finds none free is shed.
    pub shadows: Arc<Semaphore>,
    /// Its size.
    pub shadow_slots: usize,
    /// The threads shadow calls run on, at the lowest CPU priority.
    pub shadow_pool: Arc<ShadowPool>,
    /// What serving learns per route (canary windows, shadow divergence).
    pub route_stats: Arc<RouteStats>,
    /// The decision log, when decisions are logged.
    pub decision_log: Option<DecisionLogging>,
    /// The CPU slots policy calls run in; `None`: off.
    pub cpu: Option<CpuSlots>,
    /// Calls of a policy whose calls have each taken at most this run
    /// inline ([`crate::serving::arm`]); zero: never.
    pub inline_under: std::time::Duration,
}

impl Resources {
    /// Resources for a runtime of `max_instances` instances. Two pool slots
    /// are kept for loads and smoke tests, so requests use at most
    /// `max_instances - 2` at once.
    pub fn new(metrics: Arc<Metrics>, max_instances: u32) -> Self {
        Resources {
            route_stats: Arc::new(RouteStats::with_metrics(metrics.clone())),
            metrics,
            instances: Arc::new(Semaphore::new(
                max_instances.saturating_sub(2).max(1) as usize
            )),
            shadows: Arc::new(Semaphore::new(default_max_shadow_calls())),
            shadow_slots: default_max_shadow_calls(),
            shadow_pool: Arc::new(ShadowPool::new(default_max_shadow_calls())),
            decision_log: None,
            cpu: CpuSlots::new(CpuSlotConfig::default()),
            inline_under: CpuSlotConfig::default().inline_under,
        }
    }
}
