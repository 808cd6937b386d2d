//! Metrics of a route's arms (canary, stable, baseline, passthrough):
//! requests, fallbacks, latency and decisions, so a canary is compared with
//! the stable version on the same route. Handles of one route's arm are
//! resolved on first use and kept by its
//! [`RouteRuntime`](crate::serving::route_stats::RouteRuntime), so an arm
//! that never serves (or never falls back) has no series.

use super::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::latency_histogram;

/// Labels of a route's arm.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    /// Route name.
    pub route: String,
    /// `canary`, `stable`, `baseline` or `passthrough`.
    pub arm: &'static str,
}

/// The families of every route's arms.
pub struct ArmFamilies {
    /// Requests assigned to the arm (the first arm tried).
    pub requests: Family<ArmLabels, Counter>,
    /// Requests assigned to the arm that another arm answered.
    pub fallbacks: Family<ArmLabels, Counter>,
    /// Server latency of the arm's requests, seconds.
    pub latency: Family<ArmLabels, Histogram>,
    /// Candidates in the answers the arm served.
    pub candidates: Family<ArmLabels, Counter>,
    /// Of them, eligible.
    pub eligible: Family<ArmLabels, Counter>,
    /// Of them, promoted.
    pub promoted: Family<ArmLabels, Counter>,
}

impl ArmFamilies {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let f = ArmFamilies {
            requests: Family::default(),
            fallbacks: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            candidates: Family::default(),
            eligible: Family::default(),
            promoted: Family::default(),
        };
        registry.register(
            "arm_requests",
            "Requests by route and the arm they were assigned to",
            f.requests.clone(),
        );
        registry.register(
            "arm_fallbacks",
            "Requests whose assigned arm failed and another answered, by route and assigned arm",
            f.fallbacks.clone(),
        );
        registry.register(
            "arm_latency_seconds",
            "Server latency by route and assigned arm",
            f.latency.clone(),
        );
        registry.register(
            "arm_candidates",
            "Candidates in answers, by route and the arm that served",
            f.candidates.clone(),
        );
        registry.register(
            "arm_eligible",
            "Eligible candidates in answers, by route and the arm that served",
            f.eligible.clone(),
        );
        registry.register(
            "arm_promoted",
            "Promoted candidates in answers, by route and the arm that served",
            f.promoted.clone(),
        );
        f
    }
}
